//! `restore --replace` first takes a safety backup of the database it replaces: a verified
//! (level full) backup `<time>-<job>.safety` of the old data, pinned from the moment it is
//! published, that restores to exactly the old rows, and that prune keeps without letting it
//! push a real backup out of `keep-last`. A safety backup that cannot be taken (a full
//! backup-dir) refuses the replace with exit 16 before anything is touched.

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::backup_disturb::Tmpfs;
use crate::backup_support::{Fixture, backup_ok, backups, entries, manifest, run_job};
use crate::harness;
use crate::prune_support::{NIGHTLY, decision, dry_run, nightly_with_prune, sorted};
use crate::restore_support::{SOURCE, databases, fingerprint, fingerprints, restore};

/// Changes the source after its backup (rows gone, a table added); returns the fingerprints of
/// the changed data, the new table's included.
fn change_source(fx: &Fixture) -> Vec<(String, String)> {
    fx.sql(
        "DELETE FROM accounts WHERE id <= 100; CREATE TABLE after_backup (x int); \
         INSERT INTO after_backup SELECT generate_series(1, 7)",
    );
    with_after_backup(fx, SOURCE)
}

fn with_after_backup(fx: &Fixture, db: &str) -> Vec<(String, String)> {
    let mut all = fingerprints(fx, db);
    all.push(("after_backup".into(), fingerprint(fx, db, "after_backup")));
    all
}

fn safety_ids(dir: &Path) -> Vec<String> {
    entries(dir)
        .into_iter()
        .filter(|e| e.ends_with("-nightly.safety"))
        .collect()
}

#[test]
fn replace_takes_a_pinned_verified_safety_backup_that_prune_keeps() {
    let (fx, daemon, dir, r1) = nightly_with_prune("keep-last = 1\nof = [\"nightly\"]");
    let backed = fingerprints(&fx, SOURCE);
    let changed = change_source(&fx);

    let dry = restore(&daemon, &r1, &["--to", SOURCE, "--replace", "--dry-run"]);
    assert_eq!(dry.status, 0, "{}{}", dry.stdout, dry.stderr);
    assert!(
        dry.stdout
            .contains("1. if atp_app exists: take a safety backup of it first"),
        "{}",
        dry.stdout
    );
    assert!(safety_ids(&dir).is_empty(), "a dry run takes no backup");

    let out = restore(&daemon, &r1, &["--to", SOURCE, "--replace", "--yes"]);
    assert_eq!(
        out.status,
        0,
        "{}{}\n{}",
        out.stdout,
        out.stderr,
        daemon.log()
    );
    let [safety] = safety_ids(&dir).try_into().expect("one safety backup");
    assert!(
        out.stdout.contains(&format!(
            "safety backup of the old {SOURCE}: {safety} (pinned"
        )),
        "{}",
        out.stdout
    );
    assert_eq!(fingerprints(&fx, SOURCE), backed, "the backup is in place");

    // Pinned by a file in its folder, with the reason; verified in full; marked in its manifest.
    let reason = format!("safety backup before restore of {r1} into {SOURCE}");
    let pin = dir.join(&safety).join("pin.json");
    let mode = std::fs::metadata(&pin)
        .expect("pin.json")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let listed: Vec<(String, String)> = backups(&daemon)
        .iter()
        .filter_map(|b| Some((b["id"].as_str()?.into(), b["pinned"].as_str()?.into())))
        .collect();
    assert_eq!(listed, [(safety.clone(), format!("pinned: {reason}"))]);
    let m = manifest(&daemon, &safety);
    assert_eq!(m["database"], SOURCE, "{m:#}");
    assert_eq!(m["safety_for"]["database"], SOURCE, "{m:#}");
    assert_eq!(m["safety_for"]["restore_of"], r1.as_str(), "{m:#}");
    assert_eq!(m["verification"]["level"], "full", "{m:#}");
    assert_eq!(m["verification"]["outcome"], "passed", "{m:#}");

    // It is not the job's newest backup in the metrics (nor for freshness and size ratios).
    let bytes = |id: &str| manifest(&daemon, id)["bytes"].as_f64().expect("bytes");
    assert_ne!(bytes(&r1), bytes(&safety), "the sizes tell the two apart");
    let metrics = daemon.ctl(["metrics"]).stdout;
    let shown = metrics
        .lines()
        .find_map(|l| l.strip_prefix("atpred_backup_bytes{job=\"nightly\"} "))
        .and_then(|v| v.trim().parse::<f64>().ok());
    assert_eq!(shown, Some(bytes(&r1)), "{metrics}");

    // It holds the old data: restored into a third database, every row as before the replace.
    let third = restore(&daemon, &safety, &["--to", "third", "--yes"]);
    assert_eq!(third.status, 0, "{}{}", third.stdout, third.stderr);
    assert_eq!(with_after_backup(&fx, "third"), changed);

    // keep-last = 1 keeps the real backup (the safety backup, newer, does not count) and the
    // safety backup by its pin; nothing is removed.
    let plan = sorted(&dry_run(&daemon, "prune"));
    assert!(plan[&r1].keep, "{plan:?}");
    assert_eq!(
        plan[&safety],
        decision(true, &[&format!("pinned: {reason}")])
    );
    let run = run_job(&daemon, "prune");
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
    assert_eq!(run["details"]["removed"], serde_json::json!([]), "{run:#}");
    let mut left = vec![r1.clone(), safety.clone()];
    left.sort();
    let kept: Vec<String> = entries(&dir)
        .into_iter()
        .filter(|e| !e.starts_with('.'))
        .collect();
    assert_eq!(kept, left);
}

/// Needs root to mount a small tmpfs as backup-dir.
#[test]
fn a_safety_backup_that_cannot_be_taken_refuses_the_replace() {
    if !harness::is_root() {
        eprintln!("not root: cannot mount a small tmpfs as backup-dir");
        return;
    }
    let fx = Fixture::new();
    fx.create_small_schema();
    let _tmpfs = Tmpfs::mount(&fx.backup_dir(), "32m");
    let daemon = fx.daemon(NIGHTLY).spawn();
    let id = backup_ok(&daemon, "nightly");
    let changed = change_source(&fx);
    fill(&fx.backup_dir().join("filler"));

    let out = restore(&daemon, &id, &["--to", SOURCE, "--replace", "--yes"]);
    assert_eq!(
        out.status,
        16,
        "{}{}\n{}",
        out.stdout,
        out.stderr,
        daemon.log()
    );
    assert!(
        out.stderr.contains(&format!(
            "refusing to replace \"{SOURCE}\": its safety backup could not be taken"
        )) && out.stderr.contains("nothing was touched"),
        "{}",
        out.stderr
    );
    assert!(
        out.stderr.contains("space"),
        "names the cause: {}",
        out.stderr
    );
    assert_eq!(
        with_after_backup(&fx, SOURCE),
        changed,
        "the target is untouched"
    );
    let dbs = databases(&fx);
    assert!(!dbs.iter().any(|d| d.contains("atpred_")), "{dbs:?}");
    assert_eq!(
        entries(&fx.backup_dir()),
        [id, "filler".to_owned()],
        "no safety backup and nothing partial left"
    );
}

/// Writes zeros into `path` until the file system is full.
fn fill(path: &Path) {
    let mut file = std::fs::File::create(path).expect("create the filler");
    let block = vec![0u8; 64 * 1024];
    while file.write_all(&block).is_ok() {}
    let _ = file.sync_all();
}
