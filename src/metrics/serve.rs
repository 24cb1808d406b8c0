//! The two ways metrics leave the daemon besides the control socket: an HTTP endpoint
//! (`[metrics] listen`, served by hyper: `GET /metrics`, anything else 404) and a textfile for
//! node_exporter, replaced atomically after every run and at least once a minute.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::daemon::state::Shared;

/// How long a client may take to send its request.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);

/// A bound metrics endpoint, not yet serving.
pub struct MetricsServer {
    listener: TcpListener,
}

impl MetricsServer {
    /// Binds `addr` (before READY=1, so a port in use stops the start-up with a clear error).
    pub async fn bind(addr: SocketAddr) -> std::io::Result<MetricsServer> {
        Ok(MetricsServer {
            listener: TcpListener::bind(addr).await?,
        })
    }

    /// The address actually bound (the port chosen by the system for `:0`).
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// Serves until `stop`; connections in flight end with it.
    pub async fn serve(self, shared: Arc<Shared>, stop: CancellationToken) {
        let connections = TaskTracker::new();
        loop {
            let (stream, _) = tokio::select! {
                () = stop.cancelled() => break,
                accepted = self.listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        tracing::warn!("metrics endpoint: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
            };
            let shared = Arc::clone(&shared);
            let stop = stop.clone();
            connections.spawn(async move {
                let service = service_fn(move |req| answer(Arc::clone(&shared), req));
                let mut builder = hyper::server::conn::http1::Builder::new();
                builder
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(HEADER_TIMEOUT);
                let conn = builder.serve_connection(TokioIo::new(stream), service);
                tokio::pin!(conn);
                tokio::select! {
                    _ = conn.as_mut() => {}
                    () = stop.cancelled() => conn.as_mut().graceful_shutdown(),
                }
            });
        }
        connections.close();
        let _ = tokio::time::timeout(Duration::from_secs(5), connections.wait()).await;
    }
}

async fn answer(
    shared: Arc<Shared>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let reply = |status: StatusCode, content_type: &str, body: String| {
        let mut r = Response::new(Full::new(Bytes::from(body)));
        *r.status_mut() = status;
        if let Ok(v) = content_type.parse() {
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
        }
        r
    };
    Ok(match (req.method(), req.uri().path()) {
        (&Method::GET, "/metrics") => reply(
            StatusCode::OK,
            super::CONTENT_TYPE,
            super::render(&shared).await,
        ),
        (&Method::GET, _) => reply(
            StatusCode::NOT_FOUND,
            "text/plain",
            "metrics are at /metrics\n".into(),
        ),
        _ => reply(
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "only GET\n".into(),
        ),
    })
}

/// Keeps `[metrics] textfile` current until `stop`: after every run start and end, and every
/// minute (gauges such as disk space move without runs).
pub fn spawn_textfile_writer(
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let mut changes = shared.runner.subscribe_changes();
        let mut tick = tokio::time::interval(Duration::from_secs(60));
        let mut last_error: Option<String> = None;
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = changes.changed() => {}
                _ = tick.tick() => {}
            }
            let path = shared.config.borrow().metrics.textfile.clone();
            let Some(path) = path else { continue };
            let text = super::render(&shared).await;
            let result = write(path.clone(), text).await;
            // One line per distinct problem, not one a minute.
            match result {
                Ok(()) => last_error = None,
                Err(e) if last_error.as_deref() != Some(e.as_str()) => {
                    tracing::warn!("cannot write the metrics textfile {}: {e}", path.display());
                    last_error = Some(e);
                }
                Err(_) => {}
            }
        }
    })
}

async fn write(path: PathBuf, text: String) -> Result<(), String> {
    // Readable by node_exporter: metrics hold no secrets.
    tokio::task::spawn_blocking(move || crate::publish::write_atomic(&path, text.as_bytes(), 0o644))
        .await
        .map_err(|e| e.to_string())?
        .map_err(|e| e.to_string())
}
