//! `atprectl restore ID --to DBNAME` into a new database: every table identical to the source
//! (a zstd-wrapped custom archive, unpacked into restore-scratch-dir for `pg_restore -j`),
//! `--schema`/`--table` restore exactly what was named, `--dry-run` changes nothing, and
//! nothing is left in the scratch dir or under a temporary name. Rows of plain tables arrive
//! frozen, and a restore reported done survives a crash of the server right after it. A big
//! table is copied on every free connection and arrives whole; a piece that fails fails the
//! restore and leaves the database it replaces untouched.

use crate::restore_support::{
    SOURCE, TABLES, backed_up, bulky, databases, fingerprint, fingerprints, leftovers_of, restore,
};

#[test]
fn restore_into_a_new_database_gives_identical_tables() {
    let (fx, daemon, id) = backed_up(|b| b);
    // The harness's restore-scratch-dir: the default, under the state dir.
    let scratch = fx.dir.path().join("state/restore");
    let dry = restore(&daemon, &id, &["--to", "restored", "--dry-run"]);
    assert_eq!(dry.status, 0, "{}{}", dry.stdout, dry.stderr);
    // Each table with its rows and its size with indexes on the source, as the manifest recorded.
    let bytes: f64 = fx
        .pg
        .psql(SOURCE, "SELECT pg_total_relation_size('public.accounts')")
        .trim()
        .parse()
        .unwrap();
    let line = dry
        .stdout
        .lines()
        .find(|l| l.contains("public.accounts"))
        .unwrap_or_else(|| panic!("{}", dry.stdout));
    let cells: Vec<&str> = line
        .split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .collect();
    assert_eq!(
        cells,
        [
            "public.accounts",
            "1500 rows",
            &format!("{:.1} MiB", bytes / 1048576.0)
        ],
        "{}",
        dry.stdout
    );
    assert!(
        dry.stdout.contains("with indexes on the source"),
        "{}",
        dry.stdout
    );
    assert!(dry.stdout.contains("pg_restore -j 2"), "{}", dry.stdout);
    assert!(
        !databases(&fx).contains(&"restored".to_owned()),
        "a dry run restores nothing"
    );

    let out = restore(&daemon, &id, &["--to", "restored", "--yes", "--jobs", "2"]);
    assert_eq!(out.status, 0, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("unpacking"),
        "progress is streamed: {}",
        out.stdout
    );
    assert!(
        out.stdout.contains("every row count matches"),
        "{}",
        out.stdout
    );
    assert_eq!(fingerprints(&fx, "restored"), fingerprints(&fx, SOURCE));
    assert!(
        fingerprints(&fx, "restored")
            .iter()
            .all(|(_, f)| f != "absent"),
        "{:?}",
        fingerprints(&fx, "restored")
    );
    let dbs = databases(&fx);
    assert!(
        !dbs.iter().any(|d| d.contains("atpred_restoring")),
        "{dbs:?}"
    );
    let left: Vec<_> = std::fs::read_dir(&scratch)
        .expect("the restore made its scratch dir")
        .flatten()
        .collect();
    assert!(left.is_empty(), "the unpacked archive is removed: {left:?}");
    let _ = TABLES;
}

#[test]
fn schema_and_table_filters_restore_exactly_what_was_named() {
    let (fx, daemon, id) = backed_up(|b| b);
    fx.sql("CREATE SCHEMA side; CREATE TABLE side.accounts (id int); INSERT INTO side.accounts VALUES (7)");
    // The schema above came after the backup: make one that has it.
    let id2 = {
        crate::backup_support::wait_past_second_of(&id);
        crate::backup_support::backup_ok(&daemon, "nightly")
    };
    let out = restore(
        &daemon,
        &id2,
        &["--to", "only_side", "--yes", "--schema", "side"],
    );
    assert_eq!(out.status, 0, "{}{}", out.stdout, out.stderr);
    let tables = |db: &str| {
        fx.pg.psql(
            db,
            "SELECT coalesce(string_agg(schemaname || '.' || tablename, ',' ORDER BY 1), '') FROM pg_tables \
             WHERE schemaname NOT IN ('pg_catalog', 'information_schema')",
        )
        .trim()
        .to_owned()
    };
    assert_eq!(tables("only_side"), "side.accounts");
    assert_eq!(
        fx.pg
            .psql("only_side", "SELECT id FROM side.accounts")
            .trim(),
        "7"
    );

    let out = restore(
        &daemon,
        &id2,
        &[
            "--to",
            "only_accounts",
            "--yes",
            "--schema",
            "public",
            "--table",
            "accounts",
        ],
    );
    assert_eq!(out.status, 0, "{}{}", out.stdout, out.stderr);
    assert_eq!(tables("only_accounts"), "public.accounts");
    assert_eq!(
        fx.pg
            .psql("only_accounts", "SELECT count(*) FROM accounts")
            .trim(),
        "1500"
    );
}

