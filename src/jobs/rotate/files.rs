//! The file-system side of rotation: listing a log's directory (with `lstat`, and who holds each
//! file open for writing), owners, and the steps that change names
//! (copytruncate's copy is in [`super::copy`]). Every new name is created with
//! `O_EXCL | O_NOFOLLOW` or renamed into with `RENAME_NOREPLACE`, so a symlink planted at a
//! rotated name can neither redirect a write nor be overwritten.

use std::collections::{HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use nix::fcntl::{RenameFlags, renameat2};

use super::plan::{Entry, EntryKind};

/// One name in a log's directory, as [`scan`] found it.
pub type Found = (String, EntryKind, std::fs::Metadata);

/// The directory's names (the log among them) with their `lstat`; [`with_writers`] adds who
/// writes to each. This half is file work, done with the job's hands.
pub fn scan(dir: &Path) -> io::Result<Vec<Found>> {
    let mut found = Vec::new();
    for item in std::fs::read_dir(dir)? {
        let item = item?;
        let Ok(name) = item.file_name().into_string() else {
            continue; // not UTF-8: never one of our names
        };
        let Ok(meta) = item.metadata() else {
            continue; // removed meanwhile
        };
        let kind = if meta.file_type().is_symlink() {
            EntryKind::Symlink
        } else if meta.is_file() {
            EntryKind::File
        } else {
            EntryKind::Other
        };
        found.push((name, kind, meta));
    }
    Ok(found)
}

/// [`scan`]'s names with the pids writing to each: read from every process's `/proc`, which
/// only the daemon's user (not a job's `su` user) may see.
pub fn with_writers(found: Vec<Found>) -> Vec<Entry> {
    let inodes: HashSet<(u64, u64)> = found
        .iter()
        .filter(|(_, k, _)| *k == EntryKind::File)
        .map(|(_, _, m)| (m.dev(), m.ino()))
        .collect();
    let writers = writers(&inodes);
    found
        .into_iter()
        .map(|(name, kind, meta)| Entry {
            name,
            kind,
            size: meta.len(),
            mtime: mtime(&meta),
            writers: if kind == EntryKind::File {
                writers
                    .get(&(meta.dev(), meta.ino()))
                    .cloned()
                    .unwrap_or_default()
            } else {
                Vec::new()
            },
        })
        .collect()
}

fn mtime(meta: &std::fs::Metadata) -> DateTime<Utc> {
    meta.modified()
        .map(DateTime::<Utc>::from)
        .unwrap_or(DateTime::UNIX_EPOCH)
}

/// For each of `inodes` (device, inode) held open for writing by another process: the pids.
/// Found through `/proc/PID/fd` and the access mode in `/proc/PID/fdinfo`.
pub fn writers(inodes: &HashSet<(u64, u64)>) -> HashMap<(u64, u64), Vec<u32>> {
    let mut out: HashMap<(u64, u64), Vec<u32>> = HashMap::new();
    let me = std::process::id();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return out;
    };
    for p in procs.flatten() {
        let Some(pid) = p.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(p.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(meta) = std::fs::metadata(fd.path()) else {
                continue;
            };
            let id = (meta.dev(), meta.ino());
            if !inodes.contains(&id) {
                continue;
            }
            let info = p.path().join("fdinfo").join(fd.file_name());
            if writable(&std::fs::read_to_string(info).unwrap_or_default()) {
                let pids = out.entry(id).or_default();
                if !pids.contains(&pid) {
                    pids.push(pid);
                }
            }
        }
    }
    out
}

/// `flags:\t0100001` in fdinfo: the access mode is in the low two bits (octal).
fn writable(fdinfo: &str) -> bool {
    fdinfo
        .lines()
        .find_map(|l| l.strip_prefix("flags:"))
        .and_then(|f| u32::from_str_radix(f.trim(), 8).ok())
        .is_some_and(|f| f & 0o3 != 0)
}

fn dir_fd(dir: &Path) -> io::Result<File> {
    File::open(dir)
}

