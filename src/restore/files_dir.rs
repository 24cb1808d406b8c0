//! `atprectl restore ID --to-dir DIR`: a files backup unpacked into DIR as root, with owners
//! (by id), modes, mtimes and symlinks as symlinks.
//!
//! The archive is unpacked into a temporary folder beside DIR (same file system), every entry
//! checked against the manifest on the way (name, metadata, content SHA-256) and the stored
//! file's checksum at the end, the file system synced, and only then renamed to DIR (an
//! existing non-empty DIR only with `--replace`: the two are exchanged atomically and the old
//! tree removed). A failed, refused, cancelled or killed restore leaves DIR as it was; the
//! temporary folder of a killed one is named in its in-flight marker
//! ([`crate::runner::inflight`]) and removed at the next start. The unpacking itself, safe
//! against a hostile archive, is [`super::files_unpack`].

use std::ffi::{OsStr, OsString};
use std::fs::File;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{CWD, Gid, Mode, OFlags, RenameFlags, Uid};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use super::RestoreError;
use super::files_unpack::unpack;
use crate::config::Compression;
use crate::jobs::backup::manifest::Manifest;
use crate::jobs::backup::stream;
use crate::jobs::backup::verify::load_identities;

/// What the temporary folder's name holds after DIR's: `.DIR.atpred-restore-TAG`.
pub const TEMP_MARK: &str = ".atpred-restore-";

/// What was restored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restored {
    pub id: String,
    pub dir: PathBuf,
    /// Files, folders and symlinks.
    pub entries: usize,
    /// Bytes of the files.
    pub bytes: u64,
    /// DIR held other files, now replaced.
    pub replaced: bool,
}

/// DIR as it was found.
enum Before {
    Missing,
    Empty(std::fs::Metadata),
    Full,
}

/// DIR, inspected before the restore begins (so that its refusals are not runs).
pub struct Target {
    dir: PathBuf,
    parent: PathBuf,
    name: OsString,
    before: Before,
}

impl Target {
    /// Refuses a DIR that is not an absolute path to a folder (a symlink is not followed), whose
    /// parent is missing, or that is not empty without `replace`.
    pub fn inspect(dir: &Path, replace: bool) -> Result<Target, RestoreError> {
        let bad =
            |why: String| RestoreError::BadRequest(format!("--to-dir {}: {why}", dir.display()));
        let (parent, name) = match (dir.is_absolute(), dir.parent(), dir.file_name()) {
            (true, Some(p), Some(n)) => (p, n),
            _ => return Err(bad("not an absolute path to a folder".into())),
        };
        if !std::fs::metadata(parent).is_ok_and(|m| m.is_dir()) {
            return Err(bad(format!("{} is not a folder", parent.display())));
        }
        let before = match std::fs::symlink_metadata(dir) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Before::Missing,
            Err(e) => return Err(bad(e.to_string())),
            Ok(meta) if !meta.is_dir() => {
                return Err(bad("not a folder (a symlink is not followed)".into()));
            }
            Ok(meta) => match std::fs::read_dir(dir).map(|mut d| d.next().is_none()) {
                Ok(true) => Before::Empty(meta),
                Ok(false) if replace => Before::Full,
                Ok(false) => {
                    return Err(bad(
                        "not empty; give --replace to replace what is in it".into()
                    ));
                }
                Err(e) => return Err(bad(e.to_string())),
            },
        };
        Ok(Target {
            dir: dir.to_owned(),
            parent: parent.to_owned(),
            name: name.to_owned(),
            before,
        })
    }

    /// The temporary folder beside DIR that a restore tagged `tag` (its run id) unpacks into.
    pub fn temp_path(&self, tag: &str) -> PathBuf {
        let mut name = OsStr::new(".").to_os_string();
        name.push(&self.name);
        name.push(format!("{TEMP_MARK}{tag}"));
        self.parent.join(name)
    }

    fn failed(&self, why: String) -> RestoreError {
        RestoreError::FolderFailed {
            dir: self.dir.display().to_string(),
            why: format!("{why}; {} was not touched", self.dir.display()),
        }
    }
}

