//! Continuous WAL archiving: `kind = "wal-archive"` jobs.
//!
//! Such a job is not a run: it lives as long as the daemon (or until a reload removes or
//! changes it), takes no `max-concurrent-jobs` slot and never passes through the runner. For
//! each job one task joins these loops:
//!
//! - [`receiver`]: `pg_receivewal` on the job's replication slot ([`slot`]), writing into a
//!   private spool folder (`state-dir/wal-spool/JOB`, 0700), started again with backoff;
//! - the archiver: every second, each completed file in the spool goes through [`archive`]
//!   (zstd, age, SHA-256, atomic publish, then the [`index`] line, then the spool file goes),
//!   and after each life of the receiver its in-flight `.partial` as well ([`partial`]);
//! - the monitor: every 10 s the slot's numbers ([`monitor`]) and the job's health check
//!   `wal:JOB` on the health board, with an alert on each transition.
//!
//! The receiver is a child of the process module, so it is in its own process group, gets
//! SIGTERM when the daemon dies, and is swept at the next start if it survived. With `offsite`,
//! a fourth loop copies archived segments to the targets ([`offsite`]). The task is [`job`],
//! its shared state [`state`].
//!
//! WAL retention is not one of these loops: the prune job applies it ([`prune`], planned by
//! [`retention`]) after it pruned the base backups that size it.

mod archive;
pub mod index;
mod job;
mod monitor;
mod offsite;
pub mod partial;
pub mod prune;
mod receiver;
pub mod retention;
pub mod segment;
mod slot;
mod state;

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
use crate::jobs::health::board::Board;
use crate::protocol::WalStatus;

use self::job::JobCtx;
pub use self::slot::base_backup_taken;
pub use self::state::{JobState, Snapshot};

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
                held: Vec::new(),
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
