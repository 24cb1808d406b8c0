//! pg_restore killed in the middle of a restore (while it builds the indexes over the rows atpred
//! copied), and atpred's own COPY ended by the server mid-way: the run fails saying so, the
//! temporary database is dropped, nothing appears under the target's name, the source is
//! unchanged and the unpacked archive is gone from restore-scratch-dir. The secrets scan extends to the
//! restore's child: the password is neither on pg_restore's command line nor in its
//! environment (the daemon's inherited PGPASSWORD included), nor in any reply or log line.

use std::process::{Command, Stdio};
use std::time::Duration;

use crate::backup_secrets::assert_no_password;
use crate::backup_support::{Fixture, backup_ok};
use crate::harness::wait_until;
use crate::prune_support::NIGHTLY;
use crate::restore_support::{
    SOURCE, bulky, fingerprint, kill_pg_restore, nothing_left, slow_post_pass, spawn_restore,
    wait_post_pass,
};

#[test]
fn pg_restore_killed_mid_way_leaves_no_database_and_no_scratch() {
    let fx = Fixture::new();
    fx.create_bulk_table(400_000);
    slow_post_pass(&fx);
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
    // Once atpred has copied the rows and pg_restore builds the indexes: kill it.
    let victims = wait_post_pass(&fx, "killed_atpred_restoring");
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
    nothing_left(&fx, "killed", &before, &scratch);
    assert_no_password("atprectl's output", &String::from_utf8_lossy(&out.stdout));
    assert_no_password("atprectl's errors", &stderr);
    assert_no_password("the daemon log", &daemon.log());
}

#[test]
fn a_copy_ended_by_the_server_mid_way_leaves_no_database_and_no_scratch() {
    let (fx, daemon, id, scratch) = bulky(1_500_000);
    let before = fingerprint(&fx, SOURCE, "bulk");

    let child = spawn_restore(&daemon, &id, &["--to", "ended", "--yes"]);
    // atpred's own connection copying the rows: ended by the server, as a crash of that
    // backend or an administrator's pg_terminate_backend would.
    let terminate = || {
        fx.pg
            .psql(
                "postgres",
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
                 WHERE datname = 'ended_atpred_restoring' AND application_name = 'atpred restore' \
                 AND query ILIKE 'COPY%bulk%'",
            )
            .trim()
            != "0"
    };
    assert!(
        wait_until(Duration::from_secs(60), terminate),
        "atpred never copied the rows of bulk"
    );
    let out = child.wait_with_output().expect("atprectl ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("COPY into bulk") && stderr.contains("the target database was not touched"),
        "{stderr}"
    );
    nothing_left(&fx, "ended", &before, &scratch);
}
