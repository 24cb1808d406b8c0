//! One control connection, its peer already let in: the handshake, then one handler per
//! request.

use std::sync::Arc;

use futures::{SinkExt, StreamExt};
use tokio::net::UnixStream;
use tokio::sync::{broadcast, oneshot};
use tokio_util::codec::Framed;
use tokio_util::sync::CancellationToken;

use super::ControlContext;
use super::peer::Access;
use crate::daemon::state::Command;
use crate::ids::RunId;
use crate::protocol::{
    Codec, ErrorCode, FrameError, IDLE_TIMEOUT, PROTOCOL_VERSION, Request, Response, Trigger,
    WRITE_TIMEOUT, decode_request,
};
use crate::runner::{RunEvent, RunOptions, StartError};

type Conn = Framed<UnixStream, Codec>;

/// Longest history a client may ask for in one request.
const MAX_HISTORY: u32 = 10_000;

/// The connection ends: the client went away, idled out, or broke the framing.
struct Closed;

/// Serves one connection whose peer has been let in (see [`super::peer`]).
/// `access` says why the peer was let in (some requests are for root and the daemon's user).
pub async fn serve(
    stream: UnixStream,
    ctx: Arc<ControlContext>,
    access: Access,
    stop: CancellationToken,
) {
    let mut conn = Framed::new(stream, Codec::requests());
    tokio::select! {
        _ = session(&mut conn, &ctx, access) => {}
        () = stop.cancelled() => {
            let _ = send_error(&mut conn, ErrorCode::ShuttingDown, "the daemon is shutting down".into()).await;
        }
    }
}

async fn session(conn: &mut Conn, ctx: &ControlContext, access: Access) -> Result<(), Closed> {
    match read_request(conn).await? {
        Ok(Request::Hello { protocol, .. }) if protocol == PROTOCOL_VERSION => {
            send(
                conn,
                Response::Hello {
                    protocol: PROTOCOL_VERSION,
                    version: crate::VERSION.into(),
                },
            )
            .await?;
        }
        Ok(Request::Hello { protocol, .. }) => {
            let msg = format!(
                "client speaks protocol {protocol}, daemon speaks {PROTOCOL_VERSION}: upgrade atprectl or atpred"
            );
            send_error(conn, ErrorCode::ProtocolMismatch, msg).await?;
            return Err(Closed);
        }
        Ok(_) | Err(_) => {
            send_error(
                conn,
                ErrorCode::HelloFirst,
                format!("send hello with protocol {PROTOCOL_VERSION} first"),
            )
            .await?;
            return Err(Closed);
        }
    }
    loop {
        match read_request(conn).await? {
            Ok(request) => handle(conn, ctx, access, request).await?,
            Err(message) => send_error(conn, ErrorCode::BadRequest, message).await?,
        }
    }
}

/// The next request: `Ok(Err(_))` is a line that is not a valid request (answerable),
/// `Err(Closed)` ends the connection (after answering framing errors).
async fn read_request(conn: &mut Conn) -> Result<Result<Request, String>, Closed> {
    let line = match tokio::time::timeout(IDLE_TIMEOUT, conn.next()).await {
        Err(_) | Ok(None) => return Err(Closed),
        Ok(Some(Ok(line))) => line,
        Ok(Some(Err(FrameError::TooLong))) => {
            let _ = send_error(conn, ErrorCode::BadFrame, "line too long".into()).await;
            return Err(Closed);
        }
        Ok(Some(Err(FrameError::Io(e)))) => {
            if e.kind() == std::io::ErrorKind::InvalidData {
                let _ = send_error(conn, ErrorCode::BadFrame, "not UTF-8".into()).await;
            }
            return Err(Closed);
        }
    };
    Ok(decode_request(&line))
}

