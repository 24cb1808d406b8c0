//! The supervised `pg_receivewal`: the slot made sure of, the receiver started through the
//! process module (own process group, scrubbed environment, `PGPASSFILE` only, SIGTERM when the
//! daemon dies, recorded for the next start's sweep) and started again with backoff when it
//! ends. It runs in the spool folder held by handle (`--directory .`, its working directory
//! set through `/proc/self/fd/N`), never reaching the spool by name.

use std::ffi::OsString;
use std::path::Path;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;

use super::JobState;
use crate::config::WalArchiveSpec;
use crate::process::{self, Stream};

const MIN_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(60);
/// A receiver that ran this long is taken as healthy: the backoff starts over.
const STABLE: Duration = Duration::from_secs(60);
/// What pg_receivewal says when the server no longer has the WAL it asked for.
const WAL_REMOVED: &str = "has already been removed";
/// What pg_receivewal says of a `.partial` it was still zero-filling when it was killed.
const TORN_PADDING: &str = "should be 0 or";

/// Runs the receiver until `cancel`, restarting it with backoff.
pub async fn supervise(spec: &WalArchiveSpec, state: &JobState, cancel: &CancellationToken) {
    let mut backoff = MIN_BACKOFF;
    while !cancel.is_cancelled() {
        state.set_receiver("starting", None, None);
        let started = Instant::now();
        let life = once(spec, state, cancel).await;
        state.receiver_ended();
        let message = match life {
            Ok(()) => break,
            Err(message) => message,
        };
        if cancel.is_cancelled() {
            break;
        }
        if started.elapsed() >= STABLE {
            backoff = MIN_BACKOFF;
        }
        tracing::warn!(
            "wal receiver down, next start in {}s: {message}",
            backoff.as_secs()
        );
        state.set_receiver(
            "backing-off",
            Some(format!("{message} (next start in {}s)", backoff.as_secs())),
            None,
        );
        tokio::select! {
            () = tokio::time::sleep(backoff) => {}
            () = cancel.cancelled() => break,
        }
        backoff = (backoff * 2).min(MAX_BACKOFF);
    }
    state.set_receiver("stopped", None, None);
}

/// One life of the receiver; `Ok` only when cancelled.
async fn once(
    spec: &WalArchiveSpec,
    state: &JobState,
    cancel: &CancellationToken,
) -> Result<(), String> {
    prepare_spool(&spec.spool_dir)
        .map_err(|e| format!("cannot prepare {}: {e}", spec.spool_dir.display()))?;
    super::slot::ensure(spec, state, cancel).await?;
    // `--directory .` in the spool's handle: the receiver never resolves the spool's name.
    let args: Vec<OsString> = [
        "--directory".into(),
        ".".into(),
        "--slot".into(),
        spec.slot.clone().into(),
        "--no-loop".into(),
        "--verbose".into(),
    ]
    .into_iter()
    .chain(spec.synchronous.then(|| "--synchronous".into()))
    .collect();
    let mut tool = crate::pg::tool_spec(&spec.replication, "pg_receivewal")
        .map_err(|e| e.to_string())?
        .args(args);
    // The receiver's application_name is the slot's name: what the server's
    // `synchronous_standby_names` names to wait for it (`synchronous = true`).
    tool.env.retain(|(k, _)| k != "PGAPPNAME");
    tool = tool.env("PGAPPNAME", &spec.slot);
    // `spool_dir` is the held folder's `/proc/self/fd/N`: the child changes into it by handle
    // before it execs (the descriptor is still open then).
    tool.cwd = Some(spec.spool_dir.clone());
    let running = process::spawn(&tool).map_err(|e| e.to_string())?;
    state.started(running.pid());
    tracing::info!(
        pid = running.pid(),
        slot = %spec.slot,
        "wal receiver started"
    );
    let out = running
        .wait(cancel, |stream, line| {
            if stream == Stream::Stderr {
                tracing::debug!("pg_receivewal: {line}");
            }
        })
        .await;
    let out = match out {
        Err(process::ProcessError::Cancelled) => return Ok(()),
        Err(e) => return Err(e.to_string()),
        Ok(out) => out,
    };
    let stderr = out.stderr_summary(2);
    if stderr.contains(WAL_REMOVED) {
        discard_partial(&spec.spool_dir);
    }
    if stderr.contains(TORN_PADDING) {
        remove_torn_padding(&spec.spool_dir, &out.stderr_tail);
    }
    let hint = crate::pg::auth_hint(&stderr)
        .map(|h| format!(" ({h})"))
        .unwrap_or_default();
    Err(format!(
        "pg_receivewal ended ({}): {stderr}{hint}",
        process::describe_status(&out.status)
    ))
}

/// The spool: the daemon's alone (0700), made if missing.
fn prepare_spool(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
}

/// pg_receivewal zero-fills a new `.partial` to the segment size before it writes any WAL into
/// it, and refuses a file of another size at its next start ("has N bytes, should be 0 or
/// 16777216"). A kill -9 during that padding leaves such a file: it holds no WAL (the slot has
/// not confirmed anything in it), so it is removed and the segment streamed again.
fn remove_torn_padding(dir: &Path, stderr: &[String]) {
    for line in stderr.iter().filter(|l| l.contains(TORN_PADDING)) {
        let Some(name) = line
            .split('"')
            .nth(1)
            .filter(|n| n.ends_with(".partial") && !n.contains('/'))
        else {
            continue;
        };
        tracing::warn!(
            segment = %name,
            "removing {name}: pg_receivewal was killed while zero-filling it (it holds no WAL); the segment is streamed again"
        );
        let _ = std::fs::remove_file(dir.join(name));
    }
}

/// The server no longer has the WAL the in-flight segment continues: that segment can never be
/// finished, so it goes, and the receiver starts again where the slot stands. The archive's gap
/// check names what is missing.
fn discard_partial(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.ends_with(".partial") {
            tracing::error!(
                segment = %name,
                "the server removed the WAL this segment needs: discarding it; the archive has a gap from here (a new base backup is required)"
            );
            let _ = std::fs::remove_file(e.path());
        }
    }
}
