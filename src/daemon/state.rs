//! The state the control server and the supervisor read: current configuration, next run
//! times, the last reload error, and the runner (running jobs and history).

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, oneshot, watch};

use crate::config::Config;
use crate::ids::JobName;
use crate::protocol::{JobStatus, StatusReport};
use crate::runner::Runner;
use crate::timefmt;

/// Requests to the supervisor from the control server.
pub enum Command {
    /// Re-read the configuration; the reply is the number of jobs, or why it was refused.
    Reload {
        reply: oneshot::Sender<Result<usize, String>>,
    },
}

pub struct Shared {
    pub started: DateTime<Utc>,
    pub config: watch::Receiver<Arc<Config>>,
    pub next_runs: watch::Receiver<BTreeMap<JobName, DateTime<Utc>>>,
    pub reload_error: watch::Receiver<Option<String>>,
    pub runner: Arc<Runner>,
    pub commands: mpsc::Sender<Command>,
    /// The wal-archive jobs, running beside the runner.
    pub wal: Arc<crate::wal::Archivers>,
}

impl Shared {
    pub fn status(&self) -> StatusReport {
        let config = self.config.borrow().clone();
        StatusReport {
            version: crate::VERSION.to_owned(),
            pid: std::process::id(),
            started: self.started,
            config: config.source.clone(),
            timezone: config.daemon.timezone.name().to_owned(),
            jobs: config.jobs.len(),
            running: self.runner.running(),
            summary: self.summary(Utc::now()),
            reload_error: self.reload_error.borrow().clone(),
            leases: self.runner.leases(),
        }
    }

    /// Every configured job, then the runs in progress that are not jobs (a restore).
    pub fn jobs(&self) -> Vec<JobStatus> {
        let config = self.config.borrow().clone();
        let next = self.next_runs.borrow().clone();
        let configured = config.jobs.values().map(|job| JobStatus {
            name: job.name.clone(),
            kind: job.spec.kind(),
            description: job.description.clone(),
            schedule: job.schedule.as_ref().map(ToString::to_string),
            next_run: next.get(&job.name).copied(),
            running: self.runner.running_of(&job.name),
            last_run: self.runner.history().last(&job.name),
            wal: self.wal.status(&job.name),
        });
        let external = self
            .runner
            .running_external()
            .into_iter()
            .map(|(run, kind)| JobStatus {
                name: run.job.clone(),
                kind,
                description: Some(format!("atprectl {kind} (not a configured job)")),
                schedule: None,
                next_run: None,
                last_run: self.runner.history().last(&run.job),
                running: Some(run),
                wal: None,
            });
        configured.chain(external).collect()
    }

    /// The one-line summary for STATUS= and `status`, e.g.
    /// `3 jobs · running vacuum · last nightly succeeded 02:31 · next vacuum 05:00`.
    pub fn summary(&self, now: DateTime<Utc>) -> String {
        let config = self.config.borrow().clone();
        let tz = config.daemon.timezone;
        let mut parts = vec![format!(
            "{} job{}",
            config.jobs.len(),
            if config.jobs.len() == 1 { "" } else { "s" }
        )];
        let running = self.runner.running();
        if !running.is_empty() {
            let names: Vec<_> = running.iter().map(|r| r.job.as_str()).collect();
            parts.push(format!("running {}", names.join(", ")));
        }
        if let Some(last) = self.runner.history().recent(None, 1).first() {
            parts.push(format!(
                "last {} {} {}",
                last.job,
                last.outcome.as_str(),
                timefmt::clock(last.finished, now, tz)
            ));
        }
        if let Some((job, at)) = self.next_runs.borrow().iter().min_by_key(|(_, at)| **at) {
            parts.push(format!("next {job} {}", timefmt::clock(*at, now, tz)));
        }
        if let Some(health) = self.runner.health().summary() {
            parts.push(health);
        }
        if let Some(err) = self.reload_error.borrow().as_ref() {
            parts.push(format!("reload failed, old config in force: {err}"));
        }
        parts.join(" · ").replace(['\n', '\r'], " ")
    }
}
