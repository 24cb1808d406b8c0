//! Failed backups count for nothing and go only once a newer verified backup exists. They are
//! made honestly: a restore-verified backup job whose role has lost CREATEDB cannot create its
//! scratch database, so its verification fails and the folder is kept apart as `.failed-<id>`.

use crate::backup_support::{
    Fixture, ROLE, backup_ok, backups, entries, run_job, wait_past_second_of,
};
use crate::prune_support::{decision, dry_run, prune_job, sorted};

const JOBS: &str = "[jobs.nightly]\nkind = \"backup\"\nverify = \"restore\"\n";

#[test]
fn prune_removes_a_failed_backup_only_once_a_newer_verified_backup_exists() {
    let fx = Fixture::new();
    fx.create_small_schema();
    let daemon = fx
        .daemon(&format!("{JOBS}\n{}", prune_job("prune", "keep-last = 2")))
        .spawn();
    let dir = fx.backup_dir();
    let v1 = backup_ok(&daemon, "nightly");
    wait_past_second_of(&v1);

    fx.pg
        .psql("postgres", &format!("ALTER ROLE {ROLE} NOCREATEDB"));
    let run = run_job(&daemon, "nightly");
    assert_eq!(run["outcome"], "failed", "{run:#}");
    let failed = run["details"]["id"]
        .as_str()
        .map(str::to_owned)
        .unwrap_or_else(|| {
            // Not every failure names its id in the details: take it from the folder.
            let names = entries(&dir);
            let name = names.iter().find(|n| n.starts_with(".failed-"));
            let name = name.unwrap_or_else(|| panic!("no .failed-* folder: {names:?}"));
            name[".failed-".len()..].to_owned()
        });
    let failed_dir = format!(".failed-{failed}");
    assert_eq!(entries(&dir), [failed_dir.clone(), v1.clone()]);
    let listed = backups(&daemon);
    let state = listed.iter().find(|b| b["id"] == failed.as_str());
    assert_eq!(
        state.map(|b| b["state"].clone()),
        Some("failed".into()),
        "{listed:#?}"
    );

    // The failed backup is the newest: nothing verified is newer, so it stays.
    let plan = sorted(&dry_run(&daemon, "prune"));
    assert_eq!(
        plan[&failed],
        decision(true, &["not verified, but no newer verified backup yet"])
    );
    assert_eq!(
        plan[&v1],
        decision(true, &["newest verified", "last snapshot"])
    );
    let run = run_job(&daemon, "prune");
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
    assert_eq!(run["details"]["removed"], serde_json::json!([]), "{run:#}");
    assert_eq!(entries(&dir), [failed_dir.clone(), v1.clone()]);

    wait_past_second_of(&failed);
    fx.pg
        .psql("postgres", &format!("ALTER ROLE {ROLE} CREATEDB"));
    let v2 = backup_ok(&daemon, "nightly");
    let plan = sorted(&dry_run(&daemon, "prune"));
    assert_eq!(
        plan[&failed],
        decision(false, &["not verified; a newer verified backup exists"])
    );
    assert_eq!(
        plan[&v1],
        decision(true, &["last snapshot"]),
        "failed ones are not counted"
    );
    let run = run_job(&daemon, "prune");
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
    assert_eq!(run["details"]["removed"], serde_json::json!([failed]));
    assert_eq!(entries(&dir), [v1, v2], "the .failed- folder is gone");
}
