//! Noise control: when a job's failures and recoveries are worth a message.
//!
//! Each job keeps a [`Streak`]: its failing runs in a row (failed or timed out; skipped and
//! cancelled runs change nothing), since when, and when a failure was last notified. A failure
//! is notified once `fail-after` runs in a row have failed, then at most once per
//! `repeat-every` while the job keeps failing, each time with the count. A recovery is notified
//! only after a failure was: a flap that never reached `fail-after` stays quiet.
//!
//! The streaks, with when a failure was last notified, are kept in state-dir
//! ([`super::memory`]), so a restart neither forgets a failing job, nor counts from zero, nor
//! sends a repeat before `repeat-every` has passed. A job the memory does not know is seeded
//! from the run history.
//!
//! An offsite target's copies count the same way: runs in a row whose copy to it failed,
//! against `[daemon] offsite-fail-after` and the job's `repeat-every`.

use std::path::Path;
use std::sync::Mutex;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::memory::Memory;

use crate::config::JobNotify;
use crate::protocol::{Outcome, RunRecord};

/// A job's failures in a row.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Streak {
    pub failures: u32,
    pub since: Option<DateTime<Utc>>,
    /// A failure message went out for this streak.
    pub alerted: bool,
    pub last_sent: Option<DateTime<Utc>>,
}

/// What a finished run is worth saying.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// Failing `failures` times in a row since `since`.
    Failure {
        failures: u32,
        since: DateTime<Utc>,
    },
    /// Succeeding again after `failures` failing runs since `since`.
    Recovery {
        failures: u32,
        since: DateTime<Utc>,
    },
    Quiet,
}

/// Whether an outcome counts as a failure (`Some(true)`), a success, or neither.
fn failing(outcome: Outcome) -> Option<bool> {
    match outcome {
        Outcome::Failed | Outcome::TimedOut | Outcome::Interrupted => Some(true),
        Outcome::Succeeded => Some(false),
        Outcome::Skipped | Outcome::Cancelled => None,
    }
}

/// The pure step: `streak` after `record`, and what to say, at `now`.
pub fn step(
    streak: &mut Streak,
    record: &RunRecord,
    notify: &JobNotify,
    now: DateTime<Utc>,
) -> Verdict {
    let rule = Rule {
        fail_after: notify.fail_after,
        repeat_every: notify.repeat_every,
    };
    count(streak, failing(record.outcome), record.started, rule, now)
}

/// When a streak is worth a message: from `fail_after` failures in a row, then at most once
/// per `repeat_every`.
#[derive(Debug, Clone, Copy)]
pub struct Rule {
    pub fail_after: u32,
    pub repeat_every: std::time::Duration,
}

/// `streak` after one more outcome (`Some(true)` failed, `Some(false)` succeeded, `None`
/// neither) of something that began at `started`.
pub fn count(
    streak: &mut Streak,
    failed: Option<bool>,
    started: DateTime<Utc>,
    rule: Rule,
    now: DateTime<Utc>,
) -> Verdict {
    match failed {
        None => Verdict::Quiet,
        Some(false) => {
            let before = std::mem::take(streak);
            match (before.alerted, before.since) {
                (true, Some(since)) => Verdict::Recovery {
                    failures: before.failures,
                    since,
                },
                _ => Verdict::Quiet,
            }
        }
        Some(true) => {
            streak.failures += 1;
            let since = *streak.since.get_or_insert(started);
            let due = streak.failures >= rule.fail_after
                && streak.last_sent.is_none_or(|last| {
                    now.signed_duration_since(last).to_std().unwrap_or_default()
                        >= rule.repeat_every
                });
            if !due {
                return Verdict::Quiet;
            }
            streak.alerted = true;
            streak.last_sent = Some(now);
            Verdict::Failure {
                failures: streak.failures,
                since,
            }
        }
    }
}

/// The streak `earlier` runs (newest first) leave.
pub fn seed(earlier: &[RunRecord], notify: &JobNotify) -> Streak {
    let mut streak = Streak::default();
    for r in earlier.iter().filter(|r| !r.dry_run) {
        match failing(r.outcome) {
            Some(true) => {
                streak.failures += 1;
                streak.since = Some(r.started);
            }
            Some(false) => break,
            None => {}
        }
    }
    streak.alerted = streak.failures >= notify.fail_after;
    streak
}

/// The streaks of every job and offsite target, as [`super::memory`] keeps them on disk.
pub struct Streaks {
    memory: Mutex<Memory>,
}

impl Streaks {
    /// The streaks kept in `state_dir` by an earlier run of the daemon.
    pub fn open(state_dir: &Path) -> Streaks {
        Streaks {
            memory: Mutex::new(Memory::open(state_dir)),
        }
    }

