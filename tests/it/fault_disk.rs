//! backup-dir gone bad under a daemon that already holds a good backup: made read-only, and
//! replaced by a symlink to a folder elsewhere. The run fails with a clear message, no partial is
//! left or listed, the older backup is byte-for-byte untouched (also through the symlink), and the
//! daemon keeps answering. The full disk is `backup_disk`.

use std::process::Command;
use std::time::Duration;

use crate::backup_disturb::Tmpfs;
use crate::backup_support::{
    Fixture, assert_only_older_intact, backup_ok, backups, ctl, entries, run_job, snapshot_files,
    wait_past_second_of,
};
use crate::fault_support::{self, Row};
use crate::harness::{self, process::run_with_timeout};

const JOB: &str = "[jobs.nightly]\nkind = \"backup\"\nverify = \"checksum\"";

/// `mount -o remount,MODE PATH` (needs root).
fn remount(path: &std::path::Path, mode: &str) {
    let out = run_with_timeout(
        Command::new("mount")
            .args(["-o", &format!("remount,{mode}")])
            .arg(path),
        Duration::from_secs(10),
    );
    assert_eq!(
        out.status,
        0,
        "remount {mode} {}: {}",
        path.display(),
        out.stderr
    );
}

/// As root a tmpfs remounted read-only (root ignores permission bits); otherwise mode 0500.
#[test]
fn fault_read_only_backup_dir_fails_the_run_and_keeps_the_older_backup() {
    let fx = Fixture::new();
    fx.create_small_schema();
    let tmpfs = harness::is_root().then(|| Tmpfs::mount(&fx.backup_dir(), "64m"));
    let daemon = fx.daemon(JOB).spawn();
    let older = backup_ok(&daemon, "nightly");
    let before = snapshot_files(&fx.backup_dir().join(&older));
    let how = if tmpfs.is_some() {
        remount(&fx.backup_dir(), "ro");
        "tmpfs remounted read-only"
    } else {
        harness::set_mode(&fx.backup_dir(), 0o500);
        "backup-dir mode 0500"
    };
    wait_past_second_of(&older);

    let record = run_job(&daemon, "nightly");
    let message = record["message"].as_str().unwrap_or_default().to_owned();
    eprintln!(
        "fault_disk: {how}: the run {} with: {message}",
        record["outcome"]
    );
    let failed = record["outcome"] == "failed";
    let clear = message.contains("Read-only file system") || message.contains("Permission denied");
    let status = ctl(&daemon, &["status"]);
    if tmpfs.is_some() {
        remount(&fx.backup_dir(), "rw");
    } else {
        harness::set_mode(&fx.backup_dir(), 0o700);
    }
    let intact = entries(&fx.backup_dir()) == [older.clone()]
        && snapshot_files(&fx.backup_dir().join(&older)) == before;
    fault_support::record(&Row {
        scenario: "read-only backup-dir",
        seed: None,
        runs: 1,
        faults: 1,
        losses: usize::from(!intact),
        crashes: usize::from(status.status != 0),
        notes: how.to_owned(),
    });
    assert!(failed, "{record:#}");
    assert!(clear, "the message says why: {message}");
    assert!(
        message.contains(&fx.backup_dir().display().to_string()),
        "and where: {message}"
    );
    assert_eq!(status.status, 0, "the daemon answers: {status:?}");
    assert_only_older_intact(&fx, &daemon, &older, &before, how);
    drop(daemon);
    drop(tmpfs);
}

#[test]
fn fault_backup_dir_replaced_by_a_symlink_is_refused_and_nothing_is_written_through_it() {
    let fx = Fixture::new();
    fx.create_small_schema();
    let daemon = fx.daemon(JOB).spawn();
    let older = backup_ok(&daemon, "nightly");
    let elsewhere = fx.dir.path().join("elsewhere");
    std::fs::rename(fx.backup_dir(), &elsewhere).expect("move backup-dir away");
    std::os::unix::fs::symlink(&elsewhere, fx.backup_dir()).expect("symlink backup-dir");
    let before = snapshot_files(&elsewhere);
    wait_past_second_of(&older);

    let record = run_job(&daemon, "nightly");
    let message = record["message"].as_str().unwrap_or_default().to_owned();
    eprintln!(
        "fault_disk: backup-dir replaced by a symlink: the run {} with: {message}",
        record["outcome"]
    );
    let listing = ctl(&daemon, &["--json", "backups"]);
    eprintln!(
        "fault_disk: `backups` through the symlink: exit {}: {}{}",
        listing.status,
        listing.stdout.trim(),
        listing.stderr.trim()
    );
    let untouched = entries(&elsewhere) == [older.clone()] && snapshot_files(&elsewhere) == before;
    let status = ctl(&daemon, &["status"]);
    fault_support::record(&Row {
        scenario: "backup-dir replaced by a symlink",
        seed: None,
        runs: 1,
        faults: 1,
        losses: usize::from(!untouched),
        crashes: usize::from(status.status != 0),
        notes: "refused, not followed".to_owned(),
    });
    assert_eq!(record["outcome"], "failed", "{record:#}");
    assert!(message.contains("is a symlink"), "{message}");
    assert!(
        untouched,
        "nothing written through the symlink: {:?}",
        entries(&elsewhere)
    );
    assert!(
        std::fs::symlink_metadata(fx.backup_dir())
            .expect("still there")
            .file_type()
            .is_symlink(),
        "the symlink is left as the operator made it"
    );
    assert_eq!(status.status, 0, "the daemon answers: {status:?}");
    // Nothing partial is listed: either nothing at all (the listing refuses the symlink too) or
    // only the older, verified backup.
    if listing.status == 0 {
        let listed = backups(&daemon);
        assert!(
            listed
                .iter()
                .all(|b| b["id"] == older.as_str() && b["state"] == "verified"),
            "{listed:?}"
        );
    } else {
        assert!(listing.stderr.contains("symlink"), "{listing:?}");
    }
}
