//! TEST-ONLY hook: `ATPRED_TEST_PAUSE_AT=<step>` in the daemon's environment makes a rotation
//! stop for good at that step, after logging `test hook: paused at <step>`, so an integration
//! test can kill -9 the daemon there and prove the restart loses nothing.
//!
//! Steps, in order: `journaled` (the journal is written, nothing moved yet), `shifted` (older
//! files shifted), `renamed` (create: the log moved), `created` (create: the fresh log exists),
//! `reopened` (create: the writer was told), `copied` (copytruncate: copy done, log not yet
//! truncated), `truncated` (copytruncate: log truncated, copy not yet renamed), `compressing` (the
//! compressed temp is complete, not yet renamed), `compressed` (renamed, the uncompressed file
//! not yet removed). Unset (always, outside tests), it costs one environment read per process.

use std::sync::OnceLock;
use std::time::Duration;

const VAR: &str = "ATPRED_TEST_PAUSE_AT";

fn wanted() -> Option<&'static str> {
    static STEP: OnceLock<Option<String>> = OnceLock::new();
    STEP.get_or_init(|| std::env::var(VAR).ok().filter(|s| !s.is_empty()))
        .as_deref()
}

/// Blocks this thread for good if the hook names `step` (for code on a blocking thread).
pub fn blocking(step: &str) {
    if wanted() == Some(step) {
        tracing::warn!("test hook: paused at {step}");
        loop {
            std::thread::sleep(Duration::from_secs(3600));
        }
    }
}

/// Waits for good if the hook names `step` (for async code); cancellation still ends the run.
pub async fn at(
    step: &str,
    cancel: &tokio_util::sync::CancellationToken,
) -> Result<(), crate::jobs::JobError> {
    if wanted() == Some(step) {
        tracing::warn!("test hook: paused at {step}");
        cancel.cancelled().await;
        return Err(crate::jobs::JobError::Cancelled);
    }
    Ok(())
}
