//! [`Pings`]: the per-job ordered queues of dead-man pings and the tasks that send them.
//!
//! The runner calls [`Pings::run_started`] and [`Pings::run_finished`]; both only enqueue and
//! return at once. Each job with pings gets one queue and one task, created at its first ping,
//! which sends its pings one after the other (each with its retries), so a job's pings reach
//! the receiver in the order its runs produced them. A queue holds at most [`MAX_QUEUED`]
//! pings: behind a receiver that hangs, the oldest are dropped (and counted), never the run.

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::deliver::{self, Client, Delivered, Request};
use super::lanes::{Lane, Lanes};
use super::ping::{self, Signal};
use super::tail;
use crate::config::JobConfig;
use crate::ids::{JobName, RunId};
use crate::protocol::{RunRecord, Trigger};
use crate::secret::SecretUrl;

/// Pings waiting per job.
pub const MAX_QUEUED: usize = 16;

type Labels = Vec<(String, String)>;

/// The handle the runner publishes to; cheap to clone.
#[derive(Clone, Default)]
pub struct Pings {
    inner: Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    client: Client,
    lanes: Lanes<JobName, Ping>,
    /// `atpred_pings_total{job,outcome}`: sent, failed (after retries), dropped.
    counts: Family<Labels, Counter>,
    /// `atpred_heartbeats_total{outcome}`: sent, failed, skipped (one still in flight).
    heartbeats: Family<Labels, Counter>,
    tracker: TaskTracker,
    /// Cancelled at shutdown: a task ends once its queue is empty.
    draining: CancellationToken,
    /// Cancelled when draining took too long: sends are abandoned.
    stop: CancellationToken,
}

struct Ping {
    url: SecretUrl,
    signal: Signal,
    body: String,
}

impl Pings {
    /// The run of `job` starts working: keep its log lines, send `/start`.
    pub fn run_started(&self, job: &JobConfig, run: &RunId, trigger: Trigger) {
        let Some(url) = &job.ping_url else {
            return;
        };
        tail::watch(run);
        let body = format!(
            "{} ({}) started, run {run}, trigger {}",
            job.name,
            job.spec.kind(),
            trigger.as_str()
        );
        self.push(&job.name, url, Signal::Start, body);
    }

    /// The run of `job` ended as `record` says: send its result (none for a skipped run).
    pub fn run_finished(&self, job: &JobConfig, record: &RunRecord) {
        let tail = tail::take(&record.run_id);
        let (Some(url), Some(signal)) = (&job.ping_url, Signal::of(record)) else {
            return;
        };
        let lines: Vec<String> = tail.lines.into();
        let summary = ping::summary(record);
        let body = ping::body(
            &summary,
            &lines,
            tail.dropped,
            url.expose(),
            &url.redacted(),
        );
        self.push(&job.name, url, signal, body);
    }

    /// Counters of job pings, for the metrics.
    pub fn counts(&self) -> Family<Labels, Counter> {
        self.inner.counts.clone()
    }

    /// Counters of heartbeats, for the metrics.
    pub fn heartbeats(&self) -> Family<Labels, Counter> {
        self.inner.heartbeats.clone()
    }

    pub(super) fn client(&self) -> &Client {
        &self.inner.client
    }

    pub(super) fn count_heartbeat(&self, outcome: &str) {
        self.inner
            .heartbeats
            .get_or_create(&vec![("outcome".into(), outcome.into())])
            .inc();
    }

    /// At shutdown, after the last run ended: sends what is queued for up to `limit`, then
    /// abandons the rest.
    pub async fn close(&self, limit: Duration) {
        self.inner.draining.cancel();
        self.inner.tracker.close();
        if tokio::time::timeout(limit, self.inner.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!(
                "pings still unsent {}s after the last run; abandoned",
                limit.as_secs()
            );
            self.inner.stop.cancel();
            self.inner.tracker.wait().await;
        }
    }

    fn push(&self, job: &JobName, url: &SecretUrl, signal: Signal, body: String) {
        let lane = self.inner.lanes.get(job, |lane| {
            let (this, job) = (self.clone(), job.clone());
            self.inner
                .tracker
                .spawn(async move { this.work(&job, &lane).await });
        });
        let ping = Ping {
            url: url.clone(),
            signal,
            body,
        };
        if let Some(old) = lane.push(ping, MAX_QUEUED) {
            tracing::warn!(
                job = %job,
                "ping ({}) to {} dropped: {MAX_QUEUED} pings wait behind a receiver that does not answer",
                old.signal.name(),
                old.url
            );
            self.count(job, "dropped");
        }
    }

    /// Sends the pings of one job, in order, until the daemon stops.
    async fn work(&self, job: &JobName, queue: &Lane<Ping>) {
        while queue.wait(&self.inner.draining).await {
            let Some(p) = queue.items().pop_front() else {
                continue;
            };
            let url = ping::url(p.url.expose(), p.signal);
            let shown = p.url.redacted();
            let request = Request {
                url: &url,
                base: p.url.expose(),
                shown: &shown,
                body: p.body,
            };
            let what = format!("job {job} ping ({})", p.signal.name());
            let sent = self
                .inner
                .client
                .send(&request, deliver::ATTEMPTS, &what, &self.inner.stop)
                .await;
            self.count(
                job,
                match sent {
                    Delivered::Sent => "sent",
                    Delivered::Failed => "failed",
                },
            );
        }
    }

    fn count(&self, job: &JobName, outcome: &str) {
        self.inner
            .counts
            .get_or_create(&vec![
                ("job".into(), job.as_str().into()),
                ("outcome".into(), outcome.into()),
            ])
            .inc();
    }
}
