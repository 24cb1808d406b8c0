//! Continuous WAL archiving: `kind = "wal-archive"` jobs.
//!
//! Such a job is not a run: it lives as long as the daemon (or until a reload removes or
//! changes it), takes no `max-concurrent-jobs` slot and never passes through the runner. For
//! each job one task joins three loops:
//!
//! - [`receiver`]: `pg_receivewal` on the job's replication slot ([`slot`]), writing into a
//!   private spool folder (`state-dir/wal-spool/JOB`, 0700), started again with backoff;
//! - the archiver: every second, each completed file in the spool goes through [`archive`]
//!   (zstd, age, SHA-256, atomic publish, then the [`index`] line, then the spool file goes);
//! - the monitor: every 10 s the slot's numbers ([`monitor`]) and the job's health check
//!   `wal:JOB` on the health board, with an alert on each transition.
//!
//! The receiver is a child of the process module, so it is in its own process group, gets
//! SIGTERM when the daemon dies, and is swept at the next start if it survived.

mod archive;
mod index;
mod monitor;
mod offsite;
mod receiver;
pub mod segment;
mod slot;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use chrono::{DateTime, Utc};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::alerts::Notifier;
use crate::config::{Config, JobSpec, OffsiteTarget, WalArchiveSpec};
use crate::ids::JobName;
use crate::jobs::backup::stream::Layers;
use crate::jobs::health::board::{Board, Probe};
use crate::protocol::WalStatus;

use self::index::Index;
use self::monitor::SlotView;

/// Every query and the slot's creation get this long.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);
const ARCHIVE_EVERY: Duration = Duration::from_secs(1);
/// After a failed pass (a full disk), the next try; the spool holds the segments meanwhile.
const ARCHIVE_RETRY: Duration = Duration::from_secs(10);
const CHECK_EVERY: Duration = Duration::from_secs(10);
/// How often archived segments are offered to the offsite targets.
const OFFSITE_EVERY: Duration = Duration::from_secs(5);
/// At stop, how long the receiver and the last archive pass get.
const STOP_WAIT: Duration = Duration::from_secs(15);

/// The health board's name for a job's check.
pub fn check_name(job: &JobName) -> String {
    format!("wal:{job}")
}

/// Whether `check` is a wal-archive job's check in `config` (kept on the board at reload).
pub fn owns_check(config: &Config, check: &str) -> bool {
    config
        .jobs
        .values()
        .any(|j| matches!(j.spec, JobSpec::WalArchive(_)) && check_name(&j.name) == check)
}

/// What is known of one job, for `atprectl jobs`, health and metrics.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    pub status: WalStatus,
    pub archive_error: Option<String>,
    pub recreated: Option<slot::Recreated>,
    pub gaps: Vec<(String, String)>,
    pub newest_completed: Option<DateTime<Utc>>,
    pub archived_lsn: Option<u64>,
    pub slot: Option<SlotView>,
    /// Per offsite target, why its last pass failed.
    pub offsite_errors: BTreeMap<String, String>,
}

/// One job's shared state.
#[derive(Default)]
pub struct JobState {
    inner: Mutex<Snapshot>,
}

impl JobState {
    fn lock(&self) -> MutexGuard<'_, Snapshot> {
        self.inner
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn set_receiver(&self, receiver: &str, message: Option<String>, pid: Option<u32>) {
        let mut s = self.lock();
        if s.status.receiver != receiver {
            s.status.since = Some(Utc::now());
        }
        s.status.receiver = receiver.to_owned();
        s.status.message = message;
        s.status.pid = pid;
    }

    fn started(&self, pid: Option<u32>) {
        self.set_receiver("receiving", None, pid);
        self.lock().status.starts += 1;
    }

    fn newest_archived(&self) -> Option<String> {
        self.lock().status.last_segment.clone()
    }

    fn slot_recreated(&self, marker: slot::Recreated) {
        let mut s = self.lock();
        s.status.base_backup_required_since = Some(marker.at);
        s.recreated = Some(marker);
    }

    fn archived(&self, index: &Index, error: Option<String>) {
        let mut s = self.lock();
        s.archive_error = error;
        s.gaps = index.gaps();
        s.status.segments = index.count() as u64;
        if let Some((seg, entry)) = index.newest_segment() {
            s.status.last_segment = Some(entry.name.clone());
            s.status.last_archived = Some(entry.archived);
            s.status.archived_lsn = Some(segment::format_lsn(seg.end_lsn()));
            s.archived_lsn = Some(seg.end_lsn());
            s.newest_completed = Some(entry.completed);
        }
    }

