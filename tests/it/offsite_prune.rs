//! `kind = "prune"` with `target = "offsite"`: the same planner and safety rules over the
//! remote catalog. The local catalog is never touched; a target that cannot be listed, or a
//! remote manifest that cannot be read, removes nothing.

use crate::backup_support::{backups, run_job, wait_past_second_of};
use crate::offsite_support::{Offsite, PREFIX, backup_copied};

const PRUNE: &str = "[jobs.prune-s3]\nkind = \"prune\"\ntarget = \"offsite\"\noffsite = \"s3\"\nkeep-last = 2\nof = [\"nightly\"]\n";

#[test]
fn offsite_prune_applies_the_policy_to_the_remote_catalog_only() {
    let mut o = Offsite::new();
    let daemon = o
        .daemon(
            "retries = 0\nretry-timeout = \"1s\"\nrequest-timeout = \"3s\"\n",
            "",
            PRUNE,
        )
        .spawn();
    let mut ids: Vec<String> = Vec::new();
    for _ in 0..4 {
        if let Some(last) = ids.last() {
            wait_past_second_of(last);
        }
        let (id, copy) = backup_copied(&daemon);
        assert_eq!(copy["stage"], "verified");
        ids.push(id);
    }
    assert_eq!(o.committed_under(PREFIX), ids);
    // Someone else's files under the same prefix: not listed, never touched.
    let foreign = [
        format!("{PREFIX}/test-setup/data.bin"),
        format!("{PREFIX}/notes.txt"),
    ];
    for key in &foreign {
        o.put(key, b"not atpred's".to_vec());
    }
    let listed = crate::backup_support::ctl_json(&daemon, &["backups", "--remote"]);
    let listed: Vec<&str> = listed["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ids.iter().map(String::as_str).collect::<Vec<_>>());

    let dry = crate::backup_support::ctl(&daemon, &["run", "prune-s3", "--dry-run"]);
    assert!(
        dry.stdout.contains("remove") && dry.stdout.contains(&ids[0]),
        "{}",
        dry.stdout
    );
    assert_eq!(o.committed_under(PREFIX), ids, "a dry run removes nothing");

    // A manifest at the target that cannot be read: nothing is removed.
    let bad = format!("{PREFIX}/{}/manifest.json", ids[1]);
    let good = o.get(&bad);
    o.put(&bad, b"{ not json".to_vec());
    let refused = run_job(&daemon, "prune-s3");
    assert_eq!(refused["outcome"], "failed", "{refused:#}");
    assert!(
        refused["message"]
            .as_str()
            .unwrap()
            .contains("removing nothing"),
        "{refused:#}"
    );
    assert_eq!(o.committed_under(PREFIX), ids);
    o.put(&bad, good);

    // The target down: nothing removed, the run says why.
    o.garage.kill();
    let down = run_job(&daemon, "prune-s3");
    assert_eq!(down["outcome"], "failed", "{down:#}");
    assert!(
        down["message"]
            .as_str()
            .unwrap()
            .contains("removing nothing"),
        "{down:#}"
    );
    o.garage.restart();
    assert_eq!(o.committed_under(PREFIX), ids);

    let pruned = run_job(&daemon, "prune-s3");
    assert_eq!(pruned["outcome"], "succeeded", "{pruned:#}");
    let mut removed: Vec<String> =
        serde_json::from_value(pruned["details"]["removed"].clone()).unwrap();
    removed.sort();
    assert_eq!(removed, ids[..2].to_vec(), "{pruned:#}");
    assert_eq!(
        o.committed_under(PREFIX),
        ids[2..].to_vec(),
        "the two newest stay"
    );
    assert!(
        !o.objects()
            .iter()
            .any(|(k, _)| k.contains(&ids[0]) || k.contains(&ids[1])),
        "every object of a removed backup is gone: {:?}",
        o.objects()
    );
    assert_eq!(
        backups(&daemon).len(),
        4,
        "the local catalog is not the target's"
    );
}
