//! Drill evidence: every restore drill and every restore records its duration and the data's
//! age in the backup's `evidence.json`; `backups show` prints it; the metrics
//! `atpred_restore_duration_seconds`, `atpred_backup_data_age_seconds` and
//! `atpred_restore_drill_timestamp_seconds` come from it (read by Prometheus' own parser);
//! `drill-sql` smoke queries run in the drill and fail it when out of bounds; `--dry-run`
//! estimates the time from the last drill. Redis and files drills record their evidence too.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use serde_json::Value;

use crate::backup_support::{Fixture, backup_ok, ctl, ctl_json, entries, run_job};
use crate::harness::Daemon;
use crate::health_metrics::Samples;
use crate::restore_support::restore;

const SMOKE: &str = "select count(*) from accounts";

fn job(verify: &str, drill_sql: &str) -> String {
    format!("[jobs.nightly]\nkind = \"backup\"\nverify = \"{verify}\"\ndrill-sql = {drill_sql}\n")
}

fn evidence(daemon: &Daemon, id: &str) -> Value {
    ctl_json(daemon, &["backups", "show", id])["evidence"].clone()
}

fn metrics(daemon: &Daemon) -> Samples {
    let out = ctl(daemon, &["metrics"]);
    assert_eq!(out.status, 0, "{}", out.stderr);
    Samples::parse(&out.stdout)
}

fn now() -> f64 {
    chrono::Utc::now().timestamp_millis() as f64 / 1000.0
}

#[test]
fn a_drill_records_evidence_that_backups_show_and_the_metrics_report() {
    let fx = Fixture::new();
    fx.create_small_schema();
    let daemon = fx
        .daemon(&job(
            "restore",
            &format!("[{{ query = \"{SMOKE}\", min = 1 }}]"),
        ))
        .spawn();
    let id = backup_ok(&daemon, "nightly");

    let e = evidence(&daemon, &id);
    let drill = &e["last_drill"];
    assert_eq!(drill["passed"], true, "{e:#}");
    assert!(drill["duration_ms"].as_u64().unwrap() > 0, "{e:#}");
    assert!(drill["tables"].as_u64().unwrap() >= 5, "{e:#}");
    assert!(drill["rows"].as_i64().unwrap() >= 1500, "{e:#}");
    let age = drill["data_age_seconds"].as_i64().unwrap();
    assert!((0..600).contains(&age), "{e:#}");
    assert_eq!(drill["smoke"][0]["query"], SMOKE, "{e:#}");
    assert_eq!(drill["smoke"][0]["value"], 1500.0, "{e:#}");
    assert_eq!(drill["smoke"][0]["passed"], true, "{e:#}");
    assert_eq!(e["last_passed_drill"], *drill, "{e:#}");
    assert!(e.get("last_restore").is_none(), "{e:#}");
    let file = fx.backup_dir().join(&id).join("evidence.json");
    let mode = std::fs::metadata(&file)
        .expect("evidence.json")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);

    let shown = ctl(&daemon, &["backups", "show", &id]);
    assert_eq!(shown.status, 0, "{}", shown.stderr);
    assert!(shown.stdout.contains("last drill: "), "{}", shown.stdout);
    assert!(shown.stdout.contains(", passed, took "), "{}", shown.stdout);
    assert!(
        shown
            .stdout
            .contains(&format!("ok   drill-sql \"{SMOKE}\": 1500 (min = 1)")),
        "{}",
        shown.stdout
    );
    assert!(
        shown.stdout.contains("last restore: none recorded"),
        "{}",
        shown.stdout
    );

    let m = metrics(&daemon);
    let nightly = [("job", "nightly")];
    let drill_secs = m.value(
        "atpred_restore_duration_seconds",
        &[("job", "nightly"), ("kind", "drill")],
    );
    let want = drill["duration_ms"].as_f64().unwrap() / 1000.0;
    assert!((drill_secs - want).abs() < 0.001, "{drill_secs} vs {want}");
    let drilled_at = m.value("atpred_restore_drill_timestamp_seconds", &nightly);
    assert!(
        drilled_at <= now() + 1.0 && now() - drilled_at < 600.0,
        "{drilled_at}"
    );
    let age1 = m.value("atpred_backup_data_age_seconds", &nightly);
    assert!((0.0..600.0).contains(&age1), "{age1}");
    // The recovery point as it stands now: the age grows between scrapes.
    std::thread::sleep(Duration::from_millis(1100));
    let age2 = metrics(&daemon).value("atpred_backup_data_age_seconds", &nightly);
    assert!(age2 >= age1 + 1.0, "{age1} then {age2}");
}

