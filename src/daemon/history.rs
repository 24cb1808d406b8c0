//! The persisted run history: `history.jsonl` in the state directory, one [`RunRecord`] per
//! line, bounded to `daemon.history-size` records.
//!
//! Appends are single writes of a whole line followed by fdatasync. After a kill -9 the last
//! line may be torn: loading skips lines that do not parse and rewrites the file without them,
//! so the next append does not glue onto a fragment. The file is compacted (atomically, via
//! [`crate::publish`]) when it holds twice the bound.

use std::collections::VecDeque;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::ids::JobName;
use crate::protocol::RunRecord;
use crate::publish;

pub struct History {
    path: PathBuf,
    capacity: usize,
    records: Mutex<VecDeque<RunRecord>>,
    /// Serialises file writes; held across the blocking write, never across unrelated awaits.
    file: tokio::sync::Mutex<FileState>,
}

struct FileState {
    lines: usize,
}

impl History {
    /// Loads the history at `path` (missing is empty). Returns it and how many torn or invalid
    /// lines were dropped.
    pub fn open(path: &Path, capacity: usize) -> io::Result<(History, usize)> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == io::ErrorKind::NotFound => String::new(),
            Err(e) => return Err(e),
        };
        let mut records = VecDeque::new();
        let mut dropped = 0;
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            match serde_json::from_str::<RunRecord>(line) {
                Ok(r) => records.push_back(r),
                Err(_) => dropped += 1,
            }
        }
        let torn_tail = !text.is_empty() && !text.ends_with('\n');
        while records.len() > capacity {
            records.pop_front();
        }
        let lines = records.len();
        if dropped > 0 || torn_tail || lines < text.lines().count() {
            publish::write_atomic(path, render(&records).as_bytes(), 0o600)?;
        }
        let history = History {
            path: path.to_owned(),
            capacity,
            records: Mutex::new(records),
            file: tokio::sync::Mutex::new(FileState { lines }),
        };
        Ok((history, dropped))
    }

    /// Adds a record, in memory and on disk.
    pub async fn append(&self, record: RunRecord) -> io::Result<()> {
        let snapshot = {
            let mut records = lock(&self.records);
            records.push_back(record.clone());
            while records.len() > self.capacity {
                records.pop_front();
            }
            records.clone()
        };
        let mut file = self.file.lock().await;
        let path = self.path.clone();
        let compact = file.lines + 1 >= 2 * self.capacity;
        let line = serde_json::to_string(&record).map_err(io::Error::other)? + "\n";
        tokio::task::spawn_blocking(move || {
            if compact {
                publish::write_atomic(&path, render(&snapshot).as_bytes(), 0o600)
            } else {
                append_line(&path, &line)
            }
        })
        .await
        .map_err(io::Error::other)??;
        file.lines = if compact {
            self.capacity.min(file.lines + 1)
        } else {
            file.lines + 1
        };
        Ok(())
    }

    /// Up to `limit` records, newest first, optionally of one job.
    pub fn recent(&self, job: Option<&JobName>, limit: usize) -> Vec<RunRecord> {
        lock(&self.records)
            .iter()
            .rev()
            .filter(|r| job.is_none_or(|j| &r.job == j))
            .take(limit)
            .cloned()
            .collect()
    }

    /// The newest record of `job`.
    pub fn last(&self, job: &JobName) -> Option<RunRecord> {
        self.recent(Some(job), 1).into_iter().next()
    }
}

fn append_line(path: &Path, line: &str) -> io::Result<()> {
    let mut f = OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        // Appending is the one write not done through publish::write_atomic: never through a
        // symlink planted at the history's name.
        .custom_flags(nix::libc::O_NOFOLLOW | nix::libc::O_CLOEXEC)
        .open(path)?;
    f.write_all(line.as_bytes())?;
    f.sync_data()
}

fn render(records: &VecDeque<RunRecord>) -> String {
    records
        .iter()
        .filter_map(|r| serde_json::to_string(r).ok())
        .map(|l| l + "\n")
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic while holding this lock cannot leave the deque half-updated in a way that matters.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Kind;
    use crate::protocol::{Outcome, Trigger};

    fn record(job: &str, n: u32) -> RunRecord {
        let t = chrono::DateTime::from_timestamp(1_700_000_000 + i64::from(n), 0).unwrap();
        RunRecord {
            run_id: format!("r{n}").into(),
            job: job.parse().unwrap(),
            kind: Kind::Command,
            trigger: Trigger::Manual,
            started: t,
            finished: t,
            duration_ms: 0,
            outcome: Outcome::Succeeded,
            message: String::new(),
            attempts: 1,
            dry_run: false,
            details: serde_json::Value::Null,
        }
    }

    #[tokio::test]
    async fn survives_a_torn_last_line_and_stays_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("history.jsonl");
        {
            let (h, _) = History::open(&path, 10).unwrap();
            for n in 0..3 {
                h.append(record("a", n)).await.unwrap();
            }
        }
        // kill -9 in the middle of a write:
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"run_id\":\"r9\",\"jo").unwrap();
        let (h, dropped) = History::open(&path, 10).unwrap();
        assert_eq!(dropped, 1);
        h.append(record("b", 3)).await.unwrap();
        let (h, dropped) = History::open(&path, 10).unwrap();
        assert_eq!(dropped, 0, "the next append did not glue onto the fragment");
        assert_eq!(h.recent(None, 100).len(), 4);
        for n in 4..40 {
            h.append(record("a", n)).await.unwrap();
        }
        assert_eq!(h.recent(None, 100).len(), 10);
        assert!(std::fs::read_to_string(&path).unwrap().lines().count() < 20);
        assert!(
            h.last(&"b".parse().unwrap()).is_none(),
            "evicted by the bound"
        );
        assert_eq!(
            h.recent(Some(&"a".parse().unwrap()), 1)[0].run_id.as_str(),
            "r39"
        );
    }
}
