//! systemd notifications from the real daemon: READY=1 once the socket accepts connections,
//! STATUS= one current line with the job count, the watchdog pinged when WATCHDOG_USEC asks for
//! it (and only for our pid), and everything working the same without NOTIFY_SOCKET.

use std::fs::File;
use std::os::unix::net::UnixStream;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::core_support::{WAIT, sh_job};
use crate::harness::{self, Daemon, atpred_launcher, line, process};

/// The variables sd_notify messages may carry; a line with any other key was injected.
const KNOWN_KEYS: &[&str] = &[
    "READY",
    "RELOADING",
    "STOPPING",
    "STATUS",
    "WATCHDOG",
    "MONOTONIC_USEC",
    "EXTEND_TIMEOUT_USEC",
    "MAINPID",
    "ERRNO",
];

fn assert_well_formed(messages: &[String]) {
    for m in messages {
        for l in m.lines() {
            let key = l.split_once('=').map(|(k, _)| k).unwrap_or(l);
            assert!(
                KNOWN_KEYS.contains(&key),
                "unexpected notify line {l:?} in {m:?}"
            );
        }
    }
}

fn status_lines(messages: &[String]) -> Vec<String> {
    messages
        .iter()
        .flat_map(|m| m.lines())
        .filter_map(|l| l.strip_prefix("STATUS="))
        .map(str::to_owned)
        .collect()
}

#[test]
fn ready_means_the_socket_answers_and_status_is_one_current_line() {
    let dir = harness::tempdir();
    let daemon = Daemon::builder(&dir)
        .toml(&sh_job("first", "true", ""))
        .toml(&sh_job("second", "true", ""))
        .spawn();
    UnixStream::connect(daemon.socket()).expect("the socket accepts at READY=1");
    let ready = daemon
        .notify()
        .wait_for(line("READY=1"), WAIT)
        .expect("READY=1");
    let status = status_lines(std::slice::from_ref(&ready));
    assert!(
        status.iter().any(|s| s.starts_with("2 jobs")),
        "READY=1 comes with a STATUS= naming the job count: {ready:?}"
    );
    assert_eq!(daemon.ctl(["run", "first", "--wait"]).status, 0);
    let current = daemon.notify().wait_for(
        |m| {
            status_lines(&[m.to_owned()])
                .iter()
                .any(|s| s.contains("last first succeeded"))
        },
        WAIT,
    );
    assert!(current.is_ok(), "STATUS= follows the runs: {current:?}");
    daemon.notify().sync();
    let messages = daemon.notify().messages();
    assert_eq!(
        messages.iter().filter(|m| line("READY=1")(m)).count(),
        1,
        "{messages:?}"
    );
    assert_well_formed(&messages);
}

#[test]
fn ready_means_schedules_are_in_force() {
    let dir = harness::tempdir();
    let daemon = Daemon::builder(&dir)
        .toml(&sh_job("yearly", "true", "schedule = \"0 0 1 1 *\""))
        .spawn();
    // No waiting: READY=1 promises that the schedules run, so the next run is known.
    let jobs = crate::core_support::ctl_json(&daemon, &["jobs"]);
    assert!(
        jobs["jobs"][0]["next_run"].is_string(),
        "no next run at READY=1: {jobs}"
    );
    let ready = daemon
        .notify()
        .wait_for(line("READY=1"), WAIT)
        .expect("READY=1");
    assert!(
        status_lines(std::slice::from_ref(&ready))
            .iter()
            .any(|s| s.contains("next yearly")),
        "READY=1's STATUS= names the next run: {ready:?}"
    );
}

/// A daemon started by hand without NOTIFY_SOCKET; killed when dropped.
struct Unsupervised(Child);

impl Drop for Unsupervised {
    fn drop(&mut self) {
        process::kill_and_reap(&mut self.0);
    }
}

#[test]
fn everything_works_without_notify_socket() {
    let dir = harness::tempdir();
    let builder = Daemon::builder(&dir).toml(&sh_job("hello", "echo hi", ""));
    let config = builder.write_config();
    let socket = dir.path().join("atpred.sock");
    let log = File::create(dir.path().join("unsupervised.log")).expect("log");
    let mut cmd: Command = atpred_launcher(&config);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("ATPRED_") || key.starts_with("WATCHDOG_") || key == "NOTIFY_SOCKET" {
            cmd.env_remove(key);
        }
    }
    let child = cmd
        .stdin(Stdio::null())
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("spawn atpred");
    let mut daemon = Unsupervised(child);
    let ctl = |args: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_atprectl"));
        cmd.env_remove("ATPRED_SOCKET")
            .arg("--socket")
            .arg(&socket)
            .args(args);
        process::run_with_timeout(&mut cmd, WAIT)
    };
    let up = harness::wait_until(WAIT, || socket.exists() && ctl(&["status"]).status == 0);
    assert!(up, "atpred serves without NOTIFY_SOCKET");
    assert_eq!(ctl(&["run", "hello", "--wait"]).status, 0);
    assert_eq!(ctl(&["reload"]).status, 0);
    let pid = process::pid_of(&daemon.0);
    nix::sys::signal::kill(pid, Signal::SIGTERM).expect("SIGTERM");
    let status = process::wait_timeout(&mut daemon.0, WAIT).expect("exits on SIGTERM");
    assert!(status.success(), "{status}");
    assert!(!socket.exists());
}

#[test]
fn watchdog_pings_at_half_the_interval() {
    let dir = harness::tempdir();
    let daemon = Daemon::builder(&dir)
        .env("WATCHDOG_USEC", "200000")
        .toml(&sh_job("x", "true", ""))
        .spawn();
    let mark = daemon.notify().len();
    let mut count = 0;
    let pinged = harness::wait_until(Duration::from_secs(5), || {
        count = daemon.notify().messages()[mark..]
            .iter()
            .filter(|m| line("WATCHDOG=1")(m))
            .count();
        count >= 5
    });
    assert!(
        pinged,
        "WATCHDOG=1 keeps coming (100 ms apart): {count} seen"
    );
}

#[test]
fn watchdog_for_another_pid_is_ignored() {
    let dir = harness::tempdir();
    let daemon = Daemon::builder(&dir)
        .env("WATCHDOG_USEC", "200000")
        .env("WATCHDOG_PID", "1")
        .toml(&sh_job("pause", "sleep 0.5", ""))
        .spawn();
    // The run is the window in which a watchdog would have pinged about five times.
    assert_eq!(daemon.ctl(["run", "pause", "--wait"]).status, 0);
    daemon.notify().sync();
    assert_eq!(
        daemon.notify().count(line("WATCHDOG=1")),
        0,
        "{:?}",
        daemon.notify().messages()
    );
}
