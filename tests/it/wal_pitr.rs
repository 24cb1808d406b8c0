//! Point-in-time restore (`atprectl restore --pitr`): a real primary with a wal-archive job and
//! a physical backup job; rows written in marked batches at recorded times; the cluster
//! restored to a time between two batches and started by `--start`, then asked what it has.
//! And every refusal, with its message and exit code.

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, SecondsFormat, Utc};

use crate::backup_support::{DB, PASSWORD, ROLE, ctl, quote, run_job, shell, shell_status};
use crate::harness::{self, CtlOutput, Daemon, toml_path};
use crate::wal_support::{WalFixture, wait_receiving};

/// The port the restored server listens on (its socket is in the primary's private folder,
/// so no other test's server can clash with it).
const PORT: &str = "25999";

/// The physical backup job, decrypting with the fixture's key.
pub(crate) fn base_job(w: &WalFixture, extra: &str) -> String {
    format!(
        "[jobs.base]\nkind = \"backup\"\nmethod = \"physical\"\nverify = \"checksum\"\n\
         encrypt-to = [\"{}\"]\nverify-identity-file = {}\n{extra}",
        w.public,
        toml_path(&w.key)
    )
}

/// A base backup, then its stop segment switched out and archived.
pub(crate) fn base_backup(w: &WalFixture, daemon: &Daemon) -> String {
    let run = run_job(daemon, "base");
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
    let seg = w.switch();
    w.wait_archived(daemon, &seg);
    run["details"]["id"].as_str().expect("id").to_owned()
}

/// Batch `n` of rows in `marks`, committed, then its segment switched out and archived; the
/// time just after the commit.
pub(crate) fn batch(w: &WalFixture, daemon: &Daemon, n: u32) -> DateTime<Utc> {
    w.fx.sql(&format!(
        "INSERT INTO marks SELECT {n}, g FROM generate_series(1, 100) g"
    ));
    let at = Utc::now();
    let seg = w.switch();
    w.wait_archived(daemon, &seg);
    at
}

/// Waits until the clock is past `t` by `by`: the recorded times are then well apart.
pub(crate) fn wait_past(t: DateTime<Utc>, by: Duration) {
    let until = t + chrono::Duration::from_std(by).expect("duration");
    assert!(harness::wait_until(Duration::from_secs(10), || Utc::now() > until));
}

pub(crate) fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Micros, true)
}

pub(crate) fn pitr(daemon: &Daemon, time: &str, dir: &Path, more: &[&str]) -> CtlOutput {
    let mut args = vec!["restore", "--pitr", "--time", time, "--to-dir"];
    let dir = dir.to_str().expect("UTF-8");
    args.push(dir);
    args.extend_from_slice(more);
    ctl(daemon, &args)
}

/// Stops the restored server, whatever the test's end.
pub(crate) struct Restored(pub(crate) PathBuf);

impl Drop for Restored {
    fn drop(&mut self) {
        if self.0.join("postmaster.pid").exists() {
            let _ = shell_status(&format!(
                "runuser -u postgres -- {} -D {} stop -m immediate",
                quote(&pg_bin("pg_ctl")),
                quote(&self.0)
            ));
        }
    }
}

/// Asserts that a restore succeeded; otherwise shows its output and the daemon log's end.
pub(crate) fn assert_restored(out: &CtlOutput, daemon: &Daemon) {
    assert_eq!(
        out.status,
        0,
        "{}{}\n{}",
        out.stdout,
        out.stderr,
        harness::tail(&daemon.log(), 30)
    );
}

/// What `sql` gives in database `db` of the server that `--start --port port` brought up
/// (its socket in the primary's folder), asked as postgres.
pub(crate) fn restored_sql(w: &WalFixture, port: &str, db: &str, sql: &str) -> String {
    shell(&format!(
        "runuser -u postgres -- {} -X -A -t -h {} -p {port} -d {db} -c {}",
        quote(&pg_bin("psql")),
        quote(w.fx.pg.socket_dir()),
        quote(Path::new(sql))
    ))
    .stdout
    .trim()
    .to_owned()
}