/// Renames `from` to `to` in `dir`, failing if `to` exists (whatever it is).
pub fn rename_noreplace(dir: &Path, from: &str, to: &str) -> io::Result<()> {
    let d = dir_fd(dir)?;
    renameat2(&d, from, &d, to, RenameFlags::RENAME_NOREPLACE).map_err(|e| {
        io::Error::new(
            io::Error::from(e).kind(),
            format!("rename {from} -> {to} in {}: {e}", dir.display()),
        )
    })
}

/// Creates a new, empty file, never following or replacing anything at `path`.
pub(super) fn create_new(path: &Path, mode: u32) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
        .and_then(|f| {
            f.set_permissions(std::fs::Permissions::from_mode(mode))?;
            Ok(f)
        })
        .map_err(|e| io::Error::new(e.kind(), format!("create {}: {e}", path.display())))
}

/// Owner, group and permission bits of an open file.
#[derive(Debug, Clone, Copy)]
pub struct Owner {
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
}

impl Owner {
    pub fn of(meta: &std::fs::Metadata) -> Owner {
        Owner {
            uid: meta.uid(),
            gid: meta.gid(),
            mode: meta.permissions().mode() & 0o7777,
        }
    }

    /// Gives `file` this owner and mode (chown first: it clears set-id bits). A file that has
    /// the owner already is not chowned: the systemd unit forbids the chown family of system
    /// calls (`~@privileged`), and a daemon rotating its own user's logs never needs them.
    pub(super) fn apply(&self, file: &File) -> io::Result<()> {
        use std::os::unix::fs::MetadataExt;
        let meta = file.metadata()?;
        if (meta.uid(), meta.gid()) != (self.uid, self.gid) {
            std::os::unix::fs::fchown(file, Some(self.uid), Some(self.gid))?;
        }
        file.set_permissions(std::fs::Permissions::from_mode(self.mode))
    }
}

/// Whether a process may give a file this owner: root may; anyone else only their own uid
/// and a group they are in.
fn may_give(euid: u32, egid: u32, groups: &[u32], owner: &Owner) -> bool {
    euid == 0 || (owner.uid == euid && (owner.gid == egid || groups.contains(&owner.gid)))
}

impl Owner {
    /// The owner a file atpred creates in `dir` (a fresh log, a compressed or copied one)
    /// takes in place of this one, or None when it cannot be recreated as it was.
    ///
    /// Root, or a daemon that may give this owner, keeps it. Otherwise the log belongs to
    /// another user, typically the application whose folder atpred reaches as a member of its
    /// group: in a setgid folder of the log's own group a new file takes that group from the
    /// folder without a chown (which the unit forbids, and which under `PrivateUsers=` could
    /// not name the unmapped group anyway). The file is then atpred's, and its group gets the
    /// owner's rights as well, so that the writer keeps through its group what it had as owner.
    pub fn in_dir(self, dir: &Path) -> io::Result<Option<Owner>> {
        let meta = std::fs::metadata(dir)
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", dir.display())))?;
        let groups: Vec<u32> = nix::unistd::getgroups()
            .map(|g| g.iter().map(|g| g.as_raw()).collect())
            .unwrap_or_default();
        Ok(recreatable(
            Creds {
                euid: nix::unistd::geteuid().as_raw(),
                egid: nix::unistd::getegid().as_raw(),
                groups: &groups,
            },
            self,
            meta.gid(),
            meta.permissions().mode(),
        ))
    }
}

/// The daemon's effective ids and supplementary groups.
struct Creds<'a> {
    euid: u32,
    egid: u32,
    groups: &'a [u32],
}

fn recreatable(me: Creds, owner: Owner, dir_gid: u32, dir_mode: u32) -> Option<Owner> {
    if may_give(me.euid, me.egid, me.groups, &owner) {
        return Some(owner);
    }
    let setgid = dir_mode & 0o2000 != 0;
    (setgid && dir_gid == owner.gid).then_some(Owner {
        uid: me.euid,
        gid: owner.gid,
        mode: owner.mode | ((owner.mode & 0o600) >> 3),
    })
}

