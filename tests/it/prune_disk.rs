//! Safety on disk: a symlink in backup-dir is never followed nor removed, a folder whose
//! manifest cannot be read stops the whole run, a stale `.partial-*` folder goes with the
//! prune run, `.trash-<id>` left by a crash goes at the next start-up, and `min-keep` holds.

use crate::backup_support::{backups, entries, run_job, snapshot_files};
use crate::prune_support::{
    at, craft_copy, craft_copy_as, decision, dry_run, log_lines, nightly_with_prune, sorted,
    started_of,
};

#[test]
fn prune_never_follows_a_symlink_removes_a_stale_partial_and_respects_min_keep() {
    let (fx, daemon, dir, r1) = nightly_with_prune("keep-last = 1\nmin-keep = 2");
    let today = started_of(&dir, &r1).date_naive();
    let c1 = craft_copy(&dir, &r1, at(today, 1, 12));
    let c2 = craft_copy(&dir, &r1, at(today, 2, 12));
    // Outside backup-dir, a folder that looks exactly like an old backup, linked in under its
    // own id: followed, it would be the oldest backup and the first to go.
    let outside = fx.dir.path().join("outside");
    let linked = craft_copy_as(&dir, &r1, at(today, 30, 12), Some(&outside));
    std::os::unix::fs::symlink(&outside, dir.join(&linked)).expect("symlink");
    let outside_before = snapshot_files(&outside);
    // A partial folder whose writer is gone: its lock file exists but nobody holds it.
    let partial = dir.join(".partial-20261101T000000Z-nightly");
    std::fs::create_dir(&partial).expect("create the partial folder");
    std::fs::write(partial.join(".lock"), b"").expect("lock file");
    std::fs::write(partial.join("database.backup"), b"half a dump").expect("half a dump");

    let plan = sorted(&dry_run(&daemon, "prune"));
    assert_eq!(
        plan.keys().collect::<Vec<_>>(),
        [&c2, &c1, &r1],
        "the symlink is no backup"
    );
    assert_eq!(
        plan[&r1],
        decision(true, &["newest verified", "last snapshot"])
    );
    assert_eq!(plan[&c1], decision(true, &["min-keep"]));
    assert_eq!(plan[&c2], decision(false, &["no rule keeps it"]));
    assert!(partial.exists(), "a dry run removes no partial either");

    let run = run_job(&daemon, "prune");
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
    assert_eq!(
        run["details"]["removed"],
        serde_json::json!([c2]),
        "{run:#}"
    );
    let link = std::fs::symlink_metadata(dir.join(&linked)).expect("the symlink is still there");
    assert!(link.file_type().is_symlink());
    assert_eq!(
        snapshot_files(&outside),
        outside_before,
        "its target untouched"
    );
    assert!(!partial.exists(), "the stale partial is removed");
    let said = log_lines(
        &daemon,
        &[".partial-20261101T000000Z-nightly", "no live writer"],
    );
    assert_eq!(said.len(), 1, "the log says so:\n{}", daemon.log());
    let mut left = vec![c1, r1, linked];
    left.sort();
    assert_eq!(entries(&dir), left);
}

#[test]
fn prune_removes_nothing_when_a_manifest_cannot_be_read_and_names_it() {
    let (_fx, daemon, dir, r1) = nightly_with_prune("keep-last = 1");
    let today = started_of(&dir, &r1).date_naive();
    craft_copy(&dir, &r1, at(today, 2, 12));
    let corrupt = craft_copy(&dir, &r1, at(today, 1, 12));
    let manifest = dir.join(&corrupt).join("manifest.json");
    let text = std::fs::read(&manifest).expect("read the manifest");
    std::fs::write(&manifest, &text[..text.len() / 2]).expect("cut the manifest short");
    let before = entries(&dir);

    for dry in [true, false] {
        let mut args = vec!["--json", "run", "prune", "--wait"];
        if dry {
            args.push("--dry-run");
        }
        let out = crate::backup_support::ctl(&daemon, &args);
        let run = crate::prune_support::finished(&out);
        assert_eq!(
            (out.status, &run["outcome"]),
            (1, &"failed".into()),
            "{run:#}"
        );
        let message = run["message"].as_str().expect("message");
        assert!(
            message.contains("removing nothing") && message.contains(&corrupt),
            "names the folder: {message}"
        );
        assert_eq!(entries(&dir), before, "nothing removed (dry run: {dry})");
    }
}

#[test]
fn prune_trash_left_by_a_crash_is_never_listed_and_goes_at_the_next_start() {
    let (_fx, mut daemon, dir, r1) = nightly_with_prune("keep-last = 1");
    let today = started_of(&dir, &r1).date_naive();
    // A crash between the rename to `.trash-<id>` and the delete leaves a whole backup there.
    let doomed = craft_copy(&dir, &r1, at(today, 1, 12));
    let trash = dir.join(format!(".trash-{doomed}"));
    std::fs::rename(dir.join(&doomed), &trash).expect("rename to trash");
    let r1_before = snapshot_files(&dir.join(&r1));

    let listed: Vec<_> = backups(&daemon).iter().map(|b| b["id"].clone()).collect();
    assert_eq!(listed, [r1.as_str()], "trash is not a backup");
    let plan = dry_run(&daemon, "prune");
    assert_eq!(plan.keys().collect::<Vec<_>>(), [&r1], "nor planned");

    daemon.restart();
    assert!(!trash.exists(), "trash removed at start-up");
    let said = log_lines(&daemon, &[&format!("removed .trash-{doomed}"), "crash"]);
    assert_eq!(said.len(), 1, "the log says so:\n{}", daemon.log());
    assert_eq!(entries(&dir), std::slice::from_ref(&r1));
    assert_eq!(
        snapshot_files(&dir.join(&r1)),
        r1_before,
        "the backup untouched"
    );
}

/// The clock went back: a backup dated after now is kept, the plan and the log warn, and it takes
/// no slot of the rules (keep-last 1 keeps the backup made now).
#[test]
fn prune_keeps_a_backup_dated_in_the_future_with_a_warning() {
    let (_fx, daemon, dir, r1) = nightly_with_prune("keep-last = 1");
    let ahead = craft_copy(&dir, &r1, started_of(&dir, &r1) + chrono::Days::new(2));
    let old = craft_copy(&dir, &r1, at(started_of(&dir, &r1).date_naive(), 3, 12));

    let out = crate::backup_support::ctl(&daemon, &["run", "prune", "--dry-run"]);
    assert!(
        out.stdout.contains(&format!("warning: {ahead} is dated")),
        "the plan warns:\n{}",
        out.stdout
    );
    let plan = sorted(&dry_run(&daemon, "prune"));
    assert!(plan[&ahead].keep, "{plan:#?}");
    assert!(
        plan[&ahead]
            .reasons
            .contains(&"dated in the future".to_owned()),
        "{plan:#?}"
    );
    assert!(
        !plan[&old].keep,
        "the rules still apply to the rest: {plan:#?}"
    );
    let run = run_job(&daemon, "prune");
    assert_eq!(
        run["details"]["removed"],
        serde_json::json!([old]),
        "{run:#}"
    );
    assert!(dir.join(&ahead).exists(), "kept: dated in the future");
    assert!(
        dir.join(&r1).exists(),
        "the backup made now stays the newest verified one: {run:#}"
    );
    let warned = log_lines(&daemon, &["WARN", &ahead, "is the clock right?"]);
    assert!(!warned.is_empty(), "the log warns:\n{}", daemon.log());
}