/// Restores backup `m` (in folder `backup`) into `target` through the temporary folder
/// `temp` ([`Target::temp_path`]). Blocking; heeds `cancel` up to the rename.
pub fn restore(
    backup: &Path,
    m: &Manifest,
    identity: Option<&Path>,
    target: &Target,
    temp: &Path,
    cancel: &CancellationToken,
) -> Result<Restored, RestoreError> {
    let failed = |why: String| target.failed(why);
    let tree = m
        .tree
        .as_ref()
        .ok_or_else(|| failed(format!("{}: the manifest has no tree", m.id)))?;
    let file = m
        .files
        .first()
        .ok_or_else(|| failed(format!("{}: the manifest lists no file", m.id)))?;
    let temp = Temp(temp.to_owned());
    let root = temp
        .create()
        .map_err(|e| failed(format!("{}: {e}", temp.0.display())))?;
    let ids = identity.map(load_identities).transpose().map_err(failed)?;
    let input =
        File::open(backup.join(&file.path)).map_err(|e| failed(format!("{}: {e}", file.path)))?;
    let zstd = matches!(m.compression, Compression::Zstd { .. });
    let cancelled = || cancel.is_cancelled();
    let (written, unpacked) = stream::read_with(input, zstd, ids.as_deref(), |r| {
        unpack(r, &root, tree, &cancelled, true)
    })
    .map_err(|e| failed(format!("reading {}: {e}", file.path)))?;
    if cancel.is_cancelled() {
        return Err(failed("cancelled".into()));
    }
    if written.sha256 != file.sha256 || written.bytes != file.bytes {
        return Err(failed(format!(
            "{}: checksum mismatch ({} bytes, manifest says {})",
            file.path, written.bytes, file.bytes
        )));
    }
    let (entries, bytes) = unpacked.map_err(|e| failed(e.to_string()))?;
    if let Before::Empty(meta) = &target.before {
        // DIR keeps its own owner and mode.
        rustix::fs::fchown(
            &root,
            Some(Uid::from_raw(meta.uid())),
            Some(Gid::from_raw(meta.gid())),
        )
        .and_then(|()| rustix::fs::fchmod(&root, Mode::from_raw_mode(meta.mode() & 0o7777)))
        .map_err(|e| failed(format!("{}: {e}", target.dir.display())))?;
    }
    rustix::fs::syncfs(&root).map_err(|e| failed(format!("syncing: {e}")))?;
    drop(root);
    if cancel.is_cancelled() {
        return Err(failed("cancelled".into()));
    }
    let dir = &target.dir;
    let replaced = matches!(target.before, Before::Full);
    match target.before {
        Before::Missing | Before::Empty(_) => std::fs::rename(&temp.0, dir)
            .map_err(|e| failed(format!("renaming into place: {e}")))?,
        Before::Full => {
            rustix::fs::renameat_with(CWD, &temp.0, CWD, dir, RenameFlags::EXCHANGE)
                .map_err(|e| failed(format!("exchanging with the old tree: {e}")))?;
        }
    }
    // Now the temporary name holds the old tree (or nothing): removed either way.
    drop(temp);
    crate::publish::sync_dir(&target.parent).map_err(|e| RestoreError::FolderFailed {
        dir: dir.display().to_string(),
        why: format!(
            "syncing {} after the rename: {e} (the restored tree is in place)",
            target.parent.display()
        ),
    })?;
    Ok(Restored {
        id: m.id.clone(),
        dir: dir.to_owned(),
        entries,
        bytes,
        replaced,
    })
}

/// The temporary folder, removed with what is in it when dropped.
pub(super) struct Temp(pub(super) PathBuf);

impl Temp {
    pub(super) fn create(&self) -> io::Result<OwnedFd> {
        let _ = std::fs::remove_dir_all(&self.0);
        rustix::fs::mkdir(&self.0, Mode::from_raw_mode(0o700))?;
        Ok(rustix::fs::open(
            &self.0,
            OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC | OFlags::RDONLY,
            Mode::empty(),
        )?)
    }
}

impl Drop for Temp {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
