//! External runs: work that is not a configured job (a restore) but is a run all the same.
//!
//! The runner records it like a job's run: `status` and `jobs` show it running, `cancel NAME`
//! cancels it, it ends with a [`RunRecord`] in the history (and the run metrics), and daemon
//! stop waits for it. It differs in three ways: its caller does the work (in a task spawned
//! with [`ExternalRun::spawn`], which the daemon's stop waits for) and reports the outcome
//! with [`ExternalRun::finish`]; it takes no `max-concurrent-jobs` slot (an operator's restore
//! during an incident must not queue behind nightly backups); and the daemon's stop cancels it
//! at once instead of granting it `stop-timeout` (see [`Runner::close`]).

use std::sync::Arc;
use std::time::Instant;

use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::{Runner, Running, lock};
use crate::config::Kind;
use crate::ids::{JobName, RunId};
use crate::protocol::{Outcome, RunRecord, RunningRun, Trigger};

/// Why an external run was not begun.
#[derive(Debug, thiserror::Error)]
pub enum BeginError {
    /// One of that name is running already; `what` says what it does.
    #[error("{job} is already running: {what} (run {run_id})")]
    Busy {
        job: JobName,
        run_id: RunId,
        what: String,
    },
    #[error("the daemon is shutting down")]
    ShuttingDown,
}

/// An external run in progress. Finish it with [`ExternalRun::finish`]; one dropped
/// unfinished (a panic in its task) is taken off the running list so the name is free again.
pub struct ExternalRun {
    runner: Arc<Runner>,
    job: JobName,
    kind: Kind,
    run_id: RunId,
    trigger: Trigger,
    started: DateTime<Utc>,
    t0: Instant,
    token: CancellationToken,
    finished: bool,
}

impl Runner {
    /// Begins an external run named `job` (at most one of a name at a time); `what` says what
    /// it does, for the refusal of another one.
    pub fn begin_external(
        self: &Arc<Self>,
        job: JobName,
        kind: Kind,
        trigger: Trigger,
        what: String,
    ) -> Result<ExternalRun, BeginError> {
        let started = Utc::now();
        let run_id = RunId::new(started);
        let token = self.root.child_token();
        {
            let mut running = lock(&self.running);
            if self.shutting_down.load(std::sync::atomic::Ordering::SeqCst) {
                return Err(BeginError::ShuttingDown);
            }
            if let Some(r) = running.get(&job) {
                return Err(busy(job, r));
            }
            let info = RunningRun {
                run_id: run_id.clone(),
                job: job.clone(),
                trigger,
                started,
            };
            running.insert(
                job.clone(),
                Running {
                    info,
                    kind,
                    token: token.clone(),
                    external: Some(what),
                },
            );
        }
        self.changes.send_modify(|n| *n += 1);
        Ok(ExternalRun {
            runner: Arc::clone(self),
            job,
            kind,
            run_id,
            trigger,
            started,
            t0: Instant::now(),
            token,
            finished: false,
        })
    }

    /// `Err(Busy)` while a run named `job` is in progress (what [`Runner::begin_external`]
    /// would say), for refusing early, before work that a second run should not do.
    pub fn check_free(&self, job: &JobName) -> Result<(), BeginError> {
        match lock(&self.running).get(job) {
            Some(r) => Err(busy(job.clone(), r)),
            None => Ok(()),
        }
    }

    /// External runs in progress that are not configured jobs, with their kind (for `jobs`).
    pub fn running_external(&self) -> Vec<(RunningRun, Kind)> {
        let mut runs: Vec<_> = lock(&self.running)
            .values()
            .filter(|r| r.external.is_some())
            .map(|r| (r.info.clone(), r.kind))
            .collect();
        runs.sort_by_key(|(r, _)| r.started);
        runs
    }
}

fn busy(job: JobName, r: &Running) -> BeginError {
    BeginError::Busy {
        job,
        run_id: r.info.run_id.clone(),
        what: r.external.clone().unwrap_or_else(|| "a job".into()),
    }
}

impl ExternalRun {
    pub fn run_id(&self) -> &RunId {
        &self.run_id
    }

    pub fn job(&self) -> &JobName {
        &self.job
    }

    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// Cancelled by `cancel NAME`, or at once by the daemon's stop.
    pub fn token(&self) -> &CancellationToken {
        &self.token
    }

    /// Hands the run to `work`, run as a task the daemon's stop waits for (a client that
    /// goes away does not end it).
    pub fn spawn<W, F>(self, work: W)
    where
        W: FnOnce(ExternalRun) -> F,
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let tracker = self.runner.tracker.clone();
        tracker.spawn(work(self));
    }

    /// Records the run's end (history, metrics, the completion log line with OUTCOME and
    /// DURATION_MS: call it inside the run's span) and frees its name. A run cancelled while
    /// the daemon stops says so in its message.
    pub async fn finish(
        mut self,
        outcome: Outcome,
        message: String,
        details: serde_json::Value,
    ) -> RunRecord {
        self.finished = true;
        let duration_ms = u64::try_from(self.t0.elapsed().as_millis()).unwrap_or(u64::MAX);
        let stopping = self
            .runner
            .shutting_down
            .load(std::sync::atomic::Ordering::SeqCst);
        let message = if outcome == Outcome::Cancelled && stopping {
            format!("{message} (the daemon is stopping)")
        } else {
            message
        };
        let record = RunRecord {
            run_id: self.run_id.clone(),
            job: self.job.clone(),
            kind: self.kind,
            trigger: self.trigger,
            started: self.started,
            finished: Utc::now(),
            duration_ms,
            outcome,
            message,
            attempts: 1,
            dry_run: false,
            details,
        };
        let line = format!("run {}: {}", outcome.as_str(), record.message);
        if outcome.is_success() {
            tracing::info!(outcome = outcome.as_str(), duration_ms, "{line}");
        } else {
            tracing::error!(outcome = outcome.as_str(), duration_ms, "{line}");
        }
        self.runner.metrics.observe(&record);
        self.runner.persist(record.clone()).await;
        self.release();
        record
    }

    fn release(&self) {
        let removed = {
            let mut running = lock(&self.runner.running);
            let mine = running
                .get(&self.job)
                .is_some_and(|r| r.info.run_id == self.run_id);
            mine && running.remove(&self.job).is_some()
        };
        if removed {
            self.runner.changes.send_modify(|n| *n += 1);
        }
    }
}

