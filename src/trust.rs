//! Whether a folder is safe for atpred to write in: nobody but root, atpred's own user (and
//! group) and, for a rotate job, the `su` user and group may change it or any folder above it.
//! A folder an outsider can write to lets them plant names where atpred writes; a parent they
//! can write to lets them swap the whole folder for another (logrotate refuses both).
//!
//! A parent with the sticky bit (like `/tmp`) is safe for a child that it and the child's owner
//! are trusted with: others may add names there but never rename or remove the child.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

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
}
