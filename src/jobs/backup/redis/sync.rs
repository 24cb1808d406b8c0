//! Taking the RDB over the replication protocol, as `redis-cli --rdb` does: no access to
//! Redis's directory is needed.
//!
//! The redis crate cannot do this part: its connections do not hand over their socket, and its
//! parser would hold the whole bulk reply in memory (and the diskless `$EOF:<mark>` form is not
//! RESP at all). So the daemon opens the socket itself at the address the crate parsed from
//! the URL, sends `AUTH` (packed by the crate; the password comes from `password-file`, never
//! from an argv or an environment), `REPLCONF capa eof`, `REPLCONF rdb-only 1` and `SYNC`, then
//! streams the payload — `$<len>\r\n` and that many bytes, or `$EOF:<40-byte mark>\r\n` and
//! bytes up to the mark — straight into the backup's zstd/age/SHA-256 pipeline.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, TcpStream, ToSocketAddrs};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo};

use crate::jobs::backup::dump::with_progress;
use crate::jobs::backup::stream::{self, Layers, Written};
use crate::jobs::{JobContext, JobError};

/// How long the server may send nothing at all (it sends a newline every second while it
/// prepares the RDB).
const SILENCE: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
const MARK_LEN: usize = 40;
const MAX_LINE: usize = 64 * 1024;
const READ_BUF: usize = 256 * 1024;

/// How the server sent the RDB.
#[derive(Debug, Clone, Copy)]
pub enum Form {
    /// `$<len>`: a disk-based transfer.
    Bulk(u64),
    /// `$EOF:<mark>`: a diskless one, ended by the mark.
    EofMark([u8; MARK_LEN]),
}

impl Form {
    pub fn as_str(&self) -> &'static str {
        match self {
            Form::Bulk(_) => "bulk",
            Form::EofMark(_) => "eof-marker",
        }
    }
}

/// What a transfer wrote.
pub struct Transferred {
    pub written: Written,
    /// Bytes of the RDB itself.
    pub rdb_bytes: u64,
    pub form: &'static str,
}

/// A failure of the transfer, and whether trying again later may help.
pub enum SyncError {
    /// The server is down or went away.
    Unreachable(String),
    /// Refused (wrong password, no right to SYNC, TLS asked for) or broken locally.
    Refused(String),
}

impl SyncError {
    fn into_job(self) -> JobError {
        match self {
            SyncError::Unreachable(message) => JobError::Transient {
                message,
                details: serde_json::Value::Null,
            },
            SyncError::Refused(message) => JobError::permanent(message),
        }
    }
}

/// The socket, TCP or Unix.
enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Sock {
    fn try_clone(&self) -> io::Result<Sock> {
        Ok(match self {
            Sock::Tcp(s) => Sock::Tcp(s.try_clone()?),
            Sock::Unix(s) => Sock::Unix(s.try_clone()?),
        })
    }

    fn shutdown(&self) {
        let _ = match self {
            Sock::Tcp(s) => s.shutdown(Shutdown::Both),
            Sock::Unix(s) => s.shutdown(Shutdown::Both),
        };
    }

    fn set_read_timeout(&self, d: Duration) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.set_read_timeout(Some(d)),
            Sock::Unix(s) => s.set_read_timeout(Some(d)),
        }
    }
}

