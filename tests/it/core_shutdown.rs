//! Stopping the real daemon: SIGTERM lets a running job finish within `stop-timeout`, cancels it
//! (its whole process group) past that, and a second signal cancels at once; every way out sends
//! STOPPING=1, removes the socket and exits 0.

use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::signal::Signal;
use serde_json::Value;

use crate::core_support::{WAIT, assert_group_gone, sh_job, start_run, wait_for_pids};
use crate::harness::{self, Daemon, line};

/// The record of `run_id` in the persisted history (read after the daemon has exited).
fn recorded(dir: &Path, run_id: &str) -> Value {
    let text = std::fs::read_to_string(dir.join("state/history.jsonl")).expect("history.jsonl");
    let line = text
        .lines()
        .find(|l| l.contains(run_id))
        .unwrap_or_else(|| panic!("run {run_id} not in the history:\n{text}"));
    serde_json::from_str(line).expect("a JSON record")
}

/// Sends `signal`, waits at most `limit` for exit 0; returns how long it took.
fn stop(daemon: &mut Daemon, signal: Signal, limit: Duration) -> Duration {
    let started = Instant::now();
    daemon.signal(signal);
    let status = daemon
        .wait_exit(limit)
        .unwrap_or_else(|| panic!("atpred still runs {limit:?} after {signal}"));
    assert!(status.success(), "{status}");
    assert_eq!(
        daemon.notify().count(line("STOPPING=1")),
        1,
        "{:?}",
        daemon.notify().messages()
    );
    assert!(
        !daemon.socket().exists(),
        "the socket file is removed on exit"
    );
    started.elapsed()
}

#[test]
fn sigterm_lets_a_running_job_finish() {
    let dir = harness::tempdir();
    let mark = dir.path().join("started");
    let mut daemon = Daemon::builder(&dir)
        .stop_timeout("10s")
        .toml(&sh_job(
            "short",
            &format!("touch {}; sleep 1", mark.display()),
            "",
        ))
        .spawn();
    let run_id = start_run(&daemon, "short");
    assert!(
        harness::wait_until(WAIT, || mark.exists()),
        "the job started"
    );
    stop(&mut daemon, Signal::SIGTERM, Duration::from_secs(15));
    let run = recorded(dir.path(), &run_id);
    assert_eq!(run["outcome"], "succeeded", "{run}");
}

#[test]
fn sigint_stops_an_idle_daemon() {
    let dir = harness::tempdir();
    let mut daemon = Daemon::builder(&dir).toml(&sh_job("x", "true", "")).spawn();
    stop(&mut daemon, Signal::SIGINT, WAIT);
}

fn long_job(dir: &Path, stop_timeout: &str) -> (Daemon, String, Vec<nix::unistd::Pid>) {
    let pids = dir.join("pids");
    let daemon = Daemon::builder(dir)
        .stop_timeout(stop_timeout)
        .toml(&sh_job(
            "long",
            &format!("sleep 100 & echo $$ $! > {}; wait", pids.display()),
            "",
        ))
        .spawn();
    let run_id = start_run(&daemon, "long");
    let pids = wait_for_pids(&pids);
    (daemon, run_id, pids)
}

#[test]
fn sigterm_cancels_a_job_past_the_stop_timeout() {
    let dir = harness::tempdir();
    let (mut daemon, run_id, pids) = long_job(dir.path(), "1s");
    let took = stop(&mut daemon, Signal::SIGTERM, Duration::from_secs(20));
    assert!(
        took >= Duration::from_millis(900),
        "the job got its stop-timeout: {took:?}"
    );
    assert!(
        took < Duration::from_secs(6),
        "cancelled at the 1s stop-timeout: {took:?}"
    );
    assert_eq!(recorded(dir.path(), &run_id)["outcome"], "cancelled");
    assert_group_gone(pids[0]);
}

#[test]
fn a_second_sigterm_cancels_at_once() {
    let dir = harness::tempdir();
    let (mut daemon, run_id, pids) = long_job(dir.path(), "60s");
    let started = Instant::now();
    daemon.signal(Signal::SIGTERM);
    daemon
        .notify()
        .wait_for(line("STOPPING=1"), WAIT)
        .expect("STOPPING=1 after the first SIGTERM");
    assert!(
        daemon.is_running(),
        "the job holds the daemon within its 60s stop-timeout"
    );
    let took = stop(&mut daemon, Signal::SIGTERM, Duration::from_secs(20));
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "the second SIGTERM cancelled at once: {took:?}"
    );
    assert_eq!(recorded(dir.path(), &run_id)["outcome"], "cancelled");
    assert_group_gone(pids[0]);
}

#[test]
fn a_run_still_waiting_for_a_slot_at_sigterm_never_starts() {
    let dir = harness::tempdir();
    let (started, queued) = (dir.path().join("started"), dir.path().join("queued-ran"));
    let mut daemon = Daemon::builder(&dir)
        .stop_timeout("10s")
        .max_concurrent_jobs(1)
        .toml(&sh_job(
            "first",
            &format!("touch {}; sleep 1", started.display()),
            "",
        ))
        .toml(&sh_job(
            "queued",
            &format!("touch {}", queued.display()),
            "",
        ))
        .spawn();
    let first = start_run(&daemon, "first");
    assert!(harness::wait_until(WAIT, || started.exists()), "first runs");
    let second = start_run(&daemon, "queued");
    stop(&mut daemon, Signal::SIGTERM, Duration::from_secs(15));
    assert_eq!(recorded(dir.path(), &first)["outcome"], "succeeded");
    assert!(
        !queued.exists(),
        "a run that had not started when the daemon was told to stop must not start afterwards"
    );
    assert_eq!(recorded(dir.path(), &second)["outcome"], "cancelled");
}
