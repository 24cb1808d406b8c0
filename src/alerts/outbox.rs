//! [`Outbox`]: the bounded, persistent queue every notification goes through, so a channel
//! that is down delays messages and loses none.
//!
//! Each message is one file in `state-dir/outbox`, `<seq>-<channel>.json`, written with
//! [`crate::publish`] (temporary name, fsync, rename, fsync the folder) before anything is
//! sent, and removed once the channel took it: a crash or kill at any moment leaves each
//! message either whole on disk (sent again at the next start; a receiver may see it twice,
//! and can tell by its `id`) or gone after delivery. At start the folder is read back in
//! sequence order.
//!
//! One queue and one task per channel send its messages in order; a failed attempt is retried
//! with a backoff from [`BACKOFF_FIRST`] doubling to [`BACKOFF_MAX`], indefinitely while the
//! failure may pass (a server down, 5xx, 429, a timeout), at most [`PERMANENT_ATTEMPTS`] times
//! when it will not (401, 404, a refused address). At most [`MAX_PENDING`] messages wait per
//! channel: beyond that the oldest is dropped, and the log says so. Counted in
//! `atpred_notifications_total{channel,outcome}`: `sent`, `retried` (an attempt failed),
//! `failed` (given up), `dropped`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::channel::{self, Failed};
use super::deliver::Client;
use super::event::Event;
use super::lanes::{Lane, Lanes};
use crate::config::Config;

/// Messages waiting per channel.
pub const MAX_PENDING: usize = 200;
/// Pause after the first failed attempt.
pub const BACKOFF_FIRST: Duration = Duration::from_secs(1);
/// The longest pause between attempts.
pub const BACKOFF_MAX: Duration = Duration::from_secs(300);
/// Attempts at a message whose failure will not pass by itself.
pub const PERMANENT_ATTEMPTS: u32 = 3;
/// The outbox's folder under state-dir.
const FOLDER: &str = "outbox";

type Labels = Vec<(String, String)>;

/// What a message file holds.
#[derive(Serialize, Deserialize)]
struct Stored {
    channel: String,
    event: Event,
}

#[derive(Clone)]
struct Item {
    seq: u64,
    channel: String,
    event: Event,
}

impl Item {
    fn file(&self) -> String {
        format!("{:016}-{}.json", self.seq, self.channel)
    }
}

/// Cheap to clone.
#[derive(Clone)]
pub struct Outbox {
    inner: Arc<Inner>,
}

struct Inner {
    /// `None` when the folder could not be made: messages are then kept in memory only.
    dir: Option<PathBuf>,
    config: watch::Receiver<Arc<Config>>,
    client: Arc<Client>,
    lanes: Lanes<String, Item>,
    seq: AtomicU64,
    counts: Family<Labels, Counter>,
    tracker: TaskTracker,
    /// Cancelled at shutdown: a task ends once its queue is empty.
    draining: CancellationToken,
    /// Cancelled when draining took too long: what is left stays on disk for the next start.
    stop: CancellationToken,
}

impl Outbox {
    /// Opens `state-dir/outbox` and queues what an earlier run left undelivered.
    pub fn open(config: watch::Receiver<Arc<Config>>, client: Arc<Client>) -> Outbox {
        let dir = config.borrow().daemon.state_dir.join(FOLDER);
        let dir = match make_dir(&dir) {
            Ok(()) => Some(dir),
            Err(e) => {
                tracing::error!(
                    "cannot use the notification outbox {}: {e}; notifications are kept in memory only",
                    dir.display()
                );
                None
            }
        };
        let left = dir.as_deref().map(read_back).unwrap_or_default();
        let outbox = Outbox {
            inner: Arc::new(Inner {
                dir,
                config,
                client,
                lanes: Lanes::default(),
                seq: AtomicU64::new(left.last().map_or(0, |i| i.seq) + 1),
                counts: Family::default(),
                tracker: TaskTracker::new(),
                draining: CancellationToken::new(),
                stop: CancellationToken::new(),
            }),
        };
        if !left.is_empty() {
            tracing::info!(
                "notification outbox: {} undelivered message(s) from before the restart; sending them",
                left.len()
            );
        }
        for item in left {
            outbox.enqueue(item);
        }
        outbox
    }

    /// Keeps `event` for each of `channels` (on disk first), to be sent as soon as it can.
    pub fn publish(&self, channels: &[String], event: &Event) {
        for channel in channels {
            let item = Item {
                seq: self.inner.seq.fetch_add(1, Ordering::SeqCst),
                channel: channel.clone(),
                event: event.clone(),
            };
            self.store(&item);
            self.enqueue(item);
        }
    }

    /// Counters by channel and outcome, for the metrics.
    pub fn counts(&self) -> Family<Labels, Counter> {
        self.inner.counts.clone()
    }

    /// At shutdown: sends what is queued for up to `limit`, then leaves the rest on disk.
    pub async fn close(&self, limit: Duration) {
        self.inner.draining.cancel();
        self.inner.tracker.close();
        if tokio::time::timeout(limit, self.inner.tracker.wait())
            .await
            .is_err()
        {
            self.inner.stop.cancel();
            self.inner.tracker.wait().await;
            let left = self.inner.lanes.waiting();
            tracing::warn!(
                "{left} notification(s) still undelivered at stop; kept in the outbox for the next start"
            );
        }
    }

