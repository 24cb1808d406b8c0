//! Writing the pax tar of a files backup: each found path as an entry, each file opened once
//! (O_NOFOLLOW, by handle), read in large chunks and hashed on the way into the archive. A file
//! is archived at the size it had when opened: one that grows is cut there, one that shrinks is
//! padded with zeros, and either is listed as changed (its size or mtime moved while it was
//! read), so the archive stays well-formed and its hashes are of what it holds.
//!
//! Three threads share the work ([`super::stages`]): this module's reader (opening, reading,
//! deciding what changed), the hasher, and the writer on the calling thread (tar layout into
//! `out`, which is zstd's input): SHA-256 of the files no longer waits on zstd, nor zstd on it.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::sync::mpsc::{Receiver, SyncSender, TryRecvError, sync_channel};

use tokio_util::sync::CancellationToken;

use super::stages::{self, Piece};
use super::tree::{Entry, Kind, Skipped};
use super::walk::{Found, skipped};

/// Bytes of a file read and passed on at a time.
const CHUNK: usize = 1 << 20;
/// Pieces waiting between two stages.
const QUEUE: usize = 4;
/// Chunks in flight at most (queued in both channels, one in each stage, a spare).
const CHUNKS: usize = 2 * QUEUE + 4;

/// What went into the archive.
#[derive(Default)]
pub struct Archived {
    pub entries: Vec<Entry>,
    pub changed: Vec<String>,
    /// Files that could not be opened or read.
    pub unreadable: Vec<Skipped>,
    /// Paths gone or turned into something else since the walk.
    pub skipped: Vec<Skipped>,
    pub tar_bytes: u64,
}

/// Writes the tar of `found` into `out`. An io error of `out` (or of reading a file midway) is
/// the error; a file that cannot be opened is listed in `unreadable` and left out.
pub fn archive(
    out: &mut dyn Write,
    found: &[Found],
    cancel: &CancellationToken,
) -> io::Result<Archived> {
    let (to_hasher, hasher_in) = sync_channel(QUEUE);
    let (to_writer, writer_in) = sync_channel(QUEUE);
    let (spent, reuse) = sync_channel(CHUNKS);
    std::thread::scope(|s| {
        let reader = std::thread::Builder::new()
            .name("atpred-files-read".into())
            .spawn_scoped(s, move || read(found, cancel, &to_hasher, &reuse))?;
        std::thread::Builder::new()
            .name("atpred-files-hash".into())
            .spawn_scoped(s, move || stages::hash(hasher_in, to_writer))?;
        // Returning drops `writer_in`, which stops the hasher and then the reader on an error.
        let laid = stages::write(out, writer_in, spent);
        let read = reader
            .join()
            .map_err(|_| io::Error::other("the file reader panicked"))?;
        let (laid, left) = match (laid, read) {
            (Ok(laid), Ok(left)) => (laid, left),
            // The reader's failure (cancelled, a read error) is why the writer saw no end.
            (_, Err(Some(e))) => return Err(e),
            (Err(e), _) => return Err(e),
            (Ok(_), Err(None)) => return Err(io::Error::other("the archive writer stopped")),
        };
        Ok(Archived {
            entries: laid.entries,
            changed: laid.changed,
            unreadable: left.unreadable,
            skipped: left.skipped,
            tar_bytes: laid.tar_bytes,
        })
    })
}

/// What the reader left out.
#[derive(Default)]
struct Left {
    unreadable: Vec<Skipped>,
    skipped: Vec<Skipped>,
}

/// Why the reader stopped early: `None` when the stages after it are gone (their error is the
/// one to report).
type Stop = Option<io::Error>;

/// Sends every entry of `found`, and the content of its files, to `to`.
fn read(
    found: &[Found],
    cancel: &CancellationToken,
    to: &SyncSender<Piece>,
    reuse: &Receiver<Vec<u8>>,
) -> Result<Left, Stop> {
    let mut left = Left::default();
    let mut names = Names::default();
    let mut chunks = Chunks { reuse, made: 0 };
    let send = |piece| to.send(piece).map_err(|_| None);
    for f in found {
        if cancel.is_cancelled() {
            return Err(Some(cancelled()));
        }
        let rel = relative(f);
        let t = f.meta.file_type();
        if t.is_file() {
            file(f, rel, &mut names, &mut left, &mut chunks, cancel, to)?;
            continue;
        }
        let (kind, target) = if t.is_dir() {
            (Kind::Dir, None)
        } else {
            match std::fs::read_link(&f.path) {
                Ok(t) => match t.to_str() {
                    Some(t) => (Kind::Symlink, Some(t.to_owned())),
                    None => {
                        let why = "its target is not UTF-8 and cannot be recorded".into();
                        left.unreadable.push(skipped(&f.path, why));
                        continue;
                    }
                },
                Err(e) => {
                    left.skipped.push(skipped(&f.path, format!("gone: {e}")));
                    continue;
                }
            }
        };
        send(Piece::Bare(entry(rel, kind, &f.meta, &mut names, target)))?;
    }
    send(Piece::Done)?;
    Ok(left)
}

