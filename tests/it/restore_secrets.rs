//! The secrets scan extends to restore's children: every process the daemon starts while a
//! restore runs (pg_restore and its workers, however short-lived) is read from /proc, and
//! neither its argv nor its environment holds the database password or what the daemon
//! inherited (a PGPASSWORD, a secret variable); the password reaches pg_restore through the
//! passfile. Nor is it in a reply, the run's record or the daemon's log.

use std::panic::AssertUnwindSafe;

use crate::backup_secrets::assert_no_password;
use crate::harness::Daemon;
use crate::restore_support::{backed_up, restore, restore_runs, scan_children_for_secrets};

const CANARY: &str = "inherited-canary-7f3a";

#[test]
fn no_child_of_a_restore_sees_a_secret() {
    let (_fx, daemon, id) = backed_up(|b| b.env("PGPASSWORD", CANARY).env("CANARY_SECRET", CANARY));
    let scan = scan_children_for_secrets(&daemon);
    let out = restore(&daemon, &id, &["--to", "scanned", "--yes"]);
    assert_eq!(out.status, 0, "{}{}", out.stdout, out.stderr);
    let seen = scan.finish(&["pg_restore"], &[CANARY]);
    let pg_restore = seen.iter().find(|c| c.comm == "pg_restore").unwrap();
    assert!(
        pg_restore.environ.contains("PGPASSFILE="),
        "the password comes from the passfile: {}",
        pg_restore.environ
    );
    let record = serde_json::to_string(&restore_runs(&daemon)).unwrap();
    for (what, text) in [
        ("atprectl's output", out.stdout.as_str()),
        ("atprectl's errors", out.stderr.as_str()),
        ("the restore's run record", record.as_str()),
        ("the daemon log", &daemon.log()),
    ] {
        assert_no_password(what, text);
        assert!(!text.contains(CANARY), "{CANARY} in {what}:\n{text}");
    }
}

/// The scanner itself: a child that lives 20 ms with a canary in its argv, then one with a
/// canary in its environment, are both caught (so a passing scan above means something).
#[test]
fn the_scan_catches_a_short_lived_child_holding_a_canary() {
    let dir = crate::harness::tempdir();
    let daemon = Daemon::builder(&dir)
        .toml(
            "[jobs.argv]\nkind = \"command\"\ncommand = [\"sh\", \"-c\", \"sleep 0.02\", \
             \"canary-in-argv\"]\n\n[jobs.environ]\nkind = \"command\"\n\
             command = [\"sh\", \"-c\", \"sleep 0.02\"]\nenv = { LEAKED = \"canary-in-env\" }\n",
        )
        .spawn();
    for (job, canary) in [("argv", "canary-in-argv"), ("environ", "canary-in-env")] {
        let scan = scan_children_for_secrets(&daemon);
        let out = daemon.ctl(["run", job, "--wait"]);
        assert_eq!(out.status, 0, "{out:?}");
        let judged = std::panic::catch_unwind(AssertUnwindSafe(|| scan.finish(&["sh"], &[canary])));
        assert!(
            judged.is_err(),
            "the scan missed {canary} in the {job} of sh"
        );
    }
    let scan = scan_children_for_secrets(&daemon);
    assert_eq!(daemon.ctl(["run", "argv", "--wait"]).status, 0);
    let seen = scan.finish(&["sh"], &["never-there"]);
    assert!(
        seen.iter().any(|c| c.cmdline.contains("canary-in-argv")),
        "{seen:?}"
    );
}
