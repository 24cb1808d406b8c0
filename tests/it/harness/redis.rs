//! A throw-away redis-server for one test, on a unix socket only (`--port 0`), persisting nothing.
//!
//! The server is our own child: dropping it SIGKILLs and reaps it, then removes its directory.

use std::fs::OpenOptions;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::process::{self, kill_and_reap, pid_of};
use super::resp::{Resp, RespConnection};

const START_TIMEOUT: Duration = Duration::from_secs(20);
const INSTALL_HINT: &str = "install it: apt-get install redis-server";

/// A running redis-server; see the module docs.
pub struct RedisServer {
    dir: tempfile::TempDir,
    binary: PathBuf,
    password: Option<String>,
    /// `--appendonly yes` at the next start.
    aof: bool,
    child: Option<Child>,
}

impl RedisServer {
    /// A server without authentication.
    pub fn start() -> RedisServer {
        Self::start_with(None)
    }

    /// A server that answers nothing but AUTH until it is given `password`.
    pub fn start_with_password(password: &str) -> RedisServer {
        Self::start_with(Some(password.to_string()))
    }

    /// A server with `password` and AOF on (`--appendonly yes`).
    pub fn start_with_password_and_aof(password: &str) -> RedisServer {
        Self::start_opts(Some(password.to_string()), true)
    }

    fn start_with(password: Option<String>) -> RedisServer {
        Self::start_opts(password, false)
    }

    fn start_opts(password: Option<String>, aof: bool) -> RedisServer {
        let from_env = std::env::var_os("ATPRED_REDIS_SERVER").map(PathBuf::from);
        let binary = locate_redis_server(from_env, process::find_in_path("redis-server"))
            .unwrap_or_else(|e| panic!("{e}"));
        let dir = tempfile::Builder::new()
            .prefix("atpred-redis-")
            .tempdir_in("/tmp")
            .expect("create the Redis temporary directory under /tmp");
        super::set_mode(dir.path(), 0o711);
        let mut server = RedisServer {
            dir,
            binary,
            password,
            aof,
            child: None,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.path().join("redis.log"))
            .expect("open redis.log");
        let log2 = log.try_clone().expect("clone the redis.log handle");
        let mut cmd = Command::new(&self.binary);
        cmd.args(["--port", "0", "--unixsocket"])
            .arg(self.socket_path())
            .args([
                "--unixsocketperm",
                "700",
                "--save",
                "",
                "--appendonly",
                if self.aof { "yes" } else { "no" },
            ])
            .args(["--daemonize", "no", "--dir"])
            .arg(self.dir.path())
            .current_dir(self.dir.path())
            .stdout(log)
            .stderr(log2);
        if let Some(pw) = &self.password {
            cmd.args(["--requirepass", pw]);
        }
        let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
        let mut exited = None;
        let ready = super::wait_until(START_TIMEOUT, || {
            exited = child.try_wait().expect("wait for redis-server");
            exited.is_some()
                || self
                    .try_cmd(&["PING"])
                    .is_ok_and(|r| r == Resp::Simple("PONG".into()))
        });
        if let Some(status) = exited {
            panic!(
                "redis-server exited during startup ({status}):\n{}",
                self.log()
            );
        }
        if !ready {
            kill_and_reap(&mut child);
            panic!(
                "redis-server not answering PING within {START_TIMEOUT:?}:\n{}",
                self.log()
            );
        }
        self.child = Some(child);
    }

    /// The server's `--dir` (where it keeps `dump.rdb` and its AOF folder).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// Whether the next start has AOF on (as an edited redis.conf would say).
    pub fn set_aof(&mut self, on: bool) {
        self.aof = on;
    }

    pub fn socket_path(&self) -> PathBuf {
        self.dir.path().join("redis.sock")
    }

    /// `redis+unix:///<socket>`, without credentials. The redis crate (1.x) also accepts
    /// `unix://`; for unix URLs it refuses `user:pass@` ("did not parse") and reads `?pass=`.
    pub fn url(&self) -> String {
        format!(
            "redis+unix://{}",
            percent_encode(&self.socket_path().to_string_lossy(), "/")
        )
    }

    /// [`Self::url`] with `?pass=<percent-encoded password>` if the server has one (a bare `+`
    /// would be read as a space: it is encoded like everything but unreserved characters).
    pub fn url_with_password(&self) -> String {
        match &self.password {
            Some(pw) => format!("{}?pass={}", self.url(), percent_encode(pw, "")),
            None => self.url(),
        }
    }

    pub fn password(&self) -> Option<&str> {
        self.password.as_deref()
    }

    /// The server's pid (e.g. to SIGSTOP it). Panics if it is stopped.
    pub fn pid(&self) -> Pid {
        pid_of(
            self.child
                .as_ref()
                .expect("the Redis server is not running"),
        )
    }

    /// The server log so far.
    pub fn log(&self) -> String {
        String::from_utf8_lossy(
            &std::fs::read(self.dir.path().join("redis.log")).unwrap_or_default(),
        )
        .into_owned()
    }

    /// A new connection, already authenticated if the server has a password.
    pub fn connect(&self) -> std::io::Result<RespConnection> {
        let mut conn = RespConnection::connect(&self.socket_path())?;
        if let Some(pw) = &self.password {
            match conn.call(&["AUTH", pw])? {
                Resp::Simple(ok) if ok == "OK" => {}
                other => return Err(std::io::Error::other(format!("AUTH answered {other:?}"))),
            }
        }
        Ok(conn)
    }

    /// Runs one command on a fresh authenticated connection.
    pub fn try_cmd(&self, args: &[&str]) -> std::io::Result<Resp> {
        self.connect()?.call(args)
    }

    /// Runs one command on a fresh authenticated connection; panics if the server is unreachable.
    pub fn cmd(&self, args: &[&str]) -> Resp {
        self.try_cmd(args)
            .unwrap_or_else(|e| panic!("redis {args:?}: {e}"))
    }

    /// SIGTERM and wait for the exit. Does nothing if stopped.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = kill(pid_of(&child), Signal::SIGCONT);
            let _ = kill(pid_of(&child), Signal::SIGTERM);
            if process::wait_timeout(&mut child, Duration::from_secs(20)).is_none() {
                kill_and_reap(&mut child);
                panic!("redis-server did not stop on SIGTERM:\n{}", self.log());
            }
        }
    }

    /// Stops the server if it runs and starts it again on the same socket (with no data).
    pub fn restart(&mut self) {
        self.stop();
        self.spawn();
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(child) = self.child.as_mut() {
            kill_and_reap(child);
        }
    }
}

/// The redis-server to run: `$ATPRED_REDIS_SERVER` if set, else the one found on PATH.
pub fn locate_redis_server(
    from_env: Option<PathBuf>,
    on_path: Option<PathBuf>,
) -> Result<PathBuf, String> {
    match (from_env, on_path) {
        (Some(path), _) if process::is_executable(&path) => Ok(path),
        (Some(path), _) => Err(format!(
            "ATPRED_REDIS_SERVER={} is not executable; {INSTALL_HINT}",
            path.display()
        )),
        (None, Some(path)) => Ok(path),
        (None, None) => Err(format!("redis-server is not on PATH; {INSTALL_HINT}")),
    }
}

/// Percent-encodes every byte except unreserved characters and those in `keep`.
fn percent_encode(text: &str, keep: &str) -> String {
    let mut out = String::new();
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || keep.as_bytes().contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}
