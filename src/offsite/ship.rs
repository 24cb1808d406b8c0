//! Copying one published backup to its target: every file, read back, then `SHA256SUMS`,
//! then the manifest as the commit marker; the stage recorded before and after each step.

use std::path::Path;
use std::time::Instant;

use chrono::Utc;
use object_store::{ObjectStoreExt, PutPayload};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::state::{self, Record, Stage};
use super::{OffsiteError, Remote, safe_relative, transfer};
use crate::config::OffsiteTarget;
use crate::jobs::backup::manifest::{MANIFEST, Manifest, SUMS};

/// What a copy came to; goes into the run's details as `offsite`.
#[derive(Debug, Clone, Serialize)]
pub struct Shipped {
    pub target: String,
    pub id: String,
    pub stage: Stage,
    pub attempts: u32,
    pub bytes: u64,
    pub upload_ms: u64,
    pub verify_ms: u64,
    /// Upload throughput, bytes per second.
    pub bytes_per_s: u64,
    /// The copy was already committed at the target (and read back whole): nothing uploaded.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub already: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The failure was the target's (down, refusing), not this backup's.
    #[serde(skip)]
    pub target_failed: bool,
}

/// Who is told about the steps (`atprectl run --wait` follows them).
pub type Progress<'a> = &'a (dyn Fn(String) + Send + Sync);

/// Copies the published backup folder `dir` (whose manifest is `manifest`) to `target`.
/// Never fails the caller: the result, good or bad, is recorded and returned.
pub async fn copy(
    state_dir: &Path,
    target: &OffsiteTarget,
    dir: &Path,
    manifest: &Manifest,
    cancel: &CancellationToken,
    progress: Progress<'_>,
) -> Shipped {
    let attempts = state::read(state_dir, &target.name, &manifest.id).map_or(0, |r| r.attempts) + 1;
    let record = |stage, error: Option<String>| Record {
        id: manifest.id.clone(),
        job: manifest.job.clone(),
        stage,
        at: Utc::now(),
        attempts,
        error,
    };
    let note = |r: Record| {
        if let Err(e) = state::write(state_dir, &target.name, &r) {
            tracing::warn!(backup = %manifest.id, "cannot record the offsite state of {}: {e}", manifest.id);
        }
    };
    note(record(Stage::Pending, None));
    let mut shipped = Shipped {
        target: target.name.clone(),
        id: manifest.id.clone(),
        stage: Stage::Pending,
        attempts,
        bytes: manifest.bytes,
        upload_ms: 0,
        verify_ms: 0,
        bytes_per_s: 0,
        already: false,
        error: None,
        target_failed: false,
    };
    let result = ship(
        target,
        dir,
        manifest,
        cancel,
        progress,
        &mut shipped,
        &|stage| {
            note(record(stage, None));
        },
    )
    .await;
    match result {
        Ok(()) => {
            shipped.stage = Stage::Verified;
            note(record(Stage::Verified, None));
            tracing::info!(backup = %manifest.id, offsite = %target.name,
                "offsite copy of {} at {} verified ({} bytes, {} B/s)", manifest.id, target.name, shipped.bytes, shipped.bytes_per_s);
        }
        Err(e) => {
            let message = e.to_string();
            shipped.target_failed = e.is_target_level();
            shipped.stage = Stage::Failed;
            shipped.error = Some(message.clone());
            note(record(Stage::Failed, Some(message.clone())));
            tracing::warn!(backup = %manifest.id, offsite = %target.name,
                "offsite copy of {} FAILED (attempt {attempts}; the local backup is unaffected, the next run tries again): {message}", manifest.id);
        }
    }
    shipped
}

