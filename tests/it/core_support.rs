//! Helpers shared by the `core_*` tests: `atprectl --json` replies, the run history, job tables,
//! and files that jobs write to tell the test what they are doing (pids, start and end marks).

use std::path::Path;
use std::time::Duration;

use nix::unistd::Pid;
use serde_json::Value;

use crate::harness::{self, CtlOutput, Daemon, toml_str};

/// A generous bound for conditions that normally hold within a second or two.
pub const WAIT: Duration = Duration::from_secs(15);

/// Every stdout line of `out` as JSON; panics (with the output) on a line that is not JSON.
pub fn json_lines(out: &CtlOutput) -> Vec<Value> {
    out.stdout
        .lines()
        .map(|l| {
            serde_json::from_str(l).unwrap_or_else(|e| {
                panic!(
                    "not JSON ({e}): {l:?}\nstdout:\n{}\nstderr:\n{}",
                    out.stdout, out.stderr
                )
            })
        })
        .collect()
}

/// Runs `atprectl --json ARGS`, expects exit 0 and exactly one JSON line, returns it.
pub fn ctl_json(daemon: &Daemon, args: &[&str]) -> Value {
    let out = daemon.ctl(std::iter::once("--json").chain(args.iter().copied()));
    assert_eq!(out.status, 0, "atprectl --json {args:?}: {out:?}");
    let mut lines = json_lines(&out);
    assert_eq!(lines.len(), 1, "one reply line for {args:?}: {out:?}");
    lines.remove(0)
}

/// The run history (newest first), optionally of one job.
pub fn history(daemon: &Daemon, job: Option<&str>) -> Vec<Value> {
    let mut args = vec!["history", "-n", "1000"];
    args.extend(job);
    let reply = ctl_json(daemon, &args);
    assert_eq!(reply["type"], "history", "{reply}");
    reply["runs"].as_array().expect("runs is an array").clone()
}

/// Waits until the history holds at least `n` records of `job` that satisfy `pred`; returns
/// all of that job's records (newest first).
pub fn wait_for_runs(
    daemon: &Daemon,
    job: &str,
    n: usize,
    pred: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let mut runs = Vec::new();
    let ok = harness::wait_until(WAIT, || {
        runs = history(daemon, Some(job));
        runs.iter().filter(|r| pred(r)).count() >= n
    });
    assert!(
        ok,
        "no {n} matching runs of {job} within {WAIT:?}: {runs:#?}"
    );
    runs
}

/// Waits for the run `run_id` to appear in the history and returns its record.
pub fn wait_for_run(daemon: &Daemon, job: &str, run_id: &str) -> Value {
    let runs = wait_for_runs(daemon, job, 1, |r| r["run_id"] == run_id);
    runs.into_iter()
        .find(|r| r["run_id"] == run_id)
        .expect("just found")
}

/// Starts `job` without waiting (`atprectl --json run JOB`) and returns its run id.
pub fn start_run(daemon: &Daemon, job: &str) -> String {
    let reply = ctl_json(daemon, &["run", job]);
    assert_eq!(reply["type"], "accepted", "{reply}");
    reply["run_id"].as_str().expect("run_id").to_owned()
}

/// `[jobs.NAME]` of kind command running `argv`, plus `extra` TOML lines (`timeout` defaults to
/// "1m" unless `extra` sets it).
pub fn job(name: &str, argv: &[&str], extra: &str) -> String {
    let argv: Vec<String> = argv.iter().map(|a| toml_str(a)).collect();
    let timeout = if extra.contains("timeout =") {
        ""
    } else {
        "timeout = \"1m\"\n"
    };
    format!(
        "[jobs.{name}]\nkind = \"command\"\ncommand = [{}]\n{timeout}{extra}\n",
        argv.join(", ")
    )
}

/// A job that runs the shell script `script`.
pub fn sh_job(name: &str, script: &str, extra: &str) -> String {
    job(name, &["sh", "-c", script], extra)
}

/// Waits for `path` to hold a complete line (jobs write `... > F` then the test reads F) and
/// returns its whitespace-separated words.
pub fn wait_for_words(path: &Path) -> Vec<String> {
    let mut words = Vec::new();
    let ok = harness::wait_until(WAIT, || {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        words = text.split_whitespace().map(str::to_owned).collect();
        text.ends_with('\n')
    });
    assert!(ok, "{} was not written within {WAIT:?}", path.display());
    words
}

/// The pids a job wrote to `path` (see [`wait_for_words`]).
pub fn wait_for_pids(path: &Path) -> Vec<Pid> {
    wait_for_words(path)
        .iter()
        .map(|w| Pid::from_raw(w.parse().unwrap_or_else(|e| panic!("pid {w:?}: {e}"))))
        .collect()
}

/// Panics unless every process of group `pgid` is gone: none alive at once, and within 5 s none
/// left at all (not even a zombie).
pub fn assert_group_gone(pgid: Pid) {
    let alive: Vec<_> = harness::process_group_members(pgid)
        .into_iter()
        .filter(|p| p.state != 'Z')
        .collect();
    assert!(
        alive.is_empty(),
        "process group {pgid} still runs: {alive:?}"
    );
    let mut left = Vec::new();
    let gone = harness::wait_until(Duration::from_secs(5), || {
        left = harness::process_group_members(pgid);
        left.is_empty()
    });
    assert!(gone, "process group {pgid} left zombies: {left:?}");
}

/// Parses an RFC 3339 time of a run record.
pub fn time(value: &Value) -> chrono::DateTime<chrono::Utc> {
    value
        .as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an RFC 3339 time: {value}"))
}

/// Panics if the daemon log shows a panic.
pub fn assert_no_panic(daemon: &Daemon) {
    let log = daemon.log();
    assert!(
        !log.contains("panicked"),
        "the daemon panicked:\n{}",
        harness::tail(&log, 40)
    );
}
