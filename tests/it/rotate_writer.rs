//! Rotation under a writer appending numbered lines as fast as it can: with `create` and a
//! SIGHUP reopen every number is found exactly once after 20 rotations; with `copytruncate` the
//! lines lost are counted and printed next to logrotate's copytruncate under the same writer.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use crate::harness::{self, process::run_with_timeout};
use crate::rotate_support::{Writer, daemon, log_dir, names, reopen, run, tally};

const ROTATIONS: usize = 20;

#[test]
fn rotate_writer_create_and_reopen_loses_no_line_over_20_rotations() {
    let root = harness::tempdir();
    let dir = log_dir(root.path());
    let log = dir.join("app.log");
    let writer = Writer::start(root.path(), &log);
    let extra = format!(
        "max-size = \"1GiB\"\nkeep = 50\ndelay-compress = true\n{}",
        reopen(&writer)
    );
    let daemon = daemon(root.path(), &log, &extra).spawn();
    for i in 1..=ROTATIONS {
        let out = run(&daemon, &["--force"]);
        assert_eq!(out.status, 0, "rotation {i}: {out:?}");
        assert!(
            out.stdout.contains("rotated to app.log.1") && out.stdout.contains("sent SIGHUP"),
            "rotation {i}: {}",
            out.stdout
        );
    }
    let last = writer.stop();
    let (missing, dup, files) = tally(&dir, "app.log", last);
    println!(
        "create + reopen: {last} lines over {ROTATIONS} rotations: {} lost, {} duplicated",
        missing.len(),
        dup.len()
    );
    assert!(
        missing.is_empty(),
        "lines lost: {:?}",
        &missing[..missing.len().min(20)]
    );
    assert!(
        dup.is_empty(),
        "lines duplicated: {:?}",
        &dup[..dup.len().min(20)]
    );
    assert_eq!(files, ROTATIONS + 1);
    let mut expected: Vec<String> = (2..=ROTATIONS)
        .map(|n| format!("app.log.{n}.zst"))
        .collect();
    expected.extend(["app.log".into(), "app.log.1".into()]);
    expected.sort();
    assert_eq!(names(&dir), expected, "delay-compress leaves only .1 plain");
}

/// Runs `logrotate -f` with copytruncate on `log` `ROTATIONS` times.
fn logrotate_copytruncate(root: &Path, log: &Path) {
    let logrotate = harness::process::find_in_path("logrotate").unwrap_or_else(|| {
        panic!("logrotate is needed for the comparison: apt-get install logrotate (see .ci/deps)")
    });
    let conf = root.join("logrotate.conf");
    std::fs::write(
        &conf,
        format!(
            "{} {{\n  copytruncate\n  rotate 50\n  nocompress\n  missingok\n}}\n",
            log.display()
        ),
    )
    .expect("write logrotate.conf");
    let state = root.join("logrotate.state");
    for i in 1..=ROTATIONS {
        let out = run_with_timeout(
            Command::new(&logrotate)
                .arg("-f")
                .arg("-s")
                .arg(&state)
                .arg(&conf),
            Duration::from_secs(60),
        );
        assert_eq!(out.status, 0, "logrotate run {i}: {out:?}");
    }
}

#[test]
fn rotate_writer_copytruncate_counts_lines_lost_next_to_logrotate() {
    let root = harness::tempdir();
    let dir = log_dir(root.path());
    let log = dir.join("app.log");
    let writer = Writer::start(root.path(), &log);
    let extra = "max-size = \"1GiB\"\nkeep = 50\nmethod = \"copytruncate\"\ncompress = \"none\"";
    let daemon = daemon(root.path(), &log, extra).spawn();
    let mut windows = Vec::new();
    for i in 1..=ROTATIONS {
        let out = run(&daemon, &["--force"]);
        assert_eq!(out.status, 0, "rotation {i}: {out:?}");
        let window = out
            .stdout
            .split("truncated ")
            .nth(1)
            .and_then(|s| s.split(' ').next())
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or_else(|| panic!("no loss window in {}", out.stdout));
        windows.push(window);
    }
    let last = writer.stop();
    let (lost, dup, files) = tally(&dir, "app.log", last);
    assert!(
        dup.is_empty(),
        "lines duplicated: {:?}",
        &dup[..dup.len().min(20)]
    );
    assert_eq!(files, ROTATIONS + 1);

    let lr_root = root.path().join("logrotate");
    std::fs::create_dir(&lr_root).expect("mkdir");
    let lr_dir = log_dir(&lr_root);
    let lr_log = lr_dir.join("app.log");
    let lr_writer = Writer::start(&lr_root, &lr_log);
    logrotate_copytruncate(&lr_root, &lr_log);
    let lr_last = lr_writer.stop();
    let (lr_lost, lr_dup, lr_files) = tally(&lr_dir, "app.log", lr_last);
    assert_eq!(lr_files, ROTATIONS + 1, "{:?}", names(&lr_dir));
    windows.sort_unstable();
    println!(
        "copytruncate, {ROTATIONS} rotations under one writer:\n  atpred:    {} of {last} lines lost ({:.4} %), {} duplicated; truncation {} µs after the last read (median)\n  logrotate: {} of {lr_last} lines lost ({:.4} %), {} duplicated",
        lost.len(),
        100.0 * lost.len() as f64 / last as f64,
        dup.len(),
        windows[windows.len() / 2],
        lr_lost.len(),
        100.0 * lr_lost.len() as f64 / lr_last as f64,
        lr_dup.len(),
    );
}
