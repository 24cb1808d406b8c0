//! The runner through the real daemon: a timeout or a cancel ends the job's whole process
//! group (checked in `/proc`), transient failures are retried and permanent ones are not, and
//! `max-concurrent-jobs` holds runs of different jobs apart.

use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::core_support::{
    assert_group_gone, json_lines, sh_job, start_run, wait_for_pids, wait_for_run,
};
use crate::harness::{self, Daemon, process_alive};

/// A shell that starts two background sleeps, writes its own pid (= its process group) and
/// theirs to `pids`, then waits. `prelude` runs first (e.g. a `trap`).
fn group_script(prelude: &str, pids: &Path) -> String {
    format!(
        "{prelude} sleep 1000 & a=$!; sleep 1000 & b=$!; echo $$ $a $b > {}; wait",
        pids.display()
    )
}

/// `atprectl --json run JOB --wait`: the exit code and the `finished` record.
fn run_wait(daemon: &Daemon, job: &str) -> (i32, Value) {
    let out = daemon.ctl(["--json", "run", job, "--wait"]);
    let lines = json_lines(&out);
    let last = lines.last().unwrap_or_else(|| panic!("no reply: {out:?}"));
    assert_eq!(last["type"], "finished", "{out:?}");
    (out.status, last["run"].clone())
}

fn assert_all_gone(pids: &[nix::unistd::Pid]) {
    for pid in pids {
        assert!(!process_alive(*pid), "process {pid} of the job survived");
    }
    assert_group_gone(pids[0]);
}

/// A daemon with job `name`: a shell that runs `prelude`, starts two `sleep`s and writes the
/// group's pids to the returned file. `extra` is more of the job's TOML.
fn group_daemon(name: &str, prelude: &str, extra: &str) -> (tempfile::TempDir, Daemon, PathBuf) {
    let dir = harness::tempdir();
    let pids = dir.path().join("pids");
    let daemon = Daemon::builder(&dir)
        .toml(&sh_job(name, &group_script(prelude, &pids), extra))
        .spawn();
    (dir, daemon, pids)
}

/// A daemon running a job whose shell ignores SIGTERM and has two children: the daemon, its
/// directory, and the group's pids (the shell, the group leader, first).
fn stubborn_group_running() -> (tempfile::TempDir, Daemon, Vec<nix::unistd::Pid>) {
    let (dir, daemon, pids) = group_daemon("stubborn", "trap '' TERM;", "");
    start_run(&daemon, "stubborn");
    let pids = wait_for_pids(&pids);
    (dir, daemon, pids)
}

/// A group whose record never reached the registry (a kill -9 between fork and the record) is
/// found by the marker in its environment and ended at the next start.
#[test]
fn a_restart_ends_a_group_whose_record_was_lost() {
    let (dir, mut daemon, pids) = stubborn_group_running();
    let records = dir.path().join("state/groups");
    let removed = std::fs::read_dir(&records)
        .unwrap()
        .flatten()
        .map(|e| std::fs::remove_file(e.path()).unwrap())
        .count();
    assert_eq!(removed, 1, "one recorded group in {}", records.display());
    daemon.signal(nix::sys::signal::Signal::SIGKILL);
    assert!(
        daemon
            .wait_exit(std::time::Duration::from_secs(10))
            .is_some()
    );
    daemon.restart();
    assert_all_gone(&pids);
    let log = daemon.log();
    let line = log
        .lines()
        .find(|l| l.contains(&format!("ended process group {} (", pids[0])))
        .unwrap_or_else(|| panic!("no line for the group:\n{log}"));
    assert!(
        line.contains("carry that daemon's run marker") && line.contains("did not stop cleanly"),
        "{line}"
    );
}

#[test]
fn timeout_kills_the_whole_process_group() {
    let (_dir, daemon, pids) = group_daemon("slow", "", "timeout = \"1s\"");
    let (status, run) = run_wait(&daemon, "slow");
    assert_eq!(status, 1, "a timed-out run fails atprectl run --wait");
    assert_eq!(run["outcome"], "timed_out", "{run}");
    assert!(
        run["duration_ms"]
            .as_u64()
            .is_some_and(|ms| (1000..5000).contains(&ms)),
        "{run}"
    );
    let pids = wait_for_pids(&pids);
    assert_eq!(pids.len(), 3);
    assert_all_gone(&pids);
}

#[test]
fn timeout_kills_a_group_that_ignores_sigterm() {
    let (_dir, daemon, pids) = group_daemon("stubborn", "trap '' TERM;", "timeout = \"1s\"");
    let (_, run) = run_wait(&daemon, "stubborn");
    assert_eq!(run["outcome"], "timed_out", "{run}");
    assert_all_gone(&wait_for_pids(&pids));
}

