//! An offsite object as a blocking [`Read`], so the byte pipelines that read a local backup
//! (hash, age decrypt, zstd decode: [`crate::jobs::backup::stream::read_from`]) read a remote
//! copy the same way, in one pass, without storing it first.
//!
//! The object comes in part-sized ranged GETs ([`transfer::stream_object`]: the size checked
//! against the manifest before anything is read, each request with its own timeout and
//! retries) over a channel of one part, so memory stays at about two parts whatever the size.

use std::io::{self, Read};

use bytes::{Buf, Bytes};
use object_store::path::Path as Key;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{OffsiteError, Remote, transfer};
use crate::jobs::backup::manifest::FileSum;

/// The bytes of one object, in order, as they arrive.
pub struct ObjectReader<'a> {
    parts: &'a mut mpsc::Receiver<Bytes>,
    current: Bytes,
    /// What the manifest says the object holds, and what came so far: a stream that ends
    /// short (the download failed) is an error here, never a clean end of file.
    expected: u64,
    read: u64,
}

impl Read for ObjectReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.parts.blocking_recv() {
                Some(part) => self.current = part,
                None if self.read == self.expected => return Ok(0),
                None => {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "the download stopped after {} of {} bytes",
                            self.read, self.expected
                        ),
                    ));
                }
            }
        }
        let n = buf.len().min(self.current.len());
        self.current.copy_to_slice(&mut buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

/// Runs `consume` on a blocking thread with the object `key` (described by the manifest's
/// `want`) as a reader. A failed download is the error returned (the consumer's result is then
/// dropped: it read a short stream); otherwise the consumer's result.
pub async fn read_with<T: Send + 'static>(
    remote: &Remote,
    key: &Key,
    want: &FileSum,
    cancel: &CancellationToken,
    consume: impl FnOnce(ObjectReader<'_>) -> T + Send + 'static,
) -> Result<T, OffsiteError> {
    let expected = want.bytes;
    transfer::stream_object(remote, key, want, cancel, move |parts| {
        consume(ObjectReader {
            parts,
            current: Bytes::new(),
            expected,
            read: 0,
        })
    })
    .await
}

/// The first `n` bytes of `key` (a header to try a key on before reading the rest).
pub async fn read_head(
    remote: &Remote,
    key: &Key,
    n: u64,
    cancel: &CancellationToken,
) -> Result<Bytes, OffsiteError> {
    use object_store::ObjectStoreExt;
    tokio::select! {
        r = remote.store.get_range(key, 0..n) => r.map_err(|e| remote.err("reading", key, e)),
        () = cancel.cancelled() => Err(OffsiteError::Cancelled),
    }
}

/// That `key` is there with the size `want` says, without reading it (a dry run's check).
pub async fn check_present(
    remote: &Remote,
    key: &Key,
    want: &FileSum,
    cancel: &CancellationToken,
) -> Result<(), OffsiteError> {
    transfer::head_checked(remote, key, want, cancel)
        .await
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reader_over(parts: &[&'static [u8]], expected: u64) -> io::Result<Vec<u8>> {
        let (tx, mut rx) = mpsc::channel(parts.len().max(1));
        for p in parts {
            tx.try_send(Bytes::from_static(p)).unwrap();
        }
        drop(tx);
        let mut reader = ObjectReader {
            parts: &mut rx,
            current: Bytes::new(),
            expected,
            read: 0,
        };
        let mut out = Vec::new();
        reader.read_to_end(&mut out).map(|_| out)
    }

    #[test]
    fn reads_the_parts_in_order() {
        let out = reader_over(&[b"abc", b"", b"defg"], 7).unwrap();
        assert_eq!(out, b"abcdefg");
    }

    #[test]
    fn a_stream_that_ends_short_is_an_error_not_an_end() {
        let e = reader_over(&[b"abc"], 7).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::UnexpectedEof);
        assert!(e.to_string().contains("3 of 7 bytes"), "{e}");
    }
}
