//! kill -9 of the daemon at each step of a rotation (stopped there by the test-only hook
//! `ATPRED_TEST_PAUSE_AT`), then a restart and an ordinary run: the interrupted rotation is
//! completed or undone, no temporary file is left, and every line is found exactly once.

use std::path::Path;
use std::time::Duration;

use nix::sys::signal::Signal;

use crate::fault_support::{self, Row};
use crate::harness::{self, Daemon};
use crate::rotate_support::{Writer, daemon, log_dir, names, reopen, run, tally};

const PAUSE: &str = "ATPRED_TEST_PAUSE_AT";

/// Stops a forced rotation at `step`, kills the daemon, restarts it without the hook and runs
/// the job once without --force (the journal alone must finish the work).
fn crash_at(daemon: &mut Daemon, step: &str) {
    daemon.restart_with_env(PAUSE, Some(step));
    let out = daemon.ctl(["run", "logs", "--force"]);
    assert_eq!(out.status, 0, "{out:?}");
    let marker = format!("test hook: paused at {step}");
    let paused = harness::wait_until(Duration::from_secs(30), || daemon.log().contains(&marker));
    assert!(
        paused,
        "the rotation never reached {step}:\n{}",
        daemon.log()
    );
    daemon.signal(Signal::SIGKILL);
    assert!(
        daemon.wait_exit(Duration::from_secs(10)).is_some(),
        "SIGKILL ends it"
    );
    daemon.restart_with_env(PAUSE, None);
    let out = run(daemon, &[]);
    assert_eq!(out.status, 0, "recovery after {step}: {out:?}");
}

/// The log is back and not empty (create: the writer was told to reopen), so it rotates.
fn rotates_again(daemon: &Daemon, step: &str) {
    let out = run(daemon, &["--force"]);
    assert_eq!(
        out.status, 0,
        "rotation after recovering from {step}: {out:?}"
    );
    assert!(
        out.stdout.contains("rotated to app.log.1"),
        "after recovering from {step}: {}",
        out.stdout
    );
}

/// Nothing but the log and its rotated files is left in `dir`.
fn assert_clean(dir: &Path, step: &str) {
    for name in names(dir) {
        let rest = name.strip_prefix("app.log").expect("only app.log files");
        let ok = rest.is_empty()
            || rest
                .strip_prefix('.')
                .map(|r| r.trim_end_matches(".zst"))
                .is_some_and(|n| n.parse::<u32>().is_ok());
        assert!(
            ok,
            "after a crash at {step}: leftover {name} in {:?}",
            names(dir)
        );
    }
}

/// The summary row of a kill at `step`: lines lost (or doubled) out of `last`.
fn record(method: &str, step: &str, daemon: &Daemon, last: u64, missing: &[u64], dup: &[u64]) {
    fault_support::record(&Row {
        scenario: &format!("kill -9 mid-rotation, {method}, at {step}"),
        seed: None,
        runs: 1,
        faults: 1,
        losses: missing.len() + dup.len(),
        crashes: usize::from(daemon.ctl(["status"]).status != 0),
        notes: format!(
            "{} of {last} lines lost, {} doubled after restart (rotate_crash)",
            missing.len(),
            dup.len()
        ),
    });
}

fn create_method(step: &str) {
    let root = harness::tempdir();
    let dir = log_dir(root.path());
    let log = dir.join("app.log");
    let writer = Writer::start(root.path(), &log);
    let extra = format!("max-size = \"1GiB\"\nkeep = 50\n{}", reopen(&writer));
    let mut daemon = daemon(root.path(), &log, &extra).spawn();
    let out = run(&daemon, &["--force"]);
    assert_eq!(out.status, 0, "{out:?}");
    crash_at(&mut daemon, step);
    rotates_again(&daemon, step);
    let last = writer.stop();
    let (missing, dup, _) = tally(&dir, "app.log", last);
    record("create + reopen", step, &daemon, last, &missing, &dup);
    assert!(
        missing.is_empty(),
        "crash at {step}: lost {:?}",
        &missing[..missing.len().min(20)]
    );
    assert!(
        dup.is_empty(),
        "crash at {step}: duplicated {:?}",
        &dup[..dup.len().min(20)]
    );
    assert_clean(&dir, step);
}

fn numbered(from: u64, to: u64) -> String {
    (from..=to).map(|n| format!("{n}\n")).collect()
}

fn append(log: &Path, text: String) {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(log)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .expect("append");
}

fn copytruncate_method(step: &str) {
    let root = harness::tempdir();
    let dir = log_dir(root.path());
    let log = dir.join("app.log");
    std::fs::write(&log, numbered(1, 50_000)).expect("write");
    let extra = "max-size = \"1GiB\"\nkeep = 50\nmethod = \"copytruncate\"";
    let mut daemon = daemon(root.path(), &log, extra).spawn();
    let out = run(&daemon, &["--force"]);
    assert_eq!(out.status, 0, "{out:?}");
    append(&log, numbered(50_001, 100_000));
    crash_at(&mut daemon, step);
    append(&log, numbered(100_001, 110_000));
    rotates_again(&daemon, step);
    let (missing, dup, _) = tally(&dir, "app.log", 110_000);
    record("copytruncate", step, &daemon, 110_000, &missing, &dup);
    assert!(
        missing.is_empty(),
        "crash at {step}: lost {:?}",
        &missing[..missing.len().min(20)]
    );
    assert!(
        dup.is_empty(),
        "crash at {step}: duplicated {:?}",
        &dup[..dup.len().min(20)]
    );
    assert_clean(&dir, step);
}

#[test]
fn rotate_crash_create_journaled() {
    create_method("journaled");
}

#[test]
fn rotate_crash_create_shifted() {
    create_method("shifted");
}

#[test]
fn rotate_crash_create_renamed() {
    create_method("renamed");
}

#[test]
fn rotate_crash_create_created() {
    create_method("created");
}

#[test]
fn rotate_crash_create_reopened() {
    create_method("reopened");
}

#[test]
fn rotate_crash_create_compressing() {
    create_method("compressing");
}

#[test]
fn rotate_crash_create_compressed() {
    create_method("compressed");
}

#[test]
fn rotate_crash_copytruncate_journaled() {
    copytruncate_method("journaled");
}

#[test]
fn rotate_crash_copytruncate_copied() {
    copytruncate_method("copied");
}

#[test]
fn rotate_crash_copytruncate_truncated() {
    copytruncate_method("truncated");
}

#[test]
fn rotate_crash_copytruncate_shifted() {
    copytruncate_method("shifted");
}

#[test]
fn rotate_crash_copytruncate_compressing() {
    copytruncate_method("compressing");
}