#[test]
fn a_restore_records_its_evidence_and_dry_run_estimates_from_the_last_drill() {
    let fx = Fixture::new();
    fx.create_small_schema();
    let daemon = fx.daemon(&job("checksum", "[]")).spawn();
    let id = backup_ok(&daemon, "nightly");
    assert_eq!(evidence(&daemon, &id), Value::Null, "no drill yet");

    let dry = restore(&daemon, &id, &["--to", "restored", "--dry-run"]);
    assert_eq!(dry.status, 0, "{}{}", dry.stdout, dry.stderr);
    assert!(
        dry.stdout.contains("estimated time: unknown (no drill"),
        "{}",
        dry.stdout
    );

    let drilled = ctl(&daemon, &["backups", "verify", &id, "--level", "restore"]);
    assert_eq!(drilled.status, 0, "{}{}", drilled.stdout, drilled.stderr);
    let drill_ms = evidence(&daemon, &id)["last_drill"]["duration_ms"]
        .as_u64()
        .unwrap();
    let dry = restore(&daemon, &id, &["--to", "restored", "--dry-run"]);
    assert!(
        dry.stdout.contains(&format!(
            "estimated time: about {:.1} s (from the last drill of this backup)",
            drill_ms as f64 / 1000.0
        )),
        "{}",
        dry.stdout
    );

    let out = restore(&daemon, &id, &["--to", "restored", "--yes"]);
    assert_eq!(out.status, 0, "{}{}", out.stdout, out.stderr);
    let e = evidence(&daemon, &id);
    let r = &e["last_restore"];
    assert_eq!(r["database"], "restored", "{e:#}");
    assert!(r["duration_ms"].as_u64().unwrap() > 0, "{e:#}");
    assert!(r["rows"].as_i64().unwrap() >= 1500, "{e:#}");
    assert!(
        (0..600).contains(&r["data_age_seconds"].as_i64().unwrap()),
        "{e:#}"
    );
    assert_eq!(
        e["last_drill"]["passed"], true,
        "the drill is still there: {e:#}"
    );
    let shown = ctl(&daemon, &["backups", "show", &id]);
    assert!(
        shown.stdout.contains("last restore: ") && shown.stdout.contains(" into restored, took "),
        "{}",
        shown.stdout
    );

    let m = metrics(&daemon);
    let secs = m.value(
        "atpred_restore_duration_seconds",
        &[("job", "nightly"), ("kind", "restore")],
    );
    let want = r["duration_ms"].as_f64().unwrap() / 1000.0;
    assert!((secs - want).abs() < 0.001, "{secs} vs {want}");
    let dry = restore(&daemon, &id, &["--to", "again", "--dry-run"]);
    assert!(
        dry.stdout
            .contains("(from the last restore of this backup)"),
        "{}",
        dry.stdout
    );
}