/// The batches in `marks` of the server restored on `port`, as `{1,2}`.
pub(crate) fn restored_batches(w: &WalFixture, port: &str) -> String {
    restored_sql(
        w,
        port,
        "atp_app",
        "SELECT array_agg(DISTINCT batch ORDER BY batch) FROM marks",
    )
}

pub(crate) fn pg_bin(name: &str) -> PathBuf {
    PathBuf::from("/usr/lib/postgresql/15/bin").join(name)
}

#[test]
fn wal_pitr_restore_to_a_time_between_two_batches_has_the_first_two_and_not_the_third() {
    let w = WalFixture::new();
    w.fx.sql("CREATE TABLE marks (batch int, n int)");
    let daemon = w.daemon(&base_job(&w, "pitr-drill = false")).spawn();
    wait_receiving(&daemon, 1);
    base_backup(&w, &daemon);
    let t1 = batch(&w, &daemon, 1);
    wait_past(t1, Duration::from_millis(500));
    let t2 = batch(&w, &daemon, 2);
    wait_past(t2, Duration::from_secs(1));
    let target = Utc::now();
    wait_past(target, Duration::from_secs(1));
    let t3 = batch(&w, &daemon, 3);
    assert!(t1 < t2 && t2 < target && target < t3);

    let dir = w.fx.dir.path().join("restored");
    let dry = pitr(&daemon, &rfc3339(target), &dir, &["--dry-run"]);
    assert_eq!(dry.status, 0, "{}{}", dry.stdout, dry.stderr);
    for said in ["base backup: ", "WAL: 0000000100000000", "space needed: "] {
        assert!(dry.stdout.contains(said), "{said}: {}", dry.stdout);
    }
    assert!(!dir.exists(), "a dry run changes nothing");

    let _restored = Restored(dir.clone());
    let out = pitr(
        &daemon,
        &rfc3339(target),
        &dir,
        &["--start", "--port", PORT],
    );
    assert_restored(&out, &daemon);
    assert!(out.stdout.contains("out of recovery"), "{}", out.stdout);
    let meta = std::fs::metadata(&dir).expect("the data directory");
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    assert_eq!(meta.permissions().mode() & 0o777, 0o700);
    let pg_uid = nix::unistd::User::from_name("postgres")
        .unwrap()
        .unwrap()
        .uid;
    assert_eq!(meta.uid(), pg_uid.as_raw(), "owned by postgres");
    let staged = std::fs::read_to_string(dir.join("atpred-wal").join("SHA256SUMS"))
        .expect("the staged segments' sums");
    assert!(staged.lines().count() >= 3, "{staged}");

    assert_eq!(
        restored_batches(&w, PORT),
        "{1,2}",
        "batches 1 and 2, not 3"
    );
    // The daemon synced the staged folder, so the first start needs one syncfs, not an fsync
    // of every file (a setting of that start only: not in the folder's configuration).
    let sync = restored_sql(&w, PORT, "atp_app", "SHOW recovery_init_sync_method");
    assert_eq!(sync, "syncfs");
    let auto = std::fs::read_to_string(dir.join("postgresql.auto.conf")).unwrap();
    assert!(!auto.contains("recovery_init_sync_method"), "{auto}");

    let history = ctl(&daemon, &["--json", "history", "restore"]);
    assert!(
        history.stdout.contains("\"kind\":\"restore\"") && history.stdout.contains("succeeded"),
        "{}",
        history.stdout
    );
}

