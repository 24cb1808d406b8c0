//! Reloading the real daemon: SIGHUP and `atprectl reload` apply a valid new config (jobs
//! added, removed, rescheduled) without touching a running job; a broken one is refused, named
//! in the reply and in STATUS=, and leaves the old jobs in force. Every reload sends
//! RELOADING=1 with MONOTONIC_USEC= and then READY=1.

use std::path::Path;

use chrono::Datelike;
use nix::sys::signal::Signal;
use serde_json::Value;

use crate::core_support::{WAIT, ctl_json, sh_job, start_run, time, wait_for_run};
use crate::harness::{self, Daemon, DaemonBuilder, NotifySocket, line};

/// `jobs --json`: name -> job status.
fn jobs(daemon: &Daemon) -> Vec<Value> {
    ctl_json(daemon, &["jobs"])["jobs"]
        .as_array()
        .expect("jobs")
        .clone()
}

fn names(daemon: &Daemon) -> Vec<String> {
    jobs(daemon)
        .iter()
        .map(|j| j["name"].as_str().expect("name").to_owned())
        .collect()
}

fn find<'a>(jobs: &'a [Value], name: &str) -> &'a Value {
    jobs.iter()
        .find(|j| j["name"] == name)
        .unwrap_or_else(|| panic!("no job {name}: {jobs:?}"))
}

/// The run id `job` is running now, per `status --json`.
fn running_id(daemon: &Daemon, job: &str) -> Option<String> {
    let status = ctl_json(daemon, &["status"]);
    status["running"]
        .as_array()
        .expect("running")
        .iter()
        .find(|r| r["job"] == job)
        .map(|r| r["run_id"].as_str().expect("run_id").to_owned())
}

/// Asserts that since `mark` a RELOADING=1 with MONOTONIC_USEC= was sent, then READY=1.
fn assert_reload_notified(notify: &NotifySocket, mark: usize) {
    notify
        .wait_for_since(mark, line("READY=1"), WAIT)
        .expect("READY=1 after the reload");
    let messages = notify.messages();
    let since = &messages[mark..];
    let reloading = since
        .iter()
        .position(|m| line("RELOADING=1")(m))
        .unwrap_or_else(|| panic!("no RELOADING=1: {since:?}"));
    let usec = since[reloading]
        .lines()
        .find_map(|l| l.strip_prefix("MONOTONIC_USEC="))
        .and_then(|v| v.parse::<u64>().ok());
    assert!(
        usec.is_some_and(|u| u > 0),
        "RELOADING=1 without MONOTONIC_USEC: {since:?}"
    );
    let ready = since
        .iter()
        .position(|m| line("READY=1")(m))
        .expect("READY=1");
    assert!(
        reloading < ready,
        "RELOADING=1 comes before READY=1: {since:?}"
    );
}

fn rewrite(dir: &Path, jobs: &str) -> DaemonBuilder {
    let builder = Daemon::builder(dir).toml(jobs);
    builder.write_config();
    builder
}

#[test]
fn sighup_adds_removes_and_reschedules_jobs_leaving_a_running_job_alone() {
    let dir = harness::tempdir();
    let mark_file = dir.path().join("started");
    let keep = sh_job(
        "keep",
        &format!("touch {}; sleep 2", mark_file.display()),
        "",
    );
    let daemon = Daemon::builder(&dir)
        .toml(&keep)
        .toml(&sh_job("gone", "true", "schedule = \"0 0 1 1 *\""))
        .toml(&sh_job("resched", "true", "schedule = \"0 0 1 1 *\""))
        .spawn();
    assert_eq!(names(&daemon), ["gone", "keep", "resched"]);
    let run_id = start_run(&daemon, "keep");
    assert!(
        harness::wait_until(WAIT, || mark_file.exists()),
        "keep started"
    );

    let new_jobs = format!(
        "{keep}\n{}\n{}",
        sh_job("resched", "true", "schedule = \"0 0 2 1 *\""),
        sh_job("fresh", "true", "schedule = \"0 0 3 1 *\"")
    );
    rewrite(dir.path(), &new_jobs);
    let mark = daemon.notify().len();
    daemon.signal(Signal::SIGHUP);
    assert_reload_notified(daemon.notify(), mark);

    assert_eq!(names(&daemon), ["fresh", "keep", "resched"]);
    let mut listed = Vec::new();
    let rescheduled = harness::wait_until(WAIT, || {
        listed = jobs(&daemon);
        let day = |name| {
            let next = &find(&listed, name)["next_run"];
            (!next.is_null()).then(|| time(next).day())
        };
        day("resched") == Some(2) && day("fresh") == Some(3)
    });
    assert!(rescheduled, "new schedules in force: {listed:#?}");
    assert_eq!(find(&listed, "resched")["schedule"], "0 0 2 1 *");

    assert_eq!(
        running_id(&daemon, "keep").as_deref(),
        Some(run_id.as_str()),
        "still running"
    );
    let run = wait_for_run(&daemon, "keep", &run_id);
    assert_eq!(run["outcome"], "succeeded", "{run}");
    assert!(
        run["duration_ms"].as_u64().is_some_and(|ms| ms >= 1900),
        "{run}"
    );
}

