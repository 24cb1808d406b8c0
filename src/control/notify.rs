//! Handler of `notify_test`: one test message on one channel, sent now, and the channel's
//! answer (or why it failed) in the reply.

use crate::daemon::state::Shared;
use crate::protocol::{ErrorCode, Response};

pub async fn test(shared: &Shared, name: &str) -> Response {
    let config = shared.config.borrow().clone();
    let Some(channel) = config.notify.get(name) else {
        let known: Vec<&str> = config.notify.keys().map(String::as_str).collect();
        return Response::Error {
            code: ErrorCode::UnknownChannel,
            message: format!(
                "no channel [notify.{name}] in the configuration (configured: {})",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            ),
        };
    };
    match shared.runner.notifier().test(channel).await {
        Ok(answer) => {
            tracing::info!(channel = name, "test message sent: {answer}");
            Response::NotifySent {
                channel: name.to_owned(),
                kind: channel.kind.name().to_owned(),
                answer,
            }
        }
        Err(e) => {
            tracing::warn!(channel = name, "test message failed: {e}");
            Response::Error {
                code: ErrorCode::NotifyFailed,
                message: format!(
                    "the {} channel {name:?} did not take the test message: {e}",
                    channel.kind.name()
                ),
            }
        }
    }
}
