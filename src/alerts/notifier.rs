//! [`Notifier`]: the one handle everything that raises a notification holds (the runner, the
//! supervisor, the control server). It owns the HTTP client of the channels and the outbox,
//! and sends `atprectl notify test` messages directly, so their answer can be reported.

use tokio_util::sync::CancellationToken;

use super::channel::{self, Failed};
use super::deliver::Client;
use super::event::{Event, EventKind, Severity};
use crate::config::NotifyChannel;

/// Cheap to clone.
#[derive(Clone, Default)]
pub struct Notifier {
    inner: std::sync::Arc<Inner>,
}

#[derive(Default)]
struct Inner {
    client: Client,
}

impl Notifier {
    /// Sends a test message on `channel` now (not through the outbox) and returns its answer.
    pub async fn test(&self, channel: &NotifyChannel) -> Result<String, Failed> {
        let event = Event::new(
            EventKind::Test,
            Severity::Info,
            &format!("test message on channel {}", channel.name),
            &format!(
                "This is a test message from atpred, sent by `atprectl notify test {}`.\n\
                 If you can read it, the {} channel {:?} works.",
                channel.name,
                channel.kind.name(),
                channel.name
            ),
        );
        channel::send(
            channel,
            &event,
            &self.inner.client,
            &CancellationToken::new(),
        )
        .await
    }
}
