//! The end of every backup, whatever its source: verify the partial folder, write the
//! manifest, then publish it (pinned first if it is a safety backup) and copy it offsite, or
//! keep it apart as `.failed-<id>`.

use serde_json::Value;

use super::manifest::{Manifest, SafetyFor};
use super::partial::Partial;
use super::verify::{self, VerifyEnv};
use super::{copy, dump};
use crate::config::{BackupSpec, VerifyLevel};
use crate::jobs::{JobContext, JobError, JobReport};

/// Verifies `manifest`'s backup in `partial` at `level` and publishes it if it passed.
/// `details` (an object) gets the verification, timings and offsite copies added.
pub(super) async fn verify_and_publish(
    ctx: &JobContext,
    spec: &BackupSpec,
    partial: Partial,
    mut manifest: Manifest,
    level: VerifyLevel,
    mut details: Value,
    safety: Option<&SafetyFor>,
) -> Result<JobReport, JobError> {
    let (id, bytes) = (manifest.id.clone(), manifest.bytes);
    ctx.progress(format!("verify: {level:?}, {}", dump::mib(bytes)));
    let env = VerifyEnv {
        cancel: &ctx.cancel,
        restore_target: &spec.restore_target,
        identity_file: spec.verify_identity_file.as_deref(),
        parallel: spec.parallel,
        scratch_dir: Some(&ctx.config.daemon.restore_scratch_dir),
        drill_sql: &spec.drill_sql,
    };
    manifest.verification = verify::verify(&env, partial.path(), &manifest, level).await?;
    ctx.progress("publish");
    let verified = manifest.verified();
    manifest
        .write(partial.path())
        .map_err(|e| JobError::permanent(format!("writing the manifest: {e}")))?;
    let dump_secs = (manifest.duration_ms as f64 / 1000.0).max(0.001);
    details["duration_ms"] = manifest.duration_ms.into();
    details["throughput_bytes_per_s"] = ((bytes as f64 / dump_secs) as u64).into();
    details["verify"] = serde_json::to_value(&manifest.verification).unwrap_or_default();
    if verified && let Some(safety) = safety {
        super::pin_safety(partial.path(), safety, ctx.now)?;
    }
    if !verified {
        partial
            .keep_failed()
            .map_err(|e| JobError::permanent(format!("keeping {id} apart: {e}")))?;
        return Err(JobError::Permanent {
            message: format!(
                "backup {id} failed verification ({level:?}): {}",
                manifest.verification.details
            ),
            details,
        });
    }
    partial
        .publish()
        .map_err(|e| JobError::permanent(format!("publishing {id}: {e}")))?;
    tracing::info!(backup = %id, bytes, "backup {id} published ({}, verified: {})", dump::mib(bytes), manifest.verification.details);
    let shipped = match safety {
        Some(_) => Vec::new(),
        None => copy::copy_offsite(ctx, spec, &id).await,
    };
    if !shipped.is_empty() {
        details["offsite"] = serde_json::to_value(&shipped).unwrap_or_default();
    }
    Ok(JobReport {
        message: format!(
            "backup {id}: {}, verified ({level:?}){}",
            dump::mib(bytes),
            copy::summary(&shipped)
        ),
        details,
    })
}
