//! A rotate job's persisted state: per log, when it was last rotated and the rotation in
//! progress (the journal). One JSON file per job in `<state-dir>/rotate/`, replaced atomically.
//!
//! A file that cannot be read or parsed never stops rotation: [`load`] says why, and the caller
//! rebuilds what it needs from the files on disk (the last rotation from the newest rotated
//! file's modification time). Interrupted copytruncate leftovers are found on disk too.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::JobName;

/// State of all logs of one job.
#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct JobState {
    pub logs: BTreeMap<PathBuf, LogState>,
}

#[derive(Debug, Default, Clone, Serialize, Deserialize)]
pub struct LogState {
    /// The last rotation, or when the log was first seen (max-age counts from there).
    pub last_rotation: Option<DateTime<Utc>>,
    /// A rotation that was started and not yet finished.
    pub pending: Option<Pending>,
}

/// The journal of one rotation, written before its first step.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pending {
    pub started: DateTime<Utc>,
    /// The rotated name the log becomes.
    pub to: String,
    /// Shifts of older numbered files, in order, done before the log moves.
    pub shifts: Vec<(String, String)>,
    /// The log's inode when the rotation started: a log with another inode was already moved.
    pub inode: u64,
    pub uid: u32,
    pub gid: u32,
    pub mode: u32,
    pub method: PendingMethod,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PendingMethod {
    Create,
    CopyTruncate,
}

/// `<state-dir>/rotate/<job>.json`.
pub fn path(state_dir: &Path, job: &JobName) -> PathBuf {
    state_dir.join("rotate").join(format!("{job}.json"))
}

/// The state, or why it had to be discarded (`Err` carries the default state to rebuild).
pub fn load(path: &Path) -> Result<JobState, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map_err(|e| format!("state file {} is corrupt ({e})", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(JobState::default()),
        Err(e) => Err(format!(
            "state file {} cannot be read ({e})",
            path.display()
        )),
    }
}

/// Replaces the state file atomically (temp name, fsync, rename, fsync the directory).
pub fn save(path: &Path, state: &JobState) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let bytes = serde_json::to_vec_pretty(state).map_err(std::io::Error::other)?;
    crate::publish::write_atomic(path, &bytes, 0o600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_reports_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("rotate").join("logs.json");
        assert!(
            load(&p).unwrap().logs.is_empty(),
            "missing file: empty state"
        );
        let mut s = JobState::default();
        s.logs.insert(
            "/var/log/a.log".into(),
            LogState {
                last_rotation: Some(Utc::now()),
                pending: None,
            },
        );
        save(&p, &s).unwrap();
        assert_eq!(load(&p).unwrap().logs.len(), 1);
        std::fs::write(&p, b"{\"logs\": {\"/x\": [").unwrap();
        let err = load(&p).unwrap_err();
        assert!(err.contains("is corrupt"), "{err}");
    }
}
