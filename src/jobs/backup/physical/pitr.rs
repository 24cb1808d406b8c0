//! After a physical backup is published: its point-in-time drill
//! ([`crate::restore::pitr::drill`]), on by default when a wal-archive job exists. A failed
//! drill fails the run (the backup stays published and verified: the base is good, what failed
//! is the proof with its WAL) and names the cause; a passed one adds its report to the run's
//! details under `pitr_drill`.

use serde_json::json;

use crate::config::{BackupSpec, JobSpec};
use crate::jobs::{JobContext, JobError, JobReport};
use crate::restore::pitr::drill::{self, DrillEnv};

/// Whether the job drills: `pitr-drill`, by default whether a wal-archive job exists.
pub fn enabled(ctx: &JobContext, spec: &BackupSpec) -> bool {
    spec.pitr_drill.enabled.unwrap_or_else(|| {
        ctx.config
            .jobs
            .values()
            .any(|j| matches!(j.spec, JobSpec::WalArchive(_)))
    })
}

/// Drills backup `id` when the job does; `report` gains the drill's.
pub async fn after_backup(
    ctx: &JobContext,
    spec: &BackupSpec,
    id: &str,
    mut report: JobReport,
) -> Result<JobReport, JobError> {
    if !enabled(ctx, spec) {
        return Ok(report);
    }
    ctx.progress(format!("PITR drill of {id}"));
    let progress = |m: String| ctx.progress(m);
    let env = DrillEnv {
        config: &ctx.config,
        dbname: &spec.dbname,
        drill_sql: &spec.drill_sql,
        identity: spec.verify_identity_file.as_deref(),
        lag: spec.pitr_drill.lag,
        cancel: &ctx.cancel,
        progress: &progress,
    };
    match drill::run(&env, Some(id)).await {
        Ok(d) => {
            tracing::info!(
                "PITR drill of {id} passed: {} segment(s) replayed to {}, recovery point {:.0} s \
                 old, {:.1} s",
                d.segments_replayed,
                d.reached_lsn,
                d.recovery_point_age_seconds,
                d.duration_ms as f64 / 1000.0
            );
            report.message.push_str(&format!(
                "; PITR drill passed ({} segment(s) replayed to {}, {:.1} s)",
                d.segments_replayed,
                d.reached_lsn,
                d.duration_ms as f64 / 1000.0
            ));
            report.details["pitr_drill"] = json!(d);
            Ok(report)
        }
        Err(_) if ctx.cancel.is_cancelled() => Err(JobError::Cancelled),
        Err(e) => {
            let mut details = report.details;
            details["pitr_drill"] = json!({ "passed": false, "error": e });
            Err(JobError::Permanent {
                message: format!(
                    "backup {id} published and verified, but its PITR drill failed: {e}"
                ),
                details,
            })
        }
    }
}