#[test]
fn wal_pitr_refuses_a_full_folder_a_time_before_any_base_backup_a_gap_and_a_time_not_archived() {
    let w = WalFixture::new();
    let daemon = w.daemon(&base_job(&w, "pitr-drill = false")).spawn();
    wait_receiving(&daemon, 1);
    let before = Utc::now();
    wait_past(before, Duration::from_millis(100));
    let id = base_backup(&w, &daemon);
    let mut switched = Vec::new();
    let mut mid = None;
    for tag in ["a", "b", "c"] {
        let seg = w.write_and_switch(tag, 100);
        w.wait_archived(&daemon, &seg);
        switched.push(seg);
        if mid.is_none() {
            let t = Utc::now();
            wait_past(t, Duration::from_millis(100));
            mid = Some(t);
        }
    }
    let dir = w.fx.dir.path().join("restored");
    // After segment a was archived, before b was completed.
    let now = rfc3339(mid.expect("a time"));

    let full = w.fx.dir.path().join("full");
    std::fs::create_dir(&full).unwrap();
    std::fs::write(full.join("PG_VERSION"), "15\n").unwrap();
    let out = pitr(&daemon, &now, &full, &[]);
    assert_eq!(out.status, 13, "{}{}", out.stdout, out.stderr);
    assert!(out.stderr.contains("is not empty"), "{}", out.stderr);

    let out = pitr(&daemon, &rfc3339(before), &dir, &[]);
    assert_eq!(out.status, 20, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("no physical base backup finished before")
            && out.stderr.contains("the oldest verified one finished at"),
        "{}",
        out.stderr
    );

    let later = rfc3339(Utc::now() + chrono::Duration::hours(1));
    let out = pitr(&daemon, &later, &dir, &[]);
    assert_eq!(out.status, 22, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("is later than what is archived") && out.stderr.contains(&switched[2]),
        "{}",
        out.stderr
    );

    let out = pitr(&daemon, &now, &dir, &["--job", "nightly"]);
    assert_eq!(out.status, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("\"nightly\" is not a job"),
        "{}",
        out.stderr
    );

    // A hole in the index between the base and the time (the daemon appends in place).
    let index = w.archive_dir().join("index.jsonl");
    let text = std::fs::read_to_string(&index).unwrap();
    let kept: String = text
        .lines()
        .filter(|l| !l.contains(&switched[1]))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&index, kept).unwrap();
    let out = pitr(&daemon, &now, &dir, &[]);
    assert_eq!(out.status, 21, "{}{}", out.stdout, out.stderr);
    let named = format!(
        "gap in the archive between base backup {id} and the target: {} missing",
        switched[1]
    );
    assert!(out.stderr.contains(&named), "{named}: {}", out.stderr);
    assert!(!dir.exists(), "no refusal leaves anything behind");

    // A daemon without a wal-archive job has nothing to replay.
    let other = harness::tempdir();
    let lone = Daemon::builder(other.path())
        .postgres(&w.fx.pg, ROLE, PASSWORD, DB)
        .toml(&base_job(&w, ""))
        .spawn();
    let out = pitr(&lone, &now, &dir, &[]);
    assert_eq!(out.status, 23, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("no wal-archive job is configured"),
        "{}",
        out.stderr
    );
}

