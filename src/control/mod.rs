//! The control server: accepts connections on the Unix socket, checks each peer's
//! credentials, and serves the [`crate::protocol`] on it.
//!
//! Connections are bounded in number, in all and per user ([`slots`]), in idle time
//! ([`crate::protocol::IDLE_TIMEOUT`]), in the size of a request
//! ([`crate::protocol::MAX_REQUEST`]) and in how long a reply may wait for a client that does
//! not read ([`crate::protocol::WRITE_TIMEOUT`]); one misbehaving client never affects the
//! others, and a flooding socket-group member never locks out root.

mod backups;
mod bind;
mod connection;
mod health;
mod identity;
mod notify;
mod offsite;
pub mod peer;
mod pins;
mod restore;
mod restore_files;
mod restore_pitr;
mod restore_redis;
pub mod slots;

use std::sync::Arc;

use nix::unistd::{Gid, Uid};
use tokio::io::AsyncWriteExt;
use tokio::net::{UnixListener, UnixStream};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

pub use bind::{BindError, Origin, open};
pub use slots::MAX_CONNECTIONS;

use crate::daemon::state::Shared;
use crate::protocol::{ErrorCode, Response};

/// What every connection needs.
pub struct ControlContext {
    pub shared: Arc<Shared>,
    pub daemon_uid: Uid,
    pub socket_gid: Option<Gid>,
}

/// Serves connections until `stop` fires; then waits for open connections to end.
pub async fn serve(listener: UnixListener, ctx: Arc<ControlContext>, stop: CancellationToken) {
    let slots = slots::Slots::default();
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
        // Who it is decides which slots it may take, so it is checked here, before a slot.
        let cred = peer::identify(&stream);
        let access = match &cred {
            Ok(cred) => peer::authorize(cred, ctx.daemon_uid, ctx.socket_gid),
            Err(e) => Err(format!("cannot read the peer's credentials: {e}")),
        };
        let (uid, access) = match (cred, access) {
            (Ok(cred), Ok(access)) => (cred.uid, access),
            (cred, Err(why)) => {
                let cred = cred.ok();
                tracing::warn!(
                    peer_uid = cred.as_ref().map(|c| c.uid),
                    peer_pid = cred.as_ref().and_then(|c| c.pid),
                    "control connection refused: {why}"
                );
                let message = format!("not permitted: {why}; ask to be added to the socket group");
                tracker.spawn(refuse(stream, ErrorCode::NotPermitted, message));
                continue;
            }
            (Err(_), Ok(_)) => continue,
        };
        let slot = match slots.take(uid, access.privileged()) {
            Ok(slot) => slot,
            Err(refusal) => {
                tracker.spawn(refuse(stream, ErrorCode::Busy, refusal.message(uid)));
                continue;
            }
        };
        let ctx = Arc::clone(&ctx);
        let stop = stop.clone();
        tracker.spawn(async move {
            connection::serve(stream, ctx, access, stop).await;
            drop(slot);
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// Answers one error line (at most one second's wait) and closes.
async fn refuse(mut stream: UnixStream, code: ErrorCode, message: String) {
    let reply = Response::Error { code, message };
    if let Ok(mut line) = serde_json::to_string(&reply) {
        line.push('\n');
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            stream.write_all(line.as_bytes()),
        )
        .await;
    }
}
