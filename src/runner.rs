//! The runner: starts runs, enforces `max-concurrent-jobs`, never lets a job overlap itself,
//! applies timeouts and retries, cancels, and records every run in the history.
//!
//! Each run has its own [`CancellationToken`], a child of the daemon's root token, so cancelling
//! one run, timing it out, or stopping the daemon all end it the same way: the job sees the
//! token, its process group is killed, and the run is recorded as cancelled or timed out.
//!
//! Coordinated jobs pass through [`fleet`] first: `run-on`, then the fleet lease. Runs that
//! are not configured jobs (a restore) are [`external`]: recorded the same way, without a slot.

pub mod external;
mod fleet;
pub mod inflight;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio::sync::{Semaphore, broadcast, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

use crate::alerts::{Notifier, Pings};
use crate::config::{Config, JobConfig, Kind};
use crate::daemon::history::History;
use crate::ids::{JobName, RunId};
use crate::jobs::catalog::InUse;
use crate::jobs::health::board::Board;
use crate::jobs::{self, JobContext, JobError, JobReport};
use crate::metrics::RunMetrics;
use crate::protocol::{Outcome, RunRecord, RunningRun, Trigger};

/// What a follower of a run receives.
#[derive(Debug, Clone)]
pub enum RunEvent {
    Progress(String),
    Finished(RunRecord),
}

/// Options of one run.
#[derive(Debug, Clone, Copy, Default)]
pub struct RunOptions {
    pub dry_run: bool,
    pub force: bool,
    /// The scheduled slot a run is for (`None`: manual); coordinated runs claim it fleet-wide.
    pub slot: Option<DateTime<Utc>>,
}

/// Why a run was not started.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("no job named {0:?} in the configuration")]
    UnknownJob(String),
    #[error("job {job} is already running (run {run_id})")]
    AlreadyRunning { job: JobName, run_id: RunId },
    #[error("the daemon is shutting down")]
    ShuttingDown,
}

/// A run that was started.
pub struct Started {
    pub run_id: RunId,
    pub events: broadcast::Receiver<RunEvent>,
}

struct Running {
    info: RunningRun,
    kind: Kind,
    token: CancellationToken,
    /// Set for an [`external`] run: what it does, in words (named when another is refused).
    external: Option<String>,
}

pub struct Runner {
    config: watch::Receiver<Arc<Config>>,
    running: Mutex<HashMap<JobName, Running>>,
    shutting_down: std::sync::atomic::AtomicBool,
    permits: Arc<Semaphore>,
    history: History,
    tracker: TaskTracker,
    root: CancellationToken,
    /// Bumped whenever a run starts or ends, so the supervisor can refresh STATUS=.
    changes: watch::Sender<u64>,
    in_use: Arc<InUse>,
    health: Arc<Board>,
    metrics: RunMetrics,
    /// The fleet leases of coordinated jobs as this host last saw them.
    leases: Mutex<std::collections::BTreeMap<JobName, crate::protocol::LeaseStatus>>,
    /// Where runs' starts and ends are published for their dead-man pings.
    pings: Pings,
    /// Where runs' events are published for the `[notify.NAME]` channels.
    notifier: Notifier,
}

impl Runner {
    pub fn new(
        config: watch::Receiver<Arc<Config>>,
        history: History,
        root: CancellationToken,
    ) -> Arc<Self> {
        let permits = Arc::new(Semaphore::new(config.borrow().daemon.max_concurrent_jobs));
        let notifier = Notifier::new(config.clone());
        Arc::new(Runner {
            config,
            running: Mutex::new(HashMap::new()),
            shutting_down: false.into(),
            permits,
            history,
            tracker: TaskTracker::new(),
            root,
            changes: watch::Sender::new(0),
            in_use: Arc::default(),
            health: Arc::default(),
            metrics: RunMetrics::default(),
            leases: Mutex::default(),
            pings: Pings::default(),
            notifier,
        })
    }

    pub fn history(&self) -> &History {
        &self.history
    }

