//! Plan, then act, on backups made by the backup job: `atprectl run prune --dry-run` prints the
//! plan with its reasons and removes nothing; a real run removes exactly the planned backups,
//! logs each with its reason and the bytes freed, and records them in the history; `of` limits
//! a prune job to the backups of the jobs it names.

use std::collections::BTreeMap;

use crate::backup_support::{Fixture, backup_ok, backups, entries, run_job, wait_past_second_of};
use crate::core_support::history;
use crate::prune_support::{
    NIGHTLY, at, bytes_of, craft_copy, decision, dry_run, log_lines, mib, nightly_with_prune,
    prune_job, sorted, started_of,
};

#[test]
fn prune_dry_run_prints_the_plan_and_a_real_run_removes_exactly_it() {
    let (_fx, daemon, dir, r1) =
        nightly_with_prune("keep-last = 2\nkeep-daily = 3\nof = [\"nightly\"]");
    wait_past_second_of(&r1);
    let r2 = backup_ok(&daemon, "nightly");
    let today = started_of(&dir, &r1).date_naive();
    assert_eq!(
        started_of(&dir, &r2).date_naive(),
        today,
        "the two real backups straddle midnight UTC: run again"
    );
    // Older days cannot be waited for: copies of a real backup, dated back (see prune_support).
    let c1 = craft_copy(&dir, &r1, at(today, 1, 10));
    let c2 = craft_copy(&dir, &r1, at(today, 1, 8));
    let c3 = craft_copy(&dir, &r1, at(today, 2, 12));
    let c4 = craft_copy(&dir, &r1, at(today, 5, 12));
    let before = entries(&dir);
    assert_eq!(before.len(), 6, "{before:?}");

    // restic's reason words, so that a plan can be diffed against restic's.
    let expected = BTreeMap::from([
        (
            r2.clone(),
            decision(
                true,
                &["newest verified", "last snapshot", "daily snapshot"],
            ),
        ),
        (r1.clone(), decision(true, &["last snapshot"])),
        (c1.clone(), decision(true, &["daily snapshot"])),
        (c2.clone(), decision(false, &["no rule keeps it"])),
        (c3.clone(), decision(true, &["daily snapshot"])),
        (c4.clone(), decision(false, &["no rule keeps it"])),
    ]);
    let plan = dry_run(&daemon, "prune");
    assert_eq!(sorted(&plan), expected);
    assert_eq!(entries(&dir), before, "a dry run removes nothing");
    assert!(
        history(&daemon, Some("prune")).is_empty(),
        "a dry run is not a run of the history"
    );

    let freed = bytes_of(&dir, &c2) + bytes_of(&dir, &c4);
    let run = run_job(&daemon, "prune");
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
    assert_eq!(
        run["details"]["removed"],
        serde_json::json!([c2, c4]),
        "{run:#}"
    );
    assert_eq!(run["details"]["freed_bytes"], freed, "{run:#}");
    assert_eq!(run["details"]["kept"], 4, "{run:#}");
    let mut left = vec![r1.clone(), r2.clone(), c1.clone(), c3.clone()];
    left.sort();
    assert_eq!(entries(&dir), left, "exactly the planned removals");
    // Copies carry the bytes of the backup they copy.
    let bytes = bytes_of(&dir, &r1);
    for id in [&c2, &c4] {
        let lines = log_lines(
            &daemon,
            &[
                &format!(
                    "removed backup {id} (no rule keeps it; {} freed)",
                    mib(bytes)
                ),
                &format!("bytes={bytes}"),
            ],
        );
        assert_eq!(
            lines.len(),
            1,
            "one log line per removal:\n{}",
            daemon.log()
        );
    }
    let recorded = history(&daemon, Some("prune"));
    assert_eq!(recorded.len(), 1, "{recorded:#?}");
    assert_eq!(recorded[0]["details"]["removed"], run["details"]["removed"]);
    assert_eq!(recorded[0]["details"]["freed_bytes"], freed);
    let listed: Vec<String> = backups(&daemon)
        .iter()
        .map(|b| b["id"].as_str().expect("id").to_owned())
        .collect();
    assert_eq!(listed, left, "`atprectl backups` lists what is left");
}

#[test]
fn prune_of_nightly_leaves_the_backups_of_another_job_alone() {
    let fx = Fixture::new();
    fx.create_small_schema();
    let jobs = format!(
        "{NIGHTLY}\n[jobs.hourly]\nkind = \"backup\"\nverify = \"checksum\"\n\n{}",
        prune_job("prune", "keep-last = 1\nof = [\"nightly\"]")
    );
    let daemon = fx.daemon(&jobs).spawn();
    let dir = fx.backup_dir();
    let hourly = backup_ok(&daemon, "hourly");
    let nightly = backup_ok(&daemon, "nightly");
    let today = started_of(&dir, &nightly).date_naive();
    let old_nightly = craft_copy(&dir, &nightly, at(today, 3, 1));
    let old_hourly = craft_copy(&dir, &hourly, at(today, 3, 2));

    let plan = dry_run(&daemon, "prune");
    let planned: Vec<&String> = plan.keys().collect();
    assert_eq!(planned, [&old_nightly, &nightly], "only nightly's backups");
    let run = run_job(&daemon, "prune");
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
    assert_eq!(run["details"]["removed"], serde_json::json!([old_nightly]));
    let mut left = vec![hourly, old_hourly, nightly];
    left.sort();
    assert_eq!(entries(&dir), left, "hourly's backups are untouched");
}
