//! Handlers of `backup_pin` and `backup_unpin`: the pin in the backup folder ([`crate::pins`])
//! and the same pin beside the copy at each of the making job's offsite targets.
//!
//! Order matters for "never removed while pinned": pinning writes the local pin first and the
//! remote ones second (a copy committed in between carries the local pin over itself, see
//! [`crate::offsite::pins::push_local`]); a target that fails does not stop the others from
//! being pinned. Unpinning removes the remote pins first, and if one target fails, puts the pin
//! back where it was removed, so a failure leaves the backup pinned everywhere rather than half.

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
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for remote in remotes_of(config, &manifest) {
        match pin_at(remote, id, &pin).await {
            Ok(said) => done.push(said),
            Err(e) => failed.push(e),
        }
    }
    if !failed.is_empty() {
        let pinned = if done.is_empty() {
            String::new()
        } else {
            format!(" ({})", done.join(", "))
        };
        return error(
            ErrorCode::Internal,
            format!("pinned {id} here{pinned}, but {}", failed.join("; ")),
        );
    }
    Response::PinState {
        id: id.to_owned(),
        pin: Some(pin),
        offsite: (!done.is_empty()).then(|| done.join(", ")),
    }
}

/// Pins the committed copy at one target: `NAME: pinned`, or why not.
async fn pin_at(remote: Result<Remote, String>, id: &str, pin: &Pin) -> Result<String, String> {
    let remote = remote?;
    let name = remote.name();
    match offsite::catalog::read_manifest(&remote, id).await {
        Err(e) if e.is_not_found() => Ok(format!(
            "{name}: no committed copy yet; the copy carries the pin"
        )),
        Err(e) => Err(format!("not at {name}: {e}")),
        Ok(_) => match offsite::pins::put(&remote, id, pin).await {
            Ok(()) => Ok(format!("{name}: pinned")),
            Err(e) => Err(format!("not at {name}: {e}")),
        },
    }
}

pub async fn unpin(config: &Config, id: &str) -> Response {
    let (dir, manifest) = match backup(config, id) {
        Ok(found) => found,
        Err(r) => return *r,
    };
    let mut unpinned: Vec<Remote> = Vec::new();
    for remote in remotes_of(config, &manifest) {
        let result = match remote {
            Ok(remote) => offsite::pins::delete(&remote, id)
                .await
                .map(|()| remote)
                .map_err(|e| e.to_string()),
            Err(e) => Err(e),
        };
        match result {
            Ok(remote) => unpinned.push(remote),
            Err(e) => {
                repin(&dir, id, &unpinned).await;
                return error(ErrorCode::Internal, format!("{id} stays pinned: {e}"));
            }
        }
    }
    let offsite = (!unpinned.is_empty()).then(|| {
        unpinned
            .iter()
            .map(|r| format!("{}: unpinned", r.name()))
            .collect::<Vec<_>>()
            .join(", ")
    });
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

/// An unpin failed at one target: the local pin goes back to the targets already unpinned.
async fn repin(dir: &std::path::Path, id: &str, unpinned: &[Remote]) {
    for remote in unpinned {
        if let Err(e) = offsite::pins::push_local(remote, dir, id).await {
            tracing::warn!(
                backup = id,
                offsite = remote.name(),
                "{id} stays pinned here but could not be pinned again at {}: {e}",
                remote.name()
            );
        }
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

/// The offsite targets of the job that made the backup, each opened (or why not).
fn remotes_of(config: &Config, manifest: &Manifest) -> Vec<Result<Remote, String>> {
    let names = config.jobs.values().find_map(|j| match &j.spec {
        JobSpec::Backup(b) if j.name.as_str() == manifest.job => Some(b.offsite.clone()),
        _ => None,
    });
    names
        .unwrap_or_default()
        .iter()
        .filter_map(|name| config.offsite.get(name))
        .map(|target| Remote::open(target).map_err(|e| e.to_string()))
        .collect()
}
