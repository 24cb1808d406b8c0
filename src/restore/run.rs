//! A restore as a run: `RestoreRun::begin` → [`super::exec::run`] inside [`RestoreRun::span`]
//! → [`RestoreRun::finish`].
//!
//! It is an [external run](crate::runner::external) under the reserved job name
//! [`RESTORE_JOB`], kind `restore`: `status` and `jobs` show it while it runs, `atprectl
//! cancel restore` cancels it, and it ends as a record in the history with the backup, its
//! job and the target database in `details`. One restore runs at a time: a second one is
//! refused with [`RestoreError::Busy`], naming the first. Its log lines carry the journald
//! fields of every run (`JOB=restore`, `KIND=restore`, `RUN_ID`) and its own: `BACKUP` and
//! `DATABASE` (the target).

use std::sync::Arc;

use serde_json::json;
use tracing::Instrument;

use super::RestoreError;
use super::exec::Report;
use super::plan::RestorePlan;
use crate::config::{Kind, RESTORE_JOB};
use crate::ids::{JobName, RunId};
use crate::protocol::{Outcome, RunRecord, Trigger};
use crate::runner::Runner;
use crate::runner::external::{BeginError, ExternalRun};

/// A restore in progress.
pub struct RestoreRun {
    run: ExternalRun,
    span: tracing::Span,
    backup: String,
    backup_job: String,
    to: String,
}

impl RestoreRun {
    /// Begins the restore of `plan` (of a backup made by `backup_job`), or refuses it while
    /// another runs or the daemon stops.
    pub fn begin(
        runner: &Arc<Runner>,
        plan: &RestorePlan,
        backup_job: &str,
    ) -> Result<RestoreRun, RestoreError> {
        let what = format!("the restore of {} into {}", plan.id, plan.to);
        Self::begin_into(runner, what, &plan.id, backup_job, &plan.to)
    }

    /// Begins a restore of `backup` (made by `backup_job`) into `to` (a database or a folder)
    /// that `what` describes, for restores without a [`RestorePlan`] (a point-in-time one).
    pub fn begin_into(
        runner: &Arc<Runner>,
        what: String,
        backup: &str,
        backup_job: &str,
        to: &str,
    ) -> Result<RestoreRun, RestoreError> {
        let run = runner
            .begin_external(job_name(), Kind::Restore, Trigger::Manual, what)
            .map_err(refused)?;
        let span = tracing::info_span!("run", job = %run.job(), kind = %run.kind(),
            run_id = %run.run_id(), backup = %backup, database = %to);
        span.in_scope(|| tracing::info!(trigger = Trigger::Manual.as_str(), "run started"));
        Ok(RestoreRun {
            run,
            span,
            backup: backup.to_owned(),
            backup_job: backup_job.to_owned(),
            to: to.to_owned(),
        })
    }

    /// Refuses early while another restore runs (before planning, whose refusals would
    /// otherwise trip over the running one's restoring database or scratch space).
    pub fn check_free(runner: &Runner) -> Result<(), RestoreError> {
        runner.check_free(&job_name()).map_err(refused)
    }

    pub fn run_id(&self) -> &RunId {
        self.run.run_id()
    }

    /// Cancelled by `atprectl cancel restore` and by the daemon's stop.
    pub fn token(&self) -> &tokio_util::sync::CancellationToken {
        self.run.token()
    }

    /// The span every line of this restore is logged in.
    pub fn span(&self) -> tracing::Span {
        self.span.clone()
    }

    /// Hands the restore to `work`, run as its own task: a client that goes away does not
    /// end it; the daemon's stop cancels it and waits for it.
    pub fn spawn<W, F>(self, work: W)
    where
        W: FnOnce(RestoreRun) -> F + Send + 'static,
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let RestoreRun {
            run,
            span,
            backup,
            backup_job,
            to,
        } = self;
        run.spawn(move |run| {
            work(RestoreRun {
                run,
                span,
                backup,
                backup_job,
                to,
            })
        });
    }

    /// Records how the restore ended: the run record (history, completion log line).
    pub async fn finish(self, result: &Result<Report, RestoreError>) -> RunRecord {
        let (outcome, message) = match result {
            Ok(r) => (Outcome::Succeeded, describe(r)),
            Err(RestoreError::Cancelled) => {
                (Outcome::Cancelled, RestoreError::Cancelled.to_string())
            }
            Err(e) => (Outcome::Failed, e.to_string()),
        };
        let mut details = json!({
            "backup": self.backup,
            "backup_job": self.backup_job,
            "database": self.to,
        });
        if let Ok(report) = result {
            details["report"] = json!(report);
        }
        let span = self.span.clone();
        self.run
            .finish(outcome, message, details)
            .instrument(span)
            .await
    }
}

impl RestoreRun {
    /// Records how a restore begun with [`RestoreRun::begin_into`] ended: its message and
    /// report, or its outcome and message.
    pub async fn finish_with(
        self,
        result: Result<(String, serde_json::Value), (Outcome, String)>,
    ) -> RunRecord {
        let mut details = json!({
            "backup": self.backup,
            "backup_job": self.backup_job,
            "database": self.to,
        });
        let (outcome, message) = match result {
            Ok((message, report)) => {
                details["report"] = report;
                (Outcome::Succeeded, message)
            }
            Err(ended) => ended,
        };
        let span = self.span.clone();
        self.run
            .finish(outcome, message, details)
            .instrument(span)
            .await
    }
}

fn refused(e: BeginError) -> RestoreError {
    match e {
        BeginError::Busy { run_id, what, .. } => RestoreError::Busy(format!(
            "{what} (run {run_id}); wait for it to end, or stop it with `atprectl cancel restore`"
        )),
        BeginError::ShuttingDown => RestoreError::ShuttingDown,
    }
}

/// The reserved job name restores run under.
pub fn job_name() -> JobName {
    JobName::reserved(RESTORE_JOB)
}

fn describe(r: &Report) -> String {
    let kept = r.replaced.as_ref().map_or_else(String::new, |k| {
        format!("; the old database is kept as {k}")
    });
    format!(
        "restored {} into {} ({} tables, {} rows, every count checked){kept}",
        r.id, r.database, r.tables, r.rows
    )
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_reserved_name_is_a_valid_job_name() {
        let parsed: crate::ids::JobName = crate::config::RESTORE_JOB.parse().unwrap();
        assert_eq!(super::job_name(), parsed);
    }
}