#[test]
fn ctl_reload_keeps_a_running_job_that_the_new_config_removes() {
    let dir = harness::tempdir();
    let mark_file = dir.path().join("started");
    let daemon = Daemon::builder(&dir)
        .toml(&sh_job(
            "doomed",
            &format!("touch {}; sleep 1.5", mark_file.display()),
            "",
        ))
        .toml(&sh_job("other", "true", ""))
        .spawn();
    let run_id = start_run(&daemon, "doomed");
    assert!(
        harness::wait_until(WAIT, || mark_file.exists()),
        "doomed started"
    );

    rewrite(
        dir.path(),
        &format!(
            "{}\n{}",
            sh_job("other", "true", ""),
            sh_job("newbie", "true", "")
        ),
    );
    let mark = daemon.notify().len();
    let out = daemon.ctl(["reload"]);
    assert_eq!(out.status, 0, "{out:?}");
    assert!(out.stdout.contains("reloaded: 2 job(s)"), "{out:?}");
    assert_reload_notified(daemon.notify(), mark);
    assert_eq!(names(&daemon), ["newbie", "other"]);

    assert_eq!(
        running_id(&daemon, "doomed").as_deref(),
        Some(run_id.as_str())
    );
    let run = wait_for_run(&daemon, "doomed", &run_id);
    assert_eq!(
        run["outcome"], "succeeded",
        "a removed job's run ends normally: {run}"
    );
    let out = daemon.ctl(["run", "doomed"]);
    assert_eq!(
        out.status, 2,
        "the removed job cannot be started any more: {out:?}"
    );
}

#[test]
fn a_broken_config_is_refused_and_the_old_jobs_stay() {
    let dir = harness::tempdir();
    let old_jobs = format!("{}\n{}", sh_job("a", "true", ""), sh_job("b", "true", ""));
    let daemon = Daemon::builder(&dir).toml(&old_jobs).spawn();

    let broken = Daemon::builder(&dir)
        .timezone("Mars/Olympus")
        .toml(&old_jobs)
        .toml(&sh_job("c", "true", ""));
    let text = broken.render();
    broken.write_config();
    let line_no = text
        .lines()
        .position(|l| l.starts_with("timezone ="))
        .expect("tz")
        + 1;
    let mark = daemon.notify().len();
    let out = daemon.ctl(["reload"]);
    assert_eq!(out.status, 1, "{out:?}");
    let at = format!("{}:{line_no}:", daemon.config_path().display());
    assert!(
        out.stderr.contains("daemon.timezone") && out.stderr.contains(&at),
        "{out:?}"
    );
    assert_reload_notified(daemon.notify(), mark);
    let failed = daemon.notify().wait_for_since(
        mark,
        |m| {
            m.lines()
                .any(|l| l.starts_with("STATUS=") && l.contains("reload failed"))
        },
        WAIT,
    );
    assert!(
        failed.is_ok(),
        "STATUS= tells of the failed reload: {failed:?}"
    );
    assert_eq!(names(&daemon), ["a", "b"], "the old jobs stay in force");
    let status = ctl_json(&daemon, &["status"]);
    assert!(
        status["reload_error"]
            .as_str()
            .is_some_and(|e| e.contains("daemon.timezone")),
        "{status}"
    );
    assert_eq!(
        daemon.ctl(["run", "a", "--wait"]).status,
        0,
        "old jobs still run"
    );

    // SIGHUP with the same file fails the same way and is logged.
    let mark = daemon.notify().len();
    daemon.signal(Signal::SIGHUP);
    assert_reload_notified(daemon.notify(), mark);
    assert!(
        daemon.log().contains("reload refused"),
        "{}",
        harness::tail(&daemon.log(), 20)
    );
    assert_eq!(names(&daemon), ["a", "b"]);

    // Fixed: the next reload applies it and clears the error.
    rewrite(
        dir.path(),
        &format!("{old_jobs}\n{}", sh_job("c", "true", "")),
    );
    assert_eq!(daemon.ctl(["reload"]).status, 0);
    assert_eq!(names(&daemon), ["a", "b", "c"]);
    let status = ctl_json(&daemon, &["status"]);
    assert!(status["reload_error"].is_null(), "{status}");
    assert!(
        !status["summary"]
            .as_str()
            .unwrap_or_default()
            .contains("reload failed"),
        "{status}"
    );
}

#[test]
fn after_reload_returns_jobs_shows_the_new_next_runs() {
    use std::io::{BufRead, BufReader, Write};
    let dir = harness::tempdir();
    let daemon = Daemon::builder(&dir)
        .toml(&sh_job("yearly", "true", "schedule = \"0 0 1 1 *\""))
        .spawn();
    // One connection, requests back to back, as a script using the protocol would send them.
    let mut stream = daemon.raw_connect();
    let mut reader = BufReader::new(stream.try_clone().expect("clone"));
    let mut ask = |request: &str| -> Value {
        stream
            .write_all(format!("{request}\n").as_bytes())
            .expect("write");
        let mut line = String::new();
        reader.read_line(&mut line).expect("read");
        serde_json::from_str(&line).expect("JSON")
    };
    ask(r#"{"type":"hello","protocol":1,"client":"core-tests"}"#);
    let next_day = |job: &Value| (!job["next_run"].is_null()).then(|| time(&job["next_run"]).day());
    // (That the first next run is known at READY=1 is `core_notify`'s business.)
    let first = harness::wait_until(WAIT, || next_day(&jobs(&daemon)[0]) == Some(1));
    assert!(first, "the first schedule is in force");
    for day in [2, 3, 4, 5, 6, 7, 8, 9] {
        rewrite(
            dir.path(),
            &sh_job("yearly", "true", &format!("schedule = \"0 0 {day} 1 *\"")),
        );
        let reply = ask(r#"{"type":"reload"}"#);
        assert_eq!(reply["type"], "reloaded", "{reply}");
        // No waiting: `reloaded` is the answer that the new configuration is in force.
        let job = ask(r#"{"type":"jobs"}"#)["jobs"][0].clone();
        assert_eq!(job["schedule"], format!("0 0 {day} 1 *"));
        assert_eq!(
            next_day(&job),
            Some(day),
            "next_run is stale right after reload: {job}"
        );
    }
}
