//! The recovery point of `synchronous = true`: the primary waits for the receiver
//! (`synchronous_standby_names` naming its application_name, the slot's name), a client
//! records every commit the primary acknowledged, the primary dies by kill -9 mid-stream, and
//! `restore --pitr --latest` brings back every acknowledged row — the last of them only in the
//! in-flight segment's copy the archiver stored when the receiver lost its server. And the
//! in-flight copy's life: replaced by its completed segment, invisible to the gap check, kept
//! by a prune.

use std::io::Read;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde_json::Value;

use crate::backup_support::{DB, ctl, run_job, shell_status};
use crate::harness::{self, CtlOutput, Daemon};
use crate::wal_pitr::{Restored, assert_restored, base_backup, base_job, restored_sql};
use crate::wal_support::{
    ARCHIVE_TIMEOUT, SLOT, WalFixture, wait_check, wait_receiving, wal_status,
};

const PORT: &str = "25998";

fn latest(daemon: &Daemon, dir: &std::path::Path, more: &[&str]) -> CtlOutput {
    let mut args = vec!["restore", "--pitr", "--latest", "--to-dir"];
    args.push(dir.to_str().expect("UTF-8"));
    args.extend_from_slice(more);
    ctl(daemon, &args)
}

/// The index lines of in-flight copies.
fn partials(w: &WalFixture) -> Vec<Value> {
    w.index()
        .into_iter()
        .filter(|e| e.get("holds").is_some())
        .collect()
}

/// Waits until the spool's `.partial` holds WAL past `bytes` (pg_receivewal zero-fills a new
/// one first: a kill before its WAL is in leaves nothing to archive).
fn wait_spooled(w: &WalFixture, daemon: &Daemon, bytes: usize) {
    let spool = w.spool_dir(daemon);
    let ok = harness::wait_until(ARCHIVE_TIMEOUT, || {
        std::fs::read_dir(&spool)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().ends_with(".partial"))
            .any(|e| {
                std::fs::read(e.path())
                    .ok()
                    .and_then(|b| b.iter().rposition(|x| *x != 0))
                    .is_some_and(|last| last > bytes)
            })
    });
    assert!(ok, "the spool's .partial never held {bytes} bytes of WAL");
}

fn wait_partial(w: &WalFixture, daemon: &Daemon, more_than: u64) -> Value {
    let mut found = Value::Null;
    let ok = harness::wait_until(ARCHIVE_TIMEOUT, || {
        found = partials(w)
            .into_iter()
            .find(|e| e["holds"].as_u64().unwrap_or(0) > more_than)
            .unwrap_or(Value::Null);
        !found.is_null()
    });
    assert!(
        ok,
        "no in-flight copy archived: {:?}\n{}",
        w.index(),
        harness::tail(&daemon.log(), 40)
    );
    found
}

/// The primary waits for the receiver at each commit.
fn make_synchronous(w: &WalFixture) {
    // One statement per psql call: ALTER SYSTEM refuses a transaction block.
    for sql in [
        format!("ALTER SYSTEM SET synchronous_standby_names = '{SLOT}'"),
        "ALTER SYSTEM SET synchronous_commit = 'on'".to_owned(),
        "SELECT pg_reload_conf()".to_owned(),
    ] {
        w.fx.pg.psql("postgres", &sql);
    }
    let sync = harness::wait_until(ARCHIVE_TIMEOUT, || {
        w.fx.pg.psql(
            "postgres",
            &format!(
                "SELECT count(*) FROM pg_stat_replication \
                 WHERE application_name = '{SLOT}' AND sync_state = 'sync'"
            ),
        ) == "1"
    });
    assert!(sync, "the receiver never became the synchronous standby");
}

/// Kills the postmaster and every process it started, at once, with SIGKILL.
fn kill_primary(w: &WalFixture) {
    let pm = w.fx.pg.pid().as_raw();
    let out = shell_status(&format!("kill -9 $(pgrep -P {pm}) {pm}"));
    assert_eq!(out.status, 0, "{}", out.stderr);
}

#[test]
fn wal_rpo_every_acknowledged_commit_survives_kill_9_of_a_synchronous_primary() {
    let w = WalFixture::new();
    w.fx.pg.psql(DB, "CREATE TABLE acks (n int PRIMARY KEY)");
    let config = format!("synchronous = true\n{}", base_job(&w, "pitr-drill = false"));
    let daemon = w.daemon(&config).spawn();
    wait_receiving(&daemon, 1);
    base_backup(&w, &daemon);
    make_synchronous(&w);

    // The client: one INSERT … RETURNING per commit; a number it printed is an acknowledged
    // commit (psql prints a result only once the server said the statement completed).
    let script = w.fx.dir.path().join("acks.sql");
    let lines: String = (1..=200_000)
        .map(|n| format!("INSERT INTO acks VALUES ({n}) RETURNING n;\n"))
        .collect();
    std::fs::write(&script, lines).unwrap();
    let mut client =
        w.fx.pg
            .psql_command("postgres", DB)
            .arg("-f")
            .arg(&script)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("psql");
    let t0 = Instant::now();
    assert!(harness::wait_until(Duration::from_secs(30), || {
        w.fx.pg.psql(DB, "SELECT count(*) > 300 FROM acks") == "t"
    }));
    assert!(t0.elapsed() < Duration::from_secs(30));
    kill_primary(&w);
    let mut printed = String::new();
    client
        .stdout
        .take()
        .expect("stdout")
        .read_to_string(&mut printed)
        .unwrap();
    let _ = client.wait();
    let acked: Vec<u64> = printed
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect();
    let last = *acked.last().expect("acknowledged commits");
    assert_eq!(
        acked.len() as u64,
        last,
        "acknowledged in order, none skipped"
    );

    let copy = wait_partial(&w, &daemon, 0);
    assert!(
        copy["file"]
            .as_str()
            .is_some_and(|f| f.contains(".partial-") && f.ends_with(".zst.age")),
        "{copy}"
    );
    let dir = w.fx.dir.path().join("restored");
    let dry = latest(&daemon, &dir, &["--dry-run"]);
    assert_eq!(dry.status, 0, "{}{}", dry.stdout, dry.stderr);
    assert!(
        dry.stdout.contains("in-flight segment: ")
            && dry.stdout.contains("recovery target: the end of the WAL"),
        "{}",
        dry.stdout
    );
    let _restored = Restored(dir.clone());
    let out = latest(&daemon, &dir, &["--start", "--port", PORT]);
    assert_restored(&out, &daemon);
    let have = restored_sql(
        &w,
        PORT,
        DB,
        &format!("SELECT count(*) FROM acks WHERE n <= {last}"),
    );
    assert_eq!(
        have,
        last.to_string(),
        "every acknowledged commit (1..={last}) is restored"
    );
}

