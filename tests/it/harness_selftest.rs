//! Self-tests of the harness: they need PostgreSQL and Redis but not the daemon, so they prove the
//! harness before `atpred` exists (the daemon part runs against a stand-in, see `daemon`).

mod daemon;
mod notify;
mod postgres;
mod redis;

use std::process::Command;
use std::time::{Duration, Instant};

use crate::harness;
use crate::harness::process::{command_as, run_with_timeout, status_code};

#[test]
fn wait_until_reports_success_and_timeout() {
    let started = Instant::now();
    let mut calls = 0;
    assert!(harness::wait_until(Duration::from_secs(5), || {
        calls += 1;
        calls == 3
    }));
    assert!(!harness::wait_until(Duration::from_millis(50), || false));
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[test]
fn run_with_timeout_reports_status_and_kills_overruns() {
    let out = run_with_timeout(
        Command::new("sh").args(["-c", "echo out; echo err >&2; exit 3"]),
        Duration::from_secs(10),
    );
    assert_eq!(
        (out.status, out.stdout.as_str(), out.stderr.as_str()),
        (3, "out\n", "err\n")
    );
    let killed = run_with_timeout(
        Command::new("sh").args(["-c", "kill -9 $$"]),
        Duration::from_secs(10),
    );
    assert_eq!(
        killed.status,
        128 + 9,
        "a signal death reads as 128 + signal"
    );
    let started = Instant::now();
    let overrun = std::panic::catch_unwind(|| {
        run_with_timeout(Command::new("sleep").arg("30"), Duration::from_millis(200));
    });
    let message = panic_message(overrun.expect_err("an overrunning command fails the test"));
    assert!(message.contains("did not finish within"), "{message}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "the overrun was killed, not waited for"
    );
}

#[test]
fn command_as_runs_as_another_user_when_root() {
    let (uid, gid) = if harness::is_root() {
        (65534, 65534)
    } else {
        (nix::unistd::geteuid().as_raw(), 0)
    };
    let mut cmd = Command::new("id");
    cmd.arg("-u").current_dir("/");
    let out = run_with_timeout(command_as(&mut cmd, uid, gid), Duration::from_secs(10));
    assert_eq!(
        (out.status, out.stdout.trim()),
        (0, uid.to_string().as_str()),
        "{}",
        out.stderr
    );
    assert_eq!(status_code(std::process::ExitStatus::default()), 0);
}

#[test]
fn missing_service_binaries_fail_with_an_install_hint() {
    let empty = harness::tempdir();
    let err =
        harness::locate_bin_dir(None, empty.path()).expect_err("no versions in an empty root");
    assert!(
        err.contains("apt-get install postgresql-15 (or postgresql)"),
        "{err}"
    );
    let err = harness::locate_bin_dir(Some(empty.path().into()), empty.path())
        .expect_err("override without binaries");
    assert!(
        err.contains("ATPRED_PG_BIN") && err.contains("apt-get install postgresql-15"),
        "{err}"
    );
    let err = harness::locate_redis_server(None, None).expect_err("no redis-server");
    assert!(err.contains("apt-get install redis-server"), "{err}");
    let err = harness::locate_redis_server(Some(empty.path().join("nope")), None)
        .expect_err("bad override");
    assert!(err.contains("apt-get install redis-server"), "{err}");
}

/// The text of a caught panic.
pub fn panic_message(payload: Box<dyn std::any::Any + Send>) -> String {
    match payload.downcast::<String>() {
        Ok(s) => *s,
        Err(payload) => payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .unwrap_or_default(),
    }
}
