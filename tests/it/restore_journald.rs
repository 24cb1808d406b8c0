//! A restore's log lines reach journald with the fields of every run (JOB=restore,
//! KIND=restore, one RUN_ID) and its own, BACKUP and DATABASE (the target), and its completion
//! line OUTCOME and DURATION_MS: `journalctl -u atpred JOB=restore` finds every restore.

use crate::backup_support::{Fixture, backup_ok};
use crate::core_journald::capture_journal;
use crate::harness::{self, toml_str};
use crate::prune_support::NIGHTLY;

#[test]
fn restore_lines_reach_journald_with_their_fields() {
    assert!(
        harness::is_root(),
        "this test needs root for its mount namespace (CI runs as root)"
    );
    let fx = Fixture::new();
    fx.create_small_schema();
    let id = {
        let daemon = fx.daemon(NIGHTLY).spawn();
        backup_ok(&daemon, "nightly")
    };
    // The capture waits for the socket to appear: not the first daemon's, left behind.
    let _ = std::fs::remove_file(fx.dir.path().join("atpred.sock"));
    let config = fx
        .daemon(NIGHTLY)
        .set("daemon", "log", toml_str("journald"))
        .write_config();
    let records = capture_journal(
        fx.dir.path(),
        &config,
        &[&format!("restore {id} --to journaled --yes")],
    );
    let of_run: Vec<_> = records
        .iter()
        .filter(|r| r.get("JOB").map(String::as_str) == Some("restore"))
        .collect();
    assert!(
        of_run.len() >= 3,
        "started, restoring, finished: {records:#?}"
    );
    let run_id = of_run[0]["RUN_ID"].clone();
    for r in &of_run {
        assert_eq!(r.get("KIND").map(String::as_str), Some("restore"), "{r:?}");
        assert_eq!(r.get("RUN_ID"), Some(&run_id), "{r:?}");
        assert_eq!(r.get("BACKUP"), Some(&id), "{r:?}");
        assert_eq!(
            r.get("DATABASE").map(String::as_str),
            Some("journaled"),
            "{r:?}"
        );
        assert!(!r.keys().any(|k| k.starts_with("F_")), "{r:?}");
    }
    let done = of_run
        .iter()
        .find(|r| r.contains_key("OUTCOME"))
        .expect("a completion line");
    assert_eq!(done["OUTCOME"], "succeeded", "{done:?}");
    assert!(done["DURATION_MS"].parse::<u64>().is_ok(), "{done:?}");
    assert!(done["MESSAGE"].contains("restored"), "{done:?}");
    assert!(
        fx.pg
            .psql("postgres", "SELECT datname FROM pg_database")
            .contains("journaled")
    );
}
