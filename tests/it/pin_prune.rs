//! Pins on the local catalog: `atprectl backups pin ID --reason TEXT` keeps a backup that the
//! policy would remove, the plan says `pinned: REASON`, the pin lives in the backup folder
//! (0600, outside the manifest, so verification is unchanged), and `unpin` hands the backup
//! back to the policy. Bad input is refused with its own message.

use std::os::unix::fs::PermissionsExt;

use crate::backup_support::{backups, ctl, entries, run_job};
use crate::prune_support::{
    at, craft_copy, decision, dry_run, nightly_with_prune, sorted, started_of,
};

#[test]
fn a_pinned_backup_survives_prune_until_it_is_unpinned() {
    let (_fx, daemon, dir, r1) = nightly_with_prune("keep-last = 1\nof = [\"nightly\"]");
    let today = started_of(&dir, &r1).date_naive();
    let old = craft_copy(&dir, &r1, at(today, 2, 3));
    let older = craft_copy(&dir, &r1, at(today, 3, 3));

    let out = ctl(
        &daemon,
        &["backups", "pin", &old, "--reason", "incident 42"],
    );
    assert_eq!(out.status, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("pinned: incident 42"), "{}", out.stdout);
    let pin = dir.join(&old).join("pin.json");
    let mode = std::fs::metadata(&pin)
        .expect("pin.json in the backup folder")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let listed = backups(&daemon);
    let pinned: Vec<(&str, &str)> = listed
        .iter()
        .filter_map(|b| Some((b["id"].as_str()?, b["pinned"].as_str()?)))
        .collect();
    assert_eq!(pinned, [(old.as_str(), "pinned: incident 42")]);

    let plan = sorted(&dry_run(&daemon, "prune"));
    assert_eq!(plan[&old], decision(true, &["pinned: incident 42"]));
    assert_eq!(plan[&older], decision(false, &["no rule keeps it"]));

    let run = run_job(&daemon, "prune");
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
    assert_eq!(
        run["details"]["removed"],
        serde_json::json!([older]),
        "{run:#}"
    );
    let mut left = vec![r1.clone(), old.clone()];
    left.sort();
    assert_eq!(entries(&dir), left, "the pinned backup stays");
    let verify = ctl(&daemon, &["backups", "verify", &old, "--level", "checksum"]);
    assert_eq!(
        verify.status, 0,
        "a pin is not a file of the backup: {}{}",
        verify.stdout, verify.stderr
    );

    let out = ctl(&daemon, &["backups", "unpin", &old]);
    assert_eq!(out.status, 0, "{}{}", out.stdout, out.stderr);
    assert!(out.stdout.contains("not pinned"), "{}", out.stdout);
    assert!(!pin.exists());
    let run = run_job(&daemon, "prune");
    assert_eq!(
        run["details"]["removed"],
        serde_json::json!([old]),
        "{run:#}"
    );
    assert_eq!(entries(&dir), [r1]);
}

#[test]
fn pin_refuses_an_unknown_backup_and_a_bad_reason() {
    let (_fx, daemon, dir, r1) = nightly_with_prune("keep-last = 1");
    let unknown = ctl(&daemon, &["backups", "pin", "20200101T000000Z-nightly"]);
    assert_eq!(unknown.status, 2, "{}{}", unknown.stdout, unknown.stderr);
    assert!(unknown.stderr.contains("no backup"), "{}", unknown.stderr);
    let escape = ctl(&daemon, &["backups", "pin", "../x"]);
    assert_eq!(escape.status, 2, "{}", escape.stderr);
    let newline = ctl(&daemon, &["backups", "pin", &r1, "--reason", "a\nb"]);
    assert_eq!(newline.status, 2, "{}", newline.stderr);
    assert!(
        newline.stderr.contains("control character"),
        "{}",
        newline.stderr
    );
    let long = "x".repeat(201);
    let long = ctl(&daemon, &["backups", "pin", &r1, "--reason", &long]);
    assert_eq!(long.status, 2, "{}", long.stderr);
    assert!(long.stderr.contains("longer than 200"), "{}", long.stderr);
    assert!(
        !dir.join(&r1).join("pin.json").exists(),
        "a refused pin writes nothing"
    );
}
