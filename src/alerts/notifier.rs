//! [`Notifier`]: the one handle everything that raises a notification holds (the runner, the
//! supervisor, the control server). Events go through the noise control ([`super::noise`])
//! into the [`Outbox`]; `atprectl notify test` messages are sent directly, so their answer can
//! be reported.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use super::channel::{self, Failed};
use super::deliver::Client;
use super::event::{Event, EventKind, Severity};
use super::noise::{Rule, Streaks, Verdict};
use super::outbox::Outbox;
use super::{daemon_events, events};
use crate::config::{Config, HealthSpec, JobConfig, NotifyChannel, health_alias};
use crate::daemon::history::History;
use crate::ids::{JobName, RunId};
use crate::offsite::ship::Shipped;
use crate::protocol::{RunRecord, Trigger};

/// Runs of a job read from the history to seed its failure streak.
const SEED_RUNS: usize = 1000;

/// Cheap to clone.
#[derive(Clone)]
pub struct Notifier {
    inner: Arc<Inner>,
}

struct Inner {
    config: watch::Receiver<Arc<Config>>,
    client: Arc<Client>,
    outbox: Outbox,
    streaks: Streaks,
}

impl Notifier {
    /// Opens the outbox under state-dir and resumes what it holds.
    pub fn new(config: watch::Receiver<Arc<Config>>) -> Notifier {
        let client = Arc::new(Client::default());
        let outbox = Outbox::open(config.clone(), Arc::clone(&client));
        let streaks = Streaks::open(&config.borrow().daemon.state_dir);
        Notifier {
            inner: Arc::new(Inner {
                config,
                client,
                outbox,
                streaks,
            }),
        }
    }

    /// Sends a test message on `channel` now (not through the outbox) and returns its answer.
    pub async fn test(&self, channel: &NotifyChannel) -> Result<String, Failed> {
        let event = Event::new(
            EventKind::Test,
            Severity::Info,
            &format!("test message on channel {}", channel.name),
            &format!(
                "This is a test message from atpred, sent by `atprectl notify test {}`.\n\
                 If you can read it, the {} channel {:?} works.",
                channel.name,
                channel.kind.name(),
                channel.name
            ),
        );
        let client = &self.inner.client;
        channel::send(channel, &event, client, &CancellationToken::new()).await
    }

    /// A run of `job` starts working.
    pub fn run_started(&self, job: &JobConfig, run: &RunId, trigger: Trigger) {
        if !job.notify.channels.is_empty() && job.notify.on.contains(&EventKind::Start) {
            let event = events::started(job, run, trigger);
            self.inner.outbox.publish(&job.notify.channels, &event);
        }
    }

    /// A slot of `job` passed unrun (see [`events::missed`]).
    pub fn slot_missed(&self, job: &JobConfig, slot: DateTime<Utc>, caught_up: bool) {
        if !job.notify.channels.is_empty() && job.notify.on.contains(&EventKind::Missed) {
            let event = events::missed(job, slot, caught_up);
            self.inner.outbox.publish(&job.notify.channels, &event);
        }
    }

    /// A run of `job` could not start here (see [`daemon_events::start_refused`]), for
    /// `[daemon] notify`. Told once per cause until a run of the job starts working here (kept
    /// across restarts): an HA pair's standby steps aside at every tick by design.
    pub fn start_refused(&self, job: &JobName, cause: &str, why: &str) {
        if self.inner.streaks.refused(job.as_str(), cause) {
            self.daemon(&daemon_events::start_refused(job.as_str(), cause, why));
        }
    }

    /// A run of `job` ended as `record` says (already in `history`).
    pub fn run_finished(&self, job: &JobConfig, record: &RunRecord, history: &History) {
        if record.attempts > 0 {
            self.inner.streaks.began(job.name.as_str());
        }
        if job.notify.channels.is_empty() {
            return;
        }
        let verdict = self.inner.streaks.observe(record, &job.notify, || {
            let mut earlier = history.recent(Some(&job.name), SEED_RUNS);
            earlier.retain(|r| r.run_id != record.run_id);
            earlier
        });
        for event in events::finished(job, record, &verdict) {
            self.inner.outbox.publish(&job.notify.channels, &event);
        }
    }

    /// A daemon event, for `[daemon] notify`.
    pub fn daemon(&self, event: &Event) {
        let channels = self.inner.config.borrow().daemon.notify.clone();
        self.inner.outbox.publish(&channels, event);
    }

    /// A health check of `job` changed state: to `[daemon] notify`, the job's own `notify`
    /// channels and its deprecated `on-change`/`webhook` aliases, each once.
    pub fn health(&self, job: &JobConfig, spec: &HealthSpec, event: &Event) {
        let mut channels = self.inner.config.borrow().daemon.notify.clone();
        channels.extend(job.notify.channels.iter().cloned());
        channels.extend(
            health_alias::channels(&job.name, spec)
                .into_iter()
                .map(|c| c.name),
        );
        let mut seen = std::collections::HashSet::new();
        channels.retain(|c| seen.insert(c.clone()));
        self.inner.outbox.publish(&channels, event);
    }

    /// Sends `event` to `channels`.
    pub fn publish(&self, channels: &[String], event: &Event) {
        self.inner.outbox.publish(channels, event);
    }

    /// `atpred_notifications_total{channel,outcome}`.
    pub fn counts(&self) -> Family<Vec<(String, String)>, Counter> {
        self.inner.outbox.counts()
    }

    /// At shutdown: see [`Outbox::close`].
    pub async fn close(&self, limit: Duration) {
        self.inner.outbox.close(limit).await;
    }
}

/// The backup of `ctx` copied (or failed to copy) to its offsite targets as `shipped` says:
/// a target whose copies failed in `[daemon] offsite-fail-after` runs in a row tells
/// `[daemon] notify`, again at most once per the job's `repeat-every` while it keeps failing.
pub fn offsite_copied(ctx: &crate::jobs::JobContext, targets: &[String], shipped: &[Shipped]) {
    let Some(notifier) = &ctx.notifier else {
        return;
    };
    if ctx.config.daemon.notify.is_empty() {
        return;
    }
    let rule = Rule {
        fail_after: ctx.config.daemon.offsite_fail_after,
        repeat_every: ctx.job.notify.repeat_every,
    };
    for target in targets {
        let mine: Vec<&Shipped> = shipped.iter().filter(|s| &s.target == target).collect();
        let Some(last) = mine.last() else {
            continue;
        };
        let error = mine.iter().find_map(|s| s.error.as_deref());
        let key = format!("{}/{target}", ctx.job.name);
        let verdict = notifier
            .inner
            .streaks
            .observe_offsite(&key, error.is_some(), rule);
        if let (Verdict::Failure { failures, since }, Some(error)) = (verdict, error) {
            notifier.daemon(&super::daemon_events::offsite_failing(
                ctx.job.name.as_str(),
                target,
                failures,
                since,
                &format!("{} ({error})", last.id),
            ));
        }
    }
}

/// The backup of `ctx` was refused by its free-space preflight: tells `[daemon] notify`.
pub fn preflight_refused(ctx: &crate::jobs::JobContext, why: &str) {
    if let Some(notifier) = &ctx.notifier {
        notifier.daemon(&super::daemon_events::preflight_refused(
            ctx.job.name.as_str(),
            why,
        ));
    }
}
