//! Handler of `restore --redis-dir DIR`: the refusals (unknown, failed or non-Redis backup, a
//! missing identity), then the RDB staged by [`crate::restore::redis_dir`], from backup-dir
//! while retention is kept off the backup, or with `--target NAME` from the copy at that
//! offsite target as it downloads.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::mpsc;

use super::restore::refusal;
use crate::config::{BackupSource, Config, JobSpec};
use crate::jobs::backup::manifest::Manifest;
use crate::jobs::catalog;
use crate::protocol::Response;
use crate::restore::{Options, RestoreError, redis_dir, unpack};
use crate::runner::Runner;

/// Stages backup `id` in `dir`; the answer (or refusal) goes to `out`.
pub async fn stage(
    runner: &Arc<Runner>,
    config: &Config,
    id: &str,
    options: &Options,
    dir: &Path,
    out: &mpsc::UnboundedSender<Response>,
) {
    let answer = match staged(runner, config, id, options, dir).await {
        Ok(staged) => {
            tracing::info!(
                backup = id,
                "restore of {id}: RDB staged as {}",
                staged.staged.display()
            );
            Response::RedisStaged { staged }
        }
        Err(e) => {
            tracing::warn!(backup = id, "restore of {id} into {}: {e}", dir.display());
            refusal(&e)
        }
    };
    let _ = out.send(answer);
}

async fn staged(
    runner: &Arc<Runner>,
    config: &Config,
    id: &str,
    options: &Options,
    dir: &Path,
) -> Result<redis_dir::Staged, RestoreError> {
    if let Some(target) = &options.target {
        return staged_from_copy(config, id, options, dir, target).await;
    }
    let (folder, manifest, identity) =
        local_backup(config, id, options, BackupSource::Redis, "--redis-dir")?;
    // Retention must not remove it while it is read.
    let _claim = claim(runner, id)?;
    let dir = dir.to_owned();
    tokio::task::spawn_blocking(move || {
        redis_dir::stage(&folder, &manifest, identity.as_deref(), &dir)
    })
    .await
    .map_err(|e| RestoreError::Failed(e.to_string()))?
}

/// `--target NAME`: the RDB of the copy at that offsite target, read as it downloads (hashed,
/// decrypted, decoded and checked against the remote manifest in one pass) and staged; no
/// local copy is needed and nothing encrypted is stored.
async fn staged_from_copy(
    config: &Config,
    id: &str,
    options: &Options,
    dir: &Path,
    target: &str,
) -> Result<redis_dir::Staged, RestoreError> {
    redis_dir::check_dir(dir)?;
    let remote = crate::restore::remote::open(config, target)?;
    let manifest = crate::restore::remote::manifest(&remote, id).await?;
    if manifest.source != BackupSource::Redis {
        return Err(RestoreError::BadRequest(format!(
            "{id} is a {} backup: --redis-dir takes redis backups",
            manifest.source.as_str()
        )));
    }
    let identity = identity_of(config, options, &manifest)?;
    let file =
        manifest.files.first().cloned().ok_or_else(|| {
            RestoreError::Failed(format!("{id}: the remote manifest lists no file"))
        })?;
    let key = remote.key(id, &file.path);
    let dir = dir.to_owned();
    let cancel = tokio_util::sync::CancellationToken::new();
    crate::offsite::reader::read_with(&remote, &key, &file, &cancel, move |input| {
        redis_dir::stage_from(input, &manifest, identity.as_deref(), &dir)
    })
    .await
    .map_err(|e| {
        RestoreError::Failed(format!(
            "{id} at offsite target {target}: {e}; nothing was staged"
        ))
    })?
}

/// The identity to decrypt `manifest`'s backup with (`--identity`, else the job's
/// verify-identity-file), refused when it is encrypted and there is none.
fn identity_of(
    config: &Config,
    options: &Options,
    manifest: &Manifest,
) -> Result<Option<PathBuf>, RestoreError> {
    let identity = options.identity.clone().or_else(|| {
        config.jobs.values().find_map(|j| match &j.spec {
            JobSpec::Backup(b) if j.name.as_str() == manifest.job => b.verify_identity_file.clone(),
            _ => None,
        })
    });
    unpack::identity(&manifest.id, manifest.encrypted(), identity.as_deref())
}

/// The refusals of a restore from backup-dir into a folder (`flag`): a copy at an offsite
/// target, an unknown or failed backup, one of another source than `source`, a missing
/// identity. Its folder, manifest and the identity file to decrypt it with.
pub(super) fn local_backup(
    config: &Config,
    id: &str,
    options: &Options,
    source: BackupSource,
    flag: &str,
) -> Result<(PathBuf, Manifest, Option<PathBuf>), RestoreError> {
    if options.target.is_some() {
        return Err(RestoreError::BadRequest(format!(
            "{flag} restores from backup-dir only; fetch the copy first (backups fetch)"
        )));
    }
    let folder = catalog::path_of(&config.daemon.backup_dir, id)
        .ok_or_else(|| RestoreError::UnknownBackup(format!("no backup {id:?}")))?;
    let manifest =
        Manifest::read(&folder).map_err(|e| RestoreError::UnknownBackup(format!("{id}: {e}")))?;
    if !manifest.verified() {
        return Err(RestoreError::UnknownBackup(format!(
            "{id} failed its verification; it is not restored"
        )));
    }
    if manifest.source != source {
        return Err(RestoreError::BadRequest(format!(
            "{id} is a {} backup: {flag} takes {} backups",
            manifest.source.as_str(),
            source.as_str()
        )));
    }
    let identity = identity_of(config, options, &manifest)?;
    Ok((folder, manifest, identity))
}

/// Keeps retention off backup `id` while it is read.
pub(super) fn claim(runner: &Arc<Runner>, id: &str) -> Result<catalog::Claim, RestoreError> {
    runner.in_use().claim(id).ok_or_else(|| {
        RestoreError::Failed(format!(
            "backup {id} is being verified or removed right now"
        ))
    })
}