    /// Backups claimed by verifications and removals.
    pub fn in_use(&self) -> &Arc<InUse> {
        &self.in_use
    }

    /// The health checks' last results.
    pub fn health(&self) -> &Arc<Board> {
        &self.health
    }

    /// Counters and durations of the runs finished since the daemon started.
    pub fn metrics(&self) -> &RunMetrics {
        &self.metrics
    }

    /// The dead-man pings of runs (and the daemon's heartbeat counters).
    pub fn pings(&self) -> &Pings {
        &self.pings
    }

    /// The notifications: channels, outbox, events.
    pub fn notifier(&self) -> &Notifier {
        &self.notifier
    }

    pub fn subscribe_changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Runs in progress, oldest first.
    pub fn running(&self) -> Vec<RunningRun> {
        let mut runs: Vec<_> = lock(&self.running)
            .values()
            .map(|r| r.info.clone())
            .collect();
        runs.sort_by_key(|r| r.started);
        runs
    }

    pub fn running_of(&self, job: &JobName) -> Option<RunningRun> {
        lock(&self.running).get(job).map(|r| r.info.clone())
    }

    /// Starts `job` now. Fails at once if it is unknown, already running, or the daemon stops.
    pub fn start(
        self: &Arc<Self>,
        job: &str,
        trigger: Trigger,
        opts: RunOptions,
    ) -> Result<Started, StartError> {
        let config = self.config.borrow().clone();
        let (name, job_cfg) = config
            .jobs
            .iter()
            .find(|(n, _)| n.as_str() == job)
            .map(|(n, j)| (n.clone(), Arc::new(j.clone())))
            .ok_or_else(|| StartError::UnknownJob(job.to_owned()))?;
        let started = Utc::now();
        let run_id = RunId::new(started);
        let token = self.root.child_token();
        let (events, receiver) = broadcast::channel(256);
        {
            let mut running = lock(&self.running);
            if self.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(StartError::ShuttingDown);
            }
            if let Some(r) = running.get(&name) {
                return Err(StartError::AlreadyRunning {
                    job: name,
                    run_id: r.info.run_id.clone(),
                });
            }
            let info = RunningRun {
                run_id: run_id.clone(),
                job: name.clone(),
                trigger,
                started,
            };
            running.insert(
                name.clone(),
                Running {
                    info,
                    kind: job_cfg.spec.kind(),
                    token: token.clone(),
                    external: None,
                },
            );
        }
        self.changes.send_modify(|n| *n += 1);
        let span = tracing::info_span!("run", job = %name, kind = %job_cfg.spec.kind(), run_id = %run_id,
                fencing_token = tracing::field::Empty);
        let this = Arc::clone(self);
        let run = Run {
            job: job_cfg,
            config,
            run_id: run_id.clone(),
            trigger,
            opts,
            token,
            started,
            events,
        };
        self.tracker
            .spawn(async move { this.execute(run).await }.instrument(span));
        Ok(Started {
            run_id,
            events: receiver,
        })
    }

    /// Asks the running run of `job` to stop. Returns its id, or `None` when it is not running.
    pub fn cancel(&self, job: &JobName) -> Option<RunId> {
        let running = lock(&self.running);
        let r = running.get(job)?;
        r.token.cancel();
        Some(r.info.run_id.clone())
    }

    /// Records a scheduled tick that found the job still running.
    pub async fn record_skipped(&self, job: &JobConfig, trigger: Trigger, busy_with: &RunId) {
        let now = Utc::now();
        let record = RunRecord {
            run_id: RunId::new(now),
            job: job.name.clone(),
            kind: job.spec.kind(),
            trigger,
            started: now,
            finished: now,
            duration_ms: 0,
            outcome: Outcome::Skipped,
            message: format!("still running from run {busy_with}"),
            attempts: 0,
            dry_run: false,
            details: serde_json::Value::Null,
        };
        tracing::warn!(job = %job.name, kind = %job.spec.kind(), run_id = %record.run_id, outcome = "skipped",
            "tick skipped: job {} is still running (run {busy_with})", job.name);
        self.metrics.observe(&record);
        self.persist(record.clone()).await;
        self.notifier.run_finished(job, &record, &self.history);
    }

    /// Applies a new `max-concurrent-jobs` without touching running jobs.
    pub fn resize(&self, old: usize, new: usize) {
        if new > old {
            self.permits.add_permits(new - old);
        } else if new < old {
            self.permits.forget_permits(old - new);
        }
    }

    /// Stops accepting runs. Running jobs go on until [`Runner::cancel_all`] or their end;
    /// [`external`] runs (a restore) are cancelled at once: one cancelled leaves nothing
    /// half-done, and an hour-long restore must not hold the daemon's stop.
    pub fn close(&self) {
        let running = lock(&self.running);
        self.shutting_down
            .store(true, std::sync::atomic::Ordering::SeqCst);
        for r in running.values().filter(|r| r.external.is_some()) {
            r.token.cancel();
        }
        self.tracker.close();
    }

    pub fn cancel_all(&self) {
        for r in lock(&self.running).values() {
            r.token.cancel();
        }
    }

    /// Waits until every run has ended (after [`Runner::close`]).
    pub async fn wait(&self) {
        self.tracker.wait().await;
    }

    async fn execute(self: Arc<Self>, run: Run) {
        tracing::info!(
            trigger = run.trigger.as_str(),
            dry_run = run.opts.dry_run,
            "run started"
        );
        let t0 = Instant::now();
        let (outcome, message, details, attempts) = self.gated(&run).await;
        let finished = Utc::now();
        let duration_ms = u64::try_from(t0.elapsed().as_millis()).unwrap_or(u64::MAX);
        let record = RunRecord {
            run_id: run.run_id.clone(),
            job: run.job.name.clone(),
            kind: run.job.spec.kind(),
            trigger: run.trigger,
            started: run.started,
            finished,
            duration_ms,
            outcome,
            message,
            attempts,
            dry_run: run.opts.dry_run,
            details,
        };
        if outcome.is_success() || outcome == Outcome::Skipped {
            tracing::info!(
                outcome = outcome.as_str(),
                duration_ms,
                "run {}: {}",
                outcome.as_str(),
                record.message
            );
        } else {
            tracing::error!(
                outcome = outcome.as_str(),
                duration_ms,
                "run {}: {}",
                outcome.as_str(),
                record.message
            );
        }
        if !run.opts.dry_run {
            self.metrics.observe(&record);
            self.persist(record.clone()).await;
            self.pings.run_finished(&run.job, &record);
            self.notifier.run_finished(&run.job, &record, &self.history);
        }
        lock(&self.running).remove(&run.job.name);
        let _ = run.events.send(RunEvent::Finished(record));
        self.changes.send_modify(|n| *n += 1);
    }

    /// Waits for a slot, then tries up to 1 + `retries` times within the job's timeout.
    /// Health jobs take no slot: they are light, and must see the stack while long backups
    /// hold every slot.
    async fn attempts(&self, run: &Run) -> (Outcome, String, serde_json::Value, u32) {
        let permit = if matches!(run.job.spec, crate::config::JobSpec::Health(_)) {
            Some(None)
        } else {
            tokio::select! {
                p = Arc::clone(&self.permits).acquire_owned() => p.ok().map(Some),
                () = run.token.cancelled() => None,
            }
        };
        if permit.is_none() {
            return (
                Outcome::Cancelled,
                "cancelled while waiting for a free slot".into(),
                serde_json::Value::Null,
                0,
            );
        }
        // A run still queued when the daemon was told to stop never starts.
        if self.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
            return (
                Outcome::Cancelled,
                "the daemon stopped before a slot was free".into(),
                serde_json::Value::Null,
                0,
            );
        }
        if !run.opts.dry_run {
            self.pings.run_started(&run.job, &run.run_id, run.trigger);
            self.notifier
                .run_started(&run.job, &run.run_id, run.trigger);
        }
        let (progress_tx, mut progress_rx) = mpsc::unbounded_channel::<String>();
        let events = run.events.clone();
        let forward = tokio::spawn(async move {
            while let Some(p) = progress_rx.recv().await {
                let _ = events.send(RunEvent::Progress(p));
            }
        });
        let timed_out = CancellationToken::new();
        let deadline = tokio::time::sleep(run.job.timeout);
        tokio::pin!(deadline);
        let mut attempt = 0;
        let result = loop {
            attempt += 1;
            let mut ctx = JobContext::new(
                run.run_id.clone(),
                Arc::clone(&run.job),
                Arc::clone(&run.config),
                run.token.clone(),
                Utc::now(),
                progress_tx.clone(),
            );
            ctx.dry_run = run.opts.dry_run;
            ctx.force = run.opts.force;
            ctx.in_use = Arc::clone(&self.in_use);
            ctx.notifier = Some(self.notifier.clone());
            if matches!(run.job.spec, crate::config::JobSpec::Health(_)) {
                ctx.health = Arc::clone(&self.health);
                ctx.recent_runs = self.history.recent(None, usize::MAX);
            }
            ctx.running = self
                .running()
                .into_iter()
                .filter(|r| r.job != run.job.name)
                .filter_map(|r| Some((r.job.clone(), run.config.jobs.get(&r.job)?.spec.kind())))
                .collect();
            let result =
                until_deadline(jobs::execute(&ctx), &mut deadline, &run.token, &timed_out).await;
            match result {
                Err(JobError::Transient { ref message, .. }) if attempt <= run.job.retries => {
                    tracing::warn!(
                        attempt,
                        "attempt {attempt} failed ({message}); retrying in {:?}",
                        run.job.retry_delay
                    );
                    ctx.progress(format!("attempt {attempt} failed: {message}"));
                    tokio::select! {
                        () = tokio::time::sleep(run.job.retry_delay) => {}
                        () = run.token.cancelled() => break result,
                        () = &mut deadline => { timed_out.cancel(); break result }
                    }
                }
                other => break other,
            }
        };
        drop(progress_tx);
        let _ = forward.await;
        classify(result, timed_out.is_cancelled(), &run.job, attempt)
    }

    async fn persist(&self, record: RunRecord) {
        if let Err(e) = self.history.append(record).await {
            tracing::error!("cannot write the run history: {e}");
        }
    }
}