impl Read for Sock {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.read(buf),
            Sock::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Sock {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.write(buf),
            Sock::Unix(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Takes the RDB from the server of `info` into `path` through `layers`. `shown` is the
/// redacted URL for messages.
pub async fn transfer(
    ctx: &JobContext,
    info: ConnectionInfo,
    shown: String,
    path: &Path,
    layers: Layers,
) -> Result<Transferred, JobError> {
    let (replica, killer) = {
        let shown = shown.clone();
        let started = tokio::task::spawn_blocking(move || start(&info, &shown));
        let cancelled = ctx.cancel.clone();
        tokio::select! {
            r = started => r.map_err(|e| JobError::permanent(e.to_string()))?.map_err(SyncError::into_job)?,
            () = cancelled.cancelled() => return Err(JobError::Cancelled),
        }
    };
    let form = replica.form;
    let read = Arc::new(AtomicU64::new(0));
    let writer = {
        let (path, read) = (path.to_owned(), Arc::clone(&read));
        tokio::task::spawn_blocking(move || stream::write_stream(replica, &path, &layers, &read))
    };
    let count = || read.load(Ordering::Relaxed);
    let written = with_progress(ctx, count, async {
        tokio::pin!(writer);
        tokio::select! {
            r = &mut writer => r,
            () = ctx.cancel.cancelled() => {
                // The blocking read ends when its socket does.
                killer.shutdown();
                let _ = writer.await;
                Ok(Err(io::Error::other("cancelled")))
            }
        }
    })
    .await;
    if ctx.cancel.is_cancelled() {
        return Err(JobError::Cancelled);
    }
    let written = written.map_err(|e| JobError::permanent(e.to_string()))?;
    let rdb_bytes = count();
    match written {
        Ok(written) => Ok(Transferred {
            written,
            rdb_bytes,
            form: form.as_str(),
        }),
        // The socket's own failures are the server's; the file's are ours (a full disk).
        Err(e) if is_network(&e) => Err(SyncError::Unreachable(format!(
            "the RDB transfer from {shown} broke off after {rdb_bytes} bytes: {e}"
        ))
        .into_job()),
        Err(e) => Err(JobError::permanent(format!(
            "writing {}: {e}",
            path.display()
        ))),
    }
}

fn is_network(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        UnexpectedEof | ConnectionReset | ConnectionAborted | BrokenPipe | TimedOut | WouldBlock
    )
}

/// The replication connection once the server has said how it sends the RDB; reading it
/// yields the RDB's bytes and nothing else.
struct Replica {
    conn: BufReader<Sock>,
    form: Form,
    left: u64,
    held: Vec<u8>,
    finished: bool,
}

/// Connects, logs in and sends SYNC; returns the replica and a handle to end its socket.
fn start(info: &ConnectionInfo, shown: &str) -> Result<(Replica, Sock), SyncError> {
    let sock = connect(info.addr(), shown)?;
    let killer = sock
        .try_clone()
        .map_err(|e| SyncError::Refused(format!("socket: {e}")))?;
    sock.set_read_timeout(SILENCE)
        .map_err(|e| SyncError::Refused(format!("socket: {e}")))?;
    let mut conn = BufReader::with_capacity(READ_BUF, sock);
    let unreachable = |e: io::Error| SyncError::Unreachable(format!("Redis at {shown}: {e}"));
    let settings = info.redis_settings();
    if let Some(pw) = settings.password() {
        let mut auth = redis::cmd("AUTH");
        if let Some(user) = settings.username() {
            auth.arg(user);
        }
        auth.arg(pw);
        let reply = call(&mut conn, &auth.get_packed_command()).map_err(unreachable)?;
        if let Some(err) = reply.strip_prefix('-') {
            return Err(SyncError::Refused(format!(
                "Redis at {shown} refused the password of password-file: {err}"
            )));
        }
    }
    // Asked for as redis-cli does; a server before 7.0 refuses rdb-only, which only means it
    // keeps the connection open after the RDB (we close it).
    for args in [["capa", "eof"], ["rdb-only", "1"]] {
        let mut replconf = redis::cmd("REPLCONF");
        replconf.arg(&args[..]);
        let reply = call(&mut conn, &replconf.get_packed_command()).map_err(unreachable)?;
        if let Some(err) = reply.strip_prefix('-')
            && err.starts_with("NOAUTH")
        {
            return Err(SyncError::Refused(format!(
                "Redis at {shown} needs a password: {err} (set [redis] password-file)"
            )));
        }
    }
    conn.get_mut()
        .write_all(&redis::cmd("SYNC").get_packed_command())
        .map_err(unreachable)?;
    let header = loop {
        let line = read_line(&mut conn).map_err(unreachable)?;
        // Newlines keep the connection alive while the server prepares the RDB.
        if !line.is_empty() {
            break line;
        }
    };
    let form = parse_header(&header).map_err(|e| {
        SyncError::Refused(format!(
            "Redis at {shown} did not start the RDB transfer: {e}"
        ))
    })?;
    let left = match form {
        Form::Bulk(n) => n,
        Form::EofMark(_) => 0,
    };
    Ok((
        Replica {
            conn,
            form,
            left,
            held: Vec::new(),
            finished: false,
        },
        killer,
    ))
}

fn connect(addr: &ConnectionAddr, shown: &str) -> Result<Sock, SyncError> {
    let down =
        |e: io::Error| SyncError::Unreachable(format!("cannot connect to Redis at {shown}: {e}"));
    match addr {
        ConnectionAddr::Unix(path) => UnixStream::connect(path).map(Sock::Unix).map_err(down),
        ConnectionAddr::Tcp(host, port) => {
            let addrs: Vec<_> = (host.as_str(), *port)
                .to_socket_addrs()
                .map_err(down)?
                .collect();
            let mut last = io::Error::other("no address");
            for a in addrs {
                match TcpStream::connect_timeout(&a, CONNECT_TIMEOUT) {
                    Ok(s) => return Ok(Sock::Tcp(s)),
                    Err(e) => last = e,
                }
            }
            Err(down(last))
        }
        _ => Err(SyncError::Refused(format!(
            "Redis at {shown}: backups over TLS (rediss://) are not supported; use a local \
             redis:// or unix:// URL"
        ))),
    }
}

/// Sends a packed command and reads its one-line reply.
fn call(conn: &mut BufReader<Sock>, packed: &[u8]) -> io::Result<String> {
    conn.get_mut().write_all(packed)?;
    read_line(conn)
}

/// One `\n`-ended line without its `\r\n`; a closed connection is an error.
fn read_line(conn: &mut BufReader<Sock>) -> io::Result<String> {
    let mut line = Vec::new();
    let n = conn
        .by_ref()
        .take(MAX_LINE as u64)
        .read_until(b'\n', &mut line)?;
    if n == 0 || line.last() != Some(&b'\n') {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        ));
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

fn parse_header(line: &str) -> Result<Form, String> {
    if let Some(err) = line.strip_prefix('-') {
        return Err(err.to_owned());
    }
    let Some(rest) = line.strip_prefix('$') else {
        return Err(format!("unexpected reply {:?}", truncate(line)));
    };
    if let Some(mark) = rest.strip_prefix("EOF:") {
        let mark: [u8; MARK_LEN] = mark
            .as_bytes()
            .try_into()
            .map_err(|_| format!("an EOF mark of {} bytes", mark.len()))?;
        return Ok(Form::EofMark(mark));
    }
    rest.parse::<u64>()
        .map(Form::Bulk)
        .map_err(|_| format!("unexpected reply {:?}", truncate(line)))
}

fn truncate(s: &str) -> String {
    s.chars().take(80).collect()
}

impl Read for Replica {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        match self.form {
            Form::Bulk(total) => {
                if self.left == 0 {
                    return Ok(0);
                }
                let want = out
                    .len()
                    .min(usize::try_from(self.left).unwrap_or(usize::MAX));
                let n = self.conn.read(&mut out[..want])?;
                if n == 0 {
                    return Err(io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        format!(
                            "the server closed the connection {} bytes short of {total}",
                            self.left
                        ),
                    ));
                }
                self.left -= n as u64;
                Ok(n)
            }
            Form::EofMark(mark) => self.read_marked(out, &mark),
        }
    }
}

