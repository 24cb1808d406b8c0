//! The password reaches pg_dump only through the passfile: a passfile others can read is
//! refused, and the password is in no log line, no reply of `atprectl`, and neither on the
//! command line nor in the environment of the running pg_dump (whose environment is minimal).

use std::collections::BTreeSet;
use std::os::unix::fs::PermissionsExt;

use crate::backup_disturb::{TableLock, wait_for_pg_dump};
use crate::backup_support::{BackgroundRun, DB, Fixture, PASSWORD, backups, ctl, entries, run_job};
use crate::harness;

/// Fragments of the password that must never show: the whole, the passfile-escaped form, and
/// the part before its colon (in case something splits it there).
fn password_forms() -> [String; 3] {
    let escaped = PASSWORD.replace('\\', "\\\\").replace(':', "\\:");
    let head = PASSWORD.split(':').next().expect("a head").to_owned();
    [PASSWORD.to_owned(), escaped, head]
}

pub fn assert_no_password(what: &str, text: &str) {
    for form in password_forms() {
        assert!(
            !text.contains(&form),
            "the password ({form}) is in {what}:\n{text}"
        );
    }
}

#[test]
fn backup_refuses_a_readable_passfile_and_never_shows_the_password() {
    let fx = Fixture::new();
    fx.sql("CREATE TABLE held (id integer PRIMARY KEY); INSERT INTO held VALUES (1), (2)");
    let daemon = fx
        .daemon("[jobs.nightly]\nkind = \"backup\"\nverify = \"restore\"")
        // Must not leak into pg_dump, whatever the daemon inherited.
        .env("PGPASSWORD", "inherited-canary")
        .env("CANARY_SECRET", "inherited-canary")
        .spawn();
    let passfile = fx.dir.path().join("atpred.pgpass");
    assert!(
        std::fs::read_to_string(&passfile)
            .expect("passfile")
            .contains("Pw7f3a9c1e")
    );

    if harness::is_root() {
        // libpq does not check the owner; the daemon does: another user could swap the file.
        std::os::unix::fs::chown(&passfile, Some(65534), None).expect("chown the passfile");
        let foreign = run_job(&daemon, "nightly");
        assert_eq!(foreign["outcome"], "failed", "{foreign:#}");
        let message = foreign["message"].as_str().expect("message");
        assert!(message.contains("owned by uid 65534"), "{message}");
        std::os::unix::fs::chown(&passfile, Some(0), None).expect("chown the passfile back");
    }
    harness::set_mode(&passfile, 0o644);
    let refused = run_job(&daemon, "nightly");
    assert_eq!(refused["outcome"], "failed", "{refused:#}");
    let message = refused["message"].as_str().expect("message");
    assert!(message.contains("chmod 600"), "{message}");
    assert!(
        message.contains(&passfile.display().to_string()),
        "names the file: {message}"
    );
    assert!(
        entries(&fx.backup_dir()).is_empty(),
        "{:?}",
        entries(&fx.backup_dir())
    );

    harness::set_mode(&passfile, 0o600);
    let lock = TableLock::hold(&fx.pg, DB, "held");
    let run = BackgroundRun::start(&daemon, fx.dir.path(), "nightly");
    let dump = wait_for_pg_dump(&daemon);
    let cmdline = std::fs::read(format!("/proc/{dump}/cmdline")).expect("pg_dump's cmdline");
    let environ = std::fs::read(format!("/proc/{dump}/environ")).expect("pg_dump's environ");
    drop(lock);
    let record = run.finish();
    assert_eq!(record["outcome"], "succeeded", "{record:#}");

    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    assert!(
        cmdline.contains("pg_dump") && cmdline.contains("--snapshot="),
        "{cmdline}"
    );
    assert_no_password("pg_dump's command line", &cmdline);
    let environ = String::from_utf8_lossy(&environ).into_owned();
    assert_no_password("pg_dump's environment", &environ);
    let vars: BTreeSet<(&str, &str)> = environ
        .split('\0')
        .filter(|v| !v.is_empty())
        .map(|v| v.split_once('=').expect("NAME=value"))
        .collect();
    assert!(
        vars.contains(&("PGPASSFILE", passfile.to_str().expect("utf-8"))),
        "pg_dump gets the passfile: {vars:?}"
    );
    let names: BTreeSet<&str> = vars.iter().map(|(k, _)| *k).collect();
    assert!(!names.contains("NOTIFY_SOCKET"), "{names:?}");
    assert!(
        !names.contains("PGPASSWORD") && !names.contains("CANARY_SECRET"),
        "{names:?}"
    );
    // ATPRED_GROUPS is this run's random marker (no secret, no path): a start after a crash
    // finds the crashed run's orphaned children by it.
    assert!(
        vars.iter().any(|(k, v)| *k == "ATPRED_GROUPS"
            && v.len() == 32
            && v.bytes().all(|b| b.is_ascii_hexdigit())),
        "{vars:?}"
    );
    let allowed = BTreeSet::from([
        "PATH",
        "LANG",
        "ATPRED_GROUPS",
        "PGPASSFILE",
        "PGAPPNAME",
        "PGCONNECT_TIMEOUT",
    ]);
    assert!(
        names.is_subset(&allowed),
        "a minimal environment: {names:?}"
    );

    let id = record["details"]["id"].as_str().expect("id");
    let mut replies = vec![("the refused run's record".to_owned(), refused.to_string())];
    replies.push(("the run's record".to_owned(), record.to_string()));
    for args in [
        vec!["--json", "status"],
        vec!["--json", "jobs"],
        vec!["--json", "history"],
        vec!["--json", "backups"],
        vec!["--json", "backups", "show", id],
        vec!["--json", "backups", "verify", id],
        vec!["status"],
        vec!["jobs"],
        vec!["history"],
        vec!["backups"],
    ] {
        let out = ctl(&daemon, &args);
        assert_eq!(out.status, 0, "{args:?}: {}", out.stderr);
        replies.push((
            format!("atprectl {}", args.join(" ")),
            format!("{}{}", out.stdout, out.stderr),
        ));
    }
    for (what, text) in &replies {
        assert_no_password(what, text);
    }
    assert_no_password("the daemon log", &daemon.log());
    assert_eq!(backups(&daemon).len(), 1);
    let mode = std::fs::metadata(&passfile)
        .expect("passfile")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "the daemon leaves the passfile as it is");
}
