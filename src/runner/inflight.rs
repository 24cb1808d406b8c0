//! In-flight markers: `state-dir/inflight/<run id>.json`, written (atomically, fsynced) when a
//! run that leaves temporary things on disk begins (a files restore) and removed when its
//! record is in the history. A marker still there at the next start is a run that a kill -9,
//! a crash or a power loss cut short: [`recover`] removes the temporary paths it names and
//! turns it into a history record with the outcome `interrupted`.
//!
//! Only paths whose name carries [`LEFTOVER_MARK`] are removed, so a damaged or planted marker
//! cannot make the daemon delete anything else. A run whose record reached the history before
//! the kill (its marker not yet removed) is not recorded twice.

use std::io;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::config::Kind;
use crate::ids::{JobName, RunId};
use crate::protocol::{Outcome, RunRecord, Trigger};

/// The markers' folder in state-dir.
pub const DIR: &str = "inflight";

/// What every removable leftover's name holds (`.DIR.atpred-restore-RUN`).
pub const LEFTOVER_MARK: &str = ".atpred-";

/// The largest marker read; ours are well under a kilobyte.
const MAX_BYTES: u64 = 64 * 1024;

/// What a run in flight left on disk, and what it was.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Marker {
    pub run_id: RunId,
    pub job: JobName,
    pub kind: Kind,
    pub trigger: Trigger,
    pub started: DateTime<Utc>,
    /// What the run does, in words (`the restore of ID into DIR`).
    pub what: String,
    /// The details its record would carry.
    pub details: serde_json::Value,
    /// Temporary paths it creates, removed if it is interrupted (never its target).
    pub leftovers: Vec<PathBuf>,
}

/// A written marker; removed when dropped (the run's record is written by then).
#[derive(Debug)]
pub struct InFlight(PathBuf);

impl InFlight {
    /// Writes `marker` under `state_dir` before the run touches anything.
    pub fn write(state_dir: &Path, marker: &Marker) -> io::Result<InFlight> {
        let dir = state_dir.join(DIR);
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)?;
        let bytes = serde_json::to_vec(marker).map_err(io::Error::other)?;
        let path = dir.join(format!("{}.json", marker.run_id));
        crate::publish::write_atomic(&path, &bytes, 0o600)?;
        Ok(InFlight(path))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_file(&self.0)
            && e.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!("cannot remove {}: {e}", self.0.display());
        }
    }
}

/// At start: each marker left by the previous daemon becomes an `interrupted` record (unless
/// `recorded` says the history has that run already), its leftovers removed, the marker
/// removed. Returns the records to append to the history.
pub fn recover(state_dir: &Path, recorded: impl Fn(&RunId) -> bool) -> Vec<RunRecord> {
    let dir = state_dir.join(DIR);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut records = Vec::new();
    for entry in entries.flatten() {
        let path = entry.path();
        if path.extension().is_none_or(|e| e != "json") {
            continue;
        }
        match read(&path) {
            Ok(marker) => {
                let removed = remove_leftovers(&marker.leftovers);
                if !recorded(&marker.run_id) {
                    records.push(record(marker, &removed));
                }
            }
            Err(e) => tracing::warn!(
                "{}: unreadable in-flight marker, ignored: {e}",
                path.display()
            ),
        }
        if let Err(e) = std::fs::remove_file(&path) {
            tracing::warn!("cannot remove {}: {e}", path.display());
        }
    }
    records.sort_by_key(|r| r.started);
    records
}

fn read(path: &Path) -> io::Result<Marker> {
    use std::io::Read;
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_BYTES)
        .read_to_end(&mut bytes)?;
    serde_json::from_slice(&bytes).map_err(io::Error::other)
}

/// Removes the leftovers that carry [`LEFTOVER_MARK`]; says what was removed.
fn remove_leftovers(leftovers: &[PathBuf]) -> Vec<String> {
    let mut removed = Vec::new();
    for path in leftovers {
        let ours = path.is_absolute()
            && path
                .file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.contains(LEFTOVER_MARK));
        if !ours {
            tracing::warn!(
                "{}: not a temporary path of ours, left alone",
                path.display()
            );
            continue;
        }
        match std::fs::symlink_metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Ok(meta) if meta.is_dir() => match std::fs::remove_dir_all(path) {
                Ok(()) => removed.push(path.display().to_string()),
                Err(e) => tracing::warn!("cannot remove {}: {e}", path.display()),
            },
            _ => tracing::warn!("{}: not a folder, left alone", path.display()),
        }
    }
    removed
}

fn record(marker: Marker, removed: &[String]) -> RunRecord {
    let cleaned = if removed.is_empty() {
        String::new()
    } else {
        format!("; removed what it left: {}", removed.join(", "))
    };
    let message = format!(
        "interrupted: the daemon ended (killed, crashed or the machine went down) during {}; \
         its target was left as it was{cleaned}",
        marker.what
    );
    tracing::warn!(job = %marker.job, run_id = %marker.run_id, "{message}");
    let mut details = marker.details;
    if let Some(map) = details.as_object_mut() {
        map.insert("leftovers_removed".into(), serde_json::json!(removed));
    }
    let finished = Utc::now();
    RunRecord {
        run_id: marker.run_id,
        job: marker.job,
        kind: marker.kind,
        trigger: marker.trigger,
        started: marker.started,
        finished,
        duration_ms: u64::try_from((finished - marker.started).num_milliseconds()).unwrap_or(0),
        outcome: Outcome::Interrupted,
        message,
        attempts: 1,
        dry_run: false,
        details,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn marker(run: &str, leftovers: Vec<PathBuf>) -> Marker {
        Marker {
            run_id: RunId::new(Utc::now()),
            job: "restore".parse().unwrap(),
            kind: Kind::Restore,
            trigger: Trigger::Manual,
            started: Utc::now(),
            what: format!("the restore {run}"),
            details: serde_json::json!({ "backup": "b1" }),
            leftovers,
        }
    }

    #[test]
    fn an_interrupted_run_is_recorded_once_and_only_its_leftovers_go() {
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("state");
        let ours = dir.path().join(".x.atpred-restore-1");
        let theirs = dir.path().join("precious");
        std::fs::create_dir_all(ours.join("deep")).unwrap();
        std::fs::create_dir_all(&theirs).unwrap();
        let m = marker("a", vec![ours.clone(), theirs.clone()]);
        std::mem::forget(InFlight::write(&state, &m).unwrap());
        let records = recover(&state, |_| false);
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].outcome, Outcome::Interrupted);
        assert_eq!(records[0].run_id, m.run_id);
        assert!(
            records[0].message.contains("the restore a"),
            "{:?}",
            records[0]
        );
        assert!(!ours.exists(), "its temporary folder is removed");
        assert!(theirs.exists(), "a path without the mark is left alone");
        assert!(recover(&state, |_| false).is_empty(), "the marker is gone");
    }

    #[test]
    fn a_finished_run_leaves_no_marker_and_a_recorded_one_is_not_recorded_again() {
        let dir = tempfile::tempdir().unwrap();
        let m = marker("b", Vec::new());
        drop(InFlight::write(dir.path(), &m).unwrap());
        assert!(recover(dir.path(), |_| false).is_empty());
        std::mem::forget(InFlight::write(dir.path(), &m).unwrap());
        let id = m.run_id.clone();
        assert!(recover(dir.path(), |r| *r == id).is_empty());
    }
}
