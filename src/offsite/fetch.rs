//! `atprectl backups fetch ID`: a remote backup brought back, every file checked against its
//! manifest on the way, its pin (if any) with it, published atomically like a new backup.
//!
//! Into backup-dir (the default) the copy becomes a catalog entry again, byte for byte as
//! stored. Into another folder with an age identity, encrypted files are decrypted (their
//! checksum still checked on the encrypted bytes) and only the plaintext and the manifest are
//! kept: ready for `pg_restore`, but not a catalog entry.

use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use serde::Serialize;
use tokio_util::sync::CancellationToken;

use super::catalog::read_manifest;
use super::{OffsiteError, Remote, transfer};
use crate::jobs::backup::manifest::MANIFEST;
use crate::jobs::backup::partial::Partial;
use crate::jobs::backup::stream;
use crate::jobs::catalog;

#[derive(Debug, Clone, Serialize)]
pub struct Fetched {
    pub id: String,
    /// The published folder.
    pub path: PathBuf,
    pub bytes: u64,
    pub decrypted: bool,
}

pub async fn fetch(
    remote: &Remote,
    id: &str,
    dest: &Path,
    identity: Option<&Path>,
    cancel: &CancellationToken,
) -> Result<Fetched, OffsiteError> {
    let other = |message: String| OffsiteError::Other {
        target: remote.name().to_owned(),
        message,
    };
    let manifest = read_manifest(remote, id).await?;
    if identity.is_some() && manifest.encryption.is_none() {
        return Err(other(format!(
            "{id} is not encrypted: fetch it without --identity"
        )));
    }
    catalog::ensure_dir(dest).map_err(|e| other(e.to_string()))?;
    let partial = Partial::create(dest, id)
        .map_err(|e| other(format!("creating {}/.partial-{id}: {e}", dest.display())))?;
    let mut bytes = 0;
    for f in &manifest.files {
        let local = partial.path().join(&f.path);
        if let Some(parent) = local.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| other(format!("creating {}: {e}", parent.display())))?;
        }
        let key = remote.key(id, &f.path);
        match transfer::download(remote, &key, &local, f, cancel).await {
            Err(e) if e.is_not_found() => {
                return Err(remote.mismatch(&key, "is missing at the target".into()));
            }
            other => other?,
        }
        bytes += f.bytes;
    }
    // The pin travels back with the copy: a backup pinned at the target stays pinned here.
    if let Some(pin) = super::pins::get(remote, id).await? {
        crate::pins::write(partial.path(), &pin).map_err(|e| other(e.to_string()))?;
    }
    match identity {
        None => manifest.write(partial.path()),
        Some(identity) => {
            let (dir, m, key) = (
                partial.path().to_owned(),
                manifest.clone(),
                identity.to_owned(),
            );
            tokio::task::spawn_blocking(move || decrypt_all(&dir, &m, &key))
                .await
                .map_err(|e| other(e.to_string()))?
                .map_err(other)?;
            let json = serde_json::to_vec_pretty(&manifest).map_err(std::io::Error::other);
            json.and_then(|j| {
                crate::publish::write_atomic(&partial.path().join(MANIFEST), &j, 0o600)
            })
        }
    }
    .map_err(|e| other(format!("writing the manifest of {id}: {e}")))?;
    partial
        .publish()
        .map_err(|e| other(format!("publishing {}/{id}: {e}", dest.display())))?;
    tracing::info!(
        backup = id,
        offsite = remote.name(),
        "fetched {id} from {} into {}",
        remote.name(),
        dest.display()
    );
    Ok(Fetched {
        id: id.to_owned(),
        path: dest.join(id),
        bytes,
        decrypted: identity.is_some(),
    })
}

/// Replaces every `*.age` file in `dir` by its plaintext, checking the encrypted bytes'
/// checksum as they are read.
fn decrypt_all(
    dir: &Path,
    manifest: &crate::jobs::backup::manifest::Manifest,
    identity: &Path,
) -> Result<(), String> {
    crate::secret::check_private_file(identity)?;
    let ids = crate::jobs::backup::verify::load_identities(identity)?;
    for f in manifest.files.iter().filter(|f| f.path.ends_with(".age")) {
        let encrypted = dir.join(&f.path);
        let plain = dir.join(f.path.trim_end_matches(".age"));
        let mut out = std::fs::File::options()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&plain)
            .map_err(|e| format!("creating {}: {e}", plain.display()))?;
        let read = stream::read_stream(&encrypted, false, Some(&ids), Some(&mut out))
            .map_err(|e| format!("reading {}: {e}", encrypted.display()))?;
        if read.written.sha256 != f.sha256 {
            return Err(format!("{}: checksum changed while decrypting", f.path));
        }
        if let Some(e) = read.decode_error {
            return Err(format!(
                "decrypting {} with {}: {e}",
                f.path,
                identity.display()
            ));
        }
        out.sync_all()
            .map_err(|e| format!("writing {}: {e}", plain.display()))?;
        std::fs::remove_file(&encrypted)
            .map_err(|e| format!("removing {}: {e}", encrypted.display()))?;
    }
    Ok(())
}