    /// Applies `record`; `earlier` (the job's runs before it, newest first) seeds a job the
    /// memory does not know (its first run, or a memory lost).
    pub fn observe(
        &self,
        record: &RunRecord,
        notify: &JobNotify,
        earlier: impl FnOnce() -> Vec<RunRecord>,
    ) -> Verdict {
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        memory.update(|saved| {
            let streak = saved
                .jobs
                .entry(record.job.to_string())
                .or_insert_with(|| seed(&earlier(), notify));
            step(streak, record, notify, Utc::now())
        })
    }

    /// A run of `job` could not start for `cause`: whether that is news (the last refusal
    /// told for the job had another cause, or the job has run here since).
    pub fn refused(&self, job: &str, cause: &str) -> bool {
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        memory.update(|saved| {
            saved
                .refused
                .insert(job.to_owned(), cause.to_owned())
                .as_deref()
                != Some(cause)
        })
    }

    /// A run of `job` started working here: its next start refusal is news again.
    pub fn began(&self, job: &str) {
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        memory.update(|saved| saved.refused.remove(job));
    }

    /// Applies a run's copy to an offsite target (`key`: job and target), failed or not.
    pub fn observe_offsite(&self, key: &str, failed: bool, rule: Rule) -> Verdict {
        let now = Utc::now();
        let mut memory = self.memory.lock().unwrap_or_else(|e| e.into_inner());
        memory.update(|saved| {
            if !failed {
                // A success ends a streak; the entry goes (a clean target keeps none).
                let mut streak = saved.offsite.remove(key).unwrap_or_default();
                return count(&mut streak, Some(false), now, rule, now);
            }
            let streak = saved.offsite.entry(key.to_owned()).or_default();
            count(streak, Some(true), now, rule, now)
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::Kind;
    use crate::protocol::Trigger;

    fn record(outcome: Outcome, at: DateTime<Utc>) -> RunRecord {
        RunRecord {
            run_id: crate::ids::RunId::new(at),
            job: "nightly".parse().unwrap(),
            kind: Kind::Command,
            trigger: Trigger::Schedule,
            started: at,
            finished: at,
            duration_ms: 0,
            outcome,
            message: "m".into(),
            attempts: 1,
            dry_run: false,
            details: serde_json::Value::Null,
        }
    }

    fn notify(fail_after: u32, repeat_minutes: u64) -> JobNotify {
        JobNotify {
            channels: vec!["ops".into()],
            on: crate::config::NOTIFY_ON_DEFAULT.to_vec(),
            repeat_every: Duration::from_secs(repeat_minutes * 60),
            fail_after,
        }
    }

    /// Runs failing every 10 minutes, ten times, then one success.
    fn verdicts(n: &JobNotify) -> Vec<Verdict> {
        let t0 = DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let mut streak = Streak::default();
        let mut out = Vec::new();
        for i in 0..11 {
            let at = t0 + chrono::TimeDelta::minutes(10 * i);
            let outcome = if i < 10 {
                Outcome::Failed
            } else {
                Outcome::Succeeded
            };
            out.push(step(&mut streak, &record(outcome, at), n, at));
        }
        out
    }

    #[test]
    fn ten_failures_then_a_recovery() {
        let t0 = DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        let said: Vec<(usize, Verdict)> = verdicts(&notify(3, 30))
            .into_iter()
            .enumerate()
            .filter(|(_, v)| *v != Verdict::Quiet)
            .collect();
        let failure = |failures| Verdict::Failure {
            failures,
            since: t0,
        };
        // Failing from run 3 on; again 30 minutes later (runs 6 and 9); then the recovery.
        assert_eq!(
            said,
            vec![
                (2, failure(3)),
                (5, failure(6)),
                (8, failure(9)),
                (
                    10,
                    Verdict::Recovery {
                        failures: 10,
                        since: t0
                    }
                ),
            ]
        );
        // Below fail-after nothing at all, not even a recovery.
        assert!(
            verdicts(&notify(11, 30))
                .iter()
                .all(|v| *v == Verdict::Quiet)
        );
    }

    #[test]
    fn seeds_from_the_history() {
        let t = Utc::now();
        let earlier = [
            record(Outcome::Skipped, t),
            record(Outcome::Failed, t - chrono::TimeDelta::minutes(1)),
            record(Outcome::TimedOut, t - chrono::TimeDelta::minutes(2)),
            record(Outcome::Succeeded, t - chrono::TimeDelta::minutes(3)),
            record(Outcome::Failed, t - chrono::TimeDelta::minutes(4)),
        ];
        let s = seed(&earlier, &notify(2, 60));
        assert_eq!(s.failures, 2);
        assert_eq!(s.since, Some(t - chrono::TimeDelta::minutes(2)));
        assert!(s.alerted);
        assert!(!seed(&earlier, &notify(3, 60)).alerted);
    }
}