#[test]
fn a_smoke_query_out_of_bounds_fails_the_drill_naming_the_query() {
    let fx = Fixture::new();
    fx.create_small_schema();
    let low = "select count(*) from accounts where id < 0";
    // Passes the load-time check (it begins with WITH) but writes: the read-only transaction
    // refuses it, and the scratch copy keeps its rows.
    let writes = "with d as (delete from accounts returning 1) select count(*) from d";
    let daemon = fx
        .daemon(&job(
            "restore",
            &format!(
                "[{{ query = \"{SMOKE}\", min = 1 }}, {{ query = \"{low}\", min = 1 }}, \
                 {{ query = \"select 'abc'\" }}, {{ query = \"{writes}\", max = 0 }}]"
            ),
        ))
        .spawn();
    let run = run_job(&daemon, "nightly");
    assert_eq!(run["outcome"], "failed", "{run:#}");
    let message = run["message"].as_str().unwrap_or_default();
    for words in [
        format!("drill-sql \"{low}\": returned 0, below min = 1"),
        "drill-sql \"select 'abc'\": returned \"abc\", not a number".to_owned(),
        format!("drill-sql \"{writes}\": ERROR: cannot execute SELECT in a read-only transaction"),
        "3 of 4 smoke queries failed".to_owned(),
    ] {
        assert!(message.contains(&words), "{words}\n{message}");
    }
    assert!(!message.contains(&format!("\"{SMOKE}\"")), "{message}");
    // Kept apart like any backup that failed its verification, with the drill's evidence.
    let names = entries(&fx.backup_dir());
    let failed: Vec<&String> = names.iter().filter(|n| n.starts_with(".failed-")).collect();
    assert_eq!(failed.len(), 1, "{names:?}");
    let text = std::fs::read_to_string(fx.backup_dir().join(failed[0]).join("evidence.json"))
        .expect("the failed drill's evidence");
    let e: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(e["last_drill"]["passed"], false, "{e:#}");
    assert_eq!(e["last_drill"]["smoke"][1]["passed"], false, "{e:#}");
    assert_eq!(e["last_drill"]["smoke"][1]["value"], 0.0, "{e:#}");
    assert_eq!(e["last_drill"]["smoke"][0]["passed"], true, "{e:#}");
    assert!(e.get("last_passed_drill").is_none(), "{e:#}");
}

#[test]
fn a_bad_drill_sql_is_refused_naming_the_key() {
    let dir = crate::harness::tempdir();
    for (drill_sql, key, words) in [
        (
            "[{ query = \"select 1; drop table users\" }]",
            "jobs.nightly.drill-sql[0].query",
            "more than one statement",
        ),
        (
            "[{ query = \"select 1\" }, { query = \"select 2\", min = 5, max = 1 }]",
            "jobs.nightly.drill-sql[1].min",
            "greater than max",
        ),
        (
            "[{ query = \"delete from users\" }]",
            "jobs.nightly.drill-sql[0].query",
            "not a query",
        ),
        (
            "[{ query = \"select 1\", minimum = 1 }]",
            "drill-sql",
            "minimum",
        ),
    ] {
        let out = Daemon::builder(dir.path())
            .toml(&job("restore", drill_sql))
            .check();
        assert_eq!(out.status, 78, "{drill_sql}: {out:?}");
        assert!(
            out.stderr.contains(key) && out.stderr.contains(words),
            "{drill_sql}: {}",
            out.stderr
        );
    }
}

/// The drill evidence common to every source: passed, timed, the data's age, the same record
/// as the last passed drill, 0600, and `backups show` printing it with `what` (what it loaded).
fn assert_drill_recorded(
    daemon: &Daemon,
    backup_dir: &std::path::Path,
    id: &str,
    what: &str,
) -> Value {
    let e = evidence(daemon, id);
    let drill = &e["last_drill"];
    assert_eq!(drill["passed"], true, "{e:#}");
    assert!(drill["duration_ms"].as_u64().unwrap() > 0, "{e:#}");
    let age = drill["data_age_seconds"].as_i64().unwrap();
    assert!((0..600).contains(&age), "{e:#}");
    assert_eq!(e["last_passed_drill"], *drill, "{e:#}");
    let file = backup_dir.join(id).join("evidence.json");
    let mode = std::fs::metadata(&file)
        .expect("evidence.json")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let shown = ctl(daemon, &["backups", "show", id]);
    assert_eq!(shown.status, 0, "{}", shown.stderr);
    assert!(shown.stdout.contains("last drill: "), "{}", shown.stdout);
    assert!(shown.stdout.contains(", passed, took "), "{}", shown.stdout);
    assert!(shown.stdout.contains(what), "{what} in:\n{}", shown.stdout);
    drill.clone()
}