#[test]
fn cancel_kills_the_whole_process_group() {
    let (_dir, daemon, pids) = group_daemon("slow", "", "");
    let run_id = start_run(&daemon, "slow");
    let pids = wait_for_pids(&pids);
    assert!(process_alive(pids[1]) && process_alive(pids[2]));
    let out = daemon.ctl(["cancel", "slow"]);
    assert_eq!(out.status, 0, "{out:?}");
    assert!(out.stdout.contains(&run_id), "{out:?}");
    let run = wait_for_run(&daemon, "slow", &run_id);
    assert_eq!(run["outcome"], "cancelled", "{run}");
    assert_all_gone(&pids);
    let again = daemon.ctl(["cancel", "slow"]);
    assert_eq!(again.status, 1, "nothing left to cancel: {again:?}");
    assert!(again.stderr.contains("not running"), "{again:?}");
}

#[test]
fn transient_failures_are_retried_and_permanent_ones_are_not() {
    let dir = harness::tempdir();
    let count = |name: &str| dir.path().join(name);
    let tries = |name: &str| {
        std::fs::read_to_string(count(name))
            .unwrap_or_default()
            .lines()
            .count()
    };
    let retry = "retries = 2\nretry-delay = \"100ms\"";
    let daemon = Daemon::builder(&dir)
        .toml(&sh_job(
            "flaky",
            &format!("echo x >> {}; exit 75", count("flaky").display()),
            retry,
        ))
        .toml(&sh_job(
            "broken",
            &format!("echo x >> {}; exit 1", count("broken").display()),
            retry,
        ))
        .toml(&sh_job(
            "recovers",
            &format!(
                "echo x >> {f}; [ $(wc -l < {f}) -ge 2 ] || exit 75",
                f = count("recovers").display()
            ),
            retry,
        ))
        .spawn();
    let (status, run) = run_wait(&daemon, "flaky");
    assert_eq!(
        (status, &run["outcome"], &run["attempts"]),
        (1, &"failed".into(), &3.into()),
        "{run}"
    );
    assert!(
        run["message"]
            .as_str()
            .is_some_and(|m| m.contains("exit code 75")),
        "{run}"
    );
    assert_eq!(tries("flaky"), 3);

    let (status, run) = run_wait(&daemon, "broken");
    assert_eq!(
        (status, &run["outcome"], &run["attempts"]),
        (1, &"failed".into(), &1.into()),
        "{run}"
    );
    assert_eq!(tries("broken"), 1, "a permanent failure is not retried");

    let (status, run) = run_wait(&daemon, "recovers");
    assert_eq!(
        (status, &run["outcome"], &run["attempts"]),
        (0, &"succeeded".into(), &2.into()),
        "{run}"
    );
    assert_eq!(tries("recovers"), 2);
}

/// Starts jobs `a` and `b` (each marks its start and end in a shared file, 1 s apart) at once
/// under `max-concurrent-jobs = limit`; returns the marks in the order they were written.
fn two_jobs_marks(limit: u32) -> Vec<String> {
    let dir = harness::tempdir();
    let marks = dir.path().join("marks");
    let script = |n: &str| {
        format!(
            "echo start-{n} >> {m}; sleep 1; echo end-{n} >> {m}",
            m = marks.display()
        )
    };
    let daemon = Daemon::builder(&dir)
        .max_concurrent_jobs(limit)
        .toml(&sh_job("a", &script("a"), ""))
        .toml(&sh_job("b", &script("b"), ""))
        .spawn();
    let runs = [start_run(&daemon, "a"), start_run(&daemon, "b")];
    for (job, id) in ["a", "b"].iter().zip(&runs) {
        let run = wait_for_run(&daemon, job, id);
        assert_eq!(run["outcome"], "succeeded", "{run}");
    }
    std::fs::read_to_string(&marks)
        .expect("marks")
        .lines()
        .map(str::to_owned)
        .collect()
}

#[test]
fn max_concurrent_jobs_keeps_runs_apart() {
    let serial = two_jobs_marks(1);
    assert_eq!(serial.len(), 4, "{serial:?}");
    let first = serial[0].trim_start_matches("start-");
    assert_eq!(
        serial[1],
        format!("end-{first}"),
        "with one slot, runs never overlap: {serial:?}"
    );
    // The control: with two slots the same jobs do overlap, so the check above can fail.
    let parallel = two_jobs_marks(2);
    assert!(
        parallel[0].starts_with("start-") && parallel[1].starts_with("start-"),
        "with two slots both start before either ends: {parallel:?}"
    );
}

/// After kill -9 of the daemon, its job's direct child gets the parent-death signal, and what
/// ignores it (a shell trapping TERM, its background children) is ended by the next start.
#[test]
fn a_restart_after_kill_9_ends_the_groups_the_dead_daemon_left() {
    let (_dir, mut daemon, pids) = stubborn_group_running();
    daemon.signal(nix::sys::signal::Signal::SIGKILL);
    assert!(
        daemon
            .wait_exit(std::time::Duration::from_secs(10))
            .is_some()
    );
    assert!(
        pids.iter().all(|p| process_alive(*p)),
        "the shell ignores the parent-death SIGTERM and its children never got it"
    );
    daemon.restart();
    assert_all_gone(&pids);
    let log = daemon.log();
    assert!(
        log.contains(&format!("ended process group {}", pids[0])),
        "{log}"
    );
}