impl Replica {
    /// Bytes up to the mark: the last [`MARK_LEN`] bytes are held back until more come, since
    /// they may be the mark.
    fn read_marked(&mut self, out: &mut [u8], mark: &[u8; MARK_LEN]) -> io::Result<usize> {
        loop {
            let releasable = if self.finished {
                self.held.len()
            } else {
                self.held.len().saturating_sub(MARK_LEN)
            };
            if releasable > 0 {
                let n = releasable.min(out.len());
                out[..n].copy_from_slice(&self.held[..n]);
                self.held.drain(..n);
                return Ok(n);
            }
            if self.finished {
                return Ok(0);
            }
            let buf = self.conn.fill_buf()?;
            if buf.is_empty() {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "the server closed the connection before the end of the RDB",
                ));
            }
            let n = buf.len();
            self.held.extend_from_slice(buf);
            self.conn.consume(n);
            if self.held.ends_with(mark) {
                self.held.truncate(self.held.len() - MARK_LEN);
                self.finished = true;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_are_read() {
        assert!(matches!(parse_header("$1234"), Ok(Form::Bulk(1234))));
        let mark = "a".repeat(40);
        assert!(matches!(
            parse_header(&format!("$EOF:{mark}")),
            Ok(Form::EofMark(_))
        ));
        assert_eq!(
            parse_header("-NOPERM this user has no permissions")
                .err()
                .unwrap(),
            "NOPERM this user has no permissions"
        );
        assert!(parse_header("+OK").is_err());
        assert!(parse_header("$EOF:short").is_err());
    }
}
