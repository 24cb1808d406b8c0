//! The backup catalog: what is in backup-dir, read from disk every time (no side file to rot).
//!
//! A backup is a direct child folder `<id>` holding a valid `manifest.json`. Work in progress
//! lives in `.partial-<id>` (with a lock held by its writer), failed verifications are kept
//! apart in `.failed-<id>`. Nothing here follows a symlink.

use std::fs::File;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::backup::manifest::Manifest;

pub const PARTIAL_PREFIX: &str = ".partial-";
pub const FAILED_PREFIX: &str = ".failed-";
pub const PARTIAL_LOCK: &str = ".lock";

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("backup-dir {0} is a symlink; refusing to write through it (use the real path)")]
    Symlink(String),
    #[error(
        "backup-dir {path} is writable by other users (mode {mode:04o}); run `chmod 700 {path}`"
    )]
    Shared { path: String, mode: u32 },
    #[error("backup-dir {0} is not a directory")]
    NotADirectory(String),
    #[error("backup-dir {path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
}

/// One backup folder as found on disk.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    pub state: State,
    /// The manifest, when it could be read.
    pub manifest: Option<Manifest>,
    /// Why the manifest could not be read.
    pub problem: Option<String>,
    /// Its pin ([`crate::pins`]): retention keeps it whatever the policy says.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin: Option<crate::pins::Pin>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Complete and verified.
    Verified,
    /// Kept apart after a failed verification.
    Failed,
    /// A folder that should be a backup but whose manifest is missing or invalid.
    Unreadable,
}

/// Creates backup-dir (0700) when missing; refuses a symlink or a directory others can write.
pub fn ensure_dir(dir: &Path) -> Result<(), CatalogError> {
    let shown = dir.display().to_string();
    match std::fs::symlink_metadata(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(dir)
                .map_err(|source| CatalogError::Io {
                    path: shown.clone(),
                    source,
                })?;
            // DirBuilder's mode is masked by the umask; make it exact.
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(
                |source| CatalogError::Io {
                    path: shown,
                    source,
                },
            )
        }
        Err(source) => Err(CatalogError::Io {
            path: shown,
            source,
        }),
        Ok(m) if m.file_type().is_symlink() => Err(CatalogError::Symlink(shown)),
        Ok(m) if !m.is_dir() => Err(CatalogError::NotADirectory(shown)),
        Ok(m) if m.mode() & 0o022 != 0 => Err(CatalogError::Shared {
            path: shown,
            mode: m.mode() & 0o7777,
        }),
        Ok(_) => Ok(()),
    }
}

/// Every backup and failed backup in `dir`, oldest first (ids sort by time).
pub fn list(dir: &Path) -> Result<Vec<Entry>, CatalogError> {
    let io = |source| CatalogError::Io {
        path: dir.display().to_string(),
        source,
    };
    let mut entries = Vec::new();
    for item in std::fs::read_dir(dir).map_err(io)? {
        let item = item.map_err(io)?;
        let Ok(name) = item.file_name().into_string() else {
            continue;
        };
        let Ok(file_type) = item.file_type() else {
            continue;
        };
        if !file_type.is_dir() {
            continue; // symlinks and files are never backups
        }
        let (id, failed) = match name.strip_prefix(FAILED_PREFIX) {
            Some(id) => (id.to_owned(), true),
            None if name.starts_with('.') => continue,
            None => (name.clone(), false),
        };
        let (manifest, mut problem) = match Manifest::read(&item.path()) {
            Ok(m) => (Some(m), None),
            Err(e) => (None, Some(e)),
        };
        let state = match (&manifest, failed) {
            (None, _) => State::Unreadable,
            (Some(_), true) => State::Failed,
            (Some(m), false) if m.id != id => {
                problem = Some(format!(
                    "its manifest names backup {:?}, not the folder's",
                    m.id
                ));
                State::Unreadable
            }
            (Some(m), false) if !m.verified() => {
                problem = Some("published with a failed verification".into());
                State::Unreadable
            }
            (Some(_), false) => State::Verified,
        };
        let pin = crate::pins::read(&item.path());
        entries.push(Entry {
            id,
            state,
            manifest,
            problem,
            pin,
        });
    }
    entries.sort_by(|a, b| a.id.cmp(&b.id));
    Ok(entries)
}