#[test]
fn rows_arrive_frozen_and_a_restore_reported_done_survives_a_server_crash() {
    let (mut fx, daemon, id) = backed_up(|b| b);
    let out = restore(&daemon, &id, &["--to", "restored", "--yes", "--jobs", "2"]);
    assert_eq!(out.status, 0, "{}{}", out.stdout, out.stderr);
    // Copied FREEZE: every page of a plain table is all-frozen in the visibility map.
    fx.pg.psql("restored", "CREATE EXTENSION pg_visibility");
    let unfrozen = |table: &str| -> (u32, u32) {
        let out = fx.pg.psql(
            "restored",
            &format!(
                "SELECT count(*) FILTER (WHERE NOT all_frozen) || ' ' || count(*) \
                 FROM pg_visibility_map('{table}')"
            ),
        );
        let mut n = out.split_whitespace().map(|n| n.parse().unwrap());
        (n.next().unwrap(), n.next().unwrap())
    };
    for table in ["accounts", "\"Ünï Tab\""] {
        let (unfrozen, pages) = unfrozen(table);
        assert!(
            pages > 0 && unfrozen == 0,
            "{table}: {unfrozen} of {pages} pages not frozen"
        );
    }
    // The restore's sessions commit asynchronously; the rename that published it flushed them.
    let before = fingerprints(&fx, "restored");
    fx.pg.crash_and_restart();
    assert_eq!(fingerprints(&fx, "restored"), before);
    assert_eq!(before, fingerprints(&fx, SOURCE));
}

/// Rows of the bulky table (about 40 MiB as COPY text, past the 8 MiB its own connection copies
/// before the rest is spread).
const BIG: u32 = 300_000;

#[test]
fn a_big_table_is_copied_on_every_free_connection_and_arrives_whole() {
    let (fx, daemon, id, scratch) = bulky(BIG);
    let out = restore(&daemon, &id, &["--to", "restored", "--yes", "--jobs", "2"]);
    assert_eq!(out.status, 0, "{}{}", out.stdout, out.stderr);
    let spread = out
        .stdout
        .lines()
        .find(|l| l.contains("public.bulk: spread over"))
        .unwrap_or_else(|| panic!("no table was spread: {}", out.stdout));
    assert!(
        spread.contains("spread over 2 connections"),
        "both connections took part: {spread}"
    );
    assert!(
        out.stdout.contains("every row count matches"),
        "{}",
        out.stdout
    );
    assert_eq!(
        fingerprint(&fx, "restored", "bulk"),
        fingerprint(&fx, SOURCE, "bulk")
    );
    assert_eq!(
        fx.pg.psql("restored", "SELECT count(*) FROM bulk").trim(),
        BIG.to_string()
    );
    // The primary key, built after the rows, holds: no row arrived twice.
    assert_eq!(
        fx.pg
            .psql(
                "restored",
                "SELECT count(*) FROM pg_index WHERE indrelid = 'bulk'::regclass AND indisprimary AND indisvalid"
            )
            .trim(),
        "1"
    );
    let left: Vec<_> = std::fs::read_dir(&scratch)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}

#[test]
fn a_failing_piece_of_a_spread_table_fails_the_restore_and_touches_nothing() {
    let (fx, daemon, first, scratch) = bulky(0);
    // Backup ids are by the second, and the empty bulk table's backup may be of this one.
    crate::backup_support::wait_past_second_of(&first);
    // Rows past the first 8 MiB (ids from 250,000 on) are refused anywhere but in the source
    // database: by a domain's check, which is part of the table, so COPY itself fails on them.
    fx.sql(&format!(
        "CREATE FUNCTION public.fussy(v bigint) RETURNS boolean LANGUAGE sql AS \
         $$ SELECT v < 250000 OR current_database() = '{SOURCE}' $$; \
         CREATE DOMAIN public.late AS bigint CHECK (public.fussy(VALUE)); \
         CREATE TABLE fussy (id public.late NOT NULL, payload text NOT NULL); \
         INSERT INTO fussy SELECT g, repeat(md5(g::text), 4) FROM generate_series(1, {BIG}) g"
    ));
    let id = crate::backup_support::backup_ok(&daemon, "nightly");
    fx.sql("DELETE FROM fussy WHERE id <= 10");
    let before = fingerprint(&fx, SOURCE, "fussy");
    let out = restore(
        &daemon,
        &id,
        &["--to", SOURCE, "--replace", "--yes", "--jobs", "2"],
    );
    assert_eq!(out.status, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("COPY into fussy") && out.stderr.contains("late"),
        "{}",
        out.stderr
    );
    assert_eq!(fingerprint(&fx, SOURCE, "fussy"), before);
    let left = leftovers_of(&fx, "restored");
    assert!(left.is_empty(), "{left:?}");
    assert!(
        !databases(&fx).iter().any(|d| d.contains("atpred_replaced")),
        "{:?}",
        databases(&fx)
    );
    let left: Vec<_> = std::fs::read_dir(&scratch)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "{left:?}");
}
