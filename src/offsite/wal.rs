//! What a WAL archive's copy at a target says of itself, beside its segments under
//! `<prefix>/wal/<job>/`: `index.jsonl`, the lines (as in the local index) of the segments
//! copied there, and `pruned.json`, the `offsite-<target>.pruned` mark of the prune job. Each is
//! a small object written whole by one PUT (atomic per object at S3), so a reader sees the old
//! one or the new one. A restore from that target reads them instead of the local archive.

use std::path::Path;

use object_store::path::Path as Key;
use object_store::{ObjectStoreExt, PutPayload};

use super::{OffsiteError, Remote};

pub const INDEX: &str = "index.jsonl";
pub const PRUNED: &str = "pruned.json";

/// The largest such object read back (an index line is about 300 bytes).
const MAX_OBJECT: u64 = 256 * 1024 * 1024;

/// `<prefix>/wal/<job>/<file>`.
pub fn key(remote: &Remote, job: &str, file: &str) -> Key {
    remote.key("wal", &format!("{job}/{file}"))
}

/// Writes `bytes` as `<prefix>/wal/<job>/<file>`, whole.
pub async fn put(
    remote: &Remote,
    job: &str,
    file: &str,
    bytes: Vec<u8>,
) -> Result<(), OffsiteError> {
    let key = key(remote, job, file);
    remote
        .store
        .put(&key, PutPayload::from(bytes))
        .await
        .map(|_| ())
        .map_err(|e| remote.err("put", &key, e))
}

/// Puts the local file `path` as `<prefix>/wal/<job>/<file>`.
pub async fn put_file(remote: &Remote, job: &str, file: &str, path: &Path) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    put(remote, job, file, bytes)
        .await
        .map_err(|e| e.to_string())
}

/// The object `<prefix>/wal/<job>/<file>`, or none when it is not there.
pub async fn get(remote: &Remote, job: &str, file: &str) -> Result<Option<Vec<u8>>, OffsiteError> {
    let key = key(remote, job, file);
    let got = match remote.store.get(&key).await {
        Ok(got) => got,
        Err(object_store::Error::NotFound { .. }) => return Ok(None),
        Err(e) => return Err(remote.err("get", &key, e)),
    };
    if got.meta.size > MAX_OBJECT {
        return Err(remote.mismatch(
            &key,
            format!(
                "is {} bytes, more than an index or mark can be",
                got.meta.size
            ),
        ));
    }
    let bytes = got
        .bytes()
        .await
        .map_err(|e| remote.err("reading", &key, e))?;
    Ok(Some(bytes.to_vec()))
}
