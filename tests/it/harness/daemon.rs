//! [`Daemon`]: one running `atpred` under test, and `atprectl` pointed at it.
//!
//! The daemon gets its own [`NotifySocket`] as `NOTIFY_SOCKET`, and `spawn` returns only after
//! `READY=1`. Its stdout and stderr go to `<dir>/<name>.log`. Dropping it SIGKILLs it and whatever
//! descendants it left; on a failing test the log tail is printed first, so failures explain
//! themselves. The daemon stays in the test's process group, so a nextest timeout kill takes it
//! down with the test.

use std::fmt;
use std::fs::OpenOptions;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::daemon_config::DaemonBuilder;
use super::notify::{NotifySocket, line};
use super::process::{self, command_as, descendants, kill_and_reap, pid_of, run_with_timeout};

/// What `atprectl` printed and its exit status.
pub type CtlOutput = process::RunOutput;

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const CTL_TIMEOUT: Duration = Duration::from_secs(30);
const LOG_TAIL_LINES: usize = 60;

/// A running daemon; see the module docs.
pub struct Daemon {
    builder: DaemonBuilder,
    config_path: PathBuf,
    notify: NotifySocket,
    child: Child,
    exit: Option<ExitStatus>,
}

/// Why a daemon did not become ready: it exited (`status`) or timed out (`status: None`).
#[derive(Debug)]
pub struct SpawnFailure {
    pub status: Option<ExitStatus>,
    pub log: String,
    pub notify: Vec<String>,
}

impl fmt::Display for SpawnFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(status) => writeln!(f, "atpred exited before READY=1 ({status})")?,
            None => writeln!(
                f,
                "atpred sent no READY=1 within {READY_TIMEOUT:?} (killed)"
            )?,
        }
        writeln!(f, "notify messages: {:?}", self.notify)?;
        write!(f, "log tail:\n{}", super::tail(&self.log, LOG_TAIL_LINES))
    }
}

impl Daemon {
    pub(super) fn start(builder: DaemonBuilder) -> Result<Daemon, SpawnFailure> {
        let config_path = builder.write_config();
        let notify = NotifySocket::bind(&builder.dir);
        let child = launch(&builder, &config_path, &notify)?;
        Ok(Daemon {
            builder,
            config_path,
            notify,
            child,
            exit: None,
        })
    }

    pub fn pid(&self) -> Pid {
        pid_of(&self.child)
    }

    /// The control socket path.
    pub fn socket(&self) -> &Path {
        &self.builder.socket
    }

    pub fn notify(&self) -> &NotifySocket {
        &self.notify
    }

    pub fn config_path(&self) -> &Path {
        &self.config_path
    }

    /// The whole daemon log so far (stdout and stderr, across restarts).
    pub fn log(&self) -> String {
        read_lossy(&log_path(&self.builder))
    }

    /// Runs `atprectl --socket <socket> ARGS` (30 s deadline).
    pub fn ctl<I, S>(&self, args: I) -> CtlOutput
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = self.ctl_command(Path::new(env!("CARGO_BIN_EXE_atprectl")), args);
        run_with_timeout(&mut cmd, CTL_TIMEOUT)
    }

    /// Like [`Self::ctl`] but as `uid:gid` (needs root). The client binary is first copied into
    /// `<dir>/.harness-bin/` so that user can execute it wherever the build tree is.
    pub fn ctl_as<I, S>(&self, uid: u32, gid: u32, args: I) -> CtlOutput
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let binary = self.public_ctl_binary();
        let mut cmd = self.ctl_command(&binary, args);
        command_as(&mut cmd, uid, gid).current_dir("/");
        run_with_timeout(&mut cmd, CTL_TIMEOUT)
    }

    fn ctl_command<I, S>(&self, binary: &Path, args: I) -> Command
    where
        I: IntoIterator<Item = S>,
        S: AsRef<std::ffi::OsStr>,
    {
        let mut cmd = Command::new(binary);
        cmd.env_remove("ATPRED_SOCKET").env_remove("NOTIFY_SOCKET");
        cmd.arg("--socket").arg(self.socket()).args(args);
        cmd
    }

    fn public_ctl_binary(&self) -> PathBuf {
        let dir = self.builder.dir.join(".harness-bin");
        let binary = dir.join("atprectl");
        if !binary.exists() {
            std::fs::create_dir_all(&dir).expect("create .harness-bin");
            super::set_mode(&dir, 0o755);
            std::fs::copy(env!("CARGO_BIN_EXE_atprectl"), &binary).expect("copy atprectl");
            super::set_mode(&binary, 0o755);
        }
        binary
    }

    /// Sends `signal` to the daemon.
    pub fn signal(&self, signal: Signal) {
        kill(self.pid(), signal).unwrap_or_else(|e| panic!("kill -{signal} {}: {e}", self.pid()));
    }

    /// Waits at most `timeout` for the daemon to exit; `None` if it still runs. Once it has
    /// exited, [`Self::notify`] holds every message it sent.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<ExitStatus> {
        if self.exit.is_none() {
            self.exit = process::wait_timeout(&mut self.child, timeout);
            if self.exit.is_some() {
                self.notify.sync();
            }
        }
        self.exit
    }

    /// True until the daemon has exited (checked without blocking).
    pub fn is_running(&mut self) -> bool {
        self.wait_exit(Duration::ZERO).is_none()
    }

    /// A raw connection to the control socket (10 s read/write timeouts), for protocol tests.
    pub fn raw_connect(&self) -> UnixStream {
        let stream = UnixStream::connect(self.socket())
            .unwrap_or_else(|e| panic!("connect {}: {e}", self.socket().display()));
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("set read timeout");
        stream
            .set_write_timeout(Some(Duration::from_secs(10)))
            .expect("set write timeout");
        stream
    }

    /// Stops the daemon if it runs (SIGTERM, 30 s), then starts it again with the same config
    /// file as it is now, and waits for a new READY=1.
    pub fn restart(&mut self) {
        if self.is_running() {
            self.signal(Signal::SIGTERM);
            assert!(
                self.wait_exit(Duration::from_secs(30)).is_some(),
                "atpred did not exit within 30 s of SIGTERM before a restart:\n{}",
                super::tail(&self.log(), LOG_TAIL_LINES)
            );
        }
        let marker = format!(
            "\n===== harness: restarting atpred with {} =====\n",
            self.config_path.display()
        );
        append(&log_path(&self.builder), &marker);
        self.child = launch(&self.builder, &self.config_path, &self.notify)
            .unwrap_or_else(|f| panic!("{f}"));
        self.exit = None;
    }
}

