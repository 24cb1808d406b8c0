//! Child processes (pg_dump, pg_restore, a `command` job): each in its own process group, with a
//! scrubbed environment, its output read line by line, and the whole group ended on cancel,
//! timeout, daemon exit or when the main process exits.
//!
//! The group is the unit: when the child exits, anything it left behind in its group is killed
//! (as systemd's `KillMode=control-group` would), so a job never leaves orphans running. A
//! [`GroupGuard`] kills the group if the future running it is dropped half-way. What a daemon
//! killed -9 leaves behind is ended at the next start ([`registry`]).

mod leftovers;
pub mod registry;

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use futures::StreamExt;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::process::Command;
use tokio_util::codec::{AnyDelimiterCodec, FramedRead};
use tokio_util::sync::CancellationToken;

/// How long a cancelled group gets between SIGTERM and SIGKILL.
pub const KILL_GRACE: Duration = Duration::from_secs(5);
/// Lines of each stream kept for error messages.
const TAIL_LINES: usize = 20;
const MAX_LINE: usize = 64 * 1024;
/// The PATH children get when the daemon has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What to run.
#[derive(Debug, Clone)]
pub struct ProcessSpec {
    pub program: OsString,
    pub args: Vec<OsString>,
    /// Added to the minimal environment (PATH, LANG); nothing else is inherited.
    pub env: Vec<(OsString, OsString)>,
    pub cwd: Option<PathBuf>,
    /// Give the child a pipe on stdin ([`Running::take_stdin`]) instead of /dev/null.
    pub stdin: bool,
    /// Run as this uid and gid (supplementary groups dropped): a restored PostgreSQL server
    /// refuses to run as root and must run as its data directory's owner.
    pub run_as: Option<(u32, u32)>,
}

impl ProcessSpec {
    pub fn new(program: impl Into<OsString>) -> Self {
        ProcessSpec {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            stdin: false,
            run_as: None,
        }
    }

    /// Runs the child as `uid`:`gid` ([`ProcessSpec::run_as`]).
    pub fn run_as(mut self, uid: u32, gid: u32) -> Self {
        self.run_as = Some((uid, gid));
        self
    }

    pub fn args<I, S>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: impl Into<OsString>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }
}

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

/// A finished child.
#[derive(Debug)]
pub struct ProcessOutput {
    pub status: ExitStatus,
    pub stdout_tail: Vec<String>,
    pub stderr_tail: Vec<String>,
}

