//! [`Memory`]: what the noise control keeps across restarts, `state-dir/noise.json` (each
//! job's and each offsite target's failure streak and when it was last notified, and the
//! start refusals already told), replaced
//! atomically ([`crate::publish`]) at every change. A crash leaves the file before or after a
//! change, never half of one; an unreadable file is said so in the log and started afresh
//! (the jobs' streaks are then seeded from the run history again).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::noise::Streak;

const FILE: &str = "noise.json";

/// The file's content.
#[derive(Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Saved {
    /// By job name.
    #[serde(default)]
    pub jobs: BTreeMap<String, Streak>,
    /// By `<job>/<target>`.
    #[serde(default)]
    pub offsite: BTreeMap<String, Streak>,
    /// By job: the cause of the last start refusal told (`run-on`, `lease`, `connection`).
    #[serde(default)]
    pub refused: BTreeMap<String, String>,
}

/// The streaks and the file they are kept in.
pub struct Memory {
    path: PathBuf,
    saved: Saved,
}

impl Memory {
    /// What an earlier run of the daemon left in `state_dir`.
    pub fn open(state_dir: &Path) -> Memory {
        let path = state_dir.join(FILE);
        let saved = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
                tracing::warn!(
                    "{}: unreadable ({e}); notification streaks start afresh",
                    path.display()
                );
                Saved::default()
            }),
            Err(_) => Saved::default(),
        };
        Memory { path, saved }
    }

    /// Applies `change`, and saves the streaks when it changed them.
    pub fn update<T>(&mut self, change: impl FnOnce(&mut Saved) -> T) -> T {
        let before = serde_json::to_vec(&self.saved).unwrap_or_default();
        let result = change(&mut self.saved);
        let after = serde_json::to_vec(&self.saved).unwrap_or_default();
        if before != after {
            let written = crate::publish::write_atomic(&self.path, &after, 0o600);
            if let Err(e) = written {
                tracing::error!(
                    "cannot save the notification streaks {}: {e}; a restart may repeat a message early",
                    self.path.display()
                );
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_change_is_read_back_by_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = Memory::open(dir.path());
        assert_eq!(m.saved, Saved::default());
        let now = chrono::Utc::now();
        m.update(|s| {
            s.jobs.insert(
                "nightly".into(),
                Streak {
                    failures: 4,
                    since: Some(now),
                    alerted: true,
                    last_sent: Some(now),
                },
            )
        });
        let again = Memory::open(dir.path());
        assert_eq!(again.saved.jobs["nightly"].failures, 4);
        assert_eq!(again.saved.jobs["nightly"].last_sent, Some(now));
        std::fs::write(dir.path().join(FILE), b"{not json").unwrap();
        assert_eq!(Memory::open(dir.path()).saved, Saved::default());
    }
}
