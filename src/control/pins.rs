//! Handlers of `backup_pin` and `backup_unpin`: the pin in the backup folder ([`crate::pins`])
//! and the same pin beside the copy at the making job's offsite target.
//!
//! Order matters for "never removed while pinned": pinning writes the local pin first and the
//! remote one second (a copy committed in between carries the local pin over itself, see
//! [`crate::offsite::pins::push_local`]); unpinning removes the remote pin first, so a failure
//! leaves the backup pinned everywhere rather than half.

use chrono::Utc;

use super::backups::error;
use crate::config::{Config, JobSpec};
use crate::jobs::backup::manifest::Manifest;
use crate::jobs::catalog;
use crate::offsite::{self, Remote};
use crate::pins::{self, Pin};
use crate::protocol::{ErrorCode, Response};

pub async fn pin(config: &Config, id: &str, reason: Option<String>) -> Response {
    let (dir, manifest) = match backup(config, id) {
        Ok(found) => found,
        Err(r) => return *r,
    };
    let pin = match Pin::new(reason, Utc::now()) {
        Ok(p) => p,
        Err(e) => return error(ErrorCode::BadRequest, e.to_string()),
    };
    if let Err(e) = pins::write(&dir, &pin) {
        return error(ErrorCode::Internal, format!("cannot pin {id}: {e}"));
    }
    // A prune that planned before the pin may have moved the folder away meanwhile.
    if catalog::path_of(&config.daemon.backup_dir, id).is_none() {
        return error(
            ErrorCode::UnknownBackup,
            format!("backup {id} was removed by a prune while it was being pinned"),
        );
    }
    tracing::info!(backup = id, "pinned backup {id} ({})", pin.label());
    let offsite = match remote_of(config, &manifest) {
        None => None,
        Some(Err(e)) => return error(ErrorCode::Internal, format!("pinned {id} here, but {e}")),
        Some(Ok(remote)) => match offsite::catalog::read_manifest(&remote, id).await {
            Err(e) if e.is_not_found() => Some(format!(
                "{}: no committed copy yet; the copy carries the pin",
                remote.name()
            )),
            Err(e) => {
                return error(
                    ErrorCode::Internal,
                    format!("pinned {id} here, but not at {}: {e}", remote.name()),
                );
            }
            Ok(_) => match offsite::pins::put(&remote, id, &pin).await {
                Ok(()) => Some(format!("{}: pinned", remote.name())),
                Err(e) => {
                    return error(
                        ErrorCode::Internal,
                        format!("pinned {id} here, but not at {}: {e}", remote.name()),
                    );
                }
            },
        },
    };
    Response::PinState {
        id: id.to_owned(),
        pin: Some(pin),
        offsite,
    }
}

pub async fn unpin(config: &Config, id: &str) -> Response {
    let (dir, manifest) = match backup(config, id) {
        Ok(found) => found,
        Err(r) => return *r,
    };
    let offsite = match remote_of(config, &manifest) {
        None => None,
        Some(Err(e)) => return error(ErrorCode::Internal, format!("{id} stays pinned: {e}")),
        Some(Ok(remote)) => match offsite::pins::delete(&remote, id).await {
            Ok(()) => Some(format!("{}: unpinned", remote.name())),
            Err(e) => return error(ErrorCode::Internal, format!("{id} stays pinned: {e}")),
        },
    };
    match pins::remove(&dir) {
        Ok(was) => {
            if was {
                tracing::info!(backup = id, "unpinned backup {id}");
            }
            Response::PinState {
                id: id.to_owned(),
                pin: None,
                offsite,
            }
        }
        Err(e) => error(ErrorCode::Internal, format!("cannot unpin {id}: {e}")),
    }
}

/// The folder and manifest of published backup `id`.
fn backup(config: &Config, id: &str) -> Result<(std::path::PathBuf, Manifest), Box<Response>> {
    let unknown = |why: String| Box::new(error(ErrorCode::UnknownBackup, why));
    let dir = catalog::path_of(&config.daemon.backup_dir, id).ok_or_else(|| {
        unknown(format!(
            "no backup {id:?} in {}",
            config.daemon.backup_dir.display()
        ))
    })?;
    let manifest =
        Manifest::read(&dir).map_err(|e| unknown(format!("{id} is not a backup: {e}")))?;
    Ok((dir, manifest))
}

/// The offsite target of the job that made the backup, opened; `None` when it has none.
fn remote_of(config: &Config, manifest: &Manifest) -> Option<Result<Remote, String>> {
    let name = config.jobs.values().find_map(|j| match &j.spec {
        JobSpec::Backup(b) if j.name.as_str() == manifest.job => b.offsite.clone(),
        _ => None,
    })?;
    let target = config.offsite.get(&name)?;
    Some(Remote::open(target).map_err(|e| e.to_string()))
}