async fn handle(
    conn: &mut Conn,
    ctx: &ControlContext,
    access: Access,
    request: Request,
) -> Result<(), Closed> {
    let shared = &ctx.shared;
    match request {
        Request::Hello { .. } => {
            send(
                conn,
                Response::Hello {
                    protocol: PROTOCOL_VERSION,
                    version: crate::VERSION.into(),
                },
            )
            .await
        }
        Request::Status => send(conn, Response::Status(shared.status())).await,
        Request::Jobs => {
            send(
                conn,
                Response::Jobs {
                    jobs: shared.jobs(),
                },
            )
            .await
        }
        Request::History { job, limit } => {
            let runs = shared
                .runner
                .history()
                .recent(job.as_ref(), limit.min(MAX_HISTORY) as usize);
            send(conn, Response::History { runs }).await
        }
        Request::Cancel { job } => match shared.runner.cancel(&job) {
            Some(run_id) => {
                tracing::info!(job = %job, run_id = %run_id, "cancel requested over the control socket");
                send(conn, Response::Cancelling { run_id }).await
            }
            None => {
                send_error(
                    conn,
                    ErrorCode::NotRunning,
                    format!("job {job} is not running"),
                )
                .await
            }
        },
        Request::Run {
            job,
            wait,
            dry_run,
            force,
        } => {
            let opts = RunOptions {
                dry_run,
                force,
                slot: None,
            };
            match shared.runner.start(job.as_str(), Trigger::Manual, opts) {
                Ok(started) => {
                    send(
                        conn,
                        Response::Accepted {
                            run_id: started.run_id.clone(),
                            job,
                        },
                    )
                    .await?;
                    if wait || dry_run {
                        follow(conn, started.run_id, started.events).await
                    } else {
                        Ok(())
                    }
                }
                Err(e @ StartError::UnknownJob(_)) => {
                    send_error(conn, ErrorCode::UnknownJob, e.to_string()).await
                }
                Err(e @ StartError::AlreadyRunning { .. }) => {
                    send_error(conn, ErrorCode::AlreadyRunning, e.to_string()).await
                }
                Err(e @ StartError::ShuttingDown) => {
                    send_error(conn, ErrorCode::ShuttingDown, e.to_string()).await
                }
            }
        }
        Request::Backups { remote: false, .. } => {
            let config = shared.config.borrow().clone();
            send(conn, super::backups::list(&config)).await
        }
        Request::Backups {
            remote: true,
            target,
        } => {
            let config = shared.config.borrow().clone();
            send(conn, super::offsite::list(&config, target.as_deref()).await).await
        }
        Request::BackupShow { id } => {
            let config = shared.config.borrow().clone();
            send(conn, super::backups::show(&config, &id)).await
        }
        Request::BackupVerify {
            id,
            remote: true,
            target,
            ..
        } => {
            let config = shared.config.borrow().clone();
            send(
                conn,
                super::offsite::verify(&config, &id, target.as_deref()).await,
            )
            .await
        }
        Request::BackupFetch {
            id,
            to,
            identity,
            target,
        } => {
            let config = shared.config.borrow().clone();
            let response = super::offsite::fetch(
                &config,
                &id,
                to.as_deref(),
                identity.as_deref(),
                target.as_deref(),
                access,
            )
            .await;
            send(conn, response).await
        }
        Request::BackupVerify { id, level, .. } => {
            let config = shared.config.borrow().clone();
            let cancel = CancellationToken::new();
            send(
                conn,
                super::backups::verify(&config, shared.runner.in_use(), &id, level, &cancel).await,
            )
            .await
        }
        Request::BackupPin { id, reason } => {
            let config = shared.config.borrow().clone();
            send(conn, super::pins::pin(&config, &id, reason).await).await
        }
        Request::Restore {
            id,
            options,
            dry_run,
        } => {
            let config = shared.config.borrow().clone();
            let runner = &shared.runner;
            relay(conn, |tx| async move {
                super::restore::restore(runner, config, &id, &options, dry_run, access, tx).await;
            })
            .await
        }
        Request::RestorePitr { options, dry_run } => {
            let config = shared.config.borrow().clone();
            let runner = &shared.runner;
            relay(conn, |tx| async move {
                super::restore_pitr::restore(runner, config, options, dry_run, access, tx).await;
            })
            .await
        }
        Request::BackupUnpin { id } => {
            let config = shared.config.borrow().clone();
            send(conn, super::pins::unpin(&config, &id).await).await
        }
        Request::Health { now } => send(conn, super::health::health(shared, now).await).await,
        Request::Metrics => send(conn, super::health::metrics(shared).await).await,
        Request::NotifyTest { channel } => {
            send(conn, super::notify::test(shared, &channel).await).await
        }
        Request::Reload => {
            let (reply, answer) = oneshot::channel();
            if shared
                .commands
                .send(Command::Reload { reply })
                .await
                .is_err()
            {
                return send_error(
                    conn,
                    ErrorCode::ShuttingDown,
                    "the daemon is shutting down".into(),
                )
                .await;
            }
            match answer.await {
                Ok(Ok(jobs)) => send(conn, Response::Reloaded { jobs }).await,
                Ok(Err(message)) => send_error(conn, ErrorCode::ReloadFailed, message).await,
                Err(_) => {
                    send_error(
                        conn,
                        ErrorCode::ShuttingDown,
                        "the daemon is shutting down".into(),
                    )
                    .await
                }
            }
        }
    }
}

/// Runs `work`, sending every response it (or a task it handed the channel to) puts on its
/// channel as it comes, until the channel is closed. A client that goes away ends the relay
/// at once; work handed to a task goes on (a restore is a run: it finishes, or cleans up
/// after itself, and is in the history), and its later messages are dropped.
async fn relay<F, Fut>(conn: &mut Conn, work: F) -> Result<(), Closed>
where
    F: FnOnce(tokio::sync::mpsc::UnboundedSender<Response>) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let work = work(tx);
    tokio::pin!(work);
    let mut done = false;
    loop {
        tokio::select! {
            () = &mut work, if !done => done = true,
            msg = rx.recv() => match msg {
                Some(r) => send(conn, r).await?,
                None => return Ok(()),
            },
        }
    }
}

/// Streams a run's progress until it finishes.
async fn follow(
    conn: &mut Conn,
    run_id: RunId,
    mut events: broadcast::Receiver<RunEvent>,
) -> Result<(), Closed> {
    loop {
        match events.recv().await {
            Ok(RunEvent::Progress(message)) => {
                send(
                    conn,
                    Response::Progress {
                        run_id: run_id.clone(),
                        message,
                    },
                )
                .await?;
            }
            Ok(RunEvent::Finished(run)) => {
                return send(conn, Response::Finished { run: Box::new(run) }).await;
            }
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => {
                return send_error(
                    conn,
                    ErrorCode::Internal,
                    "the run ended without a record".into(),
                )
                .await;
            }
        }
    }
}

/// Sends one reply. A client that leaves it unread for [`WRITE_TIMEOUT`] (its socket buffer
/// full) is disconnected, so it cannot hold its slot and a reply buffer forever.
async fn send(conn: &mut Conn, response: Response) -> Result<(), Closed> {
    let line = serde_json::to_string(&response).map_err(|_| Closed)?;
    match tokio::time::timeout(WRITE_TIMEOUT, conn.send(line)).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err(Closed),
        Err(_) => {
            tracing::debug!(
                "control connection closed: its replies went unread for {WRITE_TIMEOUT:?}"
            );
            Err(Closed)
        }
    }
}

async fn send_error(conn: &mut Conn, code: ErrorCode, message: String) -> Result<(), Closed> {
    send(conn, Response::Error { code, message }).await
}
