//! One `atpred` under measurement: its config, its start (timed to READY=1 on a notify socket we
//! bind ourselves), its stop, and what /proc says about it.

use std::fs::{self, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::Env;

const READY_TIMEOUT: Duration = Duration::from_secs(30);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// Writes `<dir>/atpred.toml`: state, backups and socket inside `dir`, the bench's PostgreSQL,
/// logs to stderr (a file), then `jobs` (raw TOML).
pub fn write_config(env: &Env, dir: &Path, jobs: &str) -> Result<()> {
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    let p = |name: &str| format!("{:?}", dir.join(name).display().to_string());
    let s = |path: &Path| format!("{:?}", path.display().to_string());
    let text = format!(
        "[daemon]\nstate-dir = {}\nbackup-dir = {}\nsocket = {}\nsocket-group = \"\"\n\
         stop-timeout = \"1s\"\nlog = \"stderr\"\nlog-level = \"info\"\n\n\
         [postgres]\nhost = {}\nport = 5432\nuser = {:?}\ndbname = {:?}\npassfile = {}\n\
         bin-dir = {}\n\n{jobs}",
        p("state"),
        p("backups"),
        p("atpred.sock"),
        s(&env.pg_host),
        env.pg_user,
        env.db,
        s(&env.passfile),
        s(&env.pg_bin),
    );
    let path = dir.join("atpred.toml");
    let _ = fs::remove_file(&path);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)
        .with_context(|| format!("create {}", path.display()))?;
    std::io::Write::write_all(&mut file, text.as_bytes())?;
    Ok(())
}

/// A running daemon; dropping it kills it (SIGKILL) if [`Daemon::stop`] was not called.
pub struct Daemon {
    child: Option<Child>,
    pub pid: u32,
    pub socket: PathBuf,
    dir: PathBuf,
}

impl Daemon {
    /// Starts `atpred --config <dir>/atpred.toml` and waits for READY=1; returns the daemon and
    /// the time from just before `spawn` to the arrival of the READY=1 datagram.
    pub fn start(env: &Env, dir: &Path) -> Result<(Daemon, Duration)> {
        let notify_path = dir.join("notify.sock");
        let _ = fs::remove_file(&notify_path);
        let notify = UnixDatagram::bind(&notify_path)
            .with_context(|| format!("bind {}", notify_path.display()))?;
        notify.set_read_timeout(Some(Duration::from_millis(50)))?;
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join("daemon.log"))?;
        let mut cmd = Command::new(env.bin.join("atpred"));
        cmd.arg("--config")
            .arg(dir.join("atpred.toml"))
            .env("NOTIFY_SOCKET", &notify_path)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let t0 = Instant::now();
        let child = cmd.spawn().context("spawn atpred")?;
        let mut daemon = Daemon {
            pid: child.id(),
            child: Some(child),
            socket: dir.join("atpred.sock"),
            dir: dir.to_owned(),
        };
        let mut buf = [0u8; 4096];
        loop {
            match notify.recv(&mut buf) {
                Ok(n) => {
                    let elapsed = t0.elapsed();
                    let msg = String::from_utf8_lossy(&buf[..n]);
                    if msg.lines().any(|l| l == "READY=1") {
                        return Ok((daemon, elapsed));
                    }
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) => return Err(e).context("receive on the notify socket"),
            }
            if let Some(child) = daemon.child.as_mut()
                && let Some(status) = child.try_wait()?
            {
                daemon.child = None;
                bail!(
                    "atpred exited with {status} before READY=1; see {}/daemon.log",
                    dir.display()
                );
            }
            if t0.elapsed() > READY_TIMEOUT {
                bail!("no READY=1 from atpred within {READY_TIMEOUT:?}");
            }
        }
    }

    /// SIGTERM, then waits for a clean exit (SIGKILL after a minute).
    pub fn stop(mut self) -> Result<()> {
        let Some(mut child) = self.child.take() else {
            return Ok(());
        };
        let _ = kill(Pid::from_raw(self.pid as i32), Signal::SIGTERM);
        let t0 = Instant::now();
        loop {
            if let Some(status) = child.try_wait()? {
                if !status.success() {
                    bail!(
                        "atpred stopped with {status}; see {}/daemon.log",
                        self.dir.display()
                    );
                }
                return Ok(());
            }
            if t0.elapsed() > STOP_TIMEOUT {
                let _ = child.kill();
                let _ = child.wait();
                bail!("atpred did not stop within {STOP_TIMEOUT:?} of SIGTERM");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// A field of /proc/PID/status in KiB (`VmRSS`, `VmHWM`).
    pub fn status_kib(&self, key: &str) -> Result<u64> {
        status_kib(self.pid, key)
    }

    /// utime + stime of the daemon itself, in clock ticks.
    pub fn cpu_ticks(&self) -> Result<u64> {
        cpu_ticks_of(self.pid)
    }
}

impl Daemon {
    /// Nanoseconds on a CPU of the daemon's live threads (/proc/PID/task/*/schedstat): exact,
    /// where utime+stime are sampled at clock ticks, but blind to threads that have exited.
    pub fn cpu_ns_live_threads(&self) -> Result<u64> {
        let mut total = 0;
        for task in fs::read_dir(format!("/proc/{}/task", self.pid))? {
            let path = task?.path().join("schedstat");
            // A thread may exit between the listing and the read.
            if let Ok(text) = fs::read_to_string(&path) {
                total += text
                    .split_whitespace()
                    .next()
                    .and_then(|f| f.parse::<u64>().ok())
                    .with_context(|| format!("{}", path.display()))?;
            }
        }
        Ok(total)
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

pub fn status_kib(pid: u32, key: &str) -> Result<u64> {
    status_kib_in(&format!("/proc/{pid}/status"), key)
}

/// A `Key:   123 kB` line of a /proc file such as /proc/PID/status or /proc/meminfo.
pub fn status_kib_in(path: &str, key: &str) -> Result<u64> {
    let text = fs::read_to_string(path).with_context(|| format!("read {path}"))?;
    text.lines()
        .find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .with_context(|| format!("{key} in {path}"))
}

/// utime + stime of a process (all its threads, also those that have exited), in clock ticks.
pub fn cpu_ticks_of(pid: u32) -> Result<u64> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat"))?;
    // Fields after the command name (which may hold spaces) start at field 3, "state".
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let field = |n: usize| -> Result<u64> {
        fields
            .get(n - 3)
            .and_then(|f| f.parse().ok())
            .with_context(|| format!("field {n} of /proc/{pid}/stat"))
    };
    Ok(field(14)? + field(15)?)
}

/// Clock ticks per second of /proc/PID/stat (USER_HZ).
pub fn clock_ticks() -> u64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100)
}
