//! The health board: the last result of every check, kept in memory for `atprectl health`,
//! STATUS= and the metrics, and the one place that decides what is a transition.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use chrono::{DateTime, Utc};

use crate::ids::JobName;
use crate::protocol::{CheckReport, HealthStatus};

/// What one check found.
#[derive(Debug, Clone)]
pub struct Probe {
    pub status: HealthStatus,
    pub message: String,
    pub latency: std::time::Duration,
    /// Free bytes per watched path (the disk check only), for `atpred_disk_free_bytes`.
    pub disk_free: Vec<(PathBuf, u64)>,
}

impl Probe {
    pub fn new(status: HealthStatus, message: impl Into<String>) -> Probe {
        Probe {
            status,
            message: message.into(),
            latency: std::time::Duration::ZERO,
            disk_free: Vec::new(),
        }
    }
}

/// A change of a check's status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transition {
    pub check: String,
    /// `None` the first time the check ran.
    pub previous: Option<HealthStatus>,
    pub status: HealthStatus,
    pub message: String,
}

impl Transition {
    /// Whether operators are told (on-change, webhook): every change except a first `ok`.
    pub fn alerts(&self) -> bool {
        self.previous.is_some() || self.status != HealthStatus::Ok
    }

    pub fn previous_str(&self) -> &'static str {
        self.previous.map_or("unknown", HealthStatus::as_str)
    }
}

#[derive(Default)]
pub struct Board {
    checks: Mutex<BTreeMap<String, Entry>>,
}

struct Entry {
    report: CheckReport,
    disk_free: Vec<(PathBuf, u64)>,
}

impl Board {
    /// Records `probe` as the result of `check` at `now`; returns the transition, if any.
    pub fn record(
        &self,
        job: &JobName,
        check: &str,
        probe: Probe,
        now: DateTime<Utc>,
    ) -> Option<Transition> {
        let mut checks = lock(&self.checks);
        let previous = checks.get(check).map(|e| (e.report.status, e.report.since));
        let since = match previous {
            Some((status, since)) if status == probe.status => since,
            _ => now,
        };
        let transition = match previous {
            Some((status, _)) if status == probe.status => None,
            _ => Some(Transition {
                check: check.to_owned(),
                previous: previous.map(|(s, _)| s),
                status: probe.status,
                message: probe.message.clone(),
            }),
        };
        checks.insert(
            check.to_owned(),
            Entry {
                report: CheckReport {
                    check: check.to_owned(),
                    job: job.clone(),
                    status: probe.status,
                    message: probe.message,
                    latency_ms: u64::try_from(probe.latency.as_millis()).unwrap_or(u64::MAX),
                    since,
                    checked: now,
                },
                disk_free: probe.disk_free,
            },
        );
        transition
    }

    /// Forgets checks no health job runs any more (after a reload).
    pub fn retain(&self, keep: impl Fn(&str) -> bool) {
        lock(&self.checks).retain(|name, _| keep(name));
    }

    /// Every check's last result, by name.
    pub fn reports(&self) -> Vec<CheckReport> {
        lock(&self.checks)
            .values()
            .map(|e| e.report.clone())
            .collect()
    }

    /// Free bytes per watched path, from the last disk check.
    pub fn disk_free(&self) -> Vec<(PathBuf, u64)> {
        lock(&self.checks)
            .values()
            .flat_map(|e| e.disk_free.clone())
            .collect()
    }

    /// For STATUS=: `health ok`, `health: redis fail, disk warn`; `None` before any check ran.
    pub fn summary(&self) -> Option<String> {
        let checks = lock(&self.checks);
        if checks.is_empty() {
            return None;
        }
        let bad: Vec<String> = checks
            .values()
            .filter(|e| e.report.status != HealthStatus::Ok)
            .map(|e| format!("{} {}", e.report.check, e.report.status.as_str()))
            .collect();
        Some(if bad.is_empty() {
            format!("health ok ({} checks)", checks.len())
        } else {
            format!("health: {}", bad.join(", "))
        })
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(status: HealthStatus) -> Probe {
        Probe::new(status, status.as_str())
    }

    #[test]
    fn only_changes_are_transitions_and_since_follows_them() {
        let board = Board::default();
        let job: JobName = "health".parse().unwrap();
        let t = |s: i64| DateTime::from_timestamp(s, 0).unwrap();
        let first = board.record(&job, "redis", probe(HealthStatus::Ok), t(0));
        assert_eq!(first.as_ref().map(Transition::alerts), Some(false));
        assert_eq!(
            board.record(&job, "redis", probe(HealthStatus::Ok), t(10)),
            None
        );
        let fail = board
            .record(&job, "redis", probe(HealthStatus::Fail), t(20))
            .unwrap();
        assert_eq!(fail.previous, Some(HealthStatus::Ok));
        assert!(fail.alerts());
        assert_eq!(
            board.record(&job, "redis", probe(HealthStatus::Fail), t(30)),
            None
        );
        let r = &board.reports()[0];
        assert_eq!((r.since, r.checked), (t(20), t(30)));
        assert_eq!(board.summary().unwrap(), "health: redis fail");
        let first_fail = board
            .record(&job, "disk", probe(HealthStatus::Fail), t(30))
            .unwrap();
        assert!(first_fail.alerts(), "a check failing from the start alerts");
    }
}
