//! Child processes (pg_dump, pg_restore, a `command` job): each in its own process group, with a
//! scrubbed environment, its output read line by line, and the whole group ended on cancel,
//! timeout, daemon exit or when the main process exits.
//!
//! The group is the unit: when the child exits, anything it left behind in its group is killed
//! (as systemd's `KillMode=control-group` would), so a job never leaves orphans running. A
//! [`GroupGuard`] kills the group if the future running it is dropped half-way.

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
}

impl ProcessSpec {
    pub fn new(program: impl Into<OsString>) -> Self {
        ProcessSpec {
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
            cwd: None,
            stdin: false,
        }
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

/// The registry of live process groups: one file per group under the state directory, so a
/// daemon restarted after a crash can end the groups its predecessor left running.
pub mod registry {
    use std::os::unix::fs::DirBuilderExt;
    use std::path::{Path, PathBuf};
    use std::sync::OnceLock;

    use nix::sys::signal::{Signal, killpg};
    use nix::unistd::Pid;

    static DIR: OnceLock<PathBuf> = OnceLock::new();

    /// Every child's environment names the registry it belongs to, so the next start can find
    /// a group whose record a kill -9 of the daemon prevented (between fork and the record).
    pub(super) const MARKER_VAR: &str = "ATPRED_GROUPS";

    /// The value of [`MARKER_VAR`] for this daemon's children, once the registry is started.
    pub(super) fn marker() -> Option<&'static std::path::Path> {
        DIR.get().map(PathBuf::as_path)
    }

    /// Starts recording groups under `dir` after ending those a previous daemon left behind.
    /// Returns a description of each group ended.
    pub fn start(dir: &Path) -> std::io::Result<Vec<String>> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)?;
        let mut ended = reap(dir);
        ended.extend(sweep(dir));
        let _ = DIR.set(dir.to_owned());
        Ok(ended)
    }

    /// Records group `pgid`; returns the record's path.
    pub(super) fn record(pgid: Pid) -> Option<PathBuf> {
        let dir = DIR.get()?;
        let start = start_time(pgid.as_raw())?;
        let path = dir.join(pgid.as_raw().to_string());
        std::fs::write(&path, format!("{} {start}\n", boot_id())).ok()?;
        Some(path)
    }

    /// Kills every recorded group that still has members started since it was recorded (in
    /// this boot), and removes the records.
    fn reap(dir: &Path) -> Vec<String> {
        let mut ended = Vec::new();
        let boot = boot_id();
        for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
            let path = entry.path();
            let pgid = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok());
            let recorded = std::fs::read_to_string(&path).unwrap_or_default();
            let mut fields = recorded.split_whitespace();
            let (same_boot, since) = (
                fields.next() == Some(boot.as_str()),
                fields.next().and_then(|s| s.parse::<u64>().ok()),
            );
            if let (Some(pgid), true, Some(since)) = (pgid, same_boot, since) {
                let members = members(pgid, since);
                if !members.is_empty() && killpg(Pid::from_raw(pgid), Signal::SIGKILL).is_ok() {
                    ended.push(format!("process group {pgid} ({})", members.join(", ")));
                    // Gone before the caller cleans up after them (partial folders).
                    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
                    while !self::members(pgid, since).is_empty()
                        && std::time::Instant::now() < deadline
                    {
                        std::thread::sleep(std::time::Duration::from_millis(10));
                    }
                }
            }
            let _ = std::fs::remove_file(&path);
        }
        ended
    }

    /// Kills the groups of live processes whose environment carries our marker: children of a
    /// daemon that died before it could record them. Only processes we may signal are read
    /// (their environ is readable by their owner and root).
    fn sweep(dir: &Path) -> Vec<String> {
        let needle = format!("{MARKER_VAR}={}", dir.display()).into_bytes();
        let me = std::process::id() as i32;
        let own_group = nix::unistd::getpgrp().as_raw();
        let mut groups = std::collections::BTreeSet::new();
        for pid in std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|&pid| pid != me)
        {
            let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
                continue;
            };
            if !environ
                .split(|&b| b == 0)
                .any(|var| var == needle.as_slice())
            {
                continue;
            }
            let Some(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok() else {
                continue;
            };
            if let Some((_, fields)) = parse_stat(&stat)
                && fields.first().is_some_and(|state| *state != "Z")
                && let Some(pgid) = fields.get(2).and_then(|g| g.parse::<i32>().ok())
            {
                groups.insert(pgid);
            }
        }
        let mut ended = Vec::new();
        for pgid in groups {
            if pgid > 1
                && pgid != me
                && pgid != own_group
                && killpg(Pid::from_raw(pgid), Signal::SIGKILL).is_ok()
            {
                ended.push(format!("process group {pgid} (found by its environment)"));
            }
        }
        ended
    }

    /// Names of the live (not zombie) processes in group `pgid` that started at or after
    /// `since` (clock ticks).
    fn members(pgid: i32, since: u64) -> Vec<String> {
        std::fs::read_dir("/proc")
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter_map(|pid| {
                let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
                let (comm, fields) = parse_stat(&stat)?;
                let alive = fields.first().is_some_and(|state| *state != "Z");
                let group: i32 = fields.get(2)?.parse().ok()?;
                let start: u64 = fields.get(19)?.parse().ok()?;
                (alive && group == pgid && start >= since).then_some(comm)
            })
            .collect()
    }

    fn start_time(pid: i32) -> Option<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        parse_stat(&stat)?.1.get(19)?.parse().ok()
    }

    /// `(comm, fields after the comm)` of a /proc/PID/stat line; the comm may hold spaces.
    fn parse_stat(stat: &str) -> Option<(String, Vec<&str>)> {
        let open = stat.find('(')?;
        let close = stat.rfind(')')?;
        let comm = stat.get(open + 1..close)?.to_owned();
        Some((comm, stat.get(close + 1..)?.split_whitespace().collect()))
    }

    fn boot_id() -> String {
        std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
            .unwrap_or_default()
            .trim()
            .to_owned()
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn parses_stat_with_spaces_in_comm() {
            let (comm, f) = super::parse_stat(
                "42 (my (odd) cmd) S 1 42 42 0 -1 4194304 1 2 3 4 5 6 7 8 20 0 1 0 12345 0",
            )
            .unwrap();
            assert_eq!(comm, "my (odd) cmd");
            assert_eq!(f[2], "42");
            assert_eq!(f[19], "12345");
        }
    }
}