    pub fn snapshot(&self) -> Snapshot {
        self.lock().clone()
    }
}

struct Running {
    spec: WalArchiveSpec,
    targets: Vec<OffsiteTarget>,
    state: Arc<JobState>,
    cancel: CancellationToken,
    task: JoinHandle<()>,
}

/// The wal-archive jobs of the current configuration, each running.
pub struct Archivers {
    jobs: Mutex<BTreeMap<JobName, Running>>,
    board: Arc<Board>,
    notifier: Notifier,
}

impl Archivers {
    pub fn new(board: Arc<Board>, notifier: Notifier) -> Arc<Archivers> {
        Arc::new(Archivers {
            jobs: Mutex::default(),
            board,
            notifier,
        })
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<JobName, Running>> {
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts the jobs `config` has, stops those it no longer has, restarts changed ones (the
    /// new one starts once the old one has ended). Must be called within the runtime.
    pub fn apply(&self, config: &Config) {
        let mut jobs = self.lock();
        let wanted: BTreeMap<JobName, (WalArchiveSpec, Vec<OffsiteTarget>)> = config
            .jobs
            .values()
            .filter_map(|j| match &j.spec {
                JobSpec::WalArchive(s) => {
                    let targets = s
                        .offsite
                        .iter()
                        .filter_map(|n| config.offsite.get(n).cloned())
                        .collect();
                    Some((j.name.clone(), (s.clone(), targets)))
                }
                _ => None,
            })
            .collect();
        let mut previous: BTreeMap<JobName, JoinHandle<()>> = BTreeMap::new();
        let names: Vec<JobName> = jobs.keys().cloned().collect();
        for name in names {
            let now = jobs.get(&name).map(|r| (r.spec.clone(), r.targets.clone()));
            if wanted.get(&name) != now.as_ref()
                && let Some(old) = jobs.remove(&name)
            {
                old.cancel.cancel();
                previous.insert(name, old.task);
            }
        }
        for (name, (spec, targets)) in wanted {
            if jobs.contains_key(&name) {
                continue;
            }
            let state = Arc::new(JobState::default());
            let cancel = CancellationToken::new();
            let ctx = JobCtx {
                job: name.clone(),
                spec: spec.clone(),
                targets: targets.clone(),
                state: Arc::clone(&state),
                board: Arc::clone(&self.board),
                notifier: self.notifier.clone(),
            };
            let span = tracing::info_span!("wal", job = %name, kind = "wal-archive");
            let task = tokio::spawn(
                ctx.run(cancel.clone(), previous.remove(&name))
                    .instrument(span),
            );
            jobs.insert(
                name,
                Running {
                    spec,
                    targets,
                    state,
                    cancel,
                    task,
                },
            );
        }
    }

    /// Stops every job: the receivers get SIGTERM, the spool is archived a last time.
    pub async fn stop(&self) {
        let running: Vec<Running> = std::mem::take(&mut *self.lock()).into_values().collect();
        for r in &running {
            r.cancel.cancel();
        }
        for r in running {
            if tokio::time::timeout(STOP_WAIT, r.task).await.is_err() {
                tracing::error!(
                    "a wal-archive job did not stop within {}s",
                    STOP_WAIT.as_secs()
                );
            }
        }
    }

    /// The status of `job`, if it is a running wal-archive job.
    pub fn status(&self, job: &JobName) -> Option<WalStatus> {
        self.lock().get(job).map(|r| r.state.snapshot().status)
    }

    /// Gauges for the scrape: receiver up, archived LSN, lag, retained WAL, recovery point age.
    pub fn register_metrics(&self, registry: &mut Registry, now: DateTime<Utc>) {
        let snaps: Vec<(JobName, Snapshot)> = self
            .lock()
            .iter()
            .map(|(n, r)| (n.clone(), r.state.snapshot()))
            .collect();
        let mut family = |name: &str, help: &str| {
            let f =
                Family::<Vec<(String, String)>, Gauge<f64, std::sync::atomic::AtomicU64>>::default(
                );
            registry.register(name, help, f.clone());
            f
        };
        let up = family(
            "atpred_wal_receiver_up",
            "1 while the job's pg_receivewal streams",
        );
        let lsn = family(
            "atpred_wal_archived_lsn",
            "the WAL position (bytes) up to which segments are archived and indexed",
        );
        let lag = family(
            "atpred_wal_lag_bytes",
            "server WAL position minus what the receiver flushed",
        );
        let lag_s = family(
            "atpred_wal_lag_seconds",
            "the receiver's flush lag (pg_stat_replication)",
        );
        let retained = family(
            "atpred_wal_slot_retained_bytes",
            "WAL the job's replication slot holds back on the server",
        );
        let segments = family(
            "atpred_wal_archived_segments",
            "files in the archive's index",
        );
        let age = family(
            "atpred_recovery_point_age_seconds",
            "now minus when the newest archived segment was completed: writes since then are not in the archive yet",
        );
        for (job, s) in snaps {
            let l = vec![("job".to_owned(), job.as_str().to_owned())];
            up.get_or_create(&l)
                .set(f64::from(u8::from(s.status.receiver == "receiving")));
            segments.get_or_create(&l).set(s.status.segments as f64);
            if let Some(v) = s.archived_lsn {
                lsn.get_or_create(&l).set(v as f64);
            }
            if let Some(v) = &s.slot {
                lag.get_or_create(&l).set(v.lag_bytes as f64);
                lag_s.get_or_create(&l).set(v.lag_seconds);
                retained.get_or_create(&l).set(v.retained_bytes as f64);
            }
            if let Some(t) = s.newest_completed {
                age.get_or_create(&l)
                    .set((now - t).num_milliseconds().max(0) as f64 / 1000.0);
            }
        }
    }
}

/// What one job's task holds.
struct JobCtx {
    job: JobName,
    spec: WalArchiveSpec,
    targets: Vec<OffsiteTarget>,
    state: Arc<JobState>,
    board: Arc<Board>,
    notifier: Notifier,
}

impl JobCtx {
    async fn run(self, cancel: CancellationToken, previous: Option<JoinHandle<()>>) {
        if let Some(p) = previous {
            let _ = p.await;
        }
        if cancel.is_cancelled() {
            return;
        }
        if let Some(marker) = slot::recreated(&self.spec.archive_dir) {
            self.state.slot_recreated(marker);
        }
        // The index is read before the receiver starts: whether a missing slot was dropped
        // behind our back depends on what was archived before.
        let (spec, job) = (self.spec.clone(), self.job.clone());
        let index = match tokio::task::spawn_blocking(move || open_archive(&spec, &job)).await {
            Ok(Ok(i)) => {
                self.state.archived(&i, None);
                Some(i)
            }
            Ok(Err(e)) => {
                self.state.lock().archive_error = Some(e);
                None
            }
            Err(e) => {
                self.state.lock().archive_error = Some(e.to_string());
                None
            }
        };
        let receiver_done = CancellationToken::new();
        let receive = async {
            receiver::supervise(&self.spec, &self.state, &cancel).await;
            receiver_done.cancel();
        };
        tokio::join!(
            receive,
            self.archive_loop(index, &receiver_done),
            self.monitor_loop(&cancel),
            self.offsite_loop(&cancel)
        );
    }

    /// Archives what the spool holds every second, and once more after the receiver ended.
    async fn archive_loop(&self, mut index: Option<Index>, receiver_done: &CancellationToken) {
        let layers = match self.layers() {
            Ok(l) => l,
            Err(e) => {
                self.state.lock().archive_error = Some(e);
                return;
            }
        };
        loop {
            let last = receiver_done.is_cancelled();
            index = self.archive_once(index, &layers).await;
            if last {
                return;
            }
            let failed = self.state.lock().archive_error.is_some();
            let wait = if failed { ARCHIVE_RETRY } else { ARCHIVE_EVERY };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = receiver_done.cancelled() => {}
            }
        }
    }

    fn layers(&self) -> Result<Layers, String> {
        let recipients = self
            .spec
            .encrypt_to
            .iter()
            .map(|r| {
                r.parse::<age::x25519::Recipient>()
                    .map_err(|e| e.to_string())
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Layers {
            zstd_level: Some(self.spec.zstd_level),
            recipients,
        })
    }

    async fn archive_once(&self, index: Option<Index>, layers: &Layers) -> Option<Index> {
        let spec = self.spec.clone();
        let layers = layers.clone();
        let job = self.job.clone();
        let done = tokio::task::spawn_blocking(move || {
            let mut index = match index {
                Some(i) => i,
                None => match open_archive(&spec, &job) {
                    Ok(i) => i,
                    Err(e) => {
                        return (
                            None,
                            archive::Pass {
                                archived: Vec::new(),
                                error: Some(e),
                            },
                        );
                    }
                },
            };
            let pass = archive::pass(&spec, &layers, &mut index, Utc::now());
            (Some(index), pass)
        })
        .await;
        let (index, pass) = match done {
            Ok(d) => d,
            Err(e) => {
                self.state.lock().archive_error = Some(format!("the archiver failed: {e}"));
                return None;
            }
        };
        for e in &pass.archived {
            tracing::info!(segment = %e.name, bytes = e.bytes, "archived {}", e.name);
        }
        // Said once while the same failure lasts, not at every retry.
        let repeated = pass.error.is_some() && self.state.lock().archive_error == pass.error;
        if let (Some(e), false) = (&pass.error, repeated) {
            tracing::error!("{e}");
        }
        match &index {
            Some(i) => self.state.archived(i, pass.error),
            None => self.state.lock().archive_error = pass.error,
        }
        index
    }

    /// Offers the archived segments to each offsite target every [`OFFSITE_EVERY`].
    async fn offsite_loop(&self, cancel: &CancellationToken) {
        if self.targets.is_empty() {
            return;
        }
        loop {
            tokio::select! {
                () = tokio::time::sleep(OFFSITE_EVERY) => {}
                () = cancel.cancelled() => return,
            }
            for t in &self.targets {
                let result =
                    offsite::pass(t, self.job.as_str(), &self.spec.archive_dir, cancel).await;
                let mut s = self.state.lock();
                match result {
                    Ok(_) => {
                        s.offsite_errors.remove(&t.name);
                    }
                    Err(e) => {
                        if s.offsite_errors.get(&t.name) != Some(&e) {
                            tracing::warn!("offsite {}: copying segments failed: {e}", t.name);
                        }
                        s.offsite_errors.insert(t.name.clone(), e);
                    }
                }
            }
        }
    }

    /// Observes the slot and records the job's health check every [`CHECK_EVERY`].
    async fn monitor_loop(&self, cancel: &CancellationToken) {
        let mut first = true;
        loop {
            let wait = if first {
                Duration::from_secs(2)
            } else {
                CHECK_EVERY
            };
            first = false;
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = cancel.cancelled() => return,
            }
            let view = monitor::observe(&self.spec).await;
            if let Ok(v) = &view {
                self.state.lock().slot = Some(v.clone());
            }
            let now = Utc::now();
            let (status, message) = monitor::judge(&self.spec, &self.state.snapshot(), &view, now);
            let check = check_name(&self.job);
            let probe = Probe::new(status, message);
            if let Some(t) = self.board.record(&self.job, &check, probe, now)
                && t.alerts()
            {
                tracing::warn!(
                    check = %t.check,
                    status = t.status.as_str(),
                    previous = t.previous_str(),
                    "health check {} is {}: {}",
                    t.check,
                    t.status.as_str(),
                    t.message
                );
                self.notifier.daemon(&crate::alerts::daemon_events::health(
                    self.job.as_str(),
                    &t.check,
                    t.status.as_str(),
                    t.previous_str(),
                    &t.message,
                ));
            }
        }
    }
}

/// The archive folder (made 0700 if missing) and its index, repaired if a crash tore it.
fn open_archive(spec: &WalArchiveSpec, job: &JobName) -> Result<Index, String> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&spec.archive_dir)
        .map_err(|e| format!("cannot create {}: {e}", spec.archive_dir.display()))?;
    let (index, dropped) = Index::open(&spec.archive_dir).map_err(|e| e.to_string())?;
    if dropped > 0 {
        tracing::warn!(
            job = %job,
            "{}: dropped {dropped} torn or unreadable line(s) of the segment index; their segments are archived again from the spool",
            spec.archive_dir.join(index::INDEX_FILE).display()
        );
    }
    Ok(index)
}
