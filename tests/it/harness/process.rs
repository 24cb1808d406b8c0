//! Child processes of the tests and what `/proc` says about processes.
//!
//! Running a command with a deadline (a frozen server must fail a test, not hang it), running it as
//! another user, killing and reaping our own children, and reading `/proc` to find children and
//! process-group members (to check that the daemon leaves no orphans).

use std::fs::File;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// What a finished command printed, and how it ended.
#[derive(Debug, Clone)]
pub struct RunOutput {
    /// The exit code, or 128 + the signal number when a signal ended it (as a shell reports it).
    pub status: i32,
    pub stdout: String,
    pub stderr: String,
}

/// Runs `cmd` (stdin closed) and waits at most `timeout`; past it the command is killed and the
/// test panics with what it printed so far.
pub fn run_with_timeout(cmd: &mut Command, timeout: Duration) -> RunOutput {
    let scratch = tempfile::tempdir().expect("create a scratch dir for command output");
    let out_path = scratch.path().join("stdout");
    let err_path = scratch.path().join("stderr");
    let out = File::create(&out_path).expect("create stdout capture file");
    let err = File::create(&err_path).expect("create stderr capture file");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(out)
        .stderr(err)
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let status = wait_timeout(&mut child, timeout);
    let read =
        |p: &Path| String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned();
    let (stdout, stderr) = (read(&out_path), read(&err_path));
    match status {
        Some(status) => RunOutput {
            status: status_code(status),
            stdout,
            stderr,
        },
        None => {
            kill_and_reap(&mut child);
            panic!(
                "{cmd:?} did not finish within {timeout:?}\nstdout:\n{stdout}\nstderr:\n{stderr}"
            )
        }
    }
}

/// Waits for `child` to exit, at most `timeout`; `None` if it is still running.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() >= deadline => return None,
            Ok(None) => std::thread::sleep(Duration::from_millis(10)),
            Err(e) => panic!("wait for child {}: {e}", child.id()),
        }
    }
}

/// SIGKILL (it ends a stopped process too), then reap, so no zombie is left behind.
/// Never panics: used in `Drop`.
pub fn kill_and_reap(child: &mut Child) {
    if let Ok(None) = child.try_wait() {
        let _ = kill(pid_of(child), Signal::SIGKILL);
        let _ = child.wait();
    }
}

/// The child's pid as nix wants it.
pub fn pid_of(child: &Child) -> Pid {
    Pid::from_raw(i32::try_from(child.id()).expect("pid fits in i32"))
}

/// The exit code, or 128 + signal number when killed by a signal.
pub fn status_code(status: ExitStatus) -> i32 {
    status
        .code()
        .or_else(|| status.signal().map(|s| 128 + s))
        .expect("an exit status has a code or a signal")
}

/// Makes `cmd` run as `uid:gid` (with no supplementary groups: std drops them when root sets a
/// uid). Only root can do this; anyone else gets a clear panic.
pub fn command_as(cmd: &mut Command, uid: u32, gid: u32) -> &mut Command {
    let me = nix::unistd::geteuid().as_raw();
    if uid != me {
        assert!(
            super::is_root(),
            "running a command as uid {uid} needs root (we are uid {me})"
        );
        cmd.uid(uid).gid(gid);
    }
    cmd
}

/// Finds an executable named `name` on `PATH`.
pub fn find_in_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

/// A regular file with some execute bit set.
pub fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// One line of `/proc/PID/stat`, the fields the tests need.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcInfo {
    pub pid: Pid,
    pub ppid: Pid,
    pub pgid: Pid,
    /// `R`, `S`, `T` (stopped), `Z` (zombie), ...
    pub state: char,
    pub comm: String,
}

impl ProcInfo {
    /// Reads `/proc/PID/stat`; `None` if the process is gone.
    pub fn read(pid: Pid) -> Option<ProcInfo> {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        // comm may contain spaces and parentheses: it ends at the last ')'.
        let open = stat.find('(')?;
        let close = stat.rfind(')')?;
        let comm = stat[open + 1..close].to_string();
        let mut rest = stat[close + 1..].split_whitespace();
        let state = rest.next()?.chars().next()?;
        let mut num = || rest.next()?.parse::<i32>().ok().map(Pid::from_raw);
        let (ppid, pgid) = (num()?, num()?);
        Some(ProcInfo {
            pid,
            ppid,
            pgid,
            state,
            comm,
        })
    }
}

/// Every process visible in `/proc` right now.
pub fn all_processes() -> Vec<ProcInfo> {
    let entries = std::fs::read_dir("/proc").expect("read /proc");
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter_map(|pid| ProcInfo::read(Pid::from_raw(pid)))
        .collect()
}

/// The direct children of `pid` (zombies included: an unreaped child is worth seeing).
pub fn proc_children(pid: Pid) -> Vec<ProcInfo> {
    all_processes()
        .into_iter()
        .filter(|p| p.ppid == pid)
        .collect()
}

/// All descendants of `pid`, depth first.
pub fn descendants(pid: Pid) -> Vec<ProcInfo> {
    let all = all_processes();
    let mut found = Vec::new();
    let mut stack = vec![pid];
    while let Some(parent) = stack.pop() {
        for p in all.iter().filter(|p| p.ppid == parent) {
            stack.push(p.pid);
            found.push(p.clone());
        }
    }
    found
}

/// The members of process group `pgid` (zombies included).
pub fn process_group_members(pgid: Pid) -> Vec<ProcInfo> {
    all_processes()
        .into_iter()
        .filter(|p| p.pgid == pgid)
        .collect()
}

/// True if `pid` exists and is not a zombie (a zombie has exited; it only waits to be reaped).
pub fn process_alive(pid: Pid) -> bool {
    ProcInfo::read(pid).is_some_and(|p| p.state != 'Z')
}
