//! A run that cannot finish leaves no backup, no pg_dump and no partial folder behind, and never
//! touches an older backup: the daemon killed with SIGKILL mid-dump, PostgreSQL stopped
//! mid-dump, PostgreSQL frozen until the job's timeout.

use std::time::{Duration, Instant};

use nix::sys::signal::Signal;

use crate::backup_disturb::{
    FrozenServer, TableLock, pg_dumps_of, tree_size, wait_for_lock_waiter, wait_for_pg_dump,
    wait_for_streaming,
};
use crate::backup_support::{
    BackgroundRun, Fixture, assert_only_older_intact, backup_ok, backups, ctl, entries,
    snapshot_files, wait_past_second_of,
};
use crate::harness;

/// Rows of `bulk` (about 140 bytes each in the dump): about 28 MB, which a debug daemon takes
/// seconds to stream, hash and write, so a test can act while the dump is in flight.
const BULK_ROWS: u32 = 200_000;
/// Streamed bytes that prove the dump is under way.
const STREAMING: u64 = 1 << 20;

const JOB: &str = "[jobs.nightly]\nkind = \"backup\"\ncompress = \"none\"\nverify = \"checksum\"";

fn assert_no_pg_dump_left(fx: &Fixture, when: &str) {
    let mut left = Vec::new();
    let gone = harness::wait_until(Duration::from_secs(10), || {
        left = pg_dumps_of(&fx.pg);
        left.is_empty()
    });
    assert!(gone, "pg_dump still running {when}: {left:?}");
}

#[test]
fn backup_daemon_killed_mid_dump_leaves_no_backup_no_pg_dump_and_partial_removed_at_restart() {
    let fx = Fixture::new();
    fx.create_bulk_table(BULK_ROWS);
    let mut daemon = fx.daemon(JOB).spawn();
    let started = ctl(&daemon, &["run", "nightly"]);
    assert_eq!(started.status, 0, "{}", started.stderr);
    let partial = wait_for_streaming(&fx.backup_dir(), STREAMING);
    let dump = wait_for_pg_dump(&daemon);
    assert!(
        harness::process_alive(dump),
        "pg_dump ended before the kill; raise BULK_ROWS"
    );
    daemon.signal(Signal::SIGKILL);
    assert!(
        daemon.wait_exit(Duration::from_secs(10)).is_some(),
        "SIGKILL ends the daemon"
    );
    assert!(
        !daemon.log().contains("published"),
        "the dump finished before the kill; raise BULK_ROWS:\n{}",
        daemon.log()
    );

    // pg_dump writes into a pipe nobody reads any more: it must end, not linger as an orphan.
    assert_no_pg_dump_left(&fx, "after the daemon was killed");
    // The search above reads each process's cmdline, which is already empty while an exiting
    // process is not yet a zombie: the pid itself is what must end.
    let gone = harness::wait_until(Duration::from_secs(10), || !harness::process_alive(dump));
    assert!(gone, "pg_dump {dump} is gone");
    let name = partial
        .file_name()
        .expect("name")
        .to_string_lossy()
        .into_owned();
    assert_eq!(
        entries(&fx.backup_dir()),
        std::slice::from_ref(&name),
        "a crash runs no cleanup"
    );

    daemon.restart();
    assert!(
        !partial.exists(),
        "the stale partial is removed at start-up"
    );
    assert!(
        daemon.log().contains(&format!("removed {name}")),
        "and the log says so:\n{}",
        daemon.log()
    );
    assert!(backups(&daemon).is_empty(), "no backup listed");
    assert!(
        entries(&fx.backup_dir()).is_empty(),
        "{:?}",
        entries(&fx.backup_dir())
    );
}

