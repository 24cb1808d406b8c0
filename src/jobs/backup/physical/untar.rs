//! The untar side of unpacking a base backup: entries of the decoded tar written beneath a
//! folder. Regular files (nearly all the bytes) are written here with 1 MiB writes and opened
//! beneath the folder's handle with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, so a
//! name with `..` or a symlink an earlier entry made cannot lead outside; every other entry
//! (folders, links) goes through the tar crate's own checked `unpack_in`.
//!
//! For a restore that must be durable ([`Writeback::Start`]), writeback of big files is started
//! while the rest is still being decoded ([`crate::jobs::backup::writeback`]), so the final
//! `syncfs` of the restore ([`crate::restore::pitr::stage`]) has little left to write. A
//! writeback error fails the unpack.

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{Mode, OFlags, ResolveFlags, Timespec, Timestamps};

use crate::jobs::backup::writeback::{Kicking, Syncer};

/// Whether to start writing unpacked data to disk while unpacking.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writeback {
    /// A restore: start writeback early (the data must reach the disk anyway).
    Start,
    /// A scratch unpack read once and removed (verification): leave it to the page cache.
    Leave,
}

const BUF: usize = 1 << 20;

/// Untars `from` beneath `into` (an existing folder).
pub fn untar(from: impl Read, into: &Path, writeback: Writeback) -> io::Result<()> {
    let root: OwnedFd = File::open(into)?.into();
    let syncer = (writeback == Writeback::Start).then(Syncer::new);
    let mut archive = tar::Archive::new(from);
    archive.set_preserve_permissions(false);
    let result = entries(&mut archive, &root, into, syncer.as_ref()).and_then(|()| {
        // Whatever follows the trailer is read too, so the decoder never meets a closed
        // channel. After an error it does, and stops decoding (the file is still hashed).
        io::copy(&mut archive.into_inner(), &mut io::sink()).map(|_| ())
    });
    let synced = syncer.map_or(Ok(()), Syncer::finish);
    result.and(synced)
}

fn entries<R: Read>(
    archive: &mut tar::Archive<R>,
    root: &OwnedFd,
    into: &Path,
    syncer: Option<&Syncer>,
) -> io::Result<()> {
    let mut buf = vec![0u8; BUF];
    for entry in archive.entries()? {
        let mut entry = entry?;
        if !entry.header().entry_type().is_file() {
            entry.unpack_in(into)?;
            continue;
        }
        let path = entry.path()?.into_owned();
        let named =
            |e: io::Error| io::Error::new(e.kind(), format!("unpacking {}: {e}", path.display()));
        let rel = plain(&path).map_err(named)?;
        let mode = entry.header().mode().map_err(named)? & 0o777;
        let mtime = entry.header().mtime().unwrap_or(0);
        write_file(root, &rel, mode, mtime, &mut entry, &mut buf, syncer).map_err(named)?;
    }
    Ok(())
}

/// The entry's path without `.` components, refused unless it is relative and made of names.
fn plain(path: &Path) -> io::Result<PathBuf> {
    let mut rel = PathBuf::new();
    for c in path.components() {
        match c {
            Component::Normal(n) => rel.push(n),
            Component::CurDir => {}
            _ => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "refusing a name that is absolute or leaves the folder",
                ));
            }
        }
    }
    if rel.as_os_str().is_empty() {
        return Err(io::Error::new(io::ErrorKind::InvalidData, "an empty name"));
    }
    Ok(rel)
}

fn write_file(
    root: &OwnedFd,
    rel: &Path,
    mode: u32,
    mtime: u64,
    data: &mut impl Read,
    buf: &mut [u8],
    syncer: Option<&Syncer>,
) -> io::Result<()> {
    parents(root, rel)?;
    let fd = rustix::fs::openat2(
        root,
        rel,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::from_raw_mode(mode),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
    )?;
    let mut out = Kicking::new(File::from(fd), syncer);
    loop {
        let n = match data.read(buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        out.write_all(&buf[..n])?;
    }
    out.kick_rest(BUF as u64);
    let out = out.into_file();
    let t = Timespec {
        tv_sec: i64::try_from(mtime).unwrap_or(0),
        tv_nsec: 0,
    };
    rustix::fs::futimens(
        &out,
        &Timestamps {
            last_access: t,
            last_modification: t,
        },
    )?;
    Ok(())
}

/// Creates the folders above `rel` that an archive did not list first (tar does the same),
/// one name at a time beneath held handles: `mkdirat` never follows its last name, and each
/// folder is opened with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`, so a symlink an earlier
/// entry made cannot have a folder created through it outside `root`.
fn parents(root: &OwnedFd, rel: &Path) -> io::Result<()> {
    let Some(parent) = rel.parent() else {
        return Ok(());
    };
    let mut held: Option<OwnedFd> = None;
    for c in parent.components() {
        let at = held.as_ref().unwrap_or(root);
        let name = c.as_os_str();
        match rustix::fs::mkdirat(at, name, Mode::from_raw_mode(0o700)) {
            Ok(()) | Err(rustix::io::Errno::EXIST) => {}
            Err(e) => return Err(e.into()),
        }
        let next = rustix::fs::openat2(
            at,
            name,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::empty(),
            ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
        )?;
        held = Some(next);
    }
    Ok(())
}
