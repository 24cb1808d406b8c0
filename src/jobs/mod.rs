//! Jobs: one contract, a closed set of kinds dispatched by a plain `match`.
//!
//! A run gets a [`JobContext`] (its ids, a cancellation token, a fixed `now`, the configuration,
//! a progress channel) and returns a [`JobReport`] or a [`JobError`] that says whether a retry
//! could help. Jobs never read the clock or the environment themselves.

pub mod backup;
pub mod calendar_duration;
pub mod catalog;
mod command;
pub mod health;
pub mod prune;
pub mod retention;
#[cfg(test)]
mod retention_props;
#[cfg(test)]
mod retention_tests;
pub mod rotate;

use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::{Config, JobConfig, JobSpec, Kind};
use crate::ids::{JobName, RunId};

/// What a run is given.
pub struct JobContext {
    pub run_id: RunId,
    pub job: Arc<JobConfig>,
    pub config: Arc<Config>,
    pub cancel: CancellationToken,
    /// The run's start time; jobs use this, never the clock.
    pub now: DateTime<Utc>,
    pub dry_run: bool,
    pub force: bool,
    /// The other jobs running when this attempt started (a prune waits for its set's backups).
    pub running: Vec<(JobName, Kind)>,
    /// Backups claimed by a verification or a removal.
    pub in_use: Arc<catalog::InUse>,
    /// Where health jobs record their checks' results.
    pub health: Arc<health::board::Board>,
    /// The run history, newest first (given to health jobs only, for their `jobs` check).
    pub recent_runs: Vec<crate::protocol::RunRecord>,
    /// Where jobs publish daemon events (`[daemon] notify`): health transitions, a refused
    /// backup.
    pub notifier: Option<crate::alerts::Notifier>,
    progress: mpsc::UnboundedSender<String>,
}

impl JobContext {
    pub fn new(
        run_id: RunId,
        job: Arc<JobConfig>,
        config: Arc<Config>,
        cancel: CancellationToken,
        now: DateTime<Utc>,
        progress: mpsc::UnboundedSender<String>,
    ) -> Self {
        JobContext {
            run_id,
            job,
            config,
            cancel,
            now,
            dry_run: false,
            force: false,
            running: Vec::new(),
            in_use: Arc::default(),
            health: Arc::default(),
            recent_runs: Vec::new(),
            notifier: None,
            progress,
        }
    }

    /// Reports a step to anyone following the run (`atprectl run --wait`).
    pub fn progress(&self, message: impl Into<String>) {
        let _ = self.progress.send(message.into());
    }
}

/// A successful run.
#[derive(Debug, Default)]
pub struct JobReport {
    pub message: String,
    pub details: serde_json::Value,
}

/// A failed run.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The run's token was cancelled (by `cancel`, the timeout, or shutdown).
    #[error("cancelled")]
    Cancelled,
    /// Worth another attempt (`retries`): a server not reachable, a lock held.
    #[error("{message}")]
    Transient {
        message: String,
        details: serde_json::Value,
    },
    #[error("{message}")]
    Permanent {
        message: String,
        details: serde_json::Value,
    },
}

impl JobError {
    pub fn permanent(message: impl Into<String>) -> Self {
        JobError::Permanent {
            message: message.into(),
            details: serde_json::Value::Null,
        }
    }

    pub fn details(&self) -> serde_json::Value {
        match self {
            JobError::Cancelled => serde_json::Value::Null,
            JobError::Transient { details, .. } | JobError::Permanent { details, .. } => {
                details.clone()
            }
        }
    }
}

/// Runs one attempt of the job in `ctx`.
pub async fn execute(ctx: &JobContext) -> Result<JobReport, JobError> {
    match &ctx.job.spec {
        JobSpec::Backup(spec) => backup::run(ctx, spec).await,
        JobSpec::Prune(spec) => prune::run(ctx, spec).await,
        JobSpec::Rotate(spec) => rotate::run(ctx, spec).await,
        JobSpec::Command(spec) => command::run(ctx, spec).await,
        JobSpec::Health(spec) => health::run(ctx, spec).await,
        JobSpec::WalArchive(_) => Err(JobError::permanent(format!(
            "{} is a wal-archive job: it runs continuously under the daemon, not on demand (its state: atprectl jobs, atprectl health)",
            ctx.job.name
        ))),
    }
}
