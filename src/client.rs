//! The protocol client, used by `atprectl` and by the tests.

use std::path::{Path, PathBuf};

use futures::{SinkExt, StreamExt};
use tokio::net::UnixStream;
use tokio_util::codec::Framed;

use crate::protocol::{Codec, ErrorCode, PROTOCOL_VERSION, Request, Response};

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error(
        "cannot reach atpred at {path}: {source} (is it running? try `systemctl status atpred`)"
    )]
    Unreachable {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    NotPermitted(String),
    /// The daemon is at its connection limit (for everyone, or for this user).
    #[error("atpred is busy: {0}")]
    Busy(String),
    #[error("{0}")]
    ProtocolMismatch(String),
    #[error("protocol error: {0}")]
    Protocol(String),
    #[error("the daemon closed the connection")]
    Closed,
}

pub struct Client {
    conn: Framed<UnixStream, Codec>,
}

impl Client {
    /// Connects and performs the handshake.
    pub async fn connect(path: &Path) -> Result<Client, ClientError> {
        let stream = UnixStream::connect(path).await.map_err(|source| {
            // EACCES/EPERM: the kernel refused us by the socket's (or a folder's) mode; the
            // daemon never saw the attempt.
            if source.kind() == std::io::ErrorKind::PermissionDenied {
                ClientError::NotPermitted(crate::client_access::not_permitted(path))
            } else {
                ClientError::Unreachable {
                    path: path.to_owned(),
                    source,
                }
            }
        })?;
        let mut client = Client {
            conn: Framed::new(stream, Codec::default()),
        };
        let hello = Request::Hello {
            protocol: PROTOCOL_VERSION,
            client: format!("atprectl {}", crate::VERSION),
        };
        // The daemon may refuse us (not permitted) and close before reading our hello; the
        // refusal is then waiting to be read even though sending failed.
        let sent = client.send(&hello).await;
        let answer = match (client.next().await, sent) {
            (Ok(answer), _) => answer,
            (Err(e), Ok(())) | (Err(_), Err(e)) => return Err(e),
        };
        match answer {
            Response::Hello { .. } => Ok(client),
            Response::Error {
                code: ErrorCode::NotPermitted,
                message,
            } => Err(ClientError::NotPermitted(message)),
            Response::Error {
                code: ErrorCode::ProtocolMismatch,
                message,
            } => Err(ClientError::ProtocolMismatch(message)),
            Response::Error {
                code: ErrorCode::Busy,
                message,
            } => Err(ClientError::Busy(message)),
            other => Err(ClientError::Protocol(format!(
                "unexpected answer to hello: {other:?}"
            ))),
        }
    }

    /// Sends a request and reads the first response.
    pub async fn request(&mut self, request: &Request) -> Result<Response, ClientError> {
        self.send(request).await?;
        self.next().await
    }

    pub async fn send(&mut self, request: &Request) -> Result<(), ClientError> {
        let line =
            serde_json::to_string(request).map_err(|e| ClientError::Protocol(e.to_string()))?;
        self.conn.send(line).await.map_err(|_| ClientError::Closed)
    }

    /// The next response (for requests that stream several).
    pub async fn next(&mut self) -> Result<Response, ClientError> {
        match self.conn.next().await {
            Some(Ok(line)) => serde_json::from_str(&line)
                .map_err(|e| ClientError::Protocol(format!("{e}: {line}"))),
            Some(Err(e)) => Err(ClientError::Protocol(e.to_string())),
            None => Err(ClientError::Closed),
        }
    }
}
