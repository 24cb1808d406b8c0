//! Where each backup's offsite copy stands: `state-dir/offsite/<target>/<id>.json`, one small
//! file per backup, replaced atomically at every step. One file per backup keeps two backup
//! jobs shipping at once from ever writing the same file.
//!
//! `pending` is written before the first byte leaves; a copy still `pending` or `failed` is
//! taken up again by the job's next run, so an outage or a crash mid-upload costs a delay,
//! never the copy.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::publish;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Decided, not all uploaded yet (or the daemon died while uploading).
    Pending,
    /// Every file uploaded; not yet read back.
    Uploaded,
    /// Read back, matched the manifest, and the manifest uploaded: the copy is committed.
    Verified,
    /// The last attempt failed; `error` says why.
    Failed,
}

impl Stage {
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Pending => "pending",
            Stage::Uploaded => "uploaded",
            Stage::Verified => "verified",
            Stage::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Record {
    pub id: String,
    pub job: String,
    pub stage: Stage,
    pub at: DateTime<Utc>,
    /// How many runs tried this copy.
    pub attempts: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

fn dir(state_dir: &Path, target: &str) -> PathBuf {
    state_dir.join("offsite").join(target)
}

pub fn read(state_dir: &Path, target: &str, id: &str) -> Option<Record> {
    let bytes = std::fs::read(dir(state_dir, target).join(format!("{id}.json"))).ok()?;
    serde_json::from_slice(&bytes).ok()
}

pub fn write(state_dir: &Path, target: &str, record: &Record) -> std::io::Result<()> {
    let dir = dir(state_dir, target);
    std::fs::create_dir_all(&dir)?;
    let json = serde_json::to_vec_pretty(record).map_err(std::io::Error::other)?;
    publish::write_atomic(&dir.join(format!("{}.json", record.id)), &json, 0o600)
}

/// Every record of `target`, oldest backup first. Unreadable files are skipped (a torn write
/// cannot happen, so they are not ours).
pub fn list(state_dir: &Path, target: &str) -> Vec<Record> {
    let Ok(entries) = std::fs::read_dir(dir(state_dir, target)) else {
        return Vec::new();
    };
    let mut records: Vec<Record> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let id = name.strip_suffix(".json")?;
            read(state_dir, target, id)
        })
        .collect();
    records.sort_by(|a, b| a.id.cmp(&b.id));
    records
}

/// Forgets a backup's record (its local copy was pruned).
pub fn remove(state_dir: &Path, target: &str, id: &str) {
    let _ = std::fs::remove_file(dir(state_dir, target).join(format!("{id}.json")));
}
