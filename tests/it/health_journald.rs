//! A health transition reaches journald once, with the fields CHECK, STATUS and PREVIOUS, so
//! `journalctl -u atpred CHECK=http` finds it (through the catcher of `core_journald`).

use crate::core_journald::capture_journal;
use crate::harness::{self, Daemon, toml_str};

#[test]
fn transitions_reach_journald_with_check_status_and_previous() {
    assert!(
        harness::is_root(),
        "this test needs root for its mount namespace (CI runs as root)"
    );
    let dir = harness::tempdir();
    // Nothing listens there: the check fails from its first run.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/health", closed.local_addr().unwrap());
    drop(closed);
    let builder = Daemon::builder(&dir)
        .set("daemon", "log", toml_str("journald"))
        .toml(&format!(
            "[jobs.health]\nkind = \"health\"\nchecks = [\"http\"]\nhttp-url = {}\n",
            toml_str(&url)
        ));
    // Two runs: one transition, then a steady state that is not logged again.
    let records = capture_journal(
        dir.path(),
        &builder.write_config(),
        &["health --now", "health --now"],
    );
    let transitions: Vec<_> = records
        .iter()
        .filter(|r| r.get("CHECK").map(String::as_str) == Some("http"))
        .collect();
    assert_eq!(transitions.len(), 1, "{records:#?}");
    let t = transitions[0];
    assert_eq!(t.get("STATUS").map(String::as_str), Some("fail"), "{t:?}");
    assert_eq!(
        t.get("PREVIOUS").map(String::as_str),
        Some("unknown"),
        "{t:?}"
    );
    assert_eq!(t.get("JOB").map(String::as_str), Some("health"), "{t:?}");
    assert_eq!(t["PRIORITY"], "3", "an error: {t:?}");
}
