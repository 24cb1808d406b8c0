//! Whether a folder is safe for atpred to write in: nobody but root, atpred's own user (and
//! group) and, for a rotate job, the `su` user and group may change it or any folder above it.
//! A folder an outsider can write to lets them plant names where atpred writes; a parent they
//! can write to lets them swap the whole folder for another (logrotate refuses both).
//!
//! A parent with the sticky bit (like `/tmp`) is safe for a child that it and the child's owner
//! are trusted with: others may add names there but never rename or remove the child.
//!
//! A folder judged safe is then best used by handle ([`HeldDir`]): opened with no symlink on
//! its path ([`open_no_symlinks`]), checked, and reached through `/proc/self/fd/N` from then on,
//! so a folder renamed away and replaced (by a symlink or another folder) after the check is
//! never followed.

use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use rustix::fs::{CWD, Mode, OFlags, ResolveFlags};

/// The users and groups allowed to write to a folder atpred writes in.
#[derive(Debug, Clone)]
pub struct Trusted {
    uids: Vec<u32>,
    gids: Vec<u32>,
}

impl Trusted {
    /// Root and the user and group this process runs as.
    pub fn daemon() -> Trusted {
        Trusted {
            uids: vec![0, nix::unistd::geteuid().as_raw()],
            gids: vec![0, nix::unistd::getegid().as_raw()],
        }
    }

    /// Also trusts `uid` and `gid` (a rotate job's `su` user and group).
    pub fn with(mut self, uid: u32, gid: u32) -> Trusted {
        self.uids.push(uid);
        self.gids.push(gid);
        self
    }

    /// Who besides the trusted may write to a folder with this owner, group and mode.
    fn outsider(&self, uid: u32, gid: u32, mode: u32) -> Option<String> {
        if mode & 0o002 != 0 {
            Some(format!("all users (mode {:04o})", mode & 0o7777))
        } else if mode & 0o020 != 0 && !self.gids.contains(&gid) {
            Some(format!("group {gid} (mode {:04o})", mode & 0o7777))
        } else if !self.uids.contains(&uid) {
            Some(format!("its owner, uid {uid}"))
        } else {
            None
        }
    }
}

/// Why `folder` is not safe to write in: it or a folder above it is writable by someone not
/// `trusted`. A folder that does not exist yet (atpred creates it, owned by itself) is judged
/// by the folders above it, a sticky one among them accepted as for an existing child.
pub fn check_folder(folder: &Path, trusted: &Trusted) -> Result<(), String> {
    let mut existing = folder;
    while std::fs::symlink_metadata(existing).is_err() {
        match existing.parent() {
            Some(p) => existing = p,
            None => return Ok(()),
        }
    }
    let real = std::fs::canonicalize(existing).map_err(|e| format!("{}: {e}", folder.display()))?;
    let chain: Vec<PathBuf> = real.ancestors().map(Path::to_path_buf).collect();
    let missing = existing != folder;
    let mut child: Option<std::fs::Metadata> = None;
    // From the folder itself up to `/`: the folder must be writable by the trusted only; a
    // parent may be shared when sticky and both it and the child below are trusted-owned.
    for (i, path) in chain.iter().enumerate() {
        let meta = std::fs::metadata(path).map_err(|e| format!("{}: {e}", path.display()))?;
        if let Some(who) = trusted.outsider(meta.uid(), meta.gid(), meta.mode()) {
            let sticky_ok = meta.mode() & 0o1000 != 0
                && trusted.uids.contains(&meta.uid())
                && child
                    .as_ref()
                    .map_or(missing, |c| trusted.uids.contains(&c.uid()));
            if !sticky_ok {
                return Err(if i == 0 && !missing {
                    format!("{} is writable by {who}", path.display())
                } else {
                    format!(
                        "{} is under {}, which is writable by {who} (the folder could be swapped)",
                        real.display(),
                        path.display()
                    )
                });
            }
        }
        child = Some(meta);
    }
    Ok(())
}

/// A folder checked once and from then on used only through its handle: a path swapped for
/// another folder or a symlink after the check is never followed.
#[derive(Debug)]
pub struct HeldDir {
    fd: OwnedFd,
    /// The name it was opened by, for messages.
    path: PathBuf,
}