#[test]
fn wal_rpo_the_in_flight_copy_is_replaced_by_its_segment_and_confuses_neither_gaps_nor_prune() {
    let w = WalFixture::new();
    let prune = "[jobs.prune]\nkind = \"prune\"\nof = [\"base\"]\nkeep-last = 1\n";
    let daemon = w
        .daemon(&base_job(&w, "pitr-drill = false"))
        .toml(prune)
        .spawn();
    let first = wait_receiving(&daemon, 1);
    base_backup(&w, &daemon);
    w.write("a", 2_000);
    wait_spooled(&w, &daemon, 100_000);
    // The receiver loses its server (here: killed): its in-flight segment is stored.
    kill(
        Pid::from_raw(first["pid"].as_u64().expect("pid") as i32),
        Signal::SIGKILL,
    )
    .expect("kill -9 pg_receivewal");
    let copy = wait_partial(&w, &daemon, 0);
    let name = copy["name"].as_str().expect("name").to_owned();
    let segment = name.trim_end_matches(".partial").to_owned();
    let file = w.archive_dir().join(copy["file"].as_str().expect("file"));
    assert!(file.exists());
    wait_receiving(&daemon, 2);
    // Not a segment: no gap, not counted.
    wait_check(&daemon, "ok", "receiving");
    let segments = wal_status(&daemon)["segments"].as_u64();
    assert_eq!(
        segments,
        Some(w.index().len() as u64 - 1),
        "{:?}",
        w.index()
    );
    let dir = w.fx.dir.path().join("restored");
    // Exactly one of --time and --latest.
    let to_dir = dir.to_str().expect("UTF-8");
    let neither = ctl(&daemon, &["restore", "--pitr", "--to-dir", to_dir]);
    assert_eq!(neither.status, 2, "{}", neither.stderr);
    assert!(
        neither.stderr.contains("give --time T") && neither.stderr.contains("--latest"),
        "{}",
        neither.stderr
    );
    let both = latest(&daemon, &dir, &["--time", "2026-12-06T09:30:00Z"]);
    assert_eq!(both.status, 2, "{}", both.stderr);
    assert!(both.stderr.contains("--time"), "{}", both.stderr);
    let dry = latest(&daemon, &dir, &["--dry-run"]);
    assert!(
        dry.stdout
            .contains(&format!("in-flight segment: {segment} staged from {name}")),
        "{}{}",
        dry.stdout,
        dry.stderr
    );

    // Its completed segment replaces it: line and file gone, the plan ends in the segment.
    let done = w.switch();
    assert_eq!(done, segment);
    w.wait_archived(&daemon, &segment);
    assert!(harness::wait_until(ARCHIVE_TIMEOUT, || partials(&w)
        .is_empty()
        && !file.exists()));
    let dry = latest(&daemon, &dir, &["--dry-run"]);
    assert_eq!(dry.status, 0, "{}{}", dry.stdout, dry.stderr);
    assert!(!dry.stdout.contains("in-flight"), "{}", dry.stdout);

    // A prune with an in-flight copy present: segments below the newest base go, the copy
    // (above the cutoff) stays, and the gap check stays quiet.
    let newest = base_backup(&w, &daemon);
    w.write("b", 2_000);
    wait_spooled(&w, &daemon, 100_000);
    let second = wait_receiving(&daemon, 2);
    kill(
        Pid::from_raw(second["pid"].as_u64().expect("pid") as i32),
        Signal::SIGKILL,
    )
    .expect("kill -9 pg_receivewal");
    let copy = wait_partial(&w, &daemon, 0);
    wait_receiving(&daemon, 3);
    let run = run_job(&daemon, "prune");
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
    let keep_from = run["details"]["wal"][0]["plan"]["keep_from"]
        .as_str()
        .unwrap_or_else(|| panic!("{run:#}"))
        .to_owned();
    assert!(segment.as_str() < keep_from.as_str(), "{run:#}");
    assert!(
        !w.indexed(&segment),
        "below base {newest}: pruned; {:?}",
        w.index()
    );
    assert_eq!(partials(&w), vec![copy.clone()], "the copy stays");
    let file = w.archive_dir().join(copy["file"].as_str().expect("file"));
    assert!(file.exists());
    wait_check(&daemon, "ok", "receiving");
    let dry = latest(&daemon, &dir, &["--dry-run"]);
    assert!(
        dry.stdout.contains("in-flight segment: "),
        "{}{}",
        dry.stdout,
        dry.stderr
    );
}
