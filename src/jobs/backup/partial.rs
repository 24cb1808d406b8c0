//! The `.partial-<id>` folder a backup is written in, and its fate: published as `<id>`, kept
//! apart as `.failed-<id>`, or removed.
//!
//! The writer holds a lock on `.partial-<id>/.lock`, so start-up cleanup can tell a live
//! writer's folder from a crashed one's. Dropping the guard without publishing removes it.

use std::fs::File;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use crate::config::FreeSpace;
use crate::jobs::catalog::{FAILED_PREFIX, PARTIAL_LOCK, PARTIAL_PREFIX};
use crate::publish;

pub struct Partial {
    dir: PathBuf,
    backup_dir: PathBuf,
    id: String,
    lock: Option<File>,
    done: bool,
}

impl Partial {
    pub fn create(backup_dir: &Path, id: &str) -> std::io::Result<Partial> {
        if backup_dir.join(id).exists() {
            return Err(std::io::Error::other(format!(
                "a backup named {id} already exists"
            )));
        }
        let dir = backup_dir.join(format!("{PARTIAL_PREFIX}{id}"));
        std::fs::DirBuilder::new().mode(0o700).create(&dir)?;
        std::fs::set_permissions(&dir, std::os::unix::fs::PermissionsExt::from_mode(0o700))?;
        let lock = File::options()
            .create_new(true)
            .write(true)
            .open(dir.join(PARTIAL_LOCK))?;
        lock.lock()?;
        Ok(Partial {
            dir,
            backup_dir: backup_dir.to_owned(),
            id: id.to_owned(),
            lock: Some(lock),
            done: false,
        })
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    /// fsyncs the folder, drops the lock file and renames it to `<id>`; fsyncs backup-dir.
    pub fn publish(self) -> std::io::Result<()> {
        let target = self.backup_dir.join(&self.id);
        self.finish(&target)
    }

    /// Renames the folder to `.failed-<id>`: kept for inspection, never counted as a backup.
    pub fn keep_failed(self) -> std::io::Result<()> {
        let target = self.backup_dir.join(format!("{FAILED_PREFIX}{}", self.id));
        self.finish(&target)
    }

    fn finish(mut self, target: &Path) -> std::io::Result<()> {
        std::fs::remove_file(self.dir.join(PARTIAL_LOCK))?;
        publish::sync_dir(&self.dir)?;
        std::fs::rename(&self.dir, target)?;
        self.done = true;
        self.lock = None;
        publish::sync_dir(&self.backup_dir)
    }
}

impl Drop for Partial {
    fn drop(&mut self) {
        if !self.done {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// Refuses to start when the dump is not expected to fit: estimated from the database's size
/// and the last backup's size ratio (1.0 when there is none), keeping `min_free` free after.
pub fn preflight(
    backup_dir: &Path,
    database_bytes: u64,
    ratio: Option<f64>,
    min_free: FreeSpace,
) -> Result<(), String> {
    let stat = nix::sys::statvfs::statvfs(backup_dir)
        .map_err(|e| format!("statvfs {}: {e}", backup_dir.display()))?;
    let frsize = stat.fragment_size() as u64;
    let total = stat.blocks() as u64 * frsize;
    let free = stat.blocks_available() as u64 * frsize;
    let estimate = (database_bytes as f64 * ratio.unwrap_or(1.0)) as u64;
    let keep = min_free.bytes_of(total);
    if free < estimate.saturating_add(keep) {
        return Err(format!(
            "not enough space in {}: {} free, the backup needs about {} and {} must stay free (min-free-after)",
            backup_dir.display(),
            super::dump::mib(free),
            super::dump::mib(estimate),
            super::dump::mib(keep)
        ));
    }
    Ok(())
}