async fn ship(
    target: &OffsiteTarget,
    dir: &Path,
    manifest: &Manifest,
    cancel: &CancellationToken,
    progress: Progress<'_>,
    shipped: &mut Shipped,
    stage: &(dyn Fn(Stage) + Sync),
) -> Result<(), OffsiteError> {
    if manifest.encryption.is_none() && !target.allow_plaintext {
        return Err(OffsiteError::Other {
            target: target.name.clone(),
            message: format!(
                "{} is not encrypted and the target refuses plaintext",
                manifest.id
            ),
        });
    }
    let remote = Remote::open(target)?;
    let id = &manifest.id;
    progress(format!("offsite: copying {id} to {}", remote.name()));
    if committed(&remote, manifest, cancel).await? {
        shipped.already = true;
        return super::pins::push_local(&remote, dir, id).await;
    }
    let t0 = Instant::now();
    for f in &manifest.files {
        let path = checked(&remote, id, &f.path)?;
        progress(format!("offsite: uploading {path} to {}", remote.name()));
        transfer::upload(&remote, &dir.join(path), &remote.key(id, path), f, cancel).await?;
    }
    shipped.upload_ms = millis(t0);
    shipped.bytes_per_s =
        (manifest.bytes as f64 / (shipped.upload_ms.max(1) as f64 / 1000.0)) as u64;
    stage(Stage::Uploaded);
    let t1 = Instant::now();
    progress(format!(
        "offsite: reading the copy back from {}",
        remote.name()
    ));
    for f in &manifest.files {
        let path = checked(&remote, id, &f.path)?;
        transfer::read_back(&remote, &remote.key(id, path), f, cancel).await?;
    }
    // The commit marker goes last: before it, the copy is not a backup anywhere.
    for name in [SUMS, MANIFEST] {
        let bytes = std::fs::read(dir.join(name)).map_err(|e| OffsiteError::Other {
            target: target.name.clone(),
            message: format!("reading {}: {e}", dir.join(name).display()),
        })?;
        let key = remote.key(id, name);
        tokio::select! {
            r = remote.store.put(&key, PutPayload::from(bytes)) => { r.map_err(|e| remote.err("put", &key, e))?; }
            () = cancel.cancelled() => return Err(OffsiteError::Cancelled),
        }
    }
    shipped.verify_ms = millis(t1);
    // A pin made while the copy was on its way (the pin request found no committed copy).
    super::pins::push_local(&remote, dir, id).await
}

/// Whether this very backup is already committed at the target and reads back whole (a run
/// that died after the manifest went up). A different backup under the same id — a host
/// sharing the prefix without `[coordination]` — is never overwritten.
async fn committed(
    remote: &Remote,
    manifest: &Manifest,
    cancel: &CancellationToken,
) -> Result<bool, OffsiteError> {
    let existing = match super::catalog::read_manifest(remote, &manifest.id).await {
        Ok(m) => m,
        Err(e) if e.is_not_found() => return Ok(false),
        Err(OffsiteError::Mismatch { message, .. }) => {
            return Err(refuse(remote, manifest, &message));
        }
        Err(e) => return Err(e),
    };
    if serde_json::to_value(&existing).ok() != serde_json::to_value(manifest).ok() {
        return Err(refuse(remote, manifest, "its manifest differs from ours"));
    }
    match super::catalog::verify(remote, &manifest.id, cancel).await {
        Ok(_) => Ok(true),
        // Damaged since: take the commit marker down first, so the copy is never a listed
        // backup with bad files while it is uploaded again.
        Err(e @ OffsiteError::Mismatch { .. }) => {
            tracing::warn!(backup = %manifest.id, "the committed copy of {} at {} does not read back ({e}); uploading it again", manifest.id, remote.name());
            let key = remote.key(&manifest.id, MANIFEST);
            remote
                .store
                .delete(&key)
                .await
                .map_err(|e| remote.err("delete", &key, e))?;
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

fn refuse(remote: &Remote, manifest: &Manifest, why: &str) -> OffsiteError {
    OffsiteError::Other {
        target: remote.name().to_owned(),
        message: format!(
            "another backup named {} is already committed there ({why}): refusing to overwrite \
             it; hosts sharing a prefix need [coordination], or give each its own prefix",
            manifest.id
        ),
    }
}

fn checked<'a>(remote: &Remote, id: &str, path: &'a str) -> Result<&'a str, OffsiteError> {
    safe_relative(path).ok_or_else(|| {
        remote.mismatch(
            &remote.backup(id),
            format!("the manifest lists {path:?}, which is not a path inside the backup"),
        )
    })
}

fn millis(t: Instant) -> u64 {
    u64::try_from(t.elapsed().as_millis()).unwrap_or(u64::MAX)
}