/// One regular file: opened once, by handle, and archived at its size when opened.
fn file(
    f: &Found,
    rel: &str,
    names: &mut Names,
    left: &mut Left,
    chunks: &mut Chunks<'_>,
    cancel: &CancellationToken,
    to: &SyncSender<Piece>,
) -> Result<(), Stop> {
    // O_NONBLOCK: a FIFO put in the file's place must not block the run.
    let opened = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&f.path);
    let mut file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            left.skipped
                .push(skipped(&f.path, "gone before it was read".into()));
            return Ok(());
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            left.skipped.push(skipped(
                &f.path,
                "turned into a symlink before it was read".into(),
            ));
            return Ok(());
        }
        Err(e) => {
            left.unreadable.push(skipped(&f.path, e.to_string()));
            return Ok(());
        }
    };
    let named = |e: io::Error| {
        Some(io::Error::new(
            e.kind(),
            format!("{}: {e}", f.path.display()),
        ))
    };
    let before = file.metadata().map_err(named)?;
    if !before.is_file() {
        left.skipped.push(skipped(
            &f.path,
            "no longer a regular file when it was read".into(),
        ));
        return Ok(());
    }
    let entry = entry(rel, Kind::File, &before, names, None);
    let mut rest = entry.size;
    to.send(Piece::File(entry)).map_err(|_| None)?;
    let mut short = false;
    while rest > 0 {
        if cancel.is_cancelled() {
            return Err(Some(cancelled()));
        }
        let mut chunk = chunks.take()?;
        let want = usize::try_from(rest).unwrap_or(usize::MAX).min(CHUNK);
        chunk.resize(want, 0);
        // Past a premature end the rest stays zeros.
        let got = if short {
            0
        } else {
            fill(&mut file, &mut chunk).map_err(named)?
        };
        if got < want {
            short = true;
            chunk[got..].fill(0);
        }
        rest -= want as u64;
        to.send(Piece::Data(chunk)).map_err(|_| None)?;
    }
    let after = file.metadata().map_err(named)?;
    let changed = short
        || after.len() != before.len()
        || (after.mtime(), after.mtime_nsec()) != (before.mtime(), before.mtime_nsec())
        || (before.dev(), before.ino()) != (f.meta.dev(), f.meta.ino());
    to.send(Piece::End {
        changed,
        sha256: None,
    })
    .map_err(|_| None)
}

/// Reads into all of `buf` unless the file ends first; the bytes read.
fn fill(file: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut got = 0;
    while got < buf.len() {
        match file.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(got)
}

/// The reader's chunks: reused once the writer is done with them, new ones up to [`CHUNKS`].
struct Chunks<'a> {
    reuse: &'a Receiver<Vec<u8>>,
    made: usize,
}

impl Chunks<'_> {
    fn take(&mut self) -> Result<Vec<u8>, Stop> {
        match self.reuse.try_recv() {
            Ok(chunk) => return Ok(chunk),
            Err(TryRecvError::Disconnected) => return Err(None),
            Err(TryRecvError::Empty) => {}
        }
        if self.made < CHUNKS {
            self.made += 1;
            return Ok(Vec::with_capacity(CHUNK));
        }
        self.reuse.recv().map_err(|_| None)
    }
}

fn cancelled() -> io::Error {
    io::Error::other("cancelled")
}

fn relative(f: &Found) -> &str {
    // The walk keeps only UTF-8 absolute paths.
    let s = f.path.to_str().unwrap_or_default();
    s.trim_start_matches('/')
}

fn entry(
    rel: &str,
    kind: Kind,
    meta: &std::fs::Metadata,
    names: &mut Names,
    target: Option<String>,
) -> Entry {
    Entry {
        path: rel.to_owned(),
        kind,
        size: if kind == Kind::File { meta.len() } else { 0 },
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        user: names.user(meta.uid()),
        group: names.group(meta.gid()),
        mtime: meta.mtime(),
        mtime_nsec: u32::try_from(meta.mtime_nsec()).unwrap_or(0),
        sha256: None,
        target,
    }
}

/// Owner names by id, looked up once each.
#[derive(Default)]
struct Names {
    users: HashMap<u32, String>,
    groups: HashMap<u32, String>,
}

impl Names {
    fn user(&mut self, uid: u32) -> String {
        self.users
            .entry(uid)
            .or_insert_with(|| {
                nix::unistd::User::from_uid(uid.into())
                    .ok()
                    .flatten()
                    .map(|u| u.name)
                    .unwrap_or_default()
            })
            .clone()
    }

    fn group(&mut self, gid: u32) -> String {
        self.groups
            .entry(gid)
            .or_insert_with(|| {
                nix::unistd::Group::from_gid(gid.into())
                    .ok()
                    .flatten()
                    .map(|g| g.name)
                    .unwrap_or_default()
            })
            .clone()
    }
}

#[cfg(test)]
#[path = "archive_tests.rs"]
mod tests;