#[test]
fn wal_pitr_drill_passes_on_a_healthy_archive_and_fails_naming_a_damaged_segment() {
    let w = WalFixture::new();
    w.fx.sql("CREATE TABLE marks (batch int, n int); INSERT INTO marks VALUES (1, 1)");
    // The drill's server runs as postgres, which must reach restore-scratch-dir.
    let scratch = w.fx.dir.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    harness::set_mode(&scratch, 0o711);
    let drill_sql = "drill-sql = [{ query = \"select count(*) from marks\", min = 1 }]";
    let daemon = w
        .daemon(&base_job(
            &w,
            &format!("pitr-drill-lag = \"1s\"\n{drill_sql}"),
        ))
        .set("daemon", "restore-scratch-dir", toml_path(&scratch))
        .spawn();
    wait_receiving(&daemon, 1);
    let run = run_job(&daemon, "base");
    assert_eq!(
        run["outcome"],
        "succeeded",
        "{run:#}\n{}",
        harness::tail(&daemon.log(), 30)
    );
    let id = run["details"]["id"].as_str().expect("id").to_owned();
    let drill = &run["details"]["pitr_drill"];
    assert_eq!(drill["base"], id.as_str(), "{run:#}");
    assert!(
        drill["segments_replayed"].as_u64().unwrap_or(0) >= 1,
        "{drill:#}"
    );
    assert!(
        drill["reached_lsn"]
            .as_str()
            .is_some_and(|l| l.contains('/')),
        "{drill:#}"
    );
    assert!(
        drill["recovery_point_age_seconds"].as_f64().is_some(),
        "{drill:#}"
    );
    assert!(drill["duration_ms"].as_u64().is_some(), "{drill:#}");
    assert_eq!(drill["smoke"][0]["passed"], true, "{drill:#}");
    assert_eq!(drill["smoke"][0]["value"], 1.0, "{drill:#}");
    assert!(
        drill["amcheck"]
            .as_str()
            .is_some_and(|a| a.contains("no corruption")),
        "{drill:#}"
    );
    let left: Vec<_> = std::fs::read_dir(&scratch).unwrap().flatten().collect();
    assert!(left.is_empty(), "the drill leaves nothing behind: {left:?}");
    eprintln!("PITR drill: {drill}");

    // A segment after the base, damaged in the archive: the drill names it.
    let seg = w.write_and_switch("after", 1000);
    w.wait_archived(&daemon, &seg);
    let entry = w
        .index()
        .into_iter()
        .find(|e| e["name"] == seg.as_str())
        .expect("indexed");
    let file = w.archive_dir().join(entry["file"].as_str().expect("file"));
    let mut bytes = std::fs::read(&file).unwrap();
    let mid = bytes.len() / 2;
    bytes[mid] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let out = ctl(&daemon, &["backups", "verify", &id, "--level", "restore"]);
    assert_eq!(out.status, 1, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stdout.contains("PITR drill FAILED")
            && out.stdout.contains(&format!("segment {seg} is damaged")),
        "{}",
        out.stdout
    );
    let left: Vec<_> = std::fs::read_dir(&scratch).unwrap().flatten().collect();
    assert!(
        left.is_empty(),
        "a failed drill leaves nothing behind: {left:?}"
    );
}

/// `verify-every` on a physical job: the first backup drills (no drill passed yet), the next
/// within the interval does not and says when the last passed; with the record of that drill
/// gone, the next backup drills again.
#[test]
fn wal_pitr_drill_runs_when_verify_every_says_it_is_due() {
    let w = WalFixture::new();
    w.fx.sql("CREATE TABLE marks (batch int, n int); INSERT INTO marks VALUES (1, 1)");
    let scratch = w.fx.dir.path().join("scratch");
    std::fs::create_dir(&scratch).unwrap();
    harness::set_mode(&scratch, 0o711);
    let daemon = w
        .daemon(&base_job(
            &w,
            "pitr-drill-lag = \"1s\"\nverify-every = \"1h\"",
        ))
        .set("daemon", "restore-scratch-dir", toml_path(&scratch))
        .spawn();
    wait_receiving(&daemon, 1);
    let drilled = |run: &serde_json::Value| {
        assert_eq!(
            run["outcome"],
            "succeeded",
            "{run:#}\n{}",
            harness::tail(&daemon.log(), 30)
        );
        run["details"]["pitr_drill"]["reached_lsn"].is_string()
    };

    let first = run_job(&daemon, "base");
    assert!(drilled(&first), "none passed yet: {first:#}");
    let record = w
        .spool_dir(&daemon)
        .parent()
        .and_then(Path::parent)
        .expect("state-dir")
        .join("pitr-drill")
        .join("base");
    assert!(record.is_file(), "{}", record.display());

    crate::backup_support::wait_past_second_of(first["details"]["id"].as_str().expect("id"));
    let second = run_job(&daemon, "base");
    assert!(!drilled(&second), "not due within the hour: {second:#}");
    assert_eq!(second["details"]["pitr_drill"]["due"], false, "{second:#}");
    let message = second["message"].as_str().unwrap_or_default();
    assert!(message.contains("PITR drill not due"), "{message}");

    std::fs::remove_file(&record).unwrap();
    crate::backup_support::wait_past_second_of(second["details"]["id"].as_str().expect("id"));
    let third = run_job(&daemon, "base");
    assert!(drilled(&third), "no record of a passed drill: {third:#}");
}