/// pg_dump locks every table before it writes a byte: while it waits for a lock it never
/// touches its stdout, so the closed pipe cannot end it; only the parent-death signal does.
#[test]
fn backup_daemon_killed_while_pg_dump_waits_leaves_no_orphan_pg_dump() {
    let fx = Fixture::new();
    fx.sql("CREATE TABLE held (id integer PRIMARY KEY); INSERT INTO held VALUES (1)");
    let lock = TableLock::hold(&fx.pg, crate::backup_support::DB, "held");
    let mut daemon = fx.daemon(JOB).spawn();
    let started = ctl(&daemon, &["run", "nightly"]);
    assert_eq!(started.status, 0, "{}", started.stderr);
    let dump = wait_for_pg_dump(&daemon);
    // Past the import of the daemon's snapshot, which dies with the daemon's connection.
    wait_for_lock_waiter(&fx.pg, "LOCK TABLE");
    daemon.signal(Signal::SIGKILL);
    assert!(
        daemon.wait_exit(Duration::from_secs(10)).is_some(),
        "SIGKILL ends the daemon"
    );
    let gone = harness::wait_until(Duration::from_secs(10), || !harness::process_alive(dump));
    drop(lock);
    // Whatever the outcome, do not leave it behind: once the lock is gone it writes and dies.
    let ended = harness::wait_until(Duration::from_secs(10), || pg_dumps_of(&fx.pg).is_empty());
    assert!(
        gone,
        "pg_dump {dump} outlived the daemon by 10 s while waiting for a lock"
    );
    assert!(ended);
}

/// The directory format: pg_dump writes its files itself and never touches a pipe of the
/// daemon, so nothing tells it the daemon is gone and it dumps on into the partial folder.
#[test]
fn backup_daemon_killed_mid_directory_dump_leaves_no_orphan_pg_dump() {
    let fx = Fixture::new();
    // Twice the rows: pg_dump alone (no daemon hashing in between) must still take seconds.
    fx.create_bulk_table(2 * BULK_ROWS);
    let mut daemon = fx
        .daemon("[jobs.folder]\nkind = \"backup\"\nformat = \"directory\"\nparallel = 2\ncompress-level = 9")
        .spawn();
    let started = ctl(&daemon, &["run", "folder"]);
    assert_eq!(started.status, 0, "{}", started.stderr);
    let partial = wait_for_streaming(&fx.backup_dir(), STREAMING);
    daemon.signal(Signal::SIGKILL);
    assert!(
        daemon.wait_exit(Duration::from_secs(10)).is_some(),
        "SIGKILL ends the daemon"
    );
    let at_kill = tree_size(&partial);
    let gone = harness::wait_until(Duration::from_secs(2), || pg_dumps_of(&fx.pg).is_empty());
    let later = tree_size(&partial);
    // Leave no orphan to the next test whatever happened: the restart removes its folder.
    daemon.restart();
    let ended = harness::wait_until(Duration::from_secs(30), || pg_dumps_of(&fx.pg).is_empty());
    assert!(
        gone,
        "pg_dump still dumps 2 s after the daemon was killed ({at_kill} -> {later} bytes in {})",
        partial.display()
    );
    assert!(ended);
}

#[test]
fn backup_fails_cleanly_when_postgresql_stops_mid_dump() {
    let mut fx = Fixture::new();
    let daemon = fx.daemon(JOB).spawn();
    let older = backup_ok(&daemon, "nightly");
    let before = snapshot_files(&fx.backup_dir().join(&older));
    fx.create_bulk_table(BULK_ROWS);
    wait_past_second_of(&older);

    let run = BackgroundRun::start(&daemon, fx.dir.path(), "nightly");
    wait_for_streaming(&fx.backup_dir(), STREAMING);
    fx.pg.stop();
    let record = run.finish();

    assert_eq!(record["outcome"], "failed", "{record:#}");
    let message = record["message"].as_str().expect("message");
    eprintln!("PostgreSQL stopped mid-dump: {message}");
    assert!(message.contains("pg_dump failed"), "{message}");
    assert!(
        [
            "terminating connection",
            "server closed the connection",
            "connection to server"
        ]
        .iter()
        .any(|s| message.contains(s)),
        "pg_dump's own reason is in the message: {message}"
    );
    assert_no_pg_dump_left(&fx, "after the failed run");
    assert_only_older_intact(&fx, &daemon, &older, &before, "PostgreSQL stopped");
    crate::fault_support::record(&crate::fault_support::Row {
        scenario: "PostgreSQL stopped mid-backup",
        seed: None,
        runs: 1,
        faults: 1,
        losses: 0,
        crashes: 0,
        notes: "run failed, older backup byte-identical (backup_crash)".to_owned(),
    });
}

