//! A log's folder, opened once per run and used only through that handle.
//!
//! The folder is opened by [`trust::open_no_symlinks`] (`openat2(RESOLVE_NO_SYMLINKS)`): a
//! symlink anywhere on its path is refused. Where `openat2` is not to be had (a kernel before 5.6, or a seccomp filter that does
//! not know it: systemd 252's `@system-service` answers ENOSYS), the same guarantee comes from
//! a walk from the first folder, one name at a time, each opened `O_NOFOLLOW|O_DIRECTORY`
//! relative to the one before. Every later step (list, rename, create, compress, chmod, chown, remove) goes through
//! `/proc/self/fd/N/NAME`, a path the kernel resolves from the handle, not from the folder's
//! name: renaming the folder away and putting a symlink in its place after the open changes
//! nothing, the work stays in the folder that was opened and checked.
//!
//! Before any work, the folder and every folder above it must be writable only by root,
//! atpred's user and group and the job's `su` user and group ([`crate::trust`]), unless the job
//! says `allow-shared-dir = true`.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::exec::Log;
use super::hands::Hands;
use crate::config::RotateSpec;
use crate::jobs::JobError;
use crate::trust::{self, Trusted};

/// An open log folder.
#[derive(Debug)]
pub struct Folder {
    fd: OwnedFd,
}

impl Folder {
    /// The path through which the kernel reaches this folder by its handle.
    pub fn at(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }
}

/// Who may write to the folders of a job with this spec: root, atpred's user and group, and
/// the `su` user and group. Judged by the daemon, before any work runs as the `su` user.
pub fn trusted(spec: &RotateSpec) -> Trusted {
    let trusted = Trusted::daemon();
    match &spec.su {
        Some(su) => trusted.with(su.uid, su.gid),
        None => trusted,
    }
}

/// Opens `dir` (no symlink anywhere on its path) and, unless `shared` (`allow-shared-dir`),
/// checks that only the `trusted` may write to it and above it. `job_key` is `jobs.NAME`, for
/// the message. Blocking: run it with the job's [`super::hands::Hands`].
pub fn open(dir: &Path, shared: bool, trusted: &Trusted, job_key: &str) -> io::Result<Folder> {
    let fd = trust::open_no_symlinks(dir).map_err(|e| match e {
        rustix::io::Errno::LOOP => io::Error::other(format!(
            "{} has a symlink on its path: refused (the folder could be swapped under atpred); name the real folder in {job_key}.paths",
            dir.display()
        )),
        e => {
            let e = io::Error::from(e);
            io::Error::new(e.kind(), format!("cannot open {}: {e}", dir.display()))
        }
    })?;
    let folder = Folder { fd };
    if shared {
        return Ok(folder);
    }
    let refuse = |why: String| {
        io::Error::other(format!(
            "{why}: someone there could plant or swap files where atpred writes; make it writable by root and atpred's user only, name its owner with {job_key}.su = \"user:group\", or set {job_key}.allow-shared-dir = true"
        ))
    };
    trust::check_folder(dir, trusted).map_err(refuse)?;
    // The check read the folder by name: it must be the one the handle holds.
    let held = std::fs::metadata(folder.at())
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    let named = std::fs::metadata(dir)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
    if (held.dev(), held.ino()) != (named.dev(), named.ino()) {
        return Err(io::Error::other(format!(
            "{} was replaced while it was opened: not rotated",
            dir.display()
        )));
    }
    Ok(folder)
}

impl Log {
    /// This log with its folder open: from here on every step goes through the handle, done
    /// by `hands`.
    pub fn opened(&self, folder: Folder, hands: Hands) -> Log {
        let folder = Arc::new(folder);
        Log {
            at: folder.at(),
            _handle: Some(folder),
            hands,
            ..self.clone()
        }
    }
}

impl Log {
    /// `e` with the handle's path (`/proc/self/fd/N`) shown as the folder's own.
    pub fn shown(&self, e: JobError) -> JobError {
        let (at, dir) = (
            self.at.display().to_string(),
            self.dir.display().to_string(),
        );
        if at.is_empty() {
            return e;
        }
        match e {
            JobError::Permanent { message, details } => JobError::Permanent {
                message: message.replace(&at, &dir),
                details,
            },
            JobError::Transient { message, details } => JobError::Transient {
                message: message.replace(&at, &dir),
                details,
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustix::fs::{CWD, Mode, OFlags, ResolveFlags};

    #[test]
    fn folder_messages_name_the_folder_not_the_handle() {
        let log = Log {
            path: "/var/log/app/app.log".into(),
            dir: "/var/log/app".into(),
            base: "app.log".into(),
            at: "/proc/self/fd/7".into(),
            _handle: None,
            hands: Hands::default(),
        };
        let e = log.shown(JobError::permanent(
            "create /proc/self/fd/7/app.log: denied",
        ));
        assert_eq!(e.to_string(), "create /var/log/app/app.log: denied");
    }

    #[test]
    fn folder_handle_survives_a_swap_and_symlinks_on_the_path_are_refused() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("app");
        std::fs::create_dir(&dir).unwrap();
        let other = root.path().join("other");
        std::fs::create_dir(&other).unwrap();
        let fd = rustix::fs::openat2(
            CWD,
            &dir,
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
            ResolveFlags::NO_SYMLINKS,
        )
        .unwrap();
        let folder = Folder { fd };
        std::fs::rename(&dir, root.path().join("away")).unwrap();
        std::os::unix::fs::symlink(&other, &dir).unwrap();
        std::fs::write(folder.at().join("new.log"), b"x").unwrap();
        assert!(root.path().join("away/new.log").exists());
        assert!(!other.join("new.log").exists());
        let link = rustix::fs::openat2(
            CWD,
            &dir,
            OFlags::RDONLY | OFlags::DIRECTORY,
            Mode::empty(),
            ResolveFlags::NO_SYMLINKS,
        );
        assert_eq!(link.unwrap_err(), rustix::io::Errno::LOOP);
    }
}
