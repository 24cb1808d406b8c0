//! Every refusal of `atprectl restore` has its own message and exit code, and changes
//! nothing: the backup's source database (12), an existing non-empty database (13), no
//! terminal without `--yes` (10), not enough scratch space (14), an unknown id (2).

use std::path::Path;

use crate::backup_disturb::Tmpfs;
use crate::backup_support::{quote, shell_status};
use crate::restore_support::{SOURCE, backed_up, databases, fingerprints, restore};

#[test]
fn restore_refuses_with_its_own_code_and_changes_nothing() {
    let (fx, daemon, id) = backed_up(|b| b);
    let before = fingerprints(&fx, SOURCE);

    let source = restore(&daemon, &id, &["--to", SOURCE, "--yes"]);
    assert_eq!(source.status, 12, "{}{}", source.stdout, source.stderr);
    assert!(
        source
            .stderr
            .contains("database this backup was taken from"),
        "{}",
        source.stderr
    );

    fx.pg.psql("postgres", "CREATE DATABASE busy");
    fx.pg.psql(
        "busy",
        "CREATE TABLE keep_me (id int); INSERT INTO keep_me VALUES (1)",
    );
    let busy = restore(&daemon, &id, &["--to", "busy", "--yes"]);
    assert_eq!(busy.status, 13, "{}{}", busy.stdout, busy.stderr);
    assert!(
        busy.stderr.contains("exists and holds 1 table(s)"),
        "{}",
        busy.stderr
    );
    assert_eq!(
        fx.pg.psql("busy", "SELECT count(*) FROM keep_me").trim(),
        "1"
    );

    let no_tty = restore(&daemon, &id, &["--to", "fresh"]);
    assert_eq!(no_tty.status, 10, "{}{}", no_tty.stdout, no_tty.stderr);
    assert!(no_tty.stderr.contains("no terminal"), "{}", no_tty.stderr);

    let unknown = restore(
        &daemon,
        "20200101T000000Z-nightly",
        &["--to", "fresh", "--yes"],
    );
    assert_eq!(unknown.status, 2, "{}{}", unknown.stdout, unknown.stderr);
    assert!(unknown.stderr.contains("no backup"), "{}", unknown.stderr);

    assert!(!databases(&fx).contains(&"fresh".to_owned()));
    assert_eq!(fingerprints(&fx, SOURCE), before);
}

#[test]
fn restore_refuses_when_the_scratch_dir_is_too_small() {
    let dir = crate::harness::tempdir();
    let scratch = dir.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let _tmpfs = Tmpfs::mount(&scratch, "16k");
    let (fx, daemon, id) = backed_up(|b| b.env("ATPRED__DAEMON__RESTORE_SCRATCH_DIR", &scratch));
    let out = restore(&daemon, &id, &["--to", "fresh", "--yes"]);
    assert_eq!(out.status, 14, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("not enough space in restore-scratch-dir"),
        "{}",
        out.stderr
    );
    assert!(!databases(&fx).contains(&"fresh".to_owned()));
}

/// On a terminal (a pty from util-linux `script`), the operator must type the target's name:
/// another name refuses with 11 and restores nothing; the right one restores.
#[test]
fn restore_on_a_terminal_asks_for_the_database_name() {
    crate::harness::require_binary("script", "apt-get install bsdutils");
    let (fx, daemon, id) = backed_up(|b| b);
    let on_tty = |typed: &str| {
        let command = format!(
            "{} --socket {} restore {id} --to typed_db",
            quote(Path::new(env!("CARGO_BIN_EXE_atprectl"))),
            quote(daemon.socket())
        );
        shell_status(&format!(
            "printf '%s\\n' {} | script -qec {} /dev/null",
            shell_word(typed),
            shell_word(&command)
        ))
    };
    let wrong = on_tty("other_db");
    assert_eq!(wrong.status, 11, "{}{}", wrong.stdout, wrong.stderr);
    assert!(wrong.stdout.contains("Type its name"), "{}", wrong.stdout);
    assert!(!databases(&fx).contains(&"typed_db".to_owned()));
    let right = on_tty("typed_db");
    assert_eq!(right.status, 0, "{}{}", right.stdout, right.stderr);
    assert!(databases(&fx).contains(&"typed_db".to_owned()));
}

fn shell_word(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}
