//! The daemon's heartbeat: `[daemon] heartbeat-url`, pinged every `heartbeat-every`.
//!
//! The supervisor loop owns a [`Heartbeat`] and ticks it from the same `select!` that sends
//! systemd's WATCHDOG=1, so the pings stop when that loop is wedged or the process frozen —
//! which is the point of a dead-man switch. The loop never waits on the network: each beat is
//! a spawned task with one attempt bounded by the smaller of the interval and
//! [`deliver::TIMEOUT`], and a beat due while the previous one is still in flight is skipped
//! (and counted), so a receiver that hangs never piles up requests.

use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{Interval, MissedTickBehavior};
use tokio_util::sync::CancellationToken;

use super::Pings;
use super::deliver::{self, Delivered, Request};
use crate::config::DaemonConfig;
use crate::secret::SecretUrl;

/// The heartbeat's timer and its one request in flight.
pub struct Heartbeat {
    pings: Pings,
    url: Option<SecretUrl>,
    every: Duration,
    interval: Option<Interval>,
    in_flight: Option<JoinHandle<()>>,
}

impl Heartbeat {
    pub fn new(pings: Pings, daemon: &DaemonConfig) -> Heartbeat {
        let mut beat = Heartbeat {
            pings,
            url: None,
            every: daemon.heartbeat_every,
            interval: None,
            in_flight: None,
        };
        beat.apply(daemon);
        beat
    }

    /// Takes up a reloaded configuration; the timer restarts only when the URL or the interval
    /// changed.
    pub fn apply(&mut self, daemon: &DaemonConfig) {
        if self.interval.is_some()
            && self.url == daemon.heartbeat_url
            && self.every == daemon.heartbeat_every
        {
            return;
        }
        self.url = daemon.heartbeat_url.clone();
        self.every = daemon.heartbeat_every;
        self.interval = self.url.as_ref().map(|url| {
            tracing::info!(
                "heartbeat to {url} every {}",
                humantime::format_duration(self.every)
            );
            let mut i = tokio::time::interval(self.every);
            // After a freeze, one beat, not a burst of the missed ones.
            i.set_missed_tick_behavior(MissedTickBehavior::Delay);
            i
        });
    }

    /// Resolves at the next beat; never while no heartbeat is configured.
    pub async fn tick(&mut self) {
        match &mut self.interval {
            Some(i) => {
                i.tick().await;
            }
            None => std::future::pending().await,
        }
    }

    /// Sends one beat with `status` (the daemon's one-line summary) as its body, unless the
    /// last one is still in flight.
    pub fn beat(&mut self, status: &str) {
        let Some(url) = self.url.clone() else {
            return;
        };
        if self.in_flight.as_ref().is_some_and(|h| !h.is_finished()) {
            tracing::debug!("heartbeat to {url} skipped: the last one is still in flight");
            self.pings.count_heartbeat("skipped");
            return;
        }
        let pings = self.pings.clone();
        let body = format!(
            "atpred {} (pid {}): {status}",
            crate::VERSION,
            std::process::id()
        );
        let timeout = self.every.min(deliver::TIMEOUT);
        self.in_flight = Some(tokio::spawn(async move {
            let shown = url.redacted();
            let request = Request {
                url: url.expose(),
                base: url.expose(),
                shown: &shown,
                body,
            };
            let stop = CancellationToken::new();
            let send = pings.client().send(&request, 1, "heartbeat", &stop);
            let outcome = match tokio::time::timeout(timeout, send).await {
                Ok(Delivered::Sent) => "sent",
                Ok(Delivered::Failed) => "failed",
                Err(_) => {
                    tracing::warn!(
                        "heartbeat to {shown} failed: no answer within {}",
                        humantime::format_duration(timeout)
                    );
                    "failed"
                }
            };
            pings.count_heartbeat(outcome);
        }));
    }
}

impl Drop for Heartbeat {
    fn drop(&mut self) {
        if let Some(h) = &self.in_flight {
            h.abort();
        }
    }
}
