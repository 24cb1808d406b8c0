//! What the restore tests share: a backed-up database, per-table fingerprints, and
//! `atprectl restore` with its exit code.

use std::process::{Child, Command, Output};

use nix::unistd::Pid;

use crate::backup_support::{DB, Fixture, backup_ok, ctl};
use crate::harness::{CtlOutput, Daemon, DaemonBuilder};
use crate::prune_support::NIGHTLY;

/// The tables of the small schema, each as `(name as SQL, relation to read)`.
pub const TABLES: [&str; 6] = [
    "accounts",
    "\"Ünï Tab\"",
    "empty_one",
    "events",
    "events_2024",
    "events_2025",
];

/// A small database, a daemon with the `nightly` backup job (default format: zstd-wrapped
/// custom archive) and one backup of it.
pub fn backed_up(
    configure: impl FnOnce(DaemonBuilder) -> DaemonBuilder,
) -> (Fixture, Daemon, String) {
    let fx = Fixture::new();
    fx.create_small_schema();
    let daemon = configure(fx.daemon(NIGHTLY)).spawn();
    let id = backup_ok(&daemon, "nightly");
    (fx, daemon, id)
}

/// An md5 over every row of `table` in `db` (in a stable order), or `absent`.
pub fn fingerprint(fx: &Fixture, db: &str, table: &str) -> String {
    let exists = fx.pg.psql(
        db,
        &format!(
            "SELECT to_regclass('{}') IS NOT NULL",
            table.replace('\'', "''")
        ),
    );
    if exists.trim() != "t" {
        return "absent".into();
    }
    fx.pg
        .psql(
            db,
            &format!(
                "SELECT md5(coalesce(string_agg(r::text, '|' ORDER BY r::text), '')) || ':' || count(*) \
                 FROM {table} r"
            ),
        )
        .trim()
        .to_owned()
}

/// Every table's fingerprint in `db`.
pub fn fingerprints(fx: &Fixture, db: &str) -> Vec<(String, String)> {
    TABLES
        .iter()
        .map(|t| ((*t).to_owned(), fingerprint(fx, db, t)))
        .collect()
}

/// The databases on the server.
pub fn databases(fx: &Fixture) -> Vec<String> {
    fx.pg
        .psql(
            "postgres",
            "SELECT string_agg(datname, ',' ORDER BY datname) FROM pg_database",
        )
        .trim()
        .split(',')
        .map(str::to_owned)
        .collect()
}

/// `atprectl restore ID ARGS`, stdin not a terminal.
pub fn restore(daemon: &Daemon, id: &str, args: &[&str]) -> CtlOutput {
    let mut all = vec!["restore", id];
    all.extend_from_slice(args);
    ctl(daemon, &all)
}

/// The source database's name.
pub const SOURCE: &str = DB;

/// Kills the running pg_restore (`victims`, from `pg_tools_naming`) of the restore `child` (an
/// `atprectl restore`) and waits for it: it must fail (exit 1) saying that the target database
/// was not touched. Returns its output for more checks.
pub fn kill_pg_restore(victims: &[(Pid, String)], child: Child) -> Output {
    let killed = victims.iter().filter(|(pid, _)| {
        Command::new("kill")
            .args(["-9", &pid.to_string()])
            .status()
            .is_ok_and(|s| s.success())
    });
    assert!(killed.count() > 0, "kill -9 of pg_restore");
    let out = child.wait_with_output().expect("atprectl ends");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("the target database was not touched"),
        "{stderr}"
    );
    out
}