/// Everything one run needs, moved into its task.
struct Run {
    job: Arc<JobConfig>,
    config: Arc<Config>,
    run_id: RunId,
    trigger: Trigger,
    opts: RunOptions,
    token: CancellationToken,
    started: DateTime<Utc>,
    events: broadcast::Sender<RunEvent>,
}

/// Runs `fut`; if the deadline passes first, cancels the run's token and lets the job clean up
/// (kill its process group) before returning.
async fn until_deadline<F>(
    fut: F,
    deadline: &mut std::pin::Pin<&mut tokio::time::Sleep>,
    token: &CancellationToken,
    timed_out: &CancellationToken,
) -> Result<JobReport, JobError>
where
    F: std::future::Future<Output = Result<JobReport, JobError>>,
{
    tokio::pin!(fut);
    tokio::select! {
        r = &mut fut => r,
        () = deadline.as_mut() => {
            timed_out.cancel();
            token.cancel();
            fut.await
        }
    }
}

fn classify(
    result: Result<JobReport, JobError>,
    timed_out: bool,
    job: &JobConfig,
    attempts: u32,
) -> (Outcome, String, serde_json::Value, u32) {
    match result {
        Ok(report) => (Outcome::Succeeded, report.message, report.details, attempts),
        Err(e) if timed_out => (
            Outcome::TimedOut,
            format!(
                "timed out after {}",
                humantime::format_duration(job.timeout)
            ),
            e.details(),
            attempts,
        ),
        Err(JobError::Cancelled) => (
            Outcome::Cancelled,
            "cancelled".into(),
            serde_json::Value::Null,
            attempts,
        ),
        Err(e) => (Outcome::Failed, e.to_string(), e.details(), attempts),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}
