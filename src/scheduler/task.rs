//! The scheduler: one [`JobTimer`] per scheduled job, and the task that wakes at the earliest
//! due time.
//!
//! The timers live behind a mutex shared with the supervisor, which applies a new configuration
//! synchronously ([`Scheduler::apply`]): by the time READY=1 or a `reloaded` reply is sent, the
//! next run times already reflect it. The task sleeps at most [`MAX_SLEEP`] at a time and
//! re-reads the wall clock on every wake, so an NTP step or a suspend is noticed within that
//! bound; the timers decide what a jump means (fire once late, or record a miss). The last
//! handled slot of each job is persisted in `schedule.json` in the state directory, which is
//! what `catch-up` compares against after a restart.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tokio::sync::{Notify, watch};
use tokio_util::sync::CancellationToken;

use super::{JobTimer, Tick};
use crate::config::Config;
use crate::ids::JobName;
use crate::protocol::Trigger;
use crate::publish;
use crate::runner::{RunOptions, Runner, StartError};

/// The longest the task sleeps before looking at the wall clock again.
pub const MAX_SLEEP: Duration = Duration::from_secs(30);
const STATE_FILE: &str = "schedule.json";

pub struct Scheduler {
    timers: Mutex<Timers>,
    runner: Arc<Runner>,
    next_runs: watch::Sender<BTreeMap<JobName, DateTime<Utc>>>,
    /// Wakes the task after [`Scheduler::apply`].
    changed: Notify,
}

struct Timers {
    config: Arc<Config>,
    state_path: PathBuf,
    /// The last slot handled (fired or missed) per job, as persisted.
    slots: BTreeMap<JobName, DateTime<Utc>>,
    timers: BTreeMap<JobName, JobTimer>,
}

/// What a tick decided, acted on after the lock is released.
enum Action {
    Start {
        job: JobName,
        trigger: Trigger,
        slot: DateTime<Utc>,
    },
    Missed {
        job: JobName,
        slot: DateTime<Utc>,
    },
}

impl Scheduler {
    /// The scheduler of `config`; [`Scheduler::apply`] it before relying on next run times.
    pub fn new(
        config: Arc<Config>,
        runner: Arc<Runner>,
        next_runs: watch::Sender<BTreeMap<JobName, DateTime<Utc>>>,
        state_dir: &Path,
    ) -> Arc<Self> {
        let state_path = state_dir.join(STATE_FILE);
        let slots = load_slots(&state_path);
        let timers = Timers {
            config: Arc::clone(&config),
            state_path,
            slots,
            timers: BTreeMap::new(),
        };
        Arc::new(Scheduler {
            timers: Mutex::new(timers),
            runner,
            next_runs,
            changed: Notify::new(),
        })
    }

    /// Applies a (new) configuration: timers are rebuilt from the persisted last slots, so a
    /// reload never fires a slot twice nor forgets one. Slots already due (catch-up, a missed
    /// run) are handled before this returns, so the published next run times are in the future.
    pub async fn apply(&self, config: Arc<Config>) {
        let now = Utc::now();
        let actions = {
            let mut t = self.lock();
            t.config = Arc::clone(&config);
            t.rebuild(now);
            let actions = t.tick(now);
            self.publish(&t);
            actions
        };
        for action in actions {
            self.act(&config, action).await;
        }
        self.changed.notify_one();
    }

    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        loop {
            let now = Utc::now();
            let (actions, config, earliest) = {
                let mut t = self.lock();
                let actions = t.tick(now);
                self.publish(&t);
                (
                    actions,
                    Arc::clone(&t.config),
                    t.timers.values().filter_map(JobTimer::next).min(),
                )
            };
            for action in actions {
                self.act(&config, action).await;
            }
            let wait = earliest
                .map_or(MAX_SLEEP, |at| {
                    (at - now).to_std().unwrap_or(Duration::ZERO)
                })
                .min(MAX_SLEEP);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.changed.notified() => {}
                () = stop.cancelled() => return,
            }
        }
    }

    async fn act(&self, config: &Config, action: Action) {
        match action {
            Action::Missed { job, slot } => {
                tracing::warn!(job = %job, "missed the run due at {slot} (the daemon was down or the clock jumped); catch-up is off");
                if let Some(job) = config.jobs.get(&job) {
                    self.runner.notifier().slot_missed(job, slot, false);
                }
            }
            Action::Start { job, trigger, slot } => {
                let Some(job) = config.jobs.get(&job) else {
                    return;
                };
                if trigger == Trigger::CatchUp {
                    self.runner.notifier().slot_missed(job, slot, true);
                }
                // The slot goes with the run: coordinated runs claim that tick fleet-wide.
                let opts = RunOptions {
                    slot: Some(slot),
                    ..RunOptions::default()
                };
                match self.runner.start(job.name.as_str(), trigger, opts) {
                    Ok(_) => {}
                    Err(StartError::AlreadyRunning { run_id, .. }) => {
                        self.runner.record_skipped(job, trigger, &run_id).await;
                    }
                    Err(e) => tracing::warn!(job = %job.name, "run due at {slot} not started: {e}"),
                }
            }
        }
    }

    fn publish(&self, t: &Timers) {
        let next: BTreeMap<_, _> = t
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

    fn lock(&self) -> std::sync::MutexGuard<'_, Timers> {
        self.timers.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Timers {
    /// Polls every timer until each says Wait; returns what to do.
    fn tick(&mut self, now: DateTime<Utc>) -> Vec<Action> {
        let tz = self.config.daemon.timezone;
        let mut actions = Vec::new();
        for (name, timer) in &mut self.timers {
            loop {
                match timer.poll(now, tz) {
                    Tick::Wait(_) => break,
                    Tick::Fire { slot, late } => {
                        self.slots.insert(name.clone(), slot);
                        let trigger = if late {
                            Trigger::CatchUp
                        } else {
                            Trigger::Schedule
                        };
                        actions.push(Action::Start {
                            job: name.clone(),
                            trigger,
                            slot,
                        });
                    }
                    Tick::Missed { slot } => {
                        self.slots.insert(name.clone(), slot);
                        actions.push(Action::Missed {
                            job: name.clone(),
                            slot,
                        });
                    }
                }
            }
        }
        if !actions.is_empty() {
            self.save();
        }
        actions
    }

    fn rebuild(&mut self, now: DateTime<Utc>) {
        let tz = self.config.daemon.timezone;
        let mut timers = BTreeMap::new();
        for job in self.config.jobs.values() {
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
