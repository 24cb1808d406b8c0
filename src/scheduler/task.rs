//! The scheduler task: one [`JobTimer`] per scheduled job, woken at the earliest due time.
//!
//! It sleeps at most [`MAX_SLEEP`] at a time and re-reads the wall clock on every wake, so an
//! NTP step or a suspend is noticed within that bound; the timers decide what a jump means
//! (fire once late, or record a miss). The last fired slot of each job is persisted in
//! `schedule.json` in the state directory, which is what `catch-up` compares against after a
//! restart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::{JobTimer, Tick};
use crate::config::{Config, JobConfig};
use crate::ids::JobName;
use crate::protocol::Trigger;
use crate::publish;
use crate::runner::{RunOptions, Runner, StartError};

/// The longest the task sleeps before looking at the wall clock again.
pub const MAX_SLEEP: Duration = Duration::from_secs(30);
const STATE_FILE: &str = "schedule.json";

pub struct Scheduler {
    config: watch::Receiver<Arc<Config>>,
    runner: Arc<Runner>,
    next_runs: watch::Sender<BTreeMap<JobName, DateTime<Utc>>>,
    state_path: PathBuf,
    /// The last slot handled (fired or missed) per job, as persisted.
    slots: BTreeMap<JobName, DateTime<Utc>>,
    timers: BTreeMap<JobName, JobTimer>,
}

impl Scheduler {
    pub fn new(
        config: watch::Receiver<Arc<Config>>,
        runner: Arc<Runner>,
        next_runs: watch::Sender<BTreeMap<JobName, DateTime<Utc>>>,
        state_dir: &Path,
    ) -> Self {
        let state_path = state_dir.join(STATE_FILE);
        let slots = load_slots(&state_path);
        Scheduler {
            config,
            runner,
            next_runs,
            state_path,
            slots,
            timers: BTreeMap::new(),
        }
    }

    pub async fn run(mut self, stop: CancellationToken) {
        self.rebuild(Utc::now());
        loop {
            let now = Utc::now();
            self.tick(now).await;
            let earliest = self.timers.values().filter_map(JobTimer::next).min();
            let wait = earliest
                .map_or(MAX_SLEEP, |at| {
                    (at - now).to_std().unwrap_or(Duration::ZERO)
                })
                .min(MAX_SLEEP);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                changed = self.config.changed() => {
                    if changed.is_err() { return; }
                    self.rebuild(Utc::now());
                }
                () = stop.cancelled() => return,
            }
        }
    }

    /// Polls every timer until each says Wait, starting runs as they come due.
    async fn tick(&mut self, now: DateTime<Utc>) {
        let config = self.config.borrow().clone();
        let tz = config.daemon.timezone;
        let mut handled = false;
        for (name, timer) in &mut self.timers {
            loop {
                match timer.poll(now, tz) {
                    Tick::Wait(_) => break,
                    Tick::Fire { slot, late } => {
                        handled = true;
                        self.slots.insert(name.clone(), slot);
                        let trigger = if late {
                            Trigger::CatchUp
                        } else {
                            Trigger::Schedule
                        };
                        if let Some(job) = config.jobs.get(name) {
                            start(&self.runner, job, trigger, slot).await;
                        }
                    }
                    Tick::Missed { slot } => {
                        handled = true;
                        self.slots.insert(name.clone(), slot);
                        tracing::warn!(job = %name, "missed the run due at {slot} (the daemon was down or the clock jumped); catch-up is off");
                    }
                }
            }
        }
        if handled {
            self.save();
        }
        let next: BTreeMap<_, _> = self
            .timers
            .iter()
            .filter_map(|(n, t)| t.next().map(|at| (n.clone(), at)))
            .collect();
        self.next_runs.send_if_modified(|old| {
            let changed = *old != next;
            *old = next;
            changed
        });
    }

    /// Builds a timer per scheduled job of the current configuration. Timers are rebuilt from
    /// the persisted last slots, so a reload never fires a slot twice nor forgets one.
    fn rebuild(&mut self, now: DateTime<Utc>) {
        let config = self.config.borrow().clone();
        let tz = config.daemon.timezone;
        let mut timers = BTreeMap::new();
        for job in config.jobs.values() {
            let Some(schedule) = &job.schedule else {
                continue;
            };
            // A job seen for the first time starts its record now: nothing before counts as missed.
            let last = *self.slots.entry(job.name.clone()).or_insert(now);
            timers.insert(
                job.name.clone(),
                JobTimer::new(schedule.clone(), job.catch_up, Some(last), now, tz),
            );
        }
        self.slots.retain(|name, _| timers.contains_key(name));
        self.timers = timers;
        self.save();
    }

    fn save(&self) {
        let result = serde_json::to_vec_pretty(&self.slots)
            .map_err(std::io::Error::other)
            .and_then(|bytes| publish::write_atomic(&self.state_path, &bytes, 0o600));
        if let Err(e) = result {
            tracing::error!(
                "cannot save the schedule state {}: {e}",
                self.state_path.display()
            );
        }
    }
}

async fn start(runner: &Arc<Runner>, job: &JobConfig, trigger: Trigger, slot: DateTime<Utc>) {
    match runner.start(job.name.as_str(), trigger, RunOptions::default()) {
        Ok(_) => {}
        Err(StartError::AlreadyRunning { run_id, .. }) => {
            runner.record_skipped(job, trigger, &run_id).await
        }
        Err(e) => tracing::warn!(job = %job.name, "run due at {slot} not started: {e}"),
    }
}

fn load_slots(path: &Path) -> BTreeMap<JobName, DateTime<Utc>> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).unwrap_or_else(|e| {
            tracing::warn!(
                "{}: unreadable ({e}); starting the schedule record afresh",
                path.display()
            );
            BTreeMap::new()
        }),
        Err(_) => BTreeMap::new(),
    }
}
