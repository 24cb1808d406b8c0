//! Pins at an offsite target: `<prefix>/<id>/pin.json` beside the copy, the same bytes as the
//! local [`crate::pins`] file. It is put only beside a committed copy (after its manifest), so
//! it never makes a prefix look like an unfinished copy of its own.

use std::path::Path;

use chrono::Utc;
use object_store::{ObjectStoreExt, PutPayload};

use super::{OffsiteError, Remote};
use crate::pins::{PIN_FILE, Pin};

/// The largest pin read from a target.
const MAX_PIN: u64 = 64 * 1024;

/// The pin of remote backup `id`, if any. An object that is there but unreadable still pins;
/// a target that does not answer is an error (the caller then removes nothing).
pub async fn get(remote: &Remote, id: &str) -> Result<Option<Pin>, OffsiteError> {
    let key = remote.key(id, PIN_FILE);
    let got = match remote.store.get(&key).await {
        Ok(got) => got,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(remote.err("get", &key, e)),
    };
    if got.meta.size > MAX_PIN {
        return Ok(Some(Pin::unreadable(
            &format!("{} bytes", got.meta.size),
            Utc::now(),
        )));
    }
    let bytes = got
        .bytes()
        .await
        .map_err(|e| remote.err("reading", &key, e))?;
    Ok(Some(Pin::parse(&bytes, Utc::now())))
}

/// Puts `pin` beside remote backup `id`.
pub async fn put(remote: &Remote, id: &str, pin: &Pin) -> Result<(), OffsiteError> {
    let key = remote.key(id, PIN_FILE);
    remote
        .store
        .put(&key, PutPayload::from(pin.to_bytes()))
        .await
        .map(|_| ())
        .map_err(|e| remote.err("put", &key, e))
}

/// Removes the pin of remote backup `id` (none there is fine).
pub async fn delete(remote: &Remote, id: &str) -> Result<(), OffsiteError> {
    let key = remote.key(id, PIN_FILE);
    match remote.store.delete(&key).await {
        Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
        Err(e) => Err(remote.err("delete", &key, e)),
    }
}

/// After a copy is committed: carries the local pin of the backup folder `dir` over, so a
/// backup pinned before its copy finished is pinned at the target too.
pub async fn push_local(remote: &Remote, dir: &Path, id: &str) -> Result<(), OffsiteError> {
    match crate::pins::read(dir) {
        Some(pin) => put(remote, id, &pin).await,
        None => Ok(()),
    }
}
