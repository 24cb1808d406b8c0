//! The tar of a files backup unpacked beneath a folder's handle, every entry checked against
//! the manifest's `tree` as it is written (name, type, metadata, content SHA-256). Shared by
//! `restore --to-dir` ([`super::files_dir`]) and the files restore drill.
//!
//! A hostile archive cannot write outside the folder: a name that is absolute or has a `..`
//! (or `.`) is refused before anything is written, and every path is opened beneath the
//! folder's handle with `openat2(RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS)`, so a symlink the
//! archive made is never followed. Cancellation is heeded between entries and every MiB.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::OwnedFd;
use std::path::{Component, Path, PathBuf};

use rustix::fs::{AtFlags, Gid, Mode, OFlags, ResolveFlags, Timespec, Timestamps, Uid};
use sha2::{Digest, Sha256};

use crate::jobs::backup::files::pax;
use crate::jobs::backup::files::tree::{Entry, Kind, Tree};
use crate::jobs::backup::stream::hex;

/// Unpacks the tar from `r` beneath `root`, checking each entry against `tree`; the entries
/// and file bytes written. Ends with [`cancelled_error`] as soon as `cancelled` says so.
/// Owners are set when `owners` (a restore; a drill of a daemon that is not root cannot).
pub fn unpack(
    r: &mut dyn Read,
    root: &OwnedFd,
    tree: &Tree,
    cancelled: &dyn Fn() -> bool,
    owners: bool,
) -> io::Result<(usize, u64)> {
    let mut archive = tar::Archive::new(r);
    let mut want = tree.entries.iter();
    let mut dirs: Vec<Entry> = Vec::new();
    let (mut n, mut bytes) = (0usize, 0u64);
    for entry in archive.entries()? {
        if cancelled() {
            return Err(cancelled_error());
        }
        let mut entry = entry?;
        let mut got = pax::entry_of(&mut entry)?;
        let rel = safe(&got.path)?;
        let w = want.next().ok_or_else(|| {
            other(format!(
                "/{}: in the archive but not in the manifest",
                got.path
            ))
        })?;
        let named = |e: io::Error| io::Error::new(e.kind(), format!("/{}: {e}", got.path));
        parents(root, rel).map_err(named)?;
        match got.kind {
            Kind::Dir => {
                rustix::fs::mkdirat(root, rel, Mode::from_raw_mode(0o700))
                    .map_err(|e| named(e.into()))?;
            }
            Kind::File => {
                let sum =
                    write_file(root, rel, &mut entry, &got, cancelled, owners).map_err(named)?;
                got.sha256 = Some(sum);
                bytes += got.size;
            }
            Kind::Symlink => symlink(root, rel, &got, owners).map_err(named)?,
        }
        if let Some(diff) = pax::differ(w, &got) {
            return Err(other(format!("/{}: {diff}", w.path)));
        }
        if got.kind == Kind::Dir {
            dirs.push(got);
        }
        n += 1;
    }
    if let Some(w) = want.next() {
        return Err(other(format!(
            "/{}: in the manifest but not in the archive",
            w.path
        )));
    }
    // Last, deepest first: writing into a folder changes its mtime, and a read-only folder
    // could not be written into.
    for d in dirs.iter().rev() {
        let fd = beneath(
            root,
            Path::new(&d.path),
            OFlags::DIRECTORY | OFlags::RDONLY,
            0,
        )?;
        own(&fd, d, owners).map_err(|e| io::Error::new(e.kind(), format!("/{}: {e}", d.path)))?;
    }
    Ok((n, bytes))
}

/// The entry's path, refused unless it is relative and made of plain names only.
fn safe(path: &str) -> io::Result<&Path> {
    let p = Path::new(path);
    let plain = !path.is_empty() && p.components().all(|c| matches!(c, Component::Normal(_)));
    if plain {
        Ok(p)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("refusing a hostile archive: entry {path:?} is absolute or leaves its folder"),
        ))
    }
}

/// Creates the missing folders above `rel` (mode 0700, root's: the backup did not hold them).
fn parents(root: &OwnedFd, rel: &Path) -> io::Result<()> {
    let mut at = PathBuf::new();
    let Some(parent) = rel.parent() else {
        return Ok(());
    };
    for c in parent.components() {
        at.push(c);
        match rustix::fs::mkdirat(root, &at, Mode::from_raw_mode(0o700)) {
            Ok(()) => {}
            Err(rustix::io::Errno::EXIST) => {
                // Must be a real folder, not a symlink the archive made.
                beneath(root, &at, OFlags::DIRECTORY | OFlags::PATH, 0)?;
            }
            Err(e) => return Err(e.into()),
        }
    }
    Ok(())
}

/// The error [`unpack`] ends with when cancelled.
pub fn cancelled_error() -> io::Error {
    io::Error::other("cancelled")
}

