//! After a physical backup is published: its point-in-time drill
//! ([`crate::restore::pitr::drill`]), on by default when a wal-archive job exists; after every
//! backup, or with `verify-every` only once the last passed drill is that old (its time kept
//! in `state-dir/pitr-drill/<job>`; a missing or unreadable record means one is due). A failed
//! drill fails the run (the backup stays published and verified: the base is good, what failed
//! is the proof with its WAL) and names the cause; a passed one adds its report to the run's
//! details under `pitr_drill`.

use std::path::PathBuf;

use chrono::{DateTime, Utc};
use serde_json::json;

use crate::config::{BackupSpec, JobSpec};
use crate::jobs::{JobContext, JobError, JobReport};
use crate::restore::pitr::drill::{self, DrillEnv};

/// Whether the job drills: `pitr-drill`, by default whether `verify-every` asks for drills or
/// a wal-archive job exists.
pub fn enabled(ctx: &JobContext, spec: &BackupSpec) -> bool {
    spec.pitr_drill.enabled.unwrap_or_else(|| {
        spec.verify_every.is_some()
            || ctx
                .config
                .jobs
                .values()
                .any(|j| matches!(j.spec, JobSpec::WalArchive(_)))
    })
}

/// Where the time of the job's last passed drill is kept.
fn record_path(ctx: &JobContext) -> PathBuf {
    ctx.config
        .daemon
        .state_dir
        .join("pitr-drill")
        .join(ctx.job.name.as_str())
}

/// The time of the job's last passed drill, if it is recorded and readable.
fn last_passed(ctx: &JobContext) -> Option<DateTime<Utc>> {
    let text = std::fs::read_to_string(record_path(ctx)).ok()?;
    DateTime::parse_from_rfc3339(text.trim())
        .ok()
        .map(|t| t.with_timezone(&Utc))
}

/// When `verify-every` is set and the last passed drill is younger: that drill's time.
fn not_due(ctx: &JobContext, spec: &BackupSpec) -> Option<DateTime<Utc>> {
    let every = spec.verify_every?;
    let last = last_passed(ctx)?;
    let age = (ctx.now - last).to_std().ok()?;
    (age < every).then_some(last)
}

/// Records a passed drill at `at`; a failure only costs an earlier drill next time.
fn record_passed(ctx: &JobContext, at: DateTime<Utc>) {
    let path = record_path(ctx);
    let written = path
        .parent()
        .map_or(Ok(()), |dir| {
            use std::os::unix::fs::DirBuilderExt;
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
        })
        .and_then(|()| crate::publish::write_atomic(&path, at.to_rfc3339().as_bytes(), 0o600));
    if let Err(e) = written {
        tracing::warn!(
            "recording the PITR drill's time in {}: {e} (the next backup drills again)",
            path.display()
        );
    }
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
    if let Some(last) = not_due(ctx, spec) {
        report.message.push_str(&format!(
            "; PITR drill not due (last passed {}, verify-every)",
            last.format("%Y-%m-%d %H:%M:%S UTC")
        ));
        report.details["pitr_drill"] = json!({ "due": false, "last_passed": last });
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
            record_passed(ctx, ctx.now);
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
