//! The notification channels (`[notify.NAME]`): how one [`Event`] is sent on one channel, once.
//!
//! - [`http`]: `webhook` (the event's JSON), `slack` (`{"text": …}`) and `ntfy` (headers and a
//!   text body, as ntfy's publish API specifies).
//! - [`command`]: an argv run through [`crate::process`], the event in `ATPRED_EVENT_*`.
//! - [`smtp`]: a mail over STARTTLS or implicit TLS (lettre).
//!
//! [`send`] makes one attempt bounded by the channel's `timeout` and returns the channel's
//! answer, or why it failed and whether trying again may help; retrying is the outbox's job.
//! No answer or error text carries a URL beyond its origin, a token or a password.

pub mod command;
pub mod http;
pub mod smtp;

use tokio_util::sync::CancellationToken;

use super::deliver::Client;
use super::event::Event;
use crate::config::{ChannelKind, NotifyChannel};

/// Why one attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failed {
    /// One line, redacted.
    pub text: String,
    /// Whether the same message may go through later (a server down, 5xx, 429, a timeout);
    /// `false` for an answer that will not change (401, 404, a mail address refused).
    pub retry: bool,
}

impl Failed {
    pub fn retry(text: impl Into<String>) -> Failed {
        Failed {
            text: text.into(),
            retry: true,
        }
    }

    pub fn permanent(text: impl Into<String>) -> Failed {
        Failed {
            text: text.into(),
            retry: false,
        }
    }
}

impl std::fmt::Display for Failed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.text)
    }
}

/// Sends `event` on `channel` once; `Ok` holds the channel's answer in one line.
pub async fn send(
    channel: &NotifyChannel,
    event: &Event,
    client: &Client,
    stop: &CancellationToken,
) -> Result<String, Failed> {
    let attempt = async {
        match &channel.kind {
            ChannelKind::Webhook { url } => http::webhook(client, channel, url, event).await,
            ChannelKind::Slack { url } => http::slack(client, channel, url, event).await,
            ChannelKind::Ntfy { url, token_file } => {
                http::ntfy(client, channel, url, token_file.as_deref(), event).await
            }
            ChannelKind::Command { argv, health_env } => {
                command::run(channel, argv, *health_env, event, stop).await
            }
            ChannelKind::Smtp(smtp) => smtp::send(channel, smtp, event).await,
        }
    };
    // The kinds bound themselves too; this is the one bound that holds whatever they do.
    let limit = channel.timeout + std::time::Duration::from_secs(1);
    let result = tokio::select! {
        r = tokio::time::timeout(limit, attempt) => r.unwrap_or_else(|_| Err(Failed::retry(format!(
            "no answer within {}",
            humantime::format_duration(channel.timeout)
        )))),
        () = stop.cancelled() => Err(Failed::retry("the daemon stopped first")),
    };
    // "webhook http://host: …", "on-change command sleep did not end …": the log says which.
    result.map_err(|f| Failed {
        text: format!("{} {}", channel.kind.label(), f.text),
        retry: f.retry,
    })
}

/// The text of a secret file (a token, SMTP credentials), checked private first.
fn read_secret(path: &std::path::Path) -> Result<String, Failed> {
    crate::secret::check_private_file(path).map_err(Failed::permanent)?;
    std::fs::read_to_string(path)
        .map_err(|e| Failed::permanent(format!("cannot read {}: {e}", path.display())))
}

/// `text` cut to at most `max` bytes on a character boundary, on one line.
fn one_line(text: &str, max: usize) -> String {
    let flat: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect();
    let flat = flat.trim();
    if flat.len() <= max {
        return flat.to_owned();
    }
    let mut end = max;
    while !flat.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &flat[..end])
}