fn write_file(
    root: &OwnedFd,
    rel: &Path,
    data: &mut impl Read,
    e: &Entry,
    cancelled: &dyn Fn() -> bool,
    owners: bool,
) -> io::Result<String> {
    let fd = beneath(
        root,
        rel,
        OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL,
        0o600,
    )?;
    let mut out = File::from(fd);
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        if cancelled() {
            return Err(cancelled_error());
        }
        let n = match data.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
    }
    own(&out, e, owners)?;
    Ok(hex(&hasher.finalize()))
}

fn symlink(root: &OwnedFd, rel: &Path, e: &Entry, owners: bool) -> io::Result<()> {
    let (parent, name) = parent_of(root, rel)?;
    let target = e.target.as_deref().unwrap_or_default();
    rustix::fs::symlinkat(target, &parent, name)?;
    if owners {
        rustix::fs::chownat(
            &parent,
            name,
            Some(uid(e.uid)),
            Some(gid(e.gid)),
            AtFlags::SYMLINK_NOFOLLOW,
        )
        .map_err(|err| root_needed(err, e))?;
    }
    rustix::fs::utimensat(&parent, name, &times(e), AtFlags::SYMLINK_NOFOLLOW)?;
    Ok(())
}

/// Owner (first: chown clears setuid), then mode, then mtime.
fn own(fd: &impl std::os::fd::AsFd, e: &Entry, owners: bool) -> io::Result<()> {
    if owners {
        rustix::fs::fchown(fd, Some(uid(e.uid)), Some(gid(e.gid)))
            .map_err(|err| root_needed(err, e))?;
    }
    rustix::fs::fchmod(fd, Mode::from_raw_mode(e.mode))?;
    rustix::fs::futimens(fd, &times(e))?;
    Ok(())
}

fn root_needed(err: rustix::io::Errno, e: &Entry) -> io::Error {
    let err = io::Error::from(err);
    if err.kind() == io::ErrorKind::PermissionDenied {
        return io::Error::new(
            err.kind(),
            format!("restoring owner {}:{} needs root: {err}", e.uid, e.gid),
        );
    }
    err
}

/// `rel` opened beneath `root`, no symlink followed on the way or at the end.
fn beneath(root: &OwnedFd, rel: &Path, flags: OFlags, mode: u32) -> io::Result<OwnedFd> {
    Ok(rustix::fs::openat2(
        root,
        rel,
        flags | OFlags::CLOEXEC | OFlags::NOFOLLOW,
        Mode::from_raw_mode(mode),
        ResolveFlags::BENEATH | ResolveFlags::NO_SYMLINKS,
    )?)
}

fn parent_of<'a>(root: &OwnedFd, rel: &'a Path) -> io::Result<(OwnedFd, &'a OsStr)> {
    let name = rel
        .file_name()
        .ok_or_else(|| other(format!("{}: no name", rel.display())))?;
    let parent = match rel.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    Ok((
        beneath(root, parent, OFlags::DIRECTORY | OFlags::PATH, 0)?,
        name,
    ))
}

fn times(e: &Entry) -> Timestamps {
    let t = Timespec {
        tv_sec: e.mtime,
        tv_nsec: i64::from(e.mtime_nsec),
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

fn uid(id: u32) -> Uid {
    Uid::from_raw(id)
}

fn gid(id: u32) -> Gid {
    Gid::from_raw(id)
}

fn other(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A tar whose one entry has the raw name `name` (as a hostile tool could write it).
    fn hostile(name: &str) -> Vec<u8> {
        let mut header = tar::Header::new_old();
        header.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        header.set_entry_type(tar::EntryType::Regular);
        header.set_size(4);
        header.set_mode(0o644);
        header.set_uid(0);
        header.set_gid(0);
        header.set_mtime(0);
        header.set_cksum();
        let mut b = tar::Builder::new(Vec::new());
        b.append(&header, &b"evil"[..]).unwrap();
        b.into_inner().unwrap()
    }

    #[test]
    fn a_hostile_archive_writes_nothing_outside() {
        let dir = tempfile::tempdir().unwrap();
        let root_path = dir.path().join("root");
        std::fs::create_dir(&root_path).unwrap();
        let root: OwnedFd = File::open(&root_path).unwrap().into();
        for name in ["../evil", "/tmp/atpred-evil", "a/../../evil", "./x"] {
            let tar = hostile(name);
            let err = unpack(&mut &tar[..], &root, &Tree::default(), &|| false, true).unwrap_err();
            assert!(err.to_string().contains("hostile"), "{name}: {err}");
        }
        assert!(!dir.path().join("evil").exists());
        assert!(!Path::new("/tmp/atpred-evil").exists());
        assert_eq!(std::fs::read_dir(&root_path).unwrap().count(), 0);
    }
}
