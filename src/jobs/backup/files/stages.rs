//! The hashing and writing stages of archiving, each on its own thread so that reading,
//! SHA-256 and feeding zstd overlap on the cores zstd's workers leave: the reader
//! ([`super::archive`]) sends [`Piece`]s to [`hash`], which hashes each file's chunks and
//! passes them on, in order, to [`write`], which lays them out as tar entries. Chunks go back
//! to the reader for reuse, so memory stays a few MiB whatever the tree.

use std::io::{self, Write};
use std::sync::mpsc::{Receiver, SyncSender};

use sha2::{Digest, Sha256};

use super::pax;
use super::tree::Entry;
use crate::jobs::backup::stream::hex;

/// What travels from the reader through the hasher to the writer, in archive order.
pub enum Piece {
    /// A folder or a symlink: an entry without content.
    Bare(Entry),
    /// A regular file's entry, its size fixed when it was opened: `Data` of exactly that
    /// many bytes follows, then `End`.
    File(Entry),
    Data(Vec<u8>),
    /// The end of a file: whether it changed while it was read, and its SHA-256 (set by
    /// [`hash`]).
    End {
        changed: bool,
        sha256: Option<String>,
    },
    /// Every entry was sent: the archive can be closed. Without it a closed channel means
    /// the reader stopped (cancelled, or a read failed), and the archive is not finished.
    Done,
}

/// What the writer put into the archive.
#[derive(Default)]
pub struct Laid {
    pub entries: Vec<Entry>,
    pub changed: Vec<String>,
    pub tar_bytes: u64,
}

/// Hashes each file's chunks as they pass from `from` to `to`; stops when either side is gone.
pub fn hash(from: Receiver<Piece>, to: SyncSender<Piece>) {
    let mut hasher = Sha256::new();
    for mut piece in from {
        match &mut piece {
            Piece::File(_) => hasher = Sha256::new(),
            Piece::Data(chunk) => hasher.update(chunk),
            Piece::End { sha256, .. } => *sha256 = Some(hex(&hasher.finalize_reset())),
            Piece::Bare(_) | Piece::Done => {}
        }
        if to.send(piece).is_err() {
            return;
        }
    }
}

/// Writes the pieces from `from` as a tar into `out`, handing each chunk back through
/// `spent`. An error of `out` ends it at once (dropping `from` stops the stages before it); so
/// does the channel closing before [`Piece::Done`], with an error that only says so: the
/// reader's own error is the one to report.
pub fn write(
    out: &mut dyn Write,
    from: Receiver<Piece>,
    spent: SyncSender<Vec<u8>>,
) -> io::Result<Laid> {
    let mut counted = Counting { inner: out, n: 0 };
    let mut builder = tar::Builder::new(&mut counted);
    let mut laid = Laid::default();
    // The file being written: its size and the bytes of it written so far.
    let mut open = (0u64, 0u64);
    loop {
        let piece = from
            .recv()
            .map_err(|_| io::Error::other("the file reader stopped"))?;
        match piece {
            Piece::Bare(entry) => {
                pax::append(&mut builder, &entry, io::empty())?;
                laid.entries.push(entry);
            }
            Piece::File(entry) => {
                let header = pax::extensions(&mut builder, &entry)?;
                builder.get_mut().write_all(header.as_bytes())?;
                open = (entry.size, 0);
                laid.entries.push(entry);
            }
            Piece::Data(chunk) => {
                builder.get_mut().write_all(&chunk)?;
                open.1 += chunk.len() as u64;
                // The reader allocates another when none comes back.
                let _ = spent.try_send(chunk);
            }
            Piece::End { changed, sha256 } => {
                let Some(entry) = laid.entries.last_mut() else {
                    return Err(io::Error::other("file content without its entry"));
                };
                // A miscount would shift every later entry: fail rather than write that.
                if open.0 != open.1 {
                    return Err(io::Error::other(format!(
                        "{}: {} bytes archived for a size of {}",
                        entry.path, open.1, open.0
                    )));
                }
                pad(builder.get_mut(), open.1)?;
                entry.sha256 = sha256;
                if changed {
                    laid.changed.push(entry.path.clone());
                }
            }
            Piece::Done => break,
        }
    }
    builder.finish()?;
    drop(builder);
    laid.tar_bytes = counted.n;
    Ok(laid)
}

/// Zeros up to the next 512-byte block after `len` bytes of content.
fn pad(out: &mut impl Write, len: u64) -> io::Result<()> {
    let rem = (len % 512) as usize;
    if rem == 0 {
        return Ok(());
    }
    out.write_all(&[0u8; 512][rem..])
}

struct Counting<'a> {
    inner: &'a mut dyn Write,
    n: u64,
}

impl Write for Counting<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.n += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