impl ProcessOutput {
    /// The last `n` non-empty stderr lines joined with " | ", for one-line messages.
    pub fn stderr_summary(&self, n: usize) -> String {
        let lines: Vec<&str> = self
            .stderr_tail
            .iter()
            .map(|l| l.trim())
            .filter(|l| !l.is_empty())
            .collect();
        lines[lines.len().saturating_sub(n)..].join(" | ")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("cannot start {program}: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("waiting for {program}: {source}")]
    Wait {
        program: String,
        #[source]
        source: std::io::Error,
    },
    /// The token was cancelled; the group has been killed and reaped.
    #[error("cancelled")]
    Cancelled,
}

/// Kills a process group with SIGKILL when dropped, unless disarmed; either way its record in
/// the group registry goes.
pub struct GroupGuard {
    pgid: Option<Pid>,
    record: Option<PathBuf>,
}

impl GroupGuard {
    fn new(pgid: Option<Pid>) -> Self {
        let record = pgid.and_then(registry::record);
        GroupGuard { pgid, record }
    }

    pub fn disarm(&mut self) {
        self.pgid = None;
        if let Some(r) = self.record.take() {
            let _ = std::fs::remove_file(r);
        }
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.pgid {
            let _ = killpg(pgid, Signal::SIGKILL);
        }
        self.disarm();
    }
}

/// A started child: its process group is killed if this is dropped before [`Running::wait`]
/// has finished.
pub struct Running {
    program: String,
    child: tokio::process::Child,
    pgid: Option<Pid>,
    guard: GroupGuard,
}

/// Starts `spec` in its own process group, stdout and stderr piped. The caller may take stdout
/// as a byte stream ([`Running::take_stdout`]); otherwise [`Running::wait`] reads it as lines.
pub fn spawn(spec: &ProcessSpec) -> Result<Running, ProcessError> {
    let program = spec.program.to_string_lossy().into_owned();
    let mut cmd = Command::new(&spec.program);
    cmd.args(&spec.args)
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
        )
        .env("LANG", "C.UTF-8")
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(if spec.stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(dir) = &spec.cwd {
        cmd.current_dir(dir);
    }
    if let Some((uid, gid)) = spec.run_as {
        // std drops the supplementary groups when root changes uid.
        cmd.uid(uid).gid(gid);
    }
    if let Some(marker) = registry::marker() {
        cmd.env(registry::MARKER_VAR, marker);
    }
    die_with_parent(&mut cmd);
    let child = cmd.spawn().map_err(|source| ProcessError::Spawn {
        program: program.clone(),
        source,
    })?;
    let pgid = child
        .id()
        .and_then(|id| i32::try_from(id).ok())
        .map(Pid::from_raw);
    Ok(Running {
        program,
        child,
        pgid,
        guard: GroupGuard::new(pgid),
    })
}

impl Running {
    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// The child's stdout as a byte stream; `wait` then only reads stderr.
    pub fn take_stdout(&mut self) -> Option<tokio::process::ChildStdout> {
        self.child.stdout.take()
    }

    /// The child's stdin, when the spec asked for one.
    pub fn take_stdin(&mut self) -> Option<tokio::process::ChildStdin> {
        self.child.stdin.take()
    }

    /// Waits for the child, calling `on_line` for each output line still read here, until it
    /// exits or `cancel` fires. On cancel the group gets SIGTERM, then SIGKILL after
    /// [`KILL_GRACE`].
    pub async fn wait(
        mut self,
        cancel: &CancellationToken,
        mut on_line: impl FnMut(Stream, &str),
    ) -> Result<ProcessOutput, ProcessError> {
        let pgid = self.pgid;
        let program = self.program.clone();
        let codec = || AnyDelimiterCodec::new_with_max_length(b"\n".to_vec(), Vec::new(), MAX_LINE);
        let mut out = self
            .child
            .stdout
            .take()
            .map(|s| FramedRead::new(s, codec()));
        let mut err = self
            .child
            .stderr
            .take()
            .map(|s| FramedRead::new(s, codec()));
        let (mut out_tail, mut err_tail) = (VecDeque::new(), VecDeque::new());
        let mut status = None;
        let mut cancelled = false;
        let kill_at = tokio::time::sleep(Duration::MAX);
        tokio::pin!(kill_at);

        while status.is_none() || out.is_some() || err.is_some() {
            tokio::select! {
                line = next_line(&mut out), if out.is_some() => match line {
                    Some(l) => { on_line(Stream::Stdout, &l); push_tail(&mut out_tail, l) }
                    None => out = None,
                },
                line = next_line(&mut err), if err.is_some() => match line {
                    Some(l) => { on_line(Stream::Stderr, &l); push_tail(&mut err_tail, l) }
                    None => err = None,
                },
                st = self.child.wait(), if status.is_none() => {
                    let st = st.map_err(|source| ProcessError::Wait { program: program.clone(), source })?;
                    status = Some(st);
                    // Whatever the child left in its group (a backgrounded grandchild holding
                    // our pipes open) goes with it.
                    signal_group(pgid, Signal::SIGKILL);
                },
                () = cancel.cancelled(), if !cancelled => {
                    cancelled = true;
                    signal_group(pgid, Signal::SIGTERM);
                    kill_at.as_mut().reset(tokio::time::Instant::now() + KILL_GRACE);
                },
                () = &mut kill_at => {
                    signal_group(pgid, Signal::SIGKILL);
                    kill_at.as_mut().reset(tokio::time::Instant::now() + Duration::from_secs(3600));
                },
            }
        }
        self.guard.disarm();
        if cancelled {
            return Err(ProcessError::Cancelled);
        }
        let status = status.ok_or_else(|| ProcessError::Wait {
            program,
            source: std::io::Error::other("child vanished"),
        })?;
        Ok(ProcessOutput {
            status,
            stdout_tail: out_tail.into(),
            stderr_tail: err_tail.into(),
        })
    }
}

/// Runs `spec` to completion, reading its stdout and stderr as lines (see [`Running::wait`]).
pub async fn run(
    spec: &ProcessSpec,
    cancel: &CancellationToken,
    on_line: impl FnMut(Stream, &str),
) -> Result<ProcessOutput, ProcessError> {
    spawn(spec)?.wait(cancel, on_line).await
}

type LineReader<R> = FramedRead<R, AnyDelimiterCodec>;

async fn next_line<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut Option<LineReader<R>>,
) -> Option<String> {
    let r = reader.as_mut()?;
    loop {
        match r.next().await? {
            Ok(bytes) => {
                return Some(
                    String::from_utf8_lossy(&bytes)
                        .trim_end_matches('\r')
                        .to_owned(),
                );
            }
            // An over-long line is dropped; the codec resynchronises at the next newline.
            Err(tokio_util::codec::AnyDelimiterCodecError::MaxChunkLengthExceeded) => continue,
            Err(_) => return None,
        }
    }
}

fn push_tail(tail: &mut VecDeque<String>, line: String) {
    if tail.len() == TAIL_LINES {
        tail.pop_front();
    }
    tail.push_back(line);
}

fn signal_group(pgid: Option<Pid>, signal: Signal) {
    if let Some(pgid) = pgid {
        // ESRCH: the group is already gone, which is what we want.
        let _ = killpg(pgid, signal);
    }
}

/// Makes the child get SIGTERM when the daemon dies (PR_SET_PDEATHSIG), so a kill -9 of the
/// daemon does not leave a pg_dump waiting on a lock. SIGTERM rather than SIGKILL because
/// pg_dump and pg_restore then end their parallel workers themselves (the death signal is not
/// inherited by grandchildren). What still survives — a child ignoring SIGTERM, a grandchild —
/// is ended at the next start by [`registry::reap`]. (Under systemd the unit's cgroup does
/// all of this too.)
///
/// The signal follows the thread that forked: children are spawned from tokio worker threads,
/// which live as long as the runtime.
#[allow(unsafe_code)]
fn die_with_parent(cmd: &mut Command) {
    let parent = nix::unistd::getpid();
    // SAFETY: the closure runs in the child between fork and exec. It makes only the
    // async-signal-safe prctl, getppid and kill system calls and allocates nothing; if the
    // daemon died before prctl took effect, the child ends itself at once.
    unsafe {
        cmd.pre_exec(move || {
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)?;
            if nix::unistd::getppid() != parent {
                let _ = nix::sys::signal::raise(Signal::SIGKILL);
            }
            Ok(())
        });
    }
}

/// A short description of how a child ended: "exit code 3", "killed by SIGKILL".
pub fn describe_status(status: &ExitStatus) -> String {
    use std::os::unix::process::ExitStatusExt;
    match (status.code(), status.signal()) {
        (Some(code), _) => format!("exit code {code}"),
        (None, Some(sig)) => match Signal::try_from(sig) {
            Ok(s) => format!("killed by {}", s.as_str()),
            Err(_) => format!("killed by signal {sig}"),
        },
        _ => "ended".to_owned(),
    }
}
