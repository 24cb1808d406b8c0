//! The persisted run history through the real daemon: it survives kill -9, a torn last record
//! (a write cut short) is dropped and the earlier runs kept, and it stays bounded by
//! `history-size`.

use std::io::Write;

use nix::sys::signal::Signal;

use crate::core_support::{WAIT, history, json_lines, sh_job};
use crate::harness::{self, Daemon};

/// Runs `job` with `--wait` and returns its run id.
fn run(daemon: &Daemon, job: &str) -> String {
    let out = daemon.ctl(["--json", "run", job, "--wait"]);
    assert_eq!(out.status, 0, "{out:?}");
    let finished = json_lines(&out).pop().expect("finished");
    finished["run"]["run_id"]
        .as_str()
        .expect("run_id")
        .to_owned()
}

fn ids(daemon: &Daemon) -> Vec<String> {
    history(daemon, None)
        .iter()
        .map(|r| r["run_id"].as_str().expect("run_id").to_owned())
        .collect()
}

#[test]
fn history_survives_kill_9() {
    let dir = harness::tempdir();
    let mut daemon = Daemon::builder(&dir).toml(&sh_job("a", "true", "")).spawn();
    let first = [run(&daemon, "a"), run(&daemon, "a")];
    daemon.signal(Signal::SIGKILL);
    assert!(daemon.wait_exit(WAIT).is_some());
    daemon.restart();
    let listed = ids(&daemon);
    assert_eq!(
        listed,
        [first[1].clone(), first[0].clone()],
        "newest first, both kept"
    );
    let third = run(&daemon, "a");
    assert_eq!(ids(&daemon)[0], third);
}

#[test]
fn a_torn_last_record_is_dropped_and_earlier_runs_kept() {
    let dir = harness::tempdir();
    let mut daemon = Daemon::builder(&dir).toml(&sh_job("a", "true", "")).spawn();
    let earlier = [run(&daemon, "a"), run(&daemon, "a")];
    daemon.signal(Signal::SIGKILL);
    assert!(daemon.wait_exit(WAIT).is_some());
    let path = dir.path().join("state/history.jsonl");
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .expect("history.jsonl");
    file.write_all(b"{\"run_id\":\"20261128T0000")
        .expect("tear the last record");
    drop(file);

    daemon.restart();
    assert_eq!(ids(&daemon), [earlier[1].clone(), earlier[0].clone()]);
    assert!(
        daemon.log().contains("dropped 1 torn"),
        "{}",
        harness::tail(&daemon.log(), 20)
    );
    let later = run(&daemon, "a");
    daemon.restart();
    assert_eq!(
        ids(&daemon),
        [later, earlier[1].clone(), earlier[0].clone()]
    );
    let text = std::fs::read_to_string(&path).expect("history.jsonl");
    for line in text.lines() {
        serde_json::from_str::<serde_json::Value>(line)
            .unwrap_or_else(|e| panic!("every record parses after the repair ({e}): {line:?}"));
    }
    let restarts = daemon.log().matches("harness: restarting").count();
    assert_eq!(restarts, 2);
    let after_last = daemon
        .log()
        .rsplit("harness: restarting")
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(
        !after_last.contains("dropped"),
        "the repaired file loads clean: {after_last}"
    );
}

#[test]
fn history_is_bounded_by_history_size() {
    let dir = harness::tempdir();
    let daemon = Daemon::builder(&dir)
        .set("daemon", "history-size", "10")
        .toml(&sh_job("a", "true", ""))
        .spawn();
    let all: Vec<String> = (0..13).map(|_| run(&daemon, "a")).collect();
    let listed = ids(&daemon);
    let newest: Vec<String> = all.iter().rev().take(10).cloned().collect();
    assert_eq!(listed, newest, "the ten newest runs are kept");
    let mut daemon = daemon;
    daemon.restart();
    assert_eq!(ids(&daemon), newest, "and so after a restart");
}
