//! The remote catalog: the backups at a target, read from the bucket every time, and their
//! removal and re-verification.
//!
//! A remote backup is a prefix `<prefix>/<id>/` holding a `manifest.json` that parses; a
//! prefix without one is an unfinished copy (or an interrupted removal). Removal deletes the
//! manifest first, so a crash mid-removal leaves an unfinished copy, never a backup with
//! missing files.

use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt};
use tokio_util::sync::CancellationToken;

use super::{OffsiteError, Remote, safe_relative, transfer};
use crate::jobs::backup::manifest::{MANIFEST, Manifest};
use crate::jobs::catalog::{Entry, State};

/// The largest manifest read from a target.
const MAX_MANIFEST: u64 = 16 * 1024 * 1024;

/// What a listing found.
#[derive(Debug, Default)]
pub struct RemoteCatalog {
    /// Backups with a manifest (verified, or unreadable when it does not parse), oldest first.
    pub entries: Vec<Entry>,
    /// Prefixes without a manifest.
    pub unfinished: Vec<Unfinished>,
}

#[derive(Debug, Clone)]
pub struct Unfinished {
    pub id: String,
    /// The newest object under it.
    pub modified: DateTime<Utc>,
    pub bytes: u64,
}

pub async fn list(remote: &Remote) -> Result<RemoteCatalog, OffsiteError> {
    let root = remote.root();
    let shown = root.clone().unwrap_or_default();
    let listing = remote
        .store
        .list_with_delimiter(root.as_ref())
        .await
        .map_err(|e| remote.err("list", &shown, e))?;
    let mut catalog = RemoteCatalog::default();
    // Only names atpred makes: anything else under the prefix is not ours to list or remove.
    let mut ids: Vec<String> = listing
        .common_prefixes
        .iter()
        .filter_map(|p| {
            p.filename()
                .filter(|n| super::job_of_id(n).is_some())
                .map(str::to_owned)
        })
        .collect();
    ids.sort();
    for id in ids {
        match read_manifest(remote, &id).await {
            Ok(m) => catalog.entries.push(Entry {
                pin: super::pins::get(remote, &id).await?,
                id: id.clone(),
                state: if m.verified() {
                    State::Verified
                } else {
                    State::Unreadable
                },
                problem: (!m.verified()).then(|| "the manifest says verification failed".into()),
                manifest: Some(m),
            }),
            Err(e) if e.is_not_found() => {
                let objects: Vec<_> = remote
                    .store
                    .list(Some(&remote.backup(&id)))
                    .try_collect()
                    .await
                    .map_err(|e| remote.err("list", &remote.backup(&id), e))?;
                let manifest = remote.key(&id, MANIFEST);
                if objects.iter().any(|o| o.location == manifest) {
                    // Listed but not found: a store that is not consistent yet. Say so rather
                    // than call a committed backup unfinished.
                    return Err(remote.mismatch(
                        &manifest,
                        "is listed but cannot be read; try again later".into(),
                    ));
                }
                catalog.unfinished.push(Unfinished {
                    id,
                    modified: objects
                        .iter()
                        .map(|o| o.last_modified)
                        .max()
                        .unwrap_or_else(Utc::now),
                    bytes: objects.iter().map(|o| o.size).sum(),
                });
            }
            Err(OffsiteError::Mismatch { message, .. }) => catalog.entries.push(Entry {
                pin: super::pins::get(remote, &id).await?,
                id,
                state: State::Unreadable,
                manifest: None,
                problem: Some(message),
            }),
            // A target that does not answer: the listing is incomplete, so say so.
            Err(e) => return Err(e),
        }
    }
    Ok(catalog)
}

/// The manifest of remote backup `id`, checked as a local one is, and naming `id`.
pub async fn read_manifest(remote: &Remote, id: &str) -> Result<Manifest, OffsiteError> {
    let key = remote.key(id, MANIFEST);
    let got = remote
        .store
        .get(&key)
        .await
        .map_err(|e| remote.err("get", &key, e))?;
    // Ours are a few KiB (a row count per table); a bucket others can write is no reason to
    // read an unbounded object into memory.
    if got.meta.size > MAX_MANIFEST {
        return Err(remote.mismatch(&key, format!("is {} bytes, not a manifest", got.meta.size)));
    }
    let bytes = got
        .bytes()
        .await
        .map_err(|e| remote.err("reading", &key, e))?;
    let m = Manifest::parse(&bytes, key.as_ref()).map_err(|e| remote.mismatch(&key, e))?;
    if m.id != id {
        return Err(remote.mismatch(&key, format!("names backup {:?}, not {id:?}", m.id)));
    }
    if let Some(bad) = m.files.iter().find(|f| safe_relative(&f.path).is_none()) {
        return Err(remote.mismatch(
            &key,
            format!("lists {:?}, not a path inside the backup", bad.path),
        ));
    }
    Ok(m)
}

/// Reads every file of remote backup `id` back and checks it against its manifest.
pub async fn verify(
    remote: &Remote,
    id: &str,
    cancel: &CancellationToken,
) -> Result<Manifest, OffsiteError> {
    let m = read_manifest(remote, id).await?;
    for f in &m.files {
        let key = remote.key(id, &f.path);
        match transfer::read_back(remote, &key, f, cancel).await {
            Err(e) if e.is_not_found() => {
                return Err(remote.mismatch(&key, "is missing at the target".into()));
            }
            other => other?,
        }
    }
    Ok(m)
}

/// Removes remote backup (or unfinished copy) `id`: the manifest first, then the rest.
pub async fn remove(remote: &Remote, id: &str) -> Result<u64, OffsiteError> {
    let manifest = remote.key(id, MANIFEST);
    match remote.store.delete(&manifest).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
        Err(e) => return Err(remote.err("delete", &manifest, e)),
    }
    let prefix = remote.backup(id);
    let objects: Vec<_> = remote
        .store
        .list(Some(&prefix))
        .try_collect()
        .await
        .map_err(|e| remote.err("list", &prefix, e))?;
    let mut freed = 0;
    for o in objects {
        delete(remote, &o.location).await?;
        freed += o.size;
    }
    Ok(freed)
}

/// Deletes the object `key`; one already gone is no error.
pub async fn delete(remote: &Remote, key: &Key) -> Result<(), OffsiteError> {
    match remote.store.delete(key).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(remote.err("delete", key, e)),
    }
}

/// Every object under `prefix` (such as a WAL archive's `<prefix>/wal/<job>`).
pub async fn list_under(
    remote: &Remote,
    prefix: &Key,
) -> Result<Vec<object_store::ObjectMeta>, OffsiteError> {
    remote
        .store
        .list(Some(prefix))
        .try_collect()
        .await
        .map_err(|e| remote.err("list", prefix, e))
}
