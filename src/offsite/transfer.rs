//! Moving one file's bytes to or from the target, hashing them on the way.
//!
//! Local reads and writes happen on a blocking thread and meet the async S3 side through a
//! channel of one part: with `concurrency` parts in flight that bounds memory to
//! `part_size * (concurrency + 2)` whatever the file's size.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use object_store::path::Path as Key;
use object_store::{ObjectStoreExt, PutPayload, WriteMultipart};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{OffsiteError, Remote};
use crate::jobs::backup::manifest::FileSum;
use crate::jobs::backup::stream::hex;

/// What was read or written: size and SHA-256 (hex).
#[derive(Debug, PartialEq, Eq)]
pub struct Sum {
    pub bytes: u64,
    pub sha256: String,
}

impl Sum {
    /// An error unless this matches the manifest's entry.
    fn check(
        &self,
        remote: &Remote,
        key: &Key,
        want: &FileSum,
        what: &str,
    ) -> Result<(), OffsiteError> {
        if self.bytes != want.bytes || self.sha256 != want.sha256 {
            return Err(remote.mismatch(
                key,
                format!(
                    "{what} {} bytes with SHA-256 {}, the manifest says {} bytes with {}",
                    self.bytes, self.sha256, want.bytes, want.sha256
                ),
            ));
        }
        Ok(())
    }
}

/// Uploads `local` to `key`: one PUT when it fits in a part, else a multipart upload. The
/// bytes read must match `want` (what was verified) before the upload is completed; on any
/// error or a cancel the multipart upload is aborted, so nothing half-written is visible.
pub async fn upload(
    remote: &Remote,
    local: &Path,
    key: &Key,
    want: &FileSum,
    cancel: &CancellationToken,
) -> Result<(), OffsiteError> {
    let part = part_size(remote.target.part_size, want.bytes);
    let (tx, mut rx) = mpsc::channel::<std::io::Result<Bytes>>(1);
    let path = local.to_owned();
    let reader = tokio::task::spawn_blocking(move || read_parts(&path, part, &tx));
    let local_err = |e: std::io::Error| {
        if cancel.is_cancelled() {
            return OffsiteError::Cancelled;
        }
        OffsiteError::Other {
            target: remote.name().to_owned(),
            message: format!("reading {}: {e}", local.display()),
        }
    };
    let first = next(&mut rx, cancel)
        .await
        .map_err(local_err)?
        .unwrap_or_default();
    let second = next(&mut rx, cancel).await.map_err(local_err)?;
    let Some(second) = second else {
        let sum = join(reader).await.map_err(local_err)?;
        sum.check(remote, key, want, "the local file now has")?;
        let put = remote.store.put(key, PutPayload::from(first));
        return tokio::select! {
            r = put => r.map(drop).map_err(|e| remote.err("put", key, e)),
            () = cancel.cancelled() => Err(OffsiteError::Cancelled),
        };
    };
    let upload = remote
        .store
        .put_multipart(key)
        .await
        .map_err(|e| remote.err("starting the multipart upload of", key, e))?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, part);
    let result = async {
        writer.put(first);
        writer.put(second);
        while let Some(chunk) = next(&mut rx, cancel).await.map_err(local_err)? {
            tokio::select! {
                r = writer.wait_for_capacity(remote.target.concurrency) => {
                    r.map_err(|e| remote.err("uploading a part of", key, e))?;
                }
                () = cancel.cancelled() => return Err(OffsiteError::Cancelled),
            }
            writer.put(chunk);
        }
        join(reader).await.map_err(local_err)
    }
    .await;
    let sum = match result.and_then(|sum| {
        sum.check(remote, key, want, "the local file now has")
            .map(|()| sum)
    }) {
        Ok(sum) => sum,
        Err(e) => {
            // Bounded: with the target down, an abort would otherwise wait out every retry.
            let _ = tokio::time::timeout(ABORT_TIMEOUT, writer.abort()).await;
            return Err(e);
        }
    };
    tracing::debug!(key = %key, bytes = sum.bytes, "uploaded in parts");
    tokio::select! {
        r = writer.finish() => r.map(drop).map_err(|e| remote.err("completing the multipart upload of", key, e)),
        () = cancel.cancelled() => Err(OffsiteError::Cancelled),
    }
}

/// How long an abort of a failed multipart upload may take; the server's own lifecycle rules
/// clear what is left after that (or after a crash).
const ABORT_TIMEOUT: Duration = Duration::from_secs(10);

/// S3 allows at most 10,000 parts: a file too big for `configured` parts gets bigger ones
/// (whole MiB, with room to spare) instead of failing after uploading everything.
fn part_size(configured: usize, bytes: u64) -> usize {
    const MIB: u64 = 1024 * 1024;
    let needed = bytes.div_ceil(9_000).div_ceil(MIB) * MIB;
    configured.max(usize::try_from(needed).unwrap_or(usize::MAX))
}

/// The reader's next chunk; `None` at the end of the file.
async fn next(
    rx: &mut mpsc::Receiver<std::io::Result<Bytes>>,
    cancel: &CancellationToken,
) -> std::io::Result<Option<Bytes>> {
    tokio::select! {
        chunk = rx.recv() => chunk.transpose(),
        () = cancel.cancelled() => Err(std::io::Error::other("cancelled")),
    }
}

