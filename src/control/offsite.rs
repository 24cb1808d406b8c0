//! Handlers of the requests on an offsite target: `backups` with `remote`, `backup_verify`
//! with `remote`, and `backup_fetch`.

use std::path::Path;

use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::backups::error;
use super::peer::Access;
use crate::config::{Config, OffsiteTarget};
use crate::offsite::destination::{self, Destination, DestinationError};
use crate::offsite::{self, OffsiteError, Remote};
use crate::protocol::{BackupSummary, ErrorCode, Response};

/// The target a request names, or the only one configured.
fn target<'a>(config: &'a Config, name: Option<&str>) -> Result<&'a OffsiteTarget, Box<Response>> {
    let names = || {
        config
            .offsite
            .keys()
            .map(String::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    };
    let found = match name {
        Some(n) => config.offsite.get(n).ok_or_else(|| {
            error(
                ErrorCode::BadRequest,
                format!("no offsite target {n:?} (configured: {})", names()),
            )
        }),
        None if config.offsite.len() == 1 => config
            .offsite
            .values()
            .next()
            .ok_or_else(|| error(ErrorCode::Internal, "no target".into())),
        None if config.offsite.is_empty() => Err(error(
            ErrorCode::BadRequest,
            "no [offsite.NAME] target is configured".into(),
        )),
        None => Err(error(
            ErrorCode::BadRequest,
            format!(
                "several offsite targets ({}): name one with --target",
                names()
            ),
        )),
    };
    found.map_err(Box::new)
}

fn open(config: &Config, name: Option<&str>) -> Result<Remote, Box<Response>> {
    let t = target(config, name)?;
    Remote::open(t).map_err(|e| Box::new(error(ErrorCode::Internal, e.to_string())))
}

fn failed(e: &OffsiteError) -> Response {
    // Unknown only when the commit marker is missing; any other 404 (a data object, the
    // bucket) is damage or a wrong configuration, not a wrong id.
    let missing_manifest = matches!(e, OffsiteError::Store { key, not_found: true, .. }
        if key.ends_with(crate::jobs::backup::manifest::MANIFEST));
    let code = if missing_manifest {
        ErrorCode::UnknownBackup
    } else {
        ErrorCode::Internal
    };
    error(code, e.to_string())
}

pub async fn list(config: &Config, name: Option<&str>) -> Response {
    let remote = match open(config, name) {
        Ok(r) => r,
        Err(response) => return *response,
    };
    let listing = match offsite::catalog::list(&remote).await {
        Ok(l) => l,
        Err(e) => return failed(&e),
    };
    let mut backups: Vec<BackupSummary> = listing
        .entries
        .into_iter()
        .map(|e| super::backups::summary(e, Some(remote.name().to_owned())))
        .collect();
    backups.extend(listing.unfinished.into_iter().map(|u| BackupSummary {
        id: u.id,
        state: "unfinished".into(),
        job: None,
        source: None,
        method: None,
        lsn: None,
        database: None,
        started: None,
        bytes: Some(u.bytes),
        encrypted: false,
        verified_level: None,
        problem: Some(format!("no manifest (last written {})", u.modified)),
        offsite: Some(remote.name().to_owned()),
        pinned: None,
    }));
    backups.sort_by(|a, b| a.id.cmp(&b.id));
    Response::Backups { backups }
}

/// Refuses anything that is not an id atpred makes (no `/`, no `..`, no other names).
fn bad_id(id: &str) -> Option<Response> {
    offsite::job_of_id(id).is_none().then(|| {
        error(
            ErrorCode::UnknownBackup,
            format!("{id:?} is not a backup id (YYYYMMDDTHHMMSSZ-JOB)"),
        )
    })
}

pub async fn verify(config: &Config, id: &str, name: Option<&str>) -> Response {
    if let Some(refused) = bad_id(id) {
        return refused;
    }
    let remote = match open(config, name) {
        Ok(r) => r,
        Err(response) => return *response,
    };
    tracing::info!(
        backup = id,
        offsite = remote.name(),
        "reading the copy of {id} at {} back on request",
        remote.name()
    );
    let cancel = CancellationToken::new();
    let (passed, details) = match offsite::catalog::verify(&remote, id, &cancel).await {
        Ok(m) => (
            true,
            format!(
                "{} file(s) read back from {}; sizes and checksums match",
                m.files.len(),
                remote.name()
            ),
        ),
        Err(e) if e.is_not_found() => return failed(&e),
        Err(e) => {
            tracing::error!(
                backup = id,
                offsite = remote.name(),
                "the copy of {id} at {} FAILED verification: {e}",
                remote.name()
            );
            (false, e.to_string())
        }
    };
    Response::Verified {
        id: id.to_owned(),
        verification: json!({ "level": "checksum", "target": remote.name(), "details": details,
            "outcome": if passed { "passed" } else { "failed" } }),
        passed,
    }
}

/// `backups fetch`: `--to` only inside backup-dir or `fetch-dirs`, plaintext only into a
/// fresh folder ([`offsite::destination`]), removed again if the fetch fails; `--identity`
/// only from root and the daemon's user ([`super::identity`]).
pub async fn fetch(
    config: &Config,
    id: &str,
    to: Option<&Path>,
    identity: Option<&Path>,
    name: Option<&str>,
    access: Access,
) -> Response {
    if let Some(refused) = bad_id(id) {
        return refused;
    }
    if let Err((code, message)) = super::identity::check(access, identity) {
        return error(code, message);
    }
    if identity.is_some() && to.is_none() {
        return error(
            ErrorCode::BadRequest,
            "--identity decrypts, so the copy cannot go back into backup-dir: give --to DIR".into(),
        );
    }
    let remote = match open(config, name) {
        Ok(r) => r,
        Err(response) => return *response,
    };
    let dest = match to {
        None => Destination {
            dir: config.daemon.backup_dir.clone(),
            fresh: false,
        },
        Some(to) => match destination::prepare(&config.daemon, to, identity.is_some()) {
            Ok(d) => d,
            Err(e @ DestinationError::NotPlain(_)) => {
                return error(ErrorCode::BadRequest, e.to_string());
            }
            Err(e @ DestinationError::Io { .. }) => {
                return error(ErrorCode::Internal, e.to_string());
            }
            Err(e) => return error(ErrorCode::NotPermitted, e.to_string()),
        },
    };
    let cancel = CancellationToken::new();
    match offsite::fetch::fetch(&remote, id, &dest.dir, identity, &cancel).await {
        Ok(f) => Response::Fetched {
            id: f.id,
            path: f.path.display().to_string(),
            bytes: f.bytes,
            decrypted: f.decrypted,
        },
        Err(e) => {
            dest.discard();
            failed(&e)
        }
    }
}
