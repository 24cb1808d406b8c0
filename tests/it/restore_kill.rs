//! pg_restore killed in the middle of a restore: the run fails saying so, the temporary
//! database is dropped, nothing appears under the target's name, the source is unchanged and
//! the unpacked archive is gone from restore-scratch-dir. The secrets scan extends to the
//! restore's child: the password is neither on pg_restore's command line nor in its
//! environment (the daemon's inherited PGPASSWORD included), nor in any reply or log line.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::backup_secrets::assert_no_password;
use crate::backup_support::{Fixture, backup_ok};
use crate::fault_support::pg_tools_naming;
use crate::harness::wait_until;
use crate::prune_support::NIGHTLY;
use crate::restore_support::{SOURCE, databases, fingerprint, kill_pg_restore};

#[test]
fn pg_restore_killed_mid_way_leaves_no_database_and_no_scratch() {
    let fx = Fixture::new();
    fx.create_bulk_table(400_000);
    let scratch = fx.dir.path().join("scratch");
    let daemon = fx
        .daemon(NIGHTLY)
        .env("ATPRED__DAEMON__RESTORE_SCRATCH_DIR", &scratch)
        .env("PGPASSWORD", "inherited-canary")
        .spawn();
    let id = backup_ok(&daemon, "nightly");
    let before = fingerprint(&fx, SOURCE, "bulk");

    let child = Command::new(env!("CARGO_BIN_EXE_atprectl"))
        .env_remove("ATPRED_SOCKET")
        .arg("--socket")
        .arg(daemon.socket())
        .args(["restore", &id, "--to", "killed", "--yes"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start atprectl");
    // Once pg_restore is copying rows into the temporary database: kill it.
    let marker = Path::new("--dbname=killed_atpred_restoring");
    let copying = || {
        fx.pg
            .psql(
                "postgres",
                "SELECT count(*) FROM pg_stat_activity WHERE datname = 'killed_atpred_restoring' \
                 AND query ILIKE 'COPY%'",
            )
            .trim()
            != "0"
    };
    assert!(
        wait_until(Duration::from_secs(60), copying),
        "pg_restore never started copying"
    );
    let victims = pg_tools_naming(&[marker]);
    assert!(!victims.is_empty(), "no pg_restore found");
    // Read every process first: killing the leader ends its -j workers.
    let mut scanned = 0;
    for (pid, cmdline) in &victims {
        assert_no_password("pg_restore's command line", cmdline);
        let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else {
            continue;
        };
        let environ = String::from_utf8_lossy(&environ).replace('\0', "\n");
        assert_no_password("pg_restore's environment", &environ);
        assert!(!environ.contains("inherited-canary"), "{environ}");
        assert!(
            environ.contains("PGPASSFILE="),
            "the password comes from the passfile: {environ}"
        );
        scanned += 1;
    }
    assert!(scanned > 0, "no pg_restore environment could be read");
    let out = kill_pg_restore(&victims, child);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("pg_restore"), "{stderr}");
    let dbs = databases(&fx);
    assert!(
        !dbs.iter()
            .any(|d| d == "killed" || d.contains("atpred_restoring")),
        "{dbs:?}"
    );
    assert_eq!(fingerprint(&fx, SOURCE, "bulk"), before);
    let left: Vec<_> = std::fs::read_dir(&scratch)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
    assert_no_password("atprectl's output", &String::from_utf8_lossy(&out.stdout));
    assert_no_password("atprectl's errors", &stderr);
    assert_no_password("the daemon log", &daemon.log());
}