#[test]
fn a_redis_drill_records_evidence_like_a_postgres_one() {
    let fx = crate::redis_support::RedisFixture::new(false);
    fx.populate();
    let daemon = fx.daemon("verify = \"restore\"").spawn();
    let id = backup_ok(&daemon, "cache");
    let keys: u64 = crate::redis_support::keyspace_json(&fx.redis)
        .as_object()
        .expect("keyspace")
        .values()
        .map(|d| d["keys"].as_u64().expect("keys"))
        .sum();
    let dbs = crate::redis_support::DBS.len();
    let drill = assert_drill_recorded(
        &daemon,
        &fx.backup_dir(),
        &id,
        &format!("{keys} keys in {dbs} database(s)"),
    );
    assert_eq!(drill["loaded"]["source"], "redis", "{drill:#}");
    assert_eq!(drill["loaded"]["keys"], keys, "{drill:#}");
    assert_eq!(drill["loaded"]["databases"], dbs, "{drill:#}");
    let m = metrics(&daemon);
    let secs = m.value(
        "atpred_restore_duration_seconds",
        &[("job", "cache"), ("kind", "drill")],
    );
    let want = drill["duration_ms"].as_f64().unwrap() / 1000.0;
    assert!((secs - want).abs() < 0.001, "{secs} vs {want}");

    // A drill on request is recorded too.
    let out = ctl(&daemon, &["backups", "verify", &id, "--level", "restore"]);
    assert_eq!(out.status, 0, "{}{}", out.stdout, out.stderr);
    let again = &evidence(&daemon, &id)["last_drill"];
    assert_ne!(again["at"], drill["at"], "{again:#}");
    assert_eq!(again["loaded"], drill["loaded"], "{again:#}");
}

#[test]
fn a_files_drill_records_evidence_too() {
    let fx = crate::files_support::FilesFixture::new(2);
    let daemon = fx.daemon("verify = \"restore\"").spawn();
    let id = backup_ok(&daemon, "appfiles");
    let m = crate::backup_support::manifest(&daemon, &id);
    let v = &m["verification"];
    assert_eq!(
        (&v["level"], &v["outcome"]),
        (&"restore".into(), &"passed".into()),
        "{v}"
    );
    let details = v["details"].as_str().expect("details");
    assert!(
        details.contains("unpacked into restore-scratch-dir"),
        "{details}"
    );
    let entries = m["tree"]["entries"].as_array().expect("entries");
    let bytes: u64 = entries
        .iter()
        .map(|e| e["size"].as_u64().unwrap_or(0))
        .sum();
    let drill = assert_drill_recorded(
        &daemon,
        &fx.backup_dir(),
        &id,
        &format!("{} entries", entries.len()),
    );
    assert_eq!(drill["loaded"]["source"], "files", "{drill:#}");
    assert_eq!(drill["loaded"]["entries"], entries.len(), "{drill:#}");
    assert_eq!(drill["loaded"]["bytes"], bytes, "{drill:#}");
    let scratch = fx.dir.path().join("state/restore");
    let left = crate::backup_support::entries(&scratch);
    assert!(left.is_empty(), "the drill left {left:?}");
    let m = metrics(&daemon);
    let drilled_at = m.value(
        "atpred_restore_drill_timestamp_seconds",
        &[("job", "appfiles")],
    );
    assert!(now() - drilled_at < 600.0, "{drilled_at}");
}
