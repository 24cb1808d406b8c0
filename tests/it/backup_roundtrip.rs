//! A backup is only as good as its restore: each format the daemon writes is restored here with
//! the real `pg_restore` into a new database, and every table must come back with the same rows
//! (count and content checksum), the sequences at the same values, and the view working.

use std::collections::BTreeMap;

use crate::backup_schema::{RICH_ROWS, fingerprint};
use crate::backup_support::{Fixture, backup_ok, manifest, pg_restore_command, quote, shell};
use crate::harness::PgServer;

/// Restores with `script` (a shell pipeline ending in pg_restore) into a new database `restored`
/// and checks it against `atp_app`.
fn assert_restores_identically(fx: &Fixture, script: impl FnOnce(&str) -> String) {
    let pg = &fx.pg;
    pg.psql("postgres", "CREATE DATABASE restored");
    shell(&script(&pg_restore_command(pg, "restored")));
    let original = fingerprint(pg, crate::backup_support::DB);
    let restored = fingerprint(pg, "restored");
    let counts: BTreeMap<String, i64> =
        original.iter().map(|(t, (n, _))| (t.clone(), *n)).collect();
    let expected: BTreeMap<String, i64> = RICH_ROWS
        .iter()
        .map(|(t, n)| ((*t).to_owned(), *n))
        .collect();
    assert_eq!(
        counts, expected,
        "the source database is what the test built"
    );
    assert_eq!(
        restored, original,
        "every table restored with the same rows"
    );
    assert_same_sequences_and_view(pg);
}

fn assert_same_sequences_and_view(pg: &PgServer) {
    let seqs = "SELECT string_agg(format('%s=%s', sequencename, coalesce(last_value::text, 'null')), ',' ORDER BY sequencename) FROM pg_sequences";
    let original = pg.psql(crate::backup_support::DB, seqs);
    assert!(original.contains("invoice_no=4243"), "{original}");
    assert_eq!(pg.psql("restored", seqs), original, "sequence values kept");
    assert_eq!(
        pg.psql("restored", "SELECT nextval('invoice_no')"),
        "4244",
        "the sequence goes on where it was"
    );
    let view = "SELECT count(*), sum(total) FROM big_spenders";
    let spenders = pg.psql(crate::backup_support::DB, view);
    assert!(
        !spenders.starts_with("0|"),
        "the view selects something: {spenders}"
    );
    assert_eq!(
        pg.psql("restored", view),
        spenders,
        "the view works after restore"
    );
}

fn backup_path(fx: &Fixture, id: &str, file: &str) -> std::path::PathBuf {
    let path = fx.backup_dir().join(id).join(file);
    assert!(path.exists(), "{} missing", path.display());
    path
}

#[test]
fn backup_custom_zstd_restores_identically_with_pg_restore() {
    let fx = Fixture::new();
    fx.create_rich_schema();
    let daemon = fx
        .daemon("[jobs.nightly]\nkind = \"backup\"\nverify = \"restore\"")
        .spawn();
    let id = backup_ok(&daemon, "nightly");
    let m = manifest(&daemon, &id);
    assert_eq!(m["format"], "custom");
    assert_eq!(
        m["compression"]["method"], "zstd",
        "zstd is the default for custom"
    );
    assert_eq!(m["verification"]["level"], "restore");
    assert_eq!(m["verification"]["outcome"], "passed");
    let file = backup_path(&fx, &id, "database.backup");
    // Really zstd: the frame magic, not pg_dump's "PGDMP" header.
    let head = std::fs::read(&file).expect("read the dump")[..4].to_vec();
    assert_eq!(head, [0x28, 0xb5, 0x2f, 0xfd], "a zstd frame");
    assert_eq!(
        fx.pg.psql(
            "postgres",
            "SELECT count(*) FROM pg_database WHERE datname LIKE '%atpred_verify'"
        ),
        "0",
        "the scratch database of the restore drill is dropped"
    );
    assert_restores_identically(&fx, |restore| {
        format!("zstd -dc {} | {restore}", quote(&file))
    });
}

#[test]
fn backup_directory_parallel_gzip_restores_identically_with_pg_restore() {
    let fx = Fixture::new();
    fx.create_rich_schema();
    let daemon = fx
        .daemon(
            "[jobs.nightly]\nkind = \"backup\"\nformat = \"directory\"\nparallel = 2\n\
             compress = \"gzip\"\nverify = \"restore\"",
        )
        .spawn();
    let id = backup_ok(&daemon, "nightly");
    let m = manifest(&daemon, &id);
    assert_eq!(m["format"], "directory");
    assert_eq!(m["compression"]["method"], "gzip");
    assert_eq!(m["options"]["parallel"], 2);
    assert_eq!(m["verification"]["outcome"], "passed");
    let folder = backup_path(&fx, &id, "database.backup");
    assert!(
        folder.join("toc.dat").exists(),
        "a pg_dump directory archive"
    );
    let files = m["files"].as_array().expect("files");
    assert!(
        files.len() > RICH_ROWS.len(),
        "toc.dat and one data file per table are listed: {files:?}"
    );
    // gzip-compressed data files (pg_dump -Fd names them N.dat.gz).
    assert!(
        files
            .iter()
            .any(|f| f["path"].as_str().is_some_and(|p| p.ends_with(".dat.gz"))),
        "{files:?}"
    );
    assert_restores_identically(&fx, |restore| format!("{restore} -j 2 {}", quote(&folder)));
}

#[test]
fn backup_custom_gzip_restores_identically_with_pg_restore() {
    let fx = Fixture::new();
    fx.create_rich_schema();
    let daemon = fx
        .daemon("[jobs.nightly]\nkind = \"backup\"\ncompress = \"gzip\"\nverify = \"full\"")
        .spawn();
    let id = backup_ok(&daemon, "nightly");
    let m = manifest(&daemon, &id);
    assert_eq!(m["compression"]["method"], "gzip");
    assert_eq!(m["verification"]["level"], "full");
    let file = backup_path(&fx, &id, "database.backup");
    let head = std::fs::read(&file).expect("read the dump")[..5].to_vec();
    assert_eq!(
        head, b"PGDMP",
        "pg_dump's own custom archive, compressed inside"
    );
    assert_restores_identically(&fx, |restore| format!("{restore} {}", quote(&file)));
}