impl Drop for ExternalRun {
    fn drop(&mut self) {
        if !self.finished {
            tracing::error!(run_id = %self.run_id, "run {} ended without a record", self.job);
            self.release();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use tokio::sync::watch;

    use super::*;
    use crate::config::Config;
    use crate::daemon::history::History;

    struct Fixture {
        runner: Arc<Runner>,
        root: CancellationToken,
        _dir: tempfile::TempDir,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("atpred.toml");
        let text = format!(
            "[daemon]\nstate-dir = \"{0}/state\"\nsocket = \"{0}/atpred.sock\"\n\
             max-concurrent-jobs = 1\n",
            dir.path().display()
        );
        std::fs::write(&path, text).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let config = Config::load_with_env(&path, &[]).unwrap();
        let (history, _) = History::open(&dir.path().join("history.jsonl"), 100).unwrap();
        let root = CancellationToken::new();
        let (_tx, rx) = watch::channel(Arc::new(config));
        Fixture {
            runner: Runner::new(rx, history, root.clone()),
            root,
            _dir: dir,
        }
    }

    fn restore_name() -> JobName {
        "restore".parse().unwrap()
    }

    fn begin(runner: &Arc<Runner>, what: &str) -> Result<ExternalRun, BeginError> {
        runner.begin_external(restore_name(), Kind::Restore, Trigger::Manual, what.into())
    }

    #[tokio::test]
    async fn a_finished_run_is_in_the_history_and_frees_its_name() {
        let fx = fixture();
        let run = begin(&fx.runner, "restore of b1 into x").unwrap();
        let id = run.run_id().clone();
        let running = fx.runner.running();
        assert_eq!(running.len(), 1);
        assert_eq!(running[0].run_id, id);
        assert_eq!(fx.runner.running_external()[0].1, Kind::Restore);
        let details = serde_json::json!({ "backup": "b1", "database": "x" });
        let record = run
            .finish(Outcome::Failed, "it failed".into(), details.clone())
            .await;
        assert_eq!(record.kind, Kind::Restore);
        assert_eq!(record.outcome, Outcome::Failed);
        assert!(fx.runner.running().is_empty());
        let history = fx.runner.history().recent(Some(&restore_name()), 10);
        assert_eq!(history.len(), 1);
        assert_eq!(history[0].run_id, id);
        assert_eq!(history[0].details, details);
        assert!(begin(&fx.runner, "again").is_ok(), "the name is free again");
    }

    #[tokio::test]
    async fn a_second_one_is_refused_naming_the_first() {
        let fx = fixture();
        let first = begin(&fx.runner, "restore of b1 into x").unwrap();
        match begin(&fx.runner, "restore of b2 into y") {
            Err(BeginError::Busy { run_id, what, .. }) => {
                assert_eq!(&run_id, first.run_id());
                assert_eq!(what, "restore of b1 into x");
            }
            Err(e) => panic!("{e}"),
            Ok(_) => panic!("two restores at once"),
        }
        assert_eq!(fx.runner.running().len(), 1);
        assert!(matches!(
            fx.runner.check_free(&restore_name()),
            Err(BeginError::Busy { .. })
        ));
        drop(first);
        assert!(fx.runner.check_free(&restore_name()).is_ok());
    }

    #[tokio::test]
    async fn it_takes_no_slot_and_cancel_reaches_it() {
        let fx = fixture();
        // The only slot is taken, yet the restore begins at once.
        let _permit = Arc::clone(&fx.runner.permits).try_acquire_owned().unwrap();
        let run = begin(&fx.runner, "restore").unwrap();
        assert!(!run.token().is_cancelled());
        assert_eq!(
            fx.runner.cancel(&restore_name()),
            Some(run.run_id().clone())
        );
        assert!(run.token().is_cancelled());
    }

    #[tokio::test]
    async fn close_cancels_it_at_once_and_says_why() {
        let fx = fixture();
        let run = begin(&fx.runner, "restore").unwrap();
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        run.spawn(|run| async move {
            run.token().cancelled().await;
            let record = run
                .finish(
                    Outcome::Cancelled,
                    "cancelled".into(),
                    serde_json::Value::Null,
                )
                .await;
            let _ = done_tx.send(record);
        });
        fx.runner.close();
        tokio::time::timeout(std::time::Duration::from_secs(5), fx.runner.wait())
            .await
            .expect("stop waits for the run, and the run ends at once");
        let record = done_rx.await.unwrap();
        assert!(
            record.message.contains("the daemon is stopping"),
            "{record:?}"
        );
        assert!(!fx.root.is_cancelled(), "close alone does not cancel jobs");
        assert!(matches!(
            begin(&fx.runner, "restore"),
            Err(BeginError::ShuttingDown)
        ));
    }

    #[tokio::test]
    async fn one_dropped_unfinished_frees_its_name() {
        let fx = fixture();
        drop(begin(&fx.runner, "restore").unwrap());
        assert!(fx.runner.running().is_empty());
        assert!(begin(&fx.runner, "restore").is_ok());
    }
}