    fn store(&self, item: &Item) {
        let Some(dir) = &self.inner.dir else {
            return;
        };
        let stored = Stored {
            channel: item.channel.clone(),
            event: item.event.clone(),
        };
        let written = serde_json::to_vec(&stored)
            .map_err(std::io::Error::other)
            .and_then(|bytes| crate::publish::write_atomic(&dir.join(item.file()), &bytes, 0o600));
        if let Err(e) = written {
            tracing::error!(
                channel = item.channel,
                "cannot keep a notification in the outbox: {e}; it is kept in memory only"
            );
        }
    }

    fn enqueue(&self, item: Item) {
        let lane = self.inner.lanes.get(&item.channel, |lane| {
            let (this, name) = (self.clone(), item.channel.clone());
            self.inner
                .tracker
                .spawn(async move { this.work(&name, &lane).await });
        });
        if let Some(old) = lane.push(item, MAX_PENDING) {
            tracing::warn!(
                channel = old.channel,
                "notification dropped ({}: {}): {MAX_PENDING} messages wait for channel {}, the oldest goes",
                old.event.kind.as_str(),
                old.event.title,
                old.channel
            );
            self.forget(&old);
            self.count(&old.channel, "dropped");
        }
    }

    /// Sends the messages of one channel in order until the daemon stops.
    async fn work(&self, name: &str, queue: &Lane<Item>) {
        let mut pause = BACKOFF_FIRST;
        let mut attempts = 0;
        while queue.wait(&self.inner.draining).await {
            let Some(item) = queue.items().front().cloned() else {
                continue;
            };
            let channel = self.inner.config.borrow().notify.get(name).cloned();
            let Some(channel) = channel else {
                self.drop_all(name, queue);
                continue;
            };
            attempts += 1;
            let result =
                channel::send(&channel, &item.event, &self.inner.client, &self.inner.stop).await;
            if self.inner.stop.is_cancelled() {
                return;
            }
            match result {
                Ok(answer) => {
                    tracing::info!(
                        channel = name,
                        "notification sent ({}: {}): {answer}",
                        item.event.kind.as_str(),
                        item.event.title
                    );
                    self.done(queue, &item, "sent");
                }
                Err(Failed { text, retry }) if !retry && attempts >= PERMANENT_ATTEMPTS => {
                    tracing::error!(
                        channel = name,
                        "notification given up after {attempts} attempts ({}: {}): {text}",
                        item.event.kind.as_str(),
                        item.event.title
                    );
                    self.done(queue, &item, "failed");
                }
                Err(Failed { text, .. }) => {
                    tracing::warn!(
                        channel = name,
                        "notification not sent yet ({}), attempt {attempts}; next in {}: {text}",
                        item.event.kind.as_str(),
                        humantime::format_duration(pause)
                    );
                    self.count(name, "retried");
                    // At stop a message waiting for its next attempt stays on disk for the
                    // next start rather than holding the stop up.
                    tokio::select! {
                        () = tokio::time::sleep(pause) => {}
                        () = self.inner.draining.cancelled() => return,
                    }
                    pause = (pause * 2).min(BACKOFF_MAX);
                    continue;
                }
            }
            pause = BACKOFF_FIRST;
            attempts = 0;
        }
    }

    /// `item` left the queue (unless the bound dropped it meanwhile) and the disk.
    fn done(&self, queue: &Lane<Item>, item: &Item, outcome: &str) {
        queue.items().retain(|i| i.seq != item.seq);
        self.forget(item);
        self.count(&item.channel, outcome);
    }

    /// A channel removed by a reload: its messages have nowhere to go.
    fn drop_all(&self, name: &str, queue: &Lane<Item>) {
        let gone: Vec<Item> = queue.items().drain(..).collect();
        tracing::warn!(
            channel = name,
            "{} notification(s) dropped: channel {name} is no longer configured",
            gone.len()
        );
        for item in &gone {
            self.forget(item);
            self.count(name, "dropped");
        }
    }

    fn forget(&self, item: &Item) {
        if let Some(dir) = &self.inner.dir
            && let Err(e) = std::fs::remove_file(dir.join(item.file()))
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::error!("cannot remove {} from the outbox: {e}", item.file());
        }
    }

    fn count(&self, channel: &str, outcome: &str) {
        self.inner
            .counts
            .get_or_create(&vec![
                ("channel".into(), channel.into()),
                ("outcome".into(), outcome.into()),
            ])
            .inc();
    }
}

fn make_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// The messages left in `dir`, oldest first; unreadable ones are removed (and said so), as
/// are the temporary files of a write a crash interrupted.
fn read_back(dir: &Path) -> Vec<Item> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) => {
            tracing::error!("cannot read the outbox {}: {e}", dir.display());
            return Vec::new();
        }
    };
    let mut items = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let path = entry.path();
        match parse(&name, &path) {
            Some(item) => items.push(item),
            None => {
                if !name.starts_with('.') {
                    tracing::warn!("outbox: removed {name}, which is not a readable message");
                }
                let _ = std::fs::remove_file(&path);
            }
        }
    }
    items.sort_by_key(|i| i.seq);
    items
}

fn parse(name: &str, path: &Path) -> Option<Item> {
    let (seq, rest) = name.strip_suffix(".json")?.split_once('-')?;
    let seq: u64 = seq.parse().ok()?;
    let stored: Stored = serde_json::from_slice(&std::fs::read(path).ok()?).ok()?;
    (stored.channel == rest).then_some(Item {
        seq,
        channel: stored.channel,
        event: stored.event,
    })
}
