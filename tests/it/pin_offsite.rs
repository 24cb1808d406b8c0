//! Pins at an offsite target: pinning a backup whose copy is committed puts `pin.json` beside
//! the copy, and an offsite prune keeps it (`pinned: REASON` in its plan) even with the local
//! backup gone; unpinning removes it at the target too.

use crate::backup_support::{ctl, ctl_json, run_job, wait_past_second_of};
use crate::offsite_support::{Offsite, PREFIX, backup_copied};

const PRUNE: &str = "[jobs.prune-s3]\nkind = \"prune\"\ntarget = \"offsite\"\noffsite = \"s3\"\nkeep-last = 1\nof = [\"nightly\"]\n";

#[test]
fn a_pinned_offsite_copy_survives_offsite_prune() {
    let o = Offsite::new();
    let daemon = o.daemon("", "", PRUNE).spawn();
    let mut ids: Vec<String> = Vec::new();
    for _ in 0..3 {
        if let Some(last) = ids.last() {
            wait_past_second_of(last);
        }
        let (id, copy) = backup_copied(&daemon);
        assert_eq!(copy["stage"], "verified");
        ids.push(id);
    }
    let out = ctl(
        &daemon,
        &["backups", "pin", &ids[0], "--reason", "legal hold"],
    );
    assert_eq!(out.status, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("s3: pinned"), "{}", out.stdout);
    let key = format!("{PREFIX}/{}/pin.json", ids[0]);
    let stored: serde_json::Value = serde_json::from_slice(&o.get(&key)).expect("a pin object");
    assert_eq!(stored["reason"], "legal hold");
    // The pin travels with the copy: the local backup is not needed to honour it.
    std::fs::remove_dir_all(o.fx.backup_dir().join(&ids[0])).expect("remove the local backup");

    let dry = ctl(&daemon, &["run", "prune-s3", "--dry-run"]);
    assert!(
        dry.stdout.lines().any(|l| l.starts_with("keep")
            && l.contains(&ids[0])
            && l.contains("pinned: legal hold")),
        "{}",
        dry.stdout
    );
    let pruned = run_job(&daemon, "prune-s3");
    assert_eq!(pruned["outcome"], "succeeded", "{pruned:#}");
    assert_eq!(
        pruned["details"]["removed"],
        serde_json::json!([ids[1]]),
        "{pruned:#}"
    );
    let remote: Vec<String> = o
        .objects()
        .iter()
        .filter_map(|(k, _)| k.strip_suffix("/manifest.json").map(str::to_owned))
        .collect();
    assert_eq!(
        remote,
        [
            format!("{PREFIX}/{}", ids[0]),
            format!("{PREFIX}/{}", ids[2])
        ]
    );
    // Fetched back, the copy is pinned here too: the pin came with it.
    let out = ctl(&daemon, &["backups", "fetch", &ids[0]]);
    assert_eq!(out.status, 0, "{}{}", out.stdout, out.stderr);
    let listed = ctl_json(&daemon, &["backups"]);
    let fetched = listed["backups"]
        .as_array()
        .and_then(|b| b.iter().find(|b| b["id"] == ids[0].as_str()))
        .unwrap_or_else(|| panic!("{} listed: {listed:#}", ids[0]));
    assert_eq!(fetched["pinned"], "pinned: legal hold", "{fetched:#}");
}

#[test]
fn unpin_removes_the_pin_at_the_target() {
    let o = Offsite::new();
    let daemon = o.daemon("", "", PRUNE).spawn();
    let (first, _) = backup_copied(&daemon);
    wait_past_second_of(&first);
    let (_second, _) = backup_copied(&daemon);
    let out = ctl(&daemon, &["backups", "pin", &first]);
    assert_eq!(out.status, 0, "{}{}", out.stdout, out.stderr);
    let key = format!("{PREFIX}/{first}/pin.json");
    assert!(o.objects().iter().any(|(k, _)| *k == key));
    let out = ctl(&daemon, &["backups", "unpin", &first]);
    assert_eq!(out.status, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("s3: unpinned"), "{}", out.stdout);
    assert!(!o.objects().iter().any(|(k, _)| *k == key));
    let pruned = run_job(&daemon, "prune-s3");
    assert_eq!(
        pruned["details"]["removed"],
        serde_json::json!([first]),
        "{pruned:#}"
    );
}
