//! A full disk fails the run cleanly (no partial left, older backups intact), and the free-space
//! preflight refuses a backup that cannot fit before pg_dump starts.

use crate::backup_disturb::{Tmpfs, pg_dumps_of};
use crate::backup_support::{
    Fixture, assert_only_older_intact, backup_ok, backups, entries, run_job, snapshot_files,
    wait_past_second_of,
};
use crate::harness;

/// Rows of 32 KiB of one repeated word: TOAST compresses them to almost nothing in the
/// database, so `pg_database_size` (what the preflight estimates from) stays far below the
/// 32 MiB of the uncompressed dump.
const COMPRESSIBLE: &str = "CREATE TABLE notes (id integer PRIMARY KEY, body text); \
     INSERT INTO notes SELECT g, repeat('abcdefgh', 4096) FROM generate_series(1, 1000) g";

/// Needs root to mount a tmpfs. Without root, only the preflight test below runs: there is no
/// honest way to fill a disk we cannot size.
#[test]
fn backup_on_a_full_disk_fails_cleanly_and_keeps_older_backups() {
    if !harness::is_root() {
        eprintln!("not root: cannot mount a small tmpfs; the preflight test covers what it can");
        return;
    }
    let fx = Fixture::new();
    let tmpfs = Tmpfs::mount(&fx.backup_dir(), "16m");
    let daemon = fx
        .daemon(
            "[jobs.nightly]\nkind = \"backup\"\ncompress = \"none\"\nverify = \"checksum\"\n\
             min-free-after = \"0%\"\n\n\
             [jobs.folder]\nkind = \"backup\"\nformat = \"directory\"\ncompress = \"none\"\n\
             verify = \"checksum\"\nmin-free-after = \"0%\"",
        )
        .spawn();
    let older = backup_ok(&daemon, "nightly");
    let before = snapshot_files(&fx.backup_dir().join(&older));
    fx.sql(COMPRESSIBLE);
    let db_bytes: u64 = fx
        .pg
        .psql(
            crate::backup_support::DB,
            "SELECT pg_database_size(current_database())",
        )
        .parse()
        .expect("a size");
    assert!(
        db_bytes < 12 << 20,
        "the database ({db_bytes} bytes) looks as if it fits"
    );
    wait_past_second_of(&older);

    let record = run_job(&daemon, "nightly");
    assert_eq!(record["outcome"], "failed", "{record:#}");
    let message = record["message"].as_str().expect("message");
    assert!(message.contains("No space left on device"), "{message}");
    assert!(
        message.contains("database.backup"),
        "names the file it was writing: {message}"
    );
    assert!(
        pg_dumps_of(&fx.pg).is_empty(),
        "pg_dump stopped: {:?}",
        pg_dumps_of(&fx.pg)
    );
    assert_only_older_intact(
        &fx,
        &daemon,
        &older,
        &before,
        "custom format on a full disk",
    );

    // The directory format: pg_dump writes the files and meets the full disk itself.
    let record = run_job(&daemon, "folder");
    assert_eq!(record["outcome"], "failed", "{record:#}");
    let message = record["message"].as_str().expect("message");
    assert!(
        message.contains("pg_dump failed") && message.contains("No space left on device"),
        "{message}"
    );
    assert!(pg_dumps_of(&fx.pg).is_empty(), "{:?}", pg_dumps_of(&fx.pg));
    assert_eq!(entries(&fx.backup_dir()), std::slice::from_ref(&older));
    assert_eq!(snapshot_files(&fx.backup_dir().join(&older)), before);

    crate::fault_support::record(&crate::fault_support::Row {
        scenario: "disk full mid-backup (16 MiB tmpfs)",
        seed: None,
        runs: 2,
        faults: 2,
        losses: 0,
        crashes: 0,
        notes: "custom and directory format failed, older intact (backup_disk)".to_owned(),
    });
    let stat = nix::sys::statvfs::statvfs(&fx.backup_dir()).expect("statvfs");
    let free = stat.blocks_available() * stat.fragment_size();
    assert!(
        free > 15 << 20,
        "the space is given back: {free} bytes free"
    );
    drop(daemon);
    drop(tmpfs);
}

#[test]
fn backup_preflight_refuses_a_backup_that_cannot_fit() {
    let fx = Fixture::new();
    let daemon = fx
        .daemon("[jobs.nightly]\nkind = \"backup\"\nmin-free-after = \"99.99%\"")
        .spawn();
    let record = run_job(&daemon, "nightly");
    assert_eq!(record["outcome"], "failed", "{record:#}");
    let message = record["message"].as_str().expect("message");
    assert!(
        message.contains("not enough space in") && message.contains("min-free-after"),
        "{message}"
    );
    assert!(
        entries(&fx.backup_dir()).is_empty(),
        "{:?}",
        entries(&fx.backup_dir())
    );
    assert!(backups(&daemon).is_empty());
}
