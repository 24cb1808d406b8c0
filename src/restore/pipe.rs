//! `--jobs 1` from a zstd-wrapped or encrypted archive: decoded straight into pg_restore's
//! stdin, no scratch file. pg_restore reads a custom archive in order when it cannot seek,
//! which is all one job needs, so the unpacking overlaps the restore instead of preceding it
//! and restore-scratch-dir is not used at all.
//!
//! The stored bytes are hashed on the way; a mismatch fails the restore once pg_restore has
//! ended (the restoring database is then dropped, as after any failure, and the target was
//! never touched).

use super::RestoreError;
use super::exec::{self, Env};
use super::plan::{Archive, RestorePlan};
use super::unpack::{self, Cancellable};
use crate::jobs::backup::{stream, verify};
use crate::process::{self, ProcessSpec};

/// Runs `spec` (pg_restore without an input file) fed with the plan's archive, decoded.
pub async fn restore(
    env: &Env<'_>,
    plan: &RestorePlan,
    mut spec: ProcessSpec,
) -> Result<(), RestoreError> {
    let Archive::Stream {
        from,
        zstd,
        encrypted,
        sha256,
        bytes,
    } = &plan.archive
    else {
        return Err(RestoreError::Failed("nothing to stream".into()));
    };
    let identity = unpack::identity(&plan.id, *encrypted, env.identity_file)?;
    spec.stdin = true;
    let mut running =
        process::spawn(&spec).map_err(|e| RestoreError::Failed(format!("pg_restore: {e}")))?;
    let pipe = running
        .take_stdin()
        .ok_or_else(|| RestoreError::Failed("pg_restore has no stdin".into()))?
        .into_owned_fd()
        .and_then(stream::blocking_pipe)
        .map_err(|e| RestoreError::Failed(format!("pg_restore's stdin: {e}")))?;
    let (path, zstd, cancel) = (from.clone(), *zstd, env.cancel.clone());
    // Dropping the pipe when the feed ends (or fails) gives pg_restore its end of input.
    let feed = tokio::task::spawn_blocking(move || {
        let ids = identity
            .map(|p| verify::load_identities(&p))
            .transpose()
            .map_err(std::io::Error::other)?;
        let mut sink = Cancellable {
            inner: pipe,
            cancel,
        };
        stream::read_stream(&path, zstd, ids.as_deref(), Some(&mut sink))
    });
    let (waited, fed) = tokio::join!(running.wait(env.cancel, |_, _| {}), feed);
    let fed = fed
        .map_err(|e| RestoreError::Failed(e.to_string()))?
        .map_err(|e| RestoreError::Failed(format!("reading {}: {e}", from.display())))?;
    if env.cancel.is_cancelled() {
        return Err(RestoreError::Cancelled);
    }
    // Damage is named first as what it is: the stored bytes are not the ones written.
    if fed.written.sha256 != *sha256 || fed.written.bytes != *bytes {
        return Err(RestoreError::Failed(format!(
            "{}: checksum mismatch ({} bytes, sha256 {}; the manifest says {bytes} bytes, \
             {sha256})",
            from.display(),
            fed.written.bytes,
            fed.written.sha256
        )));
    }
    exec::outcome(waited, plan)?;
    match fed.decode_error {
        Some(e) => Err(RestoreError::Failed(format!(
            "decoding {} into pg_restore: {e}",
            from.display()
        ))),
        None => Ok(()),
    }
}
