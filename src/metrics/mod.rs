//! Prometheus metrics, encoded by the prometheus-client crate (OpenMetrics text).
//!
//! Counters and the duration histogram ([`RunMetrics`]) live as long as the daemon and are fed
//! by the runner as runs finish. Everything else is a gauge read at scrape time from the state
//! itself — the configuration, the running runs, the history, the backup catalog on disk, the
//! health board — into a registry built for that one scrape, so a removed job or check leaves
//! no stale series. Labels hold only job names, check names, outcomes, states and paths from
//! the configuration: never an error text or a secret.

mod restore;
mod serve;

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

pub use serve::{MetricsServer, spawn_textfile_writer};

use crate::config::JobSpec;
use crate::daemon::state::Shared;
use crate::jobs::catalog::{self, State};
use crate::protocol::RunRecord;

type Labels = Vec<(String, String)>;
type FloatGauge = Gauge<f64, AtomicU64>;

/// The media type of [`render`]'s text.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

fn histogram() -> Histogram {
    // 0.1 s to about 7 h: health checks to long backups.
    Histogram::new(exponential_buckets(0.1, 4.0, 9))
}

/// Run counters and durations since the daemon started.
#[derive(Clone)]
pub struct RunMetrics {
    runs: Family<Labels, Counter>,
    duration: Family<Labels, Histogram, fn() -> Histogram>,
}

impl Default for RunMetrics {
    fn default() -> Self {
        RunMetrics {
            runs: Family::default(),
            duration: Family::new_with_constructor(histogram),
        }
    }
}

impl RunMetrics {
    pub fn observe(&self, record: &RunRecord) {
        let job = record.job.as_str().to_owned();
        self.runs
            .get_or_create(&vec![
                ("job".into(), job.clone()),
                ("outcome".into(), record.outcome.as_str().into()),
            ])
            .inc();
        if record.outcome != crate::protocol::Outcome::Skipped {
            self.duration
                .get_or_create(&vec![("job".into(), job)])
                .observe(record.duration_ms as f64 / 1000.0);
        }
    }
}

/// The metrics text as served at `/metrics` and by `atprectl metrics`.
pub async fn render(shared: &Shared) -> String {
    let config = shared.config.borrow().clone();
    let dir = config.daemon.backup_dir.clone();
    let (catalog, evidence) = tokio::task::spawn_blocking(move || {
        let catalog = catalog::list(&dir).unwrap_or_default();
        let evidence = restore::evidence_of(&dir, &catalog);
        (catalog, evidence)
    })
    .await
    .unwrap_or_default();
    let mut registry = Registry::default();
    let one = |name: &str, help: &str, registry: &mut Registry| {
        let g = Family::<Labels, FloatGauge>::default();
        registry.register(name, help, g.clone());
        g
    };
    let up = one("atpred_up", "1 while the daemon runs", &mut registry);
    up.get_or_create(&vec![]).set(1.0);
    let build = one("atpred_build_info", "the daemon's version", &mut registry);
    build
        .get_or_create(&vec![("version".into(), crate::VERSION.into())])
        .set(1.0);

    let metrics = shared.runner.metrics().clone();
    registry.register("atpred_job_runs", "runs finished, by outcome", metrics.runs);
    registry.register(
        "atpred_job_duration_seconds",
        "how long runs took",
        metrics.duration,
    );
    let pings = shared.runner.pings();
    registry.register(
        "atpred_pings",
        "dead-man pings of job runs, by outcome (sent, failed after retries, dropped)",
        pings.counts(),
    );
    registry.register(
        "atpred_heartbeats",
        "the daemon's heartbeat pings, by outcome (sent, failed, skipped while one was in flight)",
        pings.heartbeats(),
    );
    registry.register(
        "atpred_notifications",
        "notifications by channel and outcome (sent, retried after a failed attempt, failed when given up, dropped beyond the outbox's bound)",
        shared.runner.notifier().counts(),
    );
    let last_success = Family::<Labels, FloatGauge>::default();
    registry.register(
        "atpred_job_last_success_timestamp_seconds",
        "when the job last succeeded (Unix time)",
        last_success.clone(),
    );
    let running = Family::<Labels, FloatGauge>::default();
    registry.register(
        "atpred_job_running",
        "1 while the job runs",
        running.clone(),
    );
    let history = shared.runner.history().recent(None, usize::MAX);
    for job in config.jobs.values() {
        let labels = vec![("job".to_owned(), job.name.as_str().to_owned())];
        let is_running = shared.runner.running_of(&job.name).is_some();
        running
            .get_or_create(&labels)
            .set(f64::from(u8::from(is_running)));
        if let Some(r) = history
            .iter()
            .find(|r| r.job == job.name && r.outcome.is_success() && !r.dry_run)
        {
            last_success
                .get_or_create(&labels)
                .set(r.finished.timestamp_millis() as f64 / 1000.0);
        }
    }

    backups(&config, &catalog, &mut registry);
    restore::register(
        &config,
        &catalog,
        &evidence,
        &mut registry,
        chrono::Utc::now(),
    );
    offsite(&config, &catalog, &mut registry);
    health(shared, &mut registry);
    shared
        .wal
        .register_metrics(&mut registry, chrono::Utc::now());

    let mut text = String::new();
    if let Err(e) = encode(&mut text, &registry) {
        tracing::error!("cannot encode metrics: {e}");
    }
    text
}

