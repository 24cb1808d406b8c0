//! Handler of `restore --to-dir DIR`: the refusals (a caller other than root or the daemon's
//! user, then those of [`super::restore_redis`]'s [`local_backup`] for a files backup), then
//! the tree restored by [`crate::restore::files_dir`] while retention is kept off the backup.
//!
//! Only root and the daemon's own user may ask: the daemon writes the tree with its own rights
//! (as root: any owner, setuid bits included) into any folder named, which a member of the
//! socket group could not do themselves.

use std::path::Path;
use std::sync::Arc;

use tokio::sync::mpsc;

use super::backups::error;
use super::peer::Access;
use super::restore::refusal;
use super::restore_redis::{claim, local_backup};
use crate::config::{BackupSource, Config};
use crate::protocol::{ErrorCode, Response};
use crate::restore::{Options, RestoreError, files_dir};
use crate::runner::Runner;

/// Restores backup `id` into `dir`; the answer (or refusal) goes to `out`.
pub async fn restore(
    runner: &Arc<Runner>,
    config: &Config,
    id: &str,
    options: &Options,
    dir: &Path,
    access: Access,
    out: &mpsc::UnboundedSender<Response>,
) {
    if !access.privileged() {
        let message = "not permitted: only root and the daemon's own user may restore a files \
                       backup (--to-dir writes with the daemon's rights into the folder named)";
        tracing::warn!(backup = id, "restore of {id} refused: {message}");
        let _ = out.send(error(ErrorCode::NotPermitted, message.to_owned()));
        return;
    }
    let answer = match restored(runner, config, id, options, dir).await {
        Ok(restored) => {
            tracing::info!(
                backup = id,
                "restore of {id}: {} entries into {}",
                restored.entries,
                dir.display()
            );
            Response::FilesRestored { restored }
        }
        Err(e) => {
            tracing::warn!(backup = id, "restore of {id} into {}: {e}", dir.display());
            refusal(&e)
        }
    };
    let _ = out.send(answer);
}

async fn restored(
    runner: &Arc<Runner>,
    config: &Config,
    id: &str,
    options: &Options,
    dir: &Path,
) -> Result<files_dir::Restored, RestoreError> {
    let (folder, manifest, identity) =
        local_backup(config, id, options, BackupSource::Files, "--to-dir")?;
    let _claim = claim(runner, id)?;
    let (dir, replace) = (dir.to_owned(), options.replace);
    tokio::task::spawn_blocking(move || {
        files_dir::restore(&folder, &manifest, identity.as_deref(), &dir, replace)
    })
    .await
    .map_err(|e| RestoreError::Failed(e.to_string()))?
}