/// Reads `path` in `part`-sized chunks into `tx`, hashing as it goes.
fn read_parts(
    path: &Path,
    part: usize,
    tx: &mpsc::Sender<std::io::Result<Bytes>>,
) -> std::io::Result<Sum> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    loop {
        let mut buf = vec![0u8; part];
        let mut filled = 0;
        while filled < part {
            match file.read(&mut buf[filled..])? {
                0 => break,
                n => filled += n,
            }
        }
        if filled == 0 {
            break;
        }
        buf.truncate(filled);
        hasher.update(&buf);
        total += filled as u64;
        if tx.blocking_send(Ok(Bytes::from(buf))).is_err() {
            return Err(std::io::Error::other("upload ended early"));
        }
        if filled < part {
            break;
        }
    }
    Ok(Sum {
        bytes: total,
        sha256: hex(&hasher.finalize()),
    })
}

async fn join(task: tokio::task::JoinHandle<std::io::Result<Sum>>) -> std::io::Result<Sum> {
    task.await.map_err(std::io::Error::other)?
}

/// Reads `key` back and checks its size and SHA-256 against `want`.
pub async fn read_back(
    remote: &Remote,
    key: &Key,
    want: &FileSum,
    cancel: &CancellationToken,
) -> Result<(), OffsiteError> {
    let sum = fetch(remote, key, want, None, cancel).await?;
    sum.check(remote, key, want, "the remote copy has")
}

/// Downloads `key` into a new file `local` (mode 0600, fsynced) and checks it against `want`.
pub async fn download(
    remote: &Remote,
    key: &Key,
    local: &Path,
    want: &FileSum,
    cancel: &CancellationToken,
) -> Result<(), OffsiteError> {
    let sum = fetch(remote, key, want, Some(local.to_owned()), cancel).await?;
    sum.check(remote, key, want, "the downloaded file has")
}

/// Reads `key` in part-sized ranges, hashing it, into `local` when given.
async fn fetch(
    remote: &Remote,
    key: &Key,
    want: &FileSum,
    local: Option<PathBuf>,
    cancel: &CancellationToken,
) -> Result<Sum, OffsiteError> {
    let shown = local.clone();
    let written = stream_object(remote, key, want, cancel, move |rx| {
        write_parts(local.as_deref(), rx)
    })
    .await?;
    written.map_err(|e| OffsiteError::Other {
        target: remote.name().to_owned(),
        message: match shown {
            Some(p) => format!("writing {}: {e}", p.display()),
            None => format!("hashing {key}: {e}"),
        },
    })
}

/// Streams `key` in part-sized ranges into `consume`, run on a blocking thread with the
/// receiving end of a channel of one part. One request per range gives each its own timeout
/// and retries, so no object is too big to read; the size is checked against `want` first, so
/// an object bigger than the manifest says is never read. A download that fails ends the
/// channel early and is the error returned, whatever `consume` made of the short stream; a
/// consumer that stops early (drops the receiver) ends the download, and its result is
/// returned.
pub(super) async fn stream_object<T: Send + 'static>(
    remote: &Remote,
    key: &Key,
    want: &FileSum,
    cancel: &CancellationToken,
    consume: impl FnOnce(&mut mpsc::Receiver<Bytes>) -> T + Send + 'static,
) -> Result<T, OffsiteError> {
    let size = head_checked(remote, key, want, cancel).await?;
    let part = part_size(remote.target.part_size, size) as u64;
    let (tx, mut rx) = mpsc::channel::<Bytes>(1);
    let consumer = tokio::task::spawn_blocking(move || consume(&mut rx));
    let streamed = async {
        let mut offset = 0;
        while offset < size {
            let end = (offset + part).min(size);
            let chunk = tokio::select! {
                r = remote.store.get_range(key, offset..end) => r.map_err(|e| remote.err("reading", key, e))?,
                () = cancel.cancelled() => return Err(OffsiteError::Cancelled),
            };
            if chunk.len() as u64 != end - offset {
                return Err(remote.mismatch(key, format!("bytes {offset}..{end} came back short")));
            }
            // A consumer that stopped (a disk error) says why in its result.
            if tx.send(chunk).await.is_err() {
                return Ok(());
            }
            offset = end;
        }
        Ok(())
    }
    .await;
    drop(tx);
    let consumed = consumer.await.map_err(|e| OffsiteError::Other {
        target: remote.name().to_owned(),
        message: format!("reading {key}: {e}"),
    });
    streamed?;
    consumed
}

/// The size of `key` from a HEAD request, checked against the manifest's `want`.
pub(super) async fn head_checked(
    remote: &Remote,
    key: &Key,
    want: &FileSum,
    cancel: &CancellationToken,
) -> Result<u64, OffsiteError> {
    let meta = tokio::select! {
        r = remote.store.head(key) => r.map_err(|e| remote.err("head", key, e))?,
        () = cancel.cancelled() => return Err(OffsiteError::Cancelled),
    };
    if meta.size != want.bytes {
        return Err(remote.mismatch(
            key,
            format!(
                "the remote copy has {} bytes, the manifest says {}",
                meta.size, want.bytes
            ),
        ));
    }
    Ok(meta.size)
}

fn write_parts(local: Option<&Path>, rx: &mut mpsc::Receiver<Bytes>) -> std::io::Result<Sum> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = local
        .map(|p| {
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(p)
        })
        .transpose()?;
    let mut hasher = Sha256::new();
    let mut total = 0u64;
    while let Some(chunk) = rx.blocking_recv() {
        hasher.update(&chunk);
        total += chunk.len() as u64;
        if let Some(f) = file.as_mut() {
            f.write_all(&chunk)?;
        }
    }
    if let Some(f) = file {
        f.sync_all()?;
    }
    Ok(Sum {
        bytes: total,
        sha256: hex(&hasher.finalize()),
    })
}