/// The folder of backup `id`, if it is a published backup (never a path outside `dir`).
pub fn path_of(dir: &Path, id: &str) -> Option<PathBuf> {
    let valid = !id.is_empty() && !id.starts_with('.') && !id.contains('/') && id != "..";
    let path = dir.join(id);
    let meta = std::fs::symlink_metadata(&path).ok()?;
    (valid && meta.is_dir()).then_some(path)
}

/// Removes `.partial-*` folders whose writer is gone (its lock can be taken). Returns their
/// names.
pub fn remove_stale_partials(dir: &Path) -> Vec<String> {
    let Ok(items) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for item in items.flatten() {
        let name = item.file_name().to_string_lossy().into_owned();
        if !name.starts_with(PARTIAL_PREFIX) || !item.file_type().is_ok_and(|t| t.is_dir()) {
            continue;
        }
        let alive = File::open(item.path().join(PARTIAL_LOCK)).is_ok_and(|f| f.try_lock().is_err());
        if !alive && std::fs::remove_dir_all(item.path()).is_ok() {
            removed.push(name);
        }
    }
    removed
}

pub const TRASH_PREFIX: &str = ".trash-";

/// Renames `dir/name` (a direct child holding our manifest, not a symlink) to
/// `.trash-<id>`, fsyncs `dir`, then deletes it. After a crash between the two steps the trash
/// is removed at start-up ([`remove_trash`]); it never looks like a backup.
pub fn move_to_trash(dir: &Path, name: &str, id: &str) -> std::io::Result<()> {
    let path = dir.join(name);
    let meta = std::fs::symlink_metadata(&path)?;
    if !meta.is_dir() || name.contains('/') || name == ".." {
        return Err(std::io::Error::other(format!(
            "{name} is not a backup folder"
        )));
    }
    Manifest::read(&path).map_err(std::io::Error::other)?;
    let trash = dir.join(format!("{TRASH_PREFIX}{id}"));
    std::fs::rename(&path, &trash)?;
    crate::publish::sync_dir(dir)?;
    std::fs::remove_dir_all(&trash)
}

/// Removes `.trash-*` folders left by a crash during removal. Returns their names.
pub fn remove_trash(dir: &Path) -> Vec<String> {
    let Ok(items) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    items
        .flatten()
        .filter(|i| i.file_name().to_string_lossy().starts_with(TRASH_PREFIX))
        .filter(|i| i.file_type().is_ok_and(|t| t.is_dir()))
        .filter(|i| std::fs::remove_dir_all(i.path()).is_ok())
        .map(|i| i.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Backups in use (being verified on request) and being removed: a backup is claimed by one of
/// them at a time, so retention never removes a backup under a verification.
#[derive(Debug, Default)]
pub struct InUse(std::sync::Mutex<std::collections::HashSet<String>>);

impl InUse {
    pub fn contains(&self, id: &str) -> bool {
        self.lock().contains(id)
    }

    /// Claims `id` until the returned guard is dropped; `None` when it is already claimed.
    pub fn claim(self: &std::sync::Arc<Self>, id: &str) -> Option<Claim> {
        self.lock().insert(id.to_owned()).then(|| Claim {
            set: std::sync::Arc::clone(self),
            id: id.to_owned(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, std::collections::HashSet<String>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

pub struct Claim {
    set: std::sync::Arc<InUse>,
    id: String,
}

impl Drop for Claim {
    fn drop(&mut self) {
        self.set.lock().remove(&self.id);
    }
}
