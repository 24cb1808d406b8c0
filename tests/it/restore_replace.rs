//! `atprectl restore --replace` over the backup's own source database while a client holds a
//! connection to it: the client's session is terminated only at the swap, the database under
//! the name is the backup's, and the old one is kept (not dropped) under
//! `NAME_atpred_replaced`. A second replace, whose keep-name is taken, is refused (15) and
//! changes nothing. pg_restore killed in a replace leaves the old database byte-identical
//! (md5 over its rows) with its session alive, and nothing under a temporary or kept name.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::backup_support::{Fixture, PASSWORD, ROLE, backup_ok};
use crate::prune_support::NIGHTLY;
use crate::restore_support::{
    SOURCE, backed_up, databases, fingerprint, fingerprints, kill_pg_restore, restore,
    slow_post_pass, wait_post_pass,
};

/// A psql session of the application role on the source database that stays until ended.
fn holder(fx: &Fixture) -> Child {
    let passfile = fx.dir.path().join("holder.pgpass");
    fx.pg.write_passfile(&passfile, ROLE, PASSWORD);
    let mut cmd = fx.pg.psql_command(ROLE, SOURCE);
    cmd.env("PGPASSFILE", &passfile)
        .args(["-c", "SELECT pg_sleep(600)"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// Waits until the holder's session shows in pg_stat_activity.
fn wait_connected(fx: &Fixture) {
    let deadline = Instant::now() + Duration::from_secs(30);
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = '{SOURCE}' AND query LIKE '%pg_sleep%' \
         AND pid <> pg_backend_pid()"
    );
    while fx.pg.psql("postgres", &sql).trim() != "1" {
        assert!(Instant::now() < deadline, "the holder never connected");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn replace_swaps_in_the_backup_and_keeps_the_old_database() {
    let (fx, daemon, id) = backed_up(|b| b);
    let backed = fingerprints(&fx, SOURCE);
    fx.sql("DELETE FROM accounts WHERE id <= 100; CREATE TABLE after_backup (x int)");
    let changed = fingerprints(&fx, SOURCE);
    assert_ne!(backed, changed);

    let mut client = holder(&fx);
    wait_connected(&fx);

    let dry = restore(&daemon, &id, &["--to", SOURCE, "--replace", "--dry-run"]);
    assert_eq!(dry.status, 0, "{}{}", dry.stdout, dry.stderr);
    assert!(
        dry.stdout
            .contains(&format!("keep it as {SOURCE}_atpred_replaced")),
        "{}",
        dry.stdout
    );
    assert_eq!(
        fingerprints(&fx, SOURCE),
        changed,
        "a dry run changes nothing"
    );
    assert!(
        client.try_wait().unwrap().is_none(),
        "a dry run ends no session"
    );

    let out = restore(&daemon, &id, &["--to", SOURCE, "--replace", "--yes"]);
    assert_eq!(
        out.status,
        0,
        "{}{}\n{}",
        out.stdout,
        out.stderr,
        daemon.log()
    );
    let kept = format!("{SOURCE}_atpred_replaced");
    assert!(
        out.stdout.contains(&format!("is kept as {kept}")),
        "{}",
        out.stdout
    );
    assert_eq!(
        fingerprints(&fx, SOURCE),
        backed,
        "the backup's data is in place"
    );
    assert_eq!(
        fx.pg
            .psql(SOURCE, "SELECT to_regclass('after_backup') IS NULL")
            .trim(),
        "t"
    );
    assert_eq!(
        fingerprints(&fx, &kept),
        changed,
        "the old database is kept whole"
    );
    assert_eq!(
        fx.pg
            .psql(&kept, "SELECT to_regclass('after_backup') IS NOT NULL")
            .trim(),
        "t"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = client.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "the holder's session was not ended"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(!status.success(), "the holder's session was terminated");
    let dbs = databases(&fx);
    assert!(
        !dbs.iter().any(|d| d.contains("atpred_restoring")),
        "{dbs:?}"
    );

    // The keep-name is taken now: a second replace is refused and touches nothing.
    fx.sql("CREATE TABLE second_change (x int)");
    let again = restore(&daemon, &id, &["--to", SOURCE, "--replace", "--yes"]);
    assert_eq!(again.status, 15, "{}{}", again.stdout, again.stderr);
    assert!(
        again.stderr.contains("earlier --replace"),
        "{}",
        again.stderr
    );
    assert_eq!(
        fx.pg
            .psql(SOURCE, "SELECT to_regclass('second_change') IS NOT NULL")
            .trim(),
        "t",
        "a refused replace leaves the database as it was"
    );
    assert_eq!(fingerprints(&fx, &kept), changed);
}

#[test]
fn a_killed_replace_leaves_the_database_and_its_sessions_alone() {
    let fx = Fixture::new();
    fx.create_bulk_table(400_000);
    slow_post_pass(&fx);
    let daemon = fx.daemon(NIGHTLY).spawn();
    let id = backup_ok(&daemon, "nightly");
    fx.sql("DELETE FROM bulk WHERE id <= 10");
    let before = fingerprint(&fx, SOURCE, "bulk");
    let mut client = holder(&fx);
    wait_connected(&fx);

    let child = Command::new(env!("CARGO_BIN_EXE_atprectl"))
        .env_remove("ATPRED_SOCKET")
        .arg("--socket")
        .arg(daemon.socket())
        .args(["restore", &id, "--to", SOURCE, "--replace", "--yes"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start atprectl");
    let victims = wait_post_pass(&fx, &format!("{SOURCE}_atpred_restoring"));
    kill_pg_restore(&victims, child);
    assert_eq!(
        fingerprint(&fx, SOURCE, "bulk"),
        before,
        "the old database is unchanged"
    );
    assert!(
        client.try_wait().unwrap().is_none(),
        "the session on the old database was not ended"
    );
    let dbs = databases(&fx);
    assert!(
        !dbs.iter().any(|d| d.contains("atpred_")),
        "nothing left under a temporary or kept name: {dbs:?}"
    );
    client.kill().unwrap();
    let _ = client.wait();
}
