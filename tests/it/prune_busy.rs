//! Never under a running backup, never a backup in use: a prune while a backup of its set runs
//! fails as transient (so it retries) and removes nothing, while a prune of another set goes
//! ahead without touching the running backup's partial folder; a backup being verified on request
//! is kept ("in use") until the verification ends.
//!
//! Both are held busy deterministically by PostgreSQL locks the test holds: a table lock makes
//! pg_dump wait (as in `backup_crash`), and a lock on the database `template1` makes the
//! verification's `CREATE DATABASE` (of its scratch database) wait.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::time::Duration;

use crate::backup_disturb::{TableLock, wait_for_lock_waiter, wait_for_pg_dump};
use crate::backup_support::{DB, Fixture, backup_ok, ctl, entries, run_job, wait_past_second_of};
use crate::core_support::wait_for_runs;
use crate::harness::process::{self, kill_and_reap};
use crate::harness::{self, Daemon, PgServer};
use crate::prune_support::{
    NIGHTLY, at, craft_copy, decision, dry_run, log_lines, nightly_with_prune, prune_job, sorted,
    started_of,
};

#[test]
fn prune_refuses_to_run_while_a_backup_of_its_set_runs_and_removes_nothing() {
    let fx = Fixture::new();
    fx.sql("CREATE TABLE held (id integer PRIMARY KEY); INSERT INTO held VALUES (1)");
    let policy = "keep-last = 1\nretries = 1\nretry-delay = \"1s\"\nof = [\"nightly\"]";
    let jobs = format!(
        "{NIGHTLY}\n{}\n[jobs.hourly]\nkind = \"backup\"\nverify = \"checksum\"\n\n{}",
        prune_job("prune", policy),
        prune_job("tidy", "keep-last = 1\nof = [\"hourly\"]")
    );
    let daemon = fx.daemon(&jobs).spawn();
    let dir = fx.backup_dir();
    let r1 = backup_ok(&daemon, "nightly");
    let old = craft_copy(&dir, &r1, at(started_of(&dir, &r1).date_naive(), 1, 12));
    let h1 = backup_ok(&daemon, "hourly");
    let h0 = craft_copy(&dir, &h1, at(started_of(&dir, &h1).date_naive(), 1, 12));

    wait_past_second_of(&r1);
    let lock = TableLock::hold(&fx.pg, DB, "held");
    let started = ctl(&daemon, &["run", "nightly"]);
    assert_eq!(started.status, 0, "{}", started.stderr);
    wait_for_pg_dump(&daemon);
    wait_for_lock_waiter(&fx.pg, "LOCK TABLE");
    let before = entries(&dir);
    assert!(before.contains(&old), "{before:?}");

    let run = run_job(&daemon, "prune");
    assert_eq!(run["outcome"], "failed", "{run:#}");
    let message = run["message"].as_str().expect("message");
    assert!(
        message.contains("backup job nightly is running"),
        "names the running backup: {message}"
    );
    assert_eq!(run["attempts"], 2, "transient: retried once: {run:#}");
    let retried = log_lines(
        &daemon,
        &["attempt 1 failed", "nightly is running", "retrying"],
    );
    assert_eq!(retried.len(), 1, "{}", daemon.log());
    assert_eq!(entries(&dir), before, "nothing removed");

    // A prune of another set is not held up, and leaves the running backup's partial alone.
    let other = run_job(&daemon, "tidy");
    assert_eq!(other["outcome"], "succeeded", "{other:#}");
    assert_eq!(
        other["details"]["removed"],
        serde_json::json!([h0]),
        "{other:#}"
    );
    let partials = entries(&dir)
        .into_iter()
        .filter(|n| n.starts_with(".partial-"))
        .count();
    assert_eq!(partials, 1, "the live partial stays: {:?}", entries(&dir));

    drop(lock);
    // The backup still publishes: nothing was taken from under it.
    wait_for_runs(&daemon, "nightly", 2, |r| r["outcome"] == "succeeded");
    let run = run_job(&daemon, "prune");
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
    let removed = run["details"]["removed"].as_array().expect("removed");
    assert!(
        removed.contains(&old.as_str().into()),
        "with the backup done it prunes: {run:#}"
    );
}

