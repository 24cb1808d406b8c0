//! Private work folders in `restore-scratch-dir`: `PREFIX ID-PID`, mode 0700, removed when
//! dropped. A daemon killed mid-way (kill -9 runs no destructor) leaves its folder behind; the
//! next [`WorkDir::create`] of the same kind removes the folders whose pid is gone. Only names
//! of this kind with a dead pid are removed, and a symlink planted under such a name is removed
//! itself, never followed (`remove_dir_all`). restore-scratch-dir itself is trust-checked when
//! the configuration is loaded (at start and at each reload): a folder that users other than
//! root and atpred's own may write to, or that sits under one, is refused with its key named.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

/// A private folder in restore-scratch-dir, removed when dropped.
#[derive(Debug)]
pub struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    /// Creates `scratch` (0700) when missing, removes the `prefix` folders of dead daemons, and
    /// creates `PREFIX ID-PID` (replacing one this process left).
    pub fn create(scratch: &Path, prefix: &str, id: &str) -> io::Result<WorkDir> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(scratch)?;
        for name in sweep(scratch, prefix) {
            tracing::warn!("removed {name} from restore-scratch-dir: left by a daemon that died");
        }
        let path = scratch.join(format!("{prefix}{id}-{}", std::process::id()));
        if path.exists() {
            std::fs::remove_dir_all(&path)?;
        }
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(WorkDir { path })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Removes the `prefix` folders in `scratch` whose pid (the name's last part) is not alive and
/// not this process; returns their names.
pub fn sweep(scratch: &Path, prefix: &str) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(scratch) else {
        return Vec::new();
    };
    let mut removed = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(prefix)
            .and_then(|rest| rest.rsplit_once('-'))
            .and_then(|(_, pid)| pid.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id()
            && !Path::new(&format!("/proc/{pid}")).exists()
            && std::fs::remove_dir_all(entry.path()).is_ok()
        {
            removed.push(name);
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dead_daemons_folder_is_swept_and_a_live_ones_kept() {
        let dir = tempfile::tempdir().unwrap();
        let dead = dir.path().join(".x-a-4194305"); // above the default pid_max: never alive
        let live = dir.path().join(".x-b-1");
        let other = dir.path().join(".y-c-4194305");
        for p in [&dead, &live, &other] {
            std::fs::create_dir(p).unwrap();
        }
        let work = WorkDir::create(dir.path(), ".x-", "d").unwrap();
        assert!(!dead.exists() && live.exists() && other.exists());
        let path = work.path().to_owned();
        assert!(path.ends_with(format!(".x-d-{}", std::process::id())));
        drop(work);
        assert!(!path.exists(), "removed when dropped");
    }
}
