//! Writing the pax tar of a files backup: each found path as an entry, each file opened once
//! (O_NOFOLLOW, by handle) and hashed in the same pass that copies it into the archive. A file
//! is archived at the size it had when opened: one that grows is cut there, one that shrinks is
//! padded with zeros, and either is listed as changed (its size or mtime moved while it was
//! read), so the archive stays well-formed and its hashes are of what it holds.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, BufReader, Read, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};

use sha2::{Digest, Sha256};
use tokio_util::sync::CancellationToken;

use super::pax;
use super::tree::{Entry, Kind, Skipped};
use super::walk::{Found, skipped};
use crate::jobs::backup::stream::hex;

const BUF: usize = 1 << 20;

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
    let mut counted = Counting { inner: out, n: 0 };
    let mut builder = tar::Builder::new(&mut counted);
    let mut done = Archived::default();
    let mut names = Names::default();
    for f in found {
        if cancel.is_cancelled() {
            return Err(io::Error::other("cancelled"));
        }
        let rel = relative(f);
        let t = f.meta.file_type();
        if t.is_file() {
            file(&mut builder, f, rel, &mut names, &mut done, cancel)?;
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
                        done.unreadable.push(skipped(&f.path, why));
                        continue;
                    }
                },
                Err(e) => {
                    done.skipped.push(skipped(&f.path, format!("gone: {e}")));
                    continue;
                }
            }
        };
        let entry = entry(rel, kind, &f.meta, &mut names, target);
        pax::append(&mut builder, &entry, io::empty())?;
        done.entries.push(entry);
    }
    builder.finish()?;
    drop(builder);
    done.tar_bytes = counted.n;
    Ok(done)
}

/// One regular file: opened once, by handle, and archived at its size when opened.
fn file(
    builder: &mut tar::Builder<impl Write>,
    f: &Found,
    rel: &str,
    names: &mut Names,
    done: &mut Archived,
    cancel: &CancellationToken,
) -> io::Result<()> {
    // O_NONBLOCK: a FIFO put in the file's place must not block the run.
    let opened = File::options()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&f.path);
    let file = match opened {
        Ok(file) => file,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            done.skipped
                .push(skipped(&f.path, "gone before it was read".into()));
            return Ok(());
        }
        Err(e) if e.raw_os_error() == Some(libc::ELOOP) => {
            done.skipped.push(skipped(
                &f.path,
                "turned into a symlink before it was read".into(),
            ));
            return Ok(());
        }
        Err(e) => {
            done.unreadable.push(skipped(&f.path, e.to_string()));
            return Ok(());
        }
    };
    let before = file.metadata()?;
    if !before.is_file() {
        done.skipped.push(skipped(
            &f.path,
            "no longer a regular file when it was read".into(),
        ));
        return Ok(());
    }
    let mut entry = entry(rel, Kind::File, &before, names, None);
    let mut exact = Exact {
        file: &file,
        left: entry.size,
        hasher: Sha256::new(),
        short: false,
        cancel,
    };
    match pax::append(builder, &entry, BufReader::with_capacity(BUF, &mut exact)) {
        Ok(()) => {}
        // Mid-file: the archive is broken, so the run fails with the file named.
        Err(e) => {
            return Err(io::Error::new(
                e.kind(),
                format!("{}: {e}", f.path.display()),
            ));
        }
    }
    let Exact { hasher, short, .. } = exact;
    entry.sha256 = Some(hex(&hasher.finalize()));
    let after = file.metadata()?;
    let moved = short
        || after.len() != before.len()
        || (after.mtime(), after.mtime_nsec()) != (before.mtime(), before.mtime_nsec())
        || (before.dev(), before.ino()) != (f.meta.dev(), f.meta.ino());
    if moved {
        done.changed.push(entry.path.clone());
    }
    done.entries.push(entry);
    Ok(())
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

/// Exactly `left` bytes of a file, hashed as they pass; zeros past a premature end.
struct Exact<'a> {
    file: &'a File,
    left: u64,
    hasher: Sha256,
    short: bool,
    cancel: &'a CancellationToken,
}

impl Read for Exact<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.left == 0 {
            return Ok(0);
        }
        if self.cancel.is_cancelled() {
            return Err(io::Error::other("cancelled"));
        }
        let want = buf
            .len()
            .min(usize::try_from(self.left).unwrap_or(usize::MAX));
        let n = if self.short {
            0
        } else {
            loop {
                match self.file.read(&mut buf[..want]) {
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    other => break other?,
                }
            }
        };
        let n = if n == 0 {
            self.short = true;
            buf[..want].fill(0);
            want
        } else {
            n
        };
        self.hasher.update(&buf[..n]);
        self.left -= n as u64;
        Ok(n)
    }
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
