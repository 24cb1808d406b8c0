//! What the fault-injection tests (`fault_*`) share: a seeded random source whose seed is
//! printed (and can be given back with `ATPRED_FAULT_SEED` to replay a failure), the
//! `ATPRED_FAULT_LONG=1` switch for the long variants, the summary rows the suite prints, the
//! search for orphaned PostgreSQL client tools in `/proc`, a process's RSS, and a `run --wait`
//! whose replies are watched as they arrive (to strike at a chosen phase of a run).
//!
//! Each scenario counts what it injected and what it lost, prints it, records one row of the
//! summary table (`target/fault-summary/<scenario>.tsv`, printed by `.ci/run`) and only then
//! asserts, so a failing run still leaves its row behind.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use nix::unistd::Pid;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::Value;

use crate::harness::process::{self, kill_and_reap};
use crate::harness::{self, Daemon};

/// True when `ATPRED_FAULT_LONG=1`: the scenarios run many more rounds.
pub fn long() -> bool {
    std::env::var("ATPRED_FAULT_LONG").is_ok_and(|v| v == "1")
}

/// `short` rounds, or `long_rounds` with `ATPRED_FAULT_LONG=1`.
pub fn rounds(short: usize, long_rounds: usize) -> usize {
    if long() { long_rounds } else { short }
}

/// A random source for `scenario`, seeded from `ATPRED_FAULT_SEED` or the clock; the seed is
/// printed so a failure can be replayed.
pub fn seeded(scenario: &str) -> (StdRng, u64) {
    let seed = match std::env::var("ATPRED_FAULT_SEED") {
        Ok(text) => text
            .parse()
            .unwrap_or_else(|e| panic!("ATPRED_FAULT_SEED={text:?}: {e}")),
        Err(_) => std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .expect("the clock is after 1970")
            .as_nanos() as u64,
    };
    eprintln!("{scenario}: seed {seed} (replay with ATPRED_FAULT_SEED={seed})");
    (StdRng::seed_from_u64(seed), seed)
}

/// One row of the summary table.
pub struct Row<'a> {
    pub scenario: &'a str,
    pub seed: Option<u64>,
    pub runs: usize,
    pub faults: usize,
    pub losses: usize,
    pub crashes: usize,
    pub notes: String,
}

/// Prints `row` and writes it to `target/fault-summary/<scenario>.tsv` (the latest run of each
/// scenario; `.ci/run` prints them all as one table).
pub fn record(row: &Row) {
    let seed = row.seed.map_or_else(|| "-".to_owned(), |s| s.to_string());
    let line = format!(
        "{}\t{}\t{}\t{}\t{}\t{}\t{}\n",
        row.scenario, row.runs, row.faults, row.losses, row.crashes, seed, row.notes
    );
    eprintln!(
        "FAULT SUMMARY {}: runs {}, faults injected {}, losses {}, crashes {} (seed {seed}); {}",
        row.scenario, row.runs, row.faults, row.losses, row.crashes, row.notes
    );
    let dir = summary_dir();
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
    let path = dir.join(format!("{}.tsv", row.scenario));
    std::fs::write(&path, line).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// `target/fault-summary`, found from the binary under test (`target/debug/atpred`).
fn summary_dir() -> PathBuf {
    Path::new(env!("CARGO_BIN_EXE_atpred"))
        .parent()
        .and_then(Path::parent)
        .expect("the daemon binary lives in target/<profile>/")
        .join("fault-summary")
}

/// PostgreSQL client tools (pg_dump, pg_restore, psql) still alive whose command line names any
/// of `markers` (this test's server socket dir, its backup-dir): the children of a dead daemon
/// that nobody ended. Zombies are not counted: they have exited.
pub fn pg_tools_naming(markers: &[&Path]) -> Vec<(Pid, String)> {
    let markers: Vec<String> = markers
        .iter()
        .map(|m| m.to_string_lossy().into_owned())
        .collect();
    process::all_processes()
        .into_iter()
        .filter(|p| p.state != 'Z' && ["pg_dump", "pg_restore", "psql"].contains(&p.comm.as_str()))
        .filter_map(|p| {
            let raw = std::fs::read(format!("/proc/{}/cmdline", p.pid)).ok()?;
            let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
            markers
                .iter()
                .any(|m| cmdline.contains(m.as_str()))
                .then_some((p.pid, cmdline))
        })
        .collect()
}

/// The resident set size of `pid` in KiB (`VmRSS` in `/proc/PID/status`).
pub fn rss_kib(pid: Pid) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_else(|e| panic!("/proc/{pid}/status: {e}"));
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// The daemon's open file descriptors (to prove none leak).
pub fn open_fds(pid: Pid) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|rd| rd.count())
        .unwrap_or_else(|e| panic!("/proc/{pid}/fd: {e}"))
}

/// One reply line of a watched run and when it arrived.
type Stamped = (Instant, Value);

/// `atprectl --json run JOB --wait`, its reply lines collected as they arrive.
pub struct WatchedRun {
    child: Child,
    lines: Arc<Mutex<Vec<Stamped>>>,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl WatchedRun {
    pub fn start(daemon: &Daemon, job: &str) -> WatchedRun {
        let mut child = Command::new(env!("CARGO_BIN_EXE_atprectl"))
            .env_remove("ATPRED_SOCKET")
            .env_remove("NOTIFY_SOCKET")
            .arg("--socket")
            .arg(daemon.socket())
            .args(["--json", "run", job, "--wait"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn atprectl");
        let stdout = child.stdout.take().expect("piped stdout");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&lines);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let value = serde_json::from_str(&line).unwrap_or(Value::String(line));
                sink.lock().expect("lock").push((Instant::now(), value));
            }
        });
        WatchedRun {
            child,
            lines,
            reader: Some(reader),
        }
    }

    /// When the first reply matching `pred` arrived, waiting at most `timeout` for it.
    pub fn wait_for(&self, timeout: Duration, pred: impl Fn(&Value) -> bool) -> Option<Instant> {
        let mut at = None;
        harness::wait_until(timeout, || {
            at = self
                .lines
                .lock()
                .expect("lock")
                .iter()
                .find(|(_, v)| pred(v))
                .map(|(t, _)| *t);
            at.is_some()
        });
        at
    }

    /// When a progress message starting with `prefix` arrived (at most `timeout`).
    pub fn progress(&self, prefix: &str, timeout: Duration) -> Option<Instant> {
        self.wait_for(timeout, |v| {
            v["type"] == "progress" && v["message"].as_str().is_some_and(|m| m.starts_with(prefix))
        })
    }

    /// True once the `finished` reply has arrived.
    pub fn is_finished(&self) -> bool {
        self.lines
            .lock()
            .expect("lock")
            .iter()
            .any(|(_, v)| v["type"] == "finished")
    }

    /// Waits (at most `timeout`) for atprectl to exit — it does when the run ends or the daemon
    /// dies — and returns every reply it got.
    pub fn finish(mut self, timeout: Duration) -> Vec<Stamped> {
        let ended = process::wait_timeout(&mut self.child, timeout).is_some();
        assert!(ended, "atprectl run --wait did not end within {timeout:?}");
        if let Some(reader) = self.reader.take() {
            reader.join().expect("the reader thread");
        }
        self.lines.lock().expect("lock").clone()
    }
}

impl Drop for WatchedRun {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}