impl HeldDir {
    /// Opens `dir` with no symlink anywhere on its path, checks that only the `trusted` may
    /// write to it and above it, and that the folder checked by name is the one held. The
    /// error names the folder and why.
    pub fn open(dir: &Path, trusted: &Trusted) -> Result<HeldDir, String> {
        let fd = open_no_symlinks(dir).map_err(|e| match e {
            rustix::io::Errno::LOOP => format!(
                "{} has a symlink on its path: refused (the folder could be swapped under atpred); name the real folder",
                dir.display()
            ),
            e => format!("cannot open {}: {}", dir.display(), std::io::Error::from(e)),
        })?;
        let held = HeldDir {
            fd,
            path: dir.to_owned(),
        };
        check_folder(dir, trusted)?;
        let inside = rustix::fs::fstat(&held.fd).map_err(|e| format!("{}: {e}", dir.display()))?;
        let named = std::fs::metadata(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        if (inside.st_dev, inside.st_ino) != (named.dev(), named.ino()) {
            return Err(format!(
                "{} was replaced while it was opened",
                dir.display()
            ));
        }
        Ok(held)
    }

    /// The path through which the kernel reaches this folder by its handle
    /// (`/proc/self/fd/N`): valid in this process and, until it execs, in a child it forks.
    pub fn at(&self) -> PathBuf {
        PathBuf::from(format!("/proc/self/fd/{}", self.fd.as_raw_fd()))
    }

    /// The name it was opened by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `text` with the handle's path shown as the folder's name.
    pub fn shown(&self, text: &str) -> String {
        text.replace(
            &self.at().display().to_string(),
            &self.path.display().to_string(),
        )
    }
}

impl AsFd for HeldDir {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

/// `dir` opened as a directory with no symlink anywhere on its path (`Errno::LOOP` if there
/// is one): `openat2(RESOLVE_NO_SYMLINKS)`, or [`walk_no_symlinks`] where that call is refused.
pub fn open_no_symlinks(dir: &Path) -> rustix::io::Result<OwnedFd> {
    let how = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    match rustix::fs::openat2(
        CWD,
        dir,
        how,
        Mode::empty(),
        ResolveFlags::NO_SYMLINKS | ResolveFlags::NO_MAGICLINKS,
    ) {
        Err(rustix::io::Errno::NOSYS | rustix::io::Errno::PERM) => walk_no_symlinks(dir),
        other => other,
    }
}

/// `dir` opened one name at a time, each `O_NOFOLLOW|O_DIRECTORY` relative to the folder before
/// it: no step can follow a symlink, so none is followed anywhere on the path.
pub fn walk_no_symlinks(dir: &Path) -> rustix::io::Result<OwnedFd> {
    use std::path::Component;
    let how = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC | OFlags::NOFOLLOW;
    let mut at = rustix::fs::openat(
        CWD,
        if dir.is_absolute() { "/" } else { "." },
        how,
        Mode::empty(),
    )?;
    for part in dir.components() {
        let name = match part {
            Component::RootDir | Component::CurDir => continue,
            Component::ParentDir => std::ffi::OsStr::new(".."),
            Component::Normal(name) => name,
            Component::Prefix(_) => return Err(rustix::io::Errno::INVAL),
        };
        at = rustix::fs::openat(&at, name, how, Mode::empty()).map_err(|e| {
            // O_NOFOLLOW|O_DIRECTORY on a symlink may answer ENOTDIR rather than ELOOP.
            let link = rustix::fs::statat(&at, name, rustix::fs::AtFlags::SYMLINK_NOFOLLOW)
                .is_ok_and(|st| rustix::fs::FileType::from_raw_mode(st.st_mode).is_symlink());
            if link { rustix::io::Errno::LOOP } else { e }
        })?;
    }
    Ok(at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn chmod(p: &Path, mode: u32) {
        std::fs::set_permissions(p, std::fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn trust_refuses_shared_folders_and_parents_but_not_sticky_tmp() {
        let root = tempfile::tempdir_in("/tmp").unwrap();
        let dir = root.path().join("a");
        std::fs::create_dir(&dir).unwrap();
        chmod(root.path(), 0o755);
        chmod(&dir, 0o755);
        let t = Trusted::daemon();
        assert!(check_folder(&dir, &t).is_ok(), "under sticky /tmp");
        assert!(check_folder(&dir.join("missing/deeper"), &t).is_ok());
        chmod(&dir, 0o777);
        let err = check_folder(&dir, &t).unwrap_err();
        assert!(err.contains("writable by all users (mode 0777)"), "{err}");
        chmod(&dir, 0o755);
        chmod(root.path(), 0o777);
        let err = check_folder(&dir, &t).unwrap_err();
        assert!(err.contains("could be swapped"), "{err}");
        chmod(root.path(), 0o1777);
        assert!(check_folder(&dir, &t).is_ok(), "sticky, trusted owners");
    }

    #[test]
    fn trust_outsiders_by_owner_group_and_mode() {
        let t = Trusted {
            uids: vec![0, 100],
            gids: vec![0, 100],
        };
        assert_eq!(t.outsider(0, 0, 0o755), None);
        assert_eq!(t.outsider(100, 100, 0o775), None);
        assert!(t.outsider(100, 5, 0o775).is_some());
        assert!(t.outsider(65534, 0, 0o755).is_some());
        assert_eq!(
            t.clone().with(65534, 65534).outsider(65534, 65534, 0o770),
            None
        );
    }

    #[test]
    fn the_walk_refuses_a_symlink_anywhere_on_the_path_and_opens_the_real_folder() {
        let root = tempfile::tempdir().unwrap();
        let real = root.path().join("a/b");
        std::fs::create_dir_all(&real).unwrap();
        std::os::unix::fs::symlink(root.path().join("a"), root.path().join("link")).unwrap();
        let through_link = root.path().join("link/b");
        assert!(
            through_link.is_dir(),
            "the path works when links are followed"
        );
        assert_eq!(
            walk_no_symlinks(&through_link).unwrap_err(),
            rustix::io::Errno::LOOP
        );
        assert_eq!(
            walk_no_symlinks(&root.path().join("link")).unwrap_err(),
            rustix::io::Errno::LOOP,
            "a symlink as the last name"
        );
        let fd = walk_no_symlinks(&real).unwrap();
        let held = std::fs::metadata(
            HeldDir {
                fd,
                path: real.clone(),
            }
            .at(),
        )
        .unwrap();
        let named = std::fs::metadata(&real).unwrap();
        assert_eq!((held.dev(), held.ino()), (named.dev(), named.ino()));
    }
}