#[test]
fn backup_times_out_cleanly_when_postgresql_is_frozen_mid_dump() {
    let fx = Fixture::new();
    let daemon = fx
        .daemon(&format!(
            "{JOB}\ntimeout = \"3s\"\n\n[jobs.before]\nkind = \"backup\"\nverify = \"checksum\""
        ))
        .spawn();
    let older = backup_ok(&daemon, "before");
    let before = snapshot_files(&fx.backup_dir().join(&older));
    fx.create_bulk_table(BULK_ROWS);

    let t0 = Instant::now();
    let run = BackgroundRun::start(&daemon, fx.dir.path(), "nightly");
    // Freeze early: the 3 s of the job's timeout include connecting and the snapshot.
    wait_for_streaming(&fx.backup_dir(), 64 << 10);
    let frozen = FrozenServer::freeze(&fx.pg);
    let record = run.finish();
    let took = t0.elapsed();

    assert_eq!(record["outcome"], "timed_out", "{record:#}");
    assert!(
        record["message"]
            .as_str()
            .is_some_and(|m| m.contains("timed out after 3s")),
        "{record:#}"
    );
    // 3 s, then pg_dump gets SIGTERM and 5 s more before SIGKILL: it may hang in its handler
    // trying to send a cancel request to the frozen server.
    assert!(
        took < Duration::from_secs(12),
        "the run ended {took:?} after it started"
    );
    assert!(
        pg_dumps_of(&fx.pg).is_empty(),
        "pg_dump ended with the run: {:?}",
        pg_dumps_of(&fx.pg)
    );
    drop(frozen);
    assert_eq!(
        fx.pg.psql("postgres", "SELECT 1"),
        "1",
        "the server continues"
    );
    assert_only_older_intact(&fx, &daemon, &older, &before, "PostgreSQL frozen");
    eprintln!("frozen server: run timed out and cleaned up {took:?} after it started");
    crate::fault_support::record(&crate::fault_support::Row {
        scenario: "PostgreSQL frozen (SIGSTOP) mid-backup",
        seed: None,
        runs: 1,
        faults: 1,
        losses: 0,
        crashes: 0,
        notes: "run timed out at 3 s, older backup byte-identical (backup_crash)".to_owned(),
    });
}

#[test]
fn backup_cancelled_mid_dump_leaves_nothing_behind() {
    let fx = Fixture::new();
    fx.create_bulk_table(BULK_ROWS);
    let daemon = fx.daemon(JOB).spawn();
    let run = BackgroundRun::start(&daemon, fx.dir.path(), "nightly");
    wait_for_streaming(&fx.backup_dir(), STREAMING);
    let cancel = ctl(&daemon, &["cancel", "nightly"]);
    assert_eq!(cancel.status, 0, "{}{}", cancel.stdout, cancel.stderr);
    let record = run.finish();
    assert_eq!(record["outcome"], "cancelled", "{record:#}");
    assert!(pg_dumps_of(&fx.pg).is_empty(), "{:?}", pg_dumps_of(&fx.pg));
    assert!(
        entries(&fx.backup_dir()).is_empty(),
        "{:?}",
        entries(&fx.backup_dir())
    );
    assert!(backups(&daemon).is_empty());
}

#[test]
fn backup_running_when_the_daemon_stops_is_cancelled_and_cleaned_up() {
    let fx = Fixture::new();
    fx.sql("CREATE TABLE held (id integer PRIMARY KEY); INSERT INTO held VALUES (1)");
    let lock = TableLock::hold(&fx.pg, crate::backup_support::DB, "held");
    let mut daemon = fx.daemon(JOB).stop_timeout("1s").spawn();
    let started = ctl(&daemon, &["run", "nightly"]);
    assert_eq!(started.status, 0, "{}", started.stderr);
    // pg_dump waits for the lock: the run cannot finish before the daemon gives up on it.
    wait_for_pg_dump(&daemon);
    wait_for_lock_waiter(&fx.pg, "LOCK TABLE");
    let t0 = Instant::now();
    daemon.signal(Signal::SIGTERM);
    let status = daemon.wait_exit(Duration::from_secs(20));
    let took = t0.elapsed();
    assert!(
        status.is_some_and(|s| s.success()),
        "{status:?}\n{}",
        daemon.log()
    );
    assert!(
        took < Duration::from_secs(8),
        "stop-timeout 1 s, the daemon took {took:?}"
    );
    assert_no_pg_dump_left(&fx, "after the daemon stopped");
    assert!(
        entries(&fx.backup_dir()).is_empty(),
        "{:?}",
        entries(&fx.backup_dir())
    );
    drop(lock);
    daemon.restart();
    let history = crate::backup_support::ctl_json(&daemon, &["history"]);
    assert_eq!(history["runs"][0]["outcome"], "cancelled", "{history:#}");
    assert!(backups(&daemon).is_empty());
}