/// Creates the fresh, empty log of the `create` method.
pub fn create_log(path: &Path, owner: Owner) -> io::Result<()> {
    let f = create_new(path, owner.mode)?;
    owner.apply(&f)?;
    f.sync_all()?;
    crate::publish::sync_dir(path.parent().unwrap_or(Path::new("/")))
}

/// Opens an existing regular file without following a symlink.
pub(super) fn open_nofollow(path: &Path, write: bool) -> io::Result<File> {
    let f = OpenOptions::new()
        .read(true)
        .write(write)
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)
        .map_err(|e| io::Error::new(e.kind(), format!("open {}: {e}", path.display())))?;
    if !f.metadata()?.is_file() {
        return Err(io::Error::other(format!(
            "{} is not a regular file",
            path.display()
        )));
    }
    Ok(f)
}

/// fsyncs a file by path.
pub fn sync_file(path: &Path) -> io::Result<()> {
    open_nofollow(path, false)?.sync_all()
}

/// Removes a file (never following a symlink: the name itself goes).
pub fn remove(dir: &Path, name: &str) -> io::Result<()> {
    match std::fs::remove_file(dir.join(name)) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

/// Polls until no other process holds `path` open for writing, or `timeout` passes (false).
pub fn wait_unwritten(path: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let Ok(meta) = std::fs::symlink_metadata(path) else {
            return true;
        };
        let id = (meta.dev(), meta.ino());
        if writers(&HashSet::from([id])).is_empty() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fdinfo_access_modes() {
        assert!(writable("pos:\t0\nflags:\t0102001\nmnt_id:\t1\n"));
        assert!(writable("flags:\t02\n"));
        assert!(!writable("pos:\t0\nflags:\t0100000\n"));
        assert!(!writable(""));
    }

    #[test]
    fn rename_never_replaces_and_create_never_follows() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a"), b"a").unwrap();
        std::fs::write(d.path().join("target"), b"keep").unwrap();
        std::os::unix::fs::symlink(d.path().join("target"), d.path().join("b")).unwrap();
        assert!(rename_noreplace(d.path(), "a", "b").is_err());
        assert!(create_new(&d.path().join("b"), 0o644).is_err());
        assert_eq!(std::fs::read(d.path().join("target")).unwrap(), b"keep");
        rename_noreplace(d.path(), "a", "c").unwrap();
        assert_eq!(std::fs::read(d.path().join("c")).unwrap(), b"a");
    }

    #[test]
    fn only_root_gives_files_away() {
        let owner = |uid, gid| Owner {
            uid,
            gid,
            mode: 0o640,
        };
        assert!(may_give(0, 0, &[], &owner(33, 4)));
        assert!(may_give(100, 100, &[], &owner(100, 100)));
        assert!(may_give(100, 100, &[4], &owner(100, 4)));
        assert!(!may_give(100, 100, &[4], &owner(33, 100)), "another user");
        assert!(
            !may_give(100, 100, &[4], &owner(100, 5)),
            "a group it is not in"
        );
    }

    #[test]
    fn another_users_log_is_recreated_through_a_setgid_folder_of_its_group() {
        let me = || Creds {
            euid: 100,
            egid: 100,
            groups: &[4],
        };
        let log = Owner {
            uid: 33,
            gid: 4,
            mode: 0o640,
        };
        let own = Owner { uid: 100, ..log };
        let kept = recreatable(me(), own, 4, 0o2770).unwrap();
        assert_eq!(
            (kept.uid, kept.gid, kept.mode),
            (100, 4, 0o640),
            "its own log"
        );
        let taken = recreatable(me(), log, 4, 0o2770).unwrap();
        assert_eq!(
            (taken.uid, taken.gid, taken.mode),
            (100, 4, 0o660),
            "atpred's, the log's group, which gets the owner's rights"
        );
        assert!(recreatable(me(), log, 4, 0o770).is_none(), "not setgid");
        assert!(
            recreatable(me(), log, 5, 0o2770).is_none(),
            "a folder of another group"
        );
        let root = Creds {
            euid: 0,
            egid: 0,
            groups: &[],
        };
        let same = recreatable(root, log, 5, 0o755).unwrap();
        assert_eq!((same.uid, same.gid, same.mode), (33, 4, 0o640), "root");
    }
}
