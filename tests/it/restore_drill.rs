//! Restore drills take restore's path: a zstd-wrapped archive is unpacked into
//! restore-scratch-dir while its rows are copied from the growing file (FREEZE, as a restore
//! copies them), `pg_restore -j` does the rest, and the scratch file is removed. A scratch dir
//! too small for it never fails a good backup: the drill then goes through a pipe.

use crate::backup_disturb::Tmpfs;
use crate::backup_support::{Fixture, backup_ok, manifest};

const DRILLED: &str = "[jobs.nightly]\nkind = \"backup\"\nverify = \"restore\"\n";

fn details(daemon: &crate::harness::Daemon, id: &str) -> String {
    let m = manifest(daemon, id);
    assert_eq!(m["verification"]["outcome"], "passed", "{m:#}");
    assert_eq!(m["verification"]["level"], "restore", "{m:#}");
    m["verification"]["details"]
        .as_str()
        .expect("details")
        .to_owned()
}

/// A smoke query that holds only for rows loaded as a restore loads them: copied FREEZE, so
/// the index build that follows finds every page all-visible and records so.
const LOADED: &str = "drill-sql = [{ query = \"select relallvisible from pg_class where relname = 'accounts'\", min = 1 }]\n";

#[test]
fn a_restore_drill_loads_as_a_restore_does() {
    let fx = Fixture::new();
    fx.create_small_schema();
    let scratch = fx.dir.path().join("scratch");
    let daemon = fx
        .daemon(&format!("{DRILLED}{LOADED}"))
        .env("ATPRED__DAEMON__RESTORE_SCRATCH_DIR", &scratch)
        .spawn();
    let id = backup_ok(&daemon, "nightly");
    let d = details(&daemon, &id);
    assert!(
        d.contains("loaded as it was unpacked into restore-scratch-dir (COPY on 2 connections"),
        "{d}"
    );
    assert!(d.contains("every row count matches"), "{d}");
    assert!(d.contains("1 drill-sql query passed"), "{d}");
    let left: Vec<_> = std::fs::read_dir(&scratch)
        .map(|r| r.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_too_small_scratch_dir_drills_through_a_pipe_and_the_backup_stands() {
    let fx = Fixture::new();
    fx.create_small_schema();
    let scratch = fx.dir.path().join("scratch");
    std::fs::create_dir(&scratch).expect("scratch dir");
    let _tmpfs = Tmpfs::mount(&scratch, "16k");
    let daemon = fx
        .daemon(DRILLED)
        .env("ATPRED__DAEMON__RESTORE_SCRATCH_DIR", &scratch)
        .spawn();
    let id = backup_ok(&daemon, "nightly");
    let d = details(&daemon, &id);
    assert!(!d.contains("unpacked"), "{d}");
    assert!(d.contains("every row count matches"), "{d}");
    drop(daemon);
}