fn backups(config: &crate::config::Config, catalog: &[catalog::Entry], registry: &mut Registry) {
    let bytes = Family::<Labels, FloatGauge>::default();
    registry.register(
        "atpred_backup_bytes",
        "size of the newest verified backup",
        bytes.clone(),
    );
    let verified = Family::<Labels, FloatGauge>::default();
    registry.register(
        "atpred_backup_last_verified_timestamp_seconds",
        "when the newest verified backup was last verified (Unix time)",
        verified.clone(),
    );
    let count = Family::<Labels, FloatGauge>::default();
    registry.register(
        "atpred_backups",
        "backups in backup-dir, by state",
        count.clone(),
    );
    for job in config
        .jobs
        .values()
        .filter(|j| matches!(j.spec, JobSpec::Backup(_)))
    {
        let name = job.name.as_str();
        let of_job: Vec<&catalog::Entry> = catalog
            .iter()
            .filter(|e| entry_job(e) == Some(name))
            .collect();
        for state in [State::Verified, State::Failed, State::Unreadable] {
            let n = of_job.iter().filter(|e| e.state == state).count();
            count
                .get_or_create(&vec![
                    ("job".into(), name.into()),
                    ("state".into(), state_name(state).into()),
                ])
                .set(n as f64);
        }
        let newest = of_job
            .iter()
            .filter(|e| e.state == State::Verified)
            .filter_map(|e| e.manifest.as_ref())
            .filter(|m| !m.is_safety())
            .max_by_key(|m| m.started);
        if let Some(m) = newest {
            let labels = vec![("job".to_owned(), name.to_owned())];
            bytes.get_or_create(&labels).set(m.bytes as f64);
            verified
                .get_or_create(&labels)
                .set(m.verification.at.timestamp_millis() as f64 / 1000.0);
        }
    }
}

/// Per backup job and each of its `offsite` targets: its local backups by the stage of their
/// copy there (`none` when no copy was tried), and when a copy was last committed there.
fn offsite(config: &crate::config::Config, catalog: &[catalog::Entry], registry: &mut Registry) {
    let copies = Family::<Labels, FloatGauge>::default();
    registry.register(
        "atpred_offsite_copies",
        "local verified backups by the stage of their offsite copy",
        copies.clone(),
    );
    let last = Family::<Labels, FloatGauge>::default();
    registry.register(
        "atpred_offsite_last_verified_timestamp_seconds",
        "when an offsite copy of the job's backups was last read back and committed (Unix time)",
        last.clone(),
    );
    for job in config.jobs.values() {
        let JobSpec::Backup(spec) = &job.spec else {
            continue;
        };
        for target in &spec.offsite {
            let gauges = (&copies, &last);
            offsite_target(config, catalog, job.name.as_str(), target, gauges);
        }
    }
}

/// [`offsite`]'s figures for one job and one of its targets.
fn offsite_target(
    config: &crate::config::Config,
    catalog: &[catalog::Entry],
    name: &str,
    target: &str,
    (copies, last): (&Family<Labels, FloatGauge>, &Family<Labels, FloatGauge>),
) {
    use crate::offsite::state;
    let records = state::list(&config.daemon.state_dir, target);
    let labels = |stage: &str| {
        vec![
            ("job".to_owned(), name.to_owned()),
            ("target".to_owned(), target.to_owned()),
            ("stage".to_owned(), stage.to_owned()),
        ]
    };
    let mut counts: std::collections::BTreeMap<&str, usize> =
        ["none", "pending", "uploaded", "verified", "failed"]
            .into_iter()
            .map(|s| (s, 0))
            .collect();
    for e in catalog
        .iter()
        .filter(|e| e.state == State::Verified && entry_job(e) == Some(name))
    {
        let stage = records
            .iter()
            .find(|r| r.id == e.id)
            .map_or("none", |r| r.stage.as_str());
        *counts.entry(stage).or_default() += 1;
    }
    for (stage, n) in counts {
        copies.get_or_create(&labels(stage)).set(n as f64);
    }
    if let Some(at) = records
        .iter()
        .filter(|r| r.job == name && r.stage == state::Stage::Verified)
        .map(|r| r.at)
        .max()
    {
        last.get_or_create(&vec![
            ("job".to_owned(), name.to_owned()),
            ("target".to_owned(), target.to_owned()),
        ])
        .set(at.timestamp_millis() as f64 / 1000.0);
    }
}

/// The job a catalog entry belongs to: its manifest's, else the id's `-<job>` suffix.
fn entry_job(e: &catalog::Entry) -> Option<&str> {
    match &e.manifest {
        Some(m) => Some(m.job.as_str()),
        None => e.id.split_once('-').map(|(_, job)| job),
    }
}

fn state_name(state: State) -> &'static str {
    match state {
        State::Verified => "verified",
        State::Failed => "failed",
        State::Unreadable => "unreadable",
    }
}

fn health(shared: &Shared, registry: &mut Registry) {
    let status = Family::<Labels, FloatGauge>::default();
    registry.register(
        "atpred_health_status",
        "the check's state: 0 ok, 1 warn, 2 fail",
        status.clone(),
    );
    let latency = Family::<Labels, FloatGauge>::default();
    registry.register(
        "atpred_health_latency_seconds",
        "how long the check's probe took",
        latency.clone(),
    );
    let board = shared.runner.health();
    for r in board.reports() {
        let labels = vec![("check".to_owned(), r.check.clone())];
        status.get_or_create(&labels).set(r.status.value() as f64);
        latency
            .get_or_create(&labels)
            .set(r.latency_ms as f64 / 1000.0);
    }
    let free = Family::<Labels, FloatGauge>::default();
    registry.register(
        "atpred_disk_free_bytes",
        "free bytes on a watched path (for unprivileged users)",
        free.clone(),
    );
    for (path, bytes) in board.disk_free() {
        free.get_or_create(&vec![("path".into(), path.display().to_string())])
            .set(bytes as f64);
    }
}
