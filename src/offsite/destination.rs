//! Where `backups fetch --to DIR` may write: backup-dir itself (the copy becomes a catalog
//! entry again) or inside a folder listed in `[daemon] fetch-dirs`, never through a symbolic
//! link; and decrypted copies (`--identity`) only into a fresh folder the daemon creates
//! itself, mode 0700, so that no one who could read or replace an existing folder gets at the
//! plaintext. Not into a subfolder of backup-dir: the catalog would list it as an unreadable
//! backup, and prune removes nothing while one is there.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Component, Path, PathBuf};

use crate::config::DaemonConfig;

/// Why a destination is refused.
#[derive(Debug, thiserror::Error)]
pub enum DestinationError {
    #[error("--to must be an absolute path without . or .. segments, got {0}")]
    NotPlain(String),
    #[error(
        "--to {to} is outside backup-dir ({backup_dir}) and every folder of [daemon] fetch-dirs ({dirs}); add it to fetch-dirs to allow it"
    )]
    NotAllowed {
        to: String,
        backup_dir: String,
        dirs: String,
    },
    #[error(
        "--to {to} is a folder inside backup-dir: the catalog would take it for a damaged backup and prune would stop; fetch into backup-dir itself (no --to) or into a folder of [daemon] fetch-dirs"
    )]
    InsideBackupDir { to: String },
    #[error("--to {to}: {path} is a symbolic link or not a folder; refusing to write through it")]
    NotAFolder { to: String, path: String },
    #[error(
        "--identity writes plaintext, so --to must name a folder that does not exist yet (the daemon creates it, mode 0700); {0} exists"
    )]
    Exists(String),
    #[error("--identity: the parent of {to}, {parent}, {why}")]
    BadParent {
        to: String,
        parent: String,
        why: String,
    },
    #[error("creating {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// A checked destination folder.
#[derive(Debug)]
pub struct Destination {
    pub dir: PathBuf,
    /// The daemon made this folder for this fetch: removed again if the fetch fails.
    pub fresh: bool,
}

impl Destination {
    /// Undoes a fresh folder after a failed fetch, so that a retry may use the same name.
    pub fn discard(&self) {
        if self.fresh
            && let Err(e) = std::fs::remove_dir_all(&self.dir)
        {
            tracing::warn!(
                "cannot remove {} after a failed fetch: {e}",
                self.dir.display()
            );
        }
    }
}

/// Checks `to` against backup-dir and `fetch-dirs`; with `plaintext`, creates it fresh.
pub fn prepare(
    daemon: &DaemonConfig,
    to: &Path,
    plaintext: bool,
) -> Result<Destination, DestinationError> {
    let shown = to.display().to_string();
    if !to.is_absolute()
        || to
            .components()
            .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        return Err(DestinationError::NotPlain(shown));
    }
    let in_fetch_dir = daemon
        .fetch_dirs
        .iter()
        .filter_map(|r| to.strip_prefix(r).ok().map(|b| (r, b)))
        .max_by_key(|(r, _)| r.as_os_str().len());
    let (root, below) = match in_fetch_dir {
        Some(found) => found,
        None if to == daemon.backup_dir => (&daemon.backup_dir, Path::new("")),
        None if to.starts_with(&daemon.backup_dir) => {
            return Err(DestinationError::InsideBackupDir { to: shown });
        }
        None => {
            return Err(not_allowed(daemon, shown));
        }
    };
    // The configured folder itself may be a link (an administrator's choice); below it,
    // nothing that exists may be one.
    let mut path = root.clone();
    for part in below.components() {
        path.push(part);
        match std::fs::symlink_metadata(&path) {
            Ok(m) if m.file_type().is_dir() => {}
            Ok(_) => {
                return Err(DestinationError::NotAFolder {
                    to: shown,
                    path: path.display().to_string(),
                });
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => break,
            Err(source) => {
                return Err(DestinationError::Io {
                    path: path.display().to_string(),
                    source,
                });
            }
        }
    }
    if !plaintext {
        return Ok(Destination {
            dir: to.to_owned(),
            fresh: false,
        });
    }
    create_fresh(to)?;
    Ok(Destination {
        dir: to.to_owned(),
        fresh: true,
    })
}

fn not_allowed(daemon: &DaemonConfig, to: String) -> DestinationError {
    let dirs: Vec<String> = daemon
        .fetch_dirs
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    DestinationError::NotAllowed {
        to,
        backup_dir: daemon.backup_dir.display().to_string(),
        dirs: if dirs.is_empty() {
            "none".to_owned()
        } else {
            dirs.join(", ")
        },
    }
}