impl Daemon {
    /// Like [`Self::restart`], with `key` set to `value` (or removed, `None`) in the daemon's
    /// environment from now on (e.g. a test-only hook that stops the daemon at a step).
    pub fn restart_with_env(&mut self, key: &str, value: Option<&str>) {
        self.builder.env.push((key.into(), value.map(Into::into)));
        self.restart();
    }
}

/// Starts the daemon process and waits for a READY=1 newer than any message seen before.
fn launch(
    builder: &DaemonBuilder,
    config: &Path,
    notify: &NotifySocket,
) -> Result<Child, SpawnFailure> {
    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path(builder))
        .expect("open the daemon log");
    let log2 = log.try_clone().expect("clone the daemon log handle");
    let mut cmd = (builder.launcher)(config);
    for (key, _) in std::env::vars_os() {
        let inherited = key.to_string_lossy();
        // Only what the test sets may steer the daemon (and systemd variables must not leak in).
        if ["ATPRED_", "NOTIFY_SOCKET", "WATCHDOG_", "LISTEN_"]
            .iter()
            .any(|p| inherited.starts_with(p))
        {
            cmd.env_remove(&key);
        }
    }
    cmd.env("NOTIFY_SOCKET", notify.path())
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log2);
    for (key, value) in &builder.env {
        match value {
            Some(value) => cmd.env(key, value),
            None => cmd.env_remove(key),
        };
    }
    let since = notify.len(); // before the spawn: a fast daemon may be ready at once
    let mut child = cmd.spawn().unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let deadline = Instant::now() + READY_TIMEOUT;
    loop {
        // Short slices so an early exit is reported at once, not after the whole timeout.
        if notify
            .wait_for_since(since, line("READY=1"), Duration::from_millis(50))
            .is_ok()
        {
            return Ok(child);
        }
        let status = child.try_wait().expect("wait for atpred");
        if status.is_some() || Instant::now() >= deadline {
            kill_and_reap(&mut child);
            let log = read_lossy(&log_path(builder));
            return Err(SpawnFailure {
                status,
                log,
                notify: notify.messages(),
            });
        }
    }
}

fn log_path(builder: &DaemonBuilder) -> PathBuf {
    builder.dir.join(format!("{}.log", builder.name))
}

fn read_lossy(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut file = OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .expect("open the daemon log");
    file.write_all(text.as_bytes())
        .expect("append to the daemon log");
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log();
            let notes = self.notify.messages();
            let recent = &notes[notes.len().saturating_sub(10)..];
            eprintln!(
                "===== last {LOG_TAIL_LINES} lines of {} =====\n{}\n===== last notify messages: {recent:?} =====",
                log_path(&self.builder).display(),
                super::tail(&log, LOG_TAIL_LINES)
            );
        }
        if self.is_running() {
            // Job processes live in their own process groups: find them before their parent dies.
            let left_behind = descendants(self.pid());
            kill_and_reap(&mut self.child);
            for p in left_behind {
                let _ = kill(p.pid, Signal::SIGKILL);
            }
        }
    }
}
