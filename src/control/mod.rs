//! The control server: accepts connections on the Unix socket, checks each peer's
//! credentials, and serves the [`crate::protocol`] on it.
//!
//! Connections are bounded in number ([`MAX_CONNECTIONS`]) and idle time
//! ([`crate::protocol::IDLE_TIMEOUT`]); one misbehaving client never affects the others.

mod backups;
mod bind;
mod connection;
mod health;
mod offsite;
pub mod peer;
mod pins;
mod restore;

use std::sync::Arc;

use nix::unistd::{Gid, Uid};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use bind::{BindError, Origin, open};

use crate::daemon::state::Shared;
use crate::protocol::{ErrorCode, Response};

/// Connections served at once; further ones get a `busy` error and are closed.
pub const MAX_CONNECTIONS: usize = 256;

/// What every connection needs.
pub struct ControlContext {
    pub shared: Arc<Shared>,
    pub daemon_uid: Uid,
    pub socket_gid: Option<Gid>,
}

/// Serves connections until `stop` fires; then waits for open connections to end.
pub async fn serve(listener: UnixListener, ctx: Arc<ControlContext>, stop: CancellationToken) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let tracker = TaskTracker::new();
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(e) => {
                    // EMFILE and friends: back off briefly instead of spinning.
                    tracing::warn!("control socket accept failed: {e}");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    continue;
                }
            },
        };
        let Ok(permit) = Arc::clone(&slots).try_acquire_owned() else {
            tracker.spawn(refuse_busy(stream));
            continue;
        };
        let ctx = Arc::clone(&ctx);
        let stop = stop.clone();
        tracker.spawn(async move {
            connection::serve(stream, ctx, stop).await;
            drop(permit);
        });
    }
    tracker.close();
    tracker.wait().await;
}

async fn refuse_busy(mut stream: tokio::net::UnixStream) {
    let reply = Response::Error {
        code: ErrorCode::Busy,
        message: "too many connections; try again".into(),
    };
    if let Ok(mut line) = serde_json::to_string(&reply) {
        line.push('\n');
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            stream.write_all(line.as_bytes()),
        )
        .await;
    }
}