/// `mkdir DIR` with mode 0700 (failing if anything, a link included, has the name), in an
/// existing parent that only root or the daemon's user can write to — anyone else could swap
/// the new folder for another between its creation and the writes.
fn create_fresh(to: &Path) -> Result<(), DestinationError> {
    let shown = to.display().to_string();
    let parent = to.parent().unwrap_or(Path::new("/"));
    let bad_parent = |why: String| DestinationError::BadParent {
        to: shown.clone(),
        parent: parent.display().to_string(),
        why,
    };
    let meta = std::fs::metadata(parent).map_err(|e| bad_parent(format!("cannot be read: {e}")))?;
    let me = nix::unistd::geteuid().as_raw();
    if meta.uid() != 0 && meta.uid() != me {
        return Err(bad_parent(format!(
            "belongs to uid {}, not root or the daemon's uid {me}",
            meta.uid()
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(bad_parent(format!(
            "has mode {:04o}: others can write to it",
            meta.mode() & 0o7777
        )));
    }
    match std::fs::DirBuilder::new().mode(0o700).create(to) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(DestinationError::Exists(shown));
        }
        Err(source) => {
            return Err(DestinationError::Io {
                path: shown,
                source,
            });
        }
    }
    // The umask may have taken bits away, never added any; make the mode exact.
    std::fs::set_permissions(to, std::fs::Permissions::from_mode(0o700)).map_err(|source| {
        DestinationError::Io {
            path: shown,
            source,
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn daemon(backup_dir: &Path, fetch_dirs: &[&Path]) -> DaemonConfig {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("atpred.toml");
        std::fs::write(&path, "").unwrap();
        let mut d = crate::config::Config::load_with_env(&path, &[])
            .unwrap()
            .daemon;
        d.backup_dir = backup_dir.to_owned();
        d.fetch_dirs = fetch_dirs.iter().map(|p| p.to_path_buf()).collect();
        d
    }

    #[test]
    fn only_backup_dir_and_fetch_dirs_are_allowed() {
        let tmp = tempfile::tempdir().unwrap();
        let (backups, restore) = (tmp.path().join("backups"), tmp.path().join("restore"));
        for d in [&backups, &restore] {
            std::fs::create_dir(d).unwrap();
        }
        let d = daemon(&backups, &[&restore]);
        for ok in [backups.clone(), restore.clone(), restore.join("a/b")] {
            let dest = prepare(&d, &ok, false).unwrap();
            assert!(!dest.fresh);
        }
        for (bad, words) in [
            (tmp.path().join("elsewhere"), "outside backup-dir"),
            (PathBuf::from("/etc"), "outside backup-dir"),
            (restore.join("../etc"), ". or .."),
            (PathBuf::from("restore"), "absolute"),
            (backups.join("x"), "inside backup-dir"),
        ] {
            let e = prepare(&d, &bad, false).unwrap_err().to_string();
            assert!(e.contains(words), "{}: {e}", bad.display());
        }
        std::os::unix::fs::symlink("/etc", restore.join("link")).unwrap();
        let e = prepare(&d, &restore.join("link/x"), false).unwrap_err();
        assert!(matches!(e, DestinationError::NotAFolder { .. }), "{e}");
    }

    #[test]
    fn plaintext_goes_into_a_fresh_private_folder_only() {
        let tmp = tempfile::tempdir().unwrap();
        let restore = tmp.path().join("restore");
        std::fs::create_dir(&restore).unwrap();
        std::fs::set_permissions(&restore, std::fs::Permissions::from_mode(0o755)).unwrap();
        let d = daemon(&tmp.path().join("backups"), &[&restore]);
        let fresh = restore.join("r1");
        let dest = prepare(&d, &fresh, true).unwrap();
        assert!(dest.fresh);
        let meta = std::fs::symlink_metadata(&fresh).unwrap();
        assert_eq!(meta.mode() & 0o7777, 0o700);
        let e = prepare(&d, &fresh, true).unwrap_err();
        assert!(matches!(e, DestinationError::Exists(_)), "{e}");
        let e = prepare(&d, &restore, true).unwrap_err();
        assert!(matches!(e, DestinationError::Exists(_)), "{e}");
        dest.discard();
        assert!(!fresh.exists());
        std::fs::set_permissions(&restore, std::fs::Permissions::from_mode(0o777)).unwrap();
        let e = prepare(&d, &fresh, true).unwrap_err();
        assert!(e.to_string().contains("others can write"), "{e}");
        assert!(!fresh.exists());
    }
}