#[test]
fn prune_keeps_a_backup_while_it_is_being_verified() {
    let (fx, daemon, dir, r1) = nightly_with_prune("keep-last = 1");
    let old = craft_copy(&dir, &r1, at(started_of(&dir, &r1).date_naive(), 1, 12));

    let held = DatabaseLock::hold(&fx.pg, "template1");
    let verify = BackgroundVerify::start(&daemon, fx.dir.path(), &old);
    wait_for_lock_waiter(&fx.pg, "CREATE DATABASE");

    let plan = sorted(&dry_run(&daemon, "prune"));
    assert_eq!(plan[&old], decision(true, &["in use"]), "{plan:#?}");
    assert_eq!(
        plan[&r1],
        decision(true, &["newest verified", "last snapshot"])
    );
    let run = run_job(&daemon, "prune");
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
    assert_eq!(run["details"]["removed"], serde_json::json!([]), "{run:#}");
    assert!(dir.join(&old).join("manifest.json").exists(), "kept");

    drop(held);
    let (status, said) = verify.finish();
    assert_eq!(status, 0, "the verification passes on the copy: {said}");
    assert!(said.contains("verification passed"), "{said}");
    let plan = sorted(&dry_run(&daemon, "prune"));
    assert_eq!(plan[&old], decision(false, &["no rule keeps it"]));
    let run = run_job(&daemon, "prune");
    assert_eq!(
        run["details"]["removed"],
        serde_json::json!([old]),
        "{run:#}"
    );
}

/// `atprectl backups verify ID --level restore` in the background.
struct BackgroundVerify {
    child: Child,
    out: PathBuf,
}

impl BackgroundVerify {
    fn start(daemon: &Daemon, scratch: &Path, id: &str) -> BackgroundVerify {
        let out = scratch.join("verify.out");
        let file = std::fs::File::create(&out).expect("create the verify output file");
        let child = Command::new(env!("CARGO_BIN_EXE_atprectl"))
            .env_remove("ATPRED_SOCKET")
            .arg("--socket")
            .arg(daemon.socket())
            .args(["backups", "verify", id, "--level", "restore"])
            .stdin(Stdio::null())
            .stdout(file.try_clone().expect("clone"))
            .stderr(file)
            .spawn()
            .expect("spawn atprectl");
        BackgroundVerify { child, out }
    }

    /// Its exit status and what it printed.
    fn finish(mut self) -> (i32, String) {
        let status = process::wait_timeout(&mut self.child, Duration::from_secs(60))
            .expect("the verification ends within 60 s");
        let said = std::fs::read_to_string(&self.out).unwrap_or_default();
        (process::status_code(status), said)
    }
}

impl Drop for BackgroundVerify {
    fn drop(&mut self) {
        kill_and_reap(&mut self.child);
    }
}

/// A superuser transaction holding `SHARE UPDATE EXCLUSIVE` on a database object (taken by
/// `COMMENT ON DATABASE`) until dropped: `CREATE DATABASE` from that template needs `SHARE` on
/// it, so it waits.
struct DatabaseLock {
    child: Child,
    stdin: Option<ChildStdin>,
}

impl DatabaseLock {
    fn hold(pg: &PgServer, database: &str) -> DatabaseLock {
        let mut child = pg
            .psql_command("postgres", "postgres")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn psql");
        let mut stdin = child.stdin.take().expect("psql stdin");
        writeln!(
            stdin,
            "BEGIN;\nCOMMENT ON DATABASE {database} IS 'held by a test';"
        )
        .expect("send");
        stdin.flush().expect("flush psql stdin");
        let lock = DatabaseLock {
            child,
            stdin: Some(stdin),
        };
        let query = format!(
            "SELECT count(*) FROM pg_locks l JOIN pg_database d ON l.objid = d.oid \
             WHERE l.locktype = 'object' AND d.datname = '{database}' \
             AND l.mode = 'ShareUpdateExclusiveLock' AND l.granted"
        );
        let held = harness::wait_until(Duration::from_secs(10), || {
            pg.psql("postgres", &query) == "1"
        });
        assert!(held, "the lock on database {database} was not granted");
        lock
    }
}

impl Drop for DatabaseLock {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.stdin.take() {
            let _ = writeln!(stdin, "COMMIT;");
        }
        if process::wait_timeout(&mut self.child, Duration::from_secs(10)).is_none() {
            kill_and_reap(&mut self.child);
        }
    }
}
