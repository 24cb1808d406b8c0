//! Point-in-time restore from an offsite target alone (`restore --pitr --target NAME`): a real
//! primary archived to a real S3-compatible target (Garage) with its physical base backups,
//! the daemon stopped, the local archive and backup-dir deleted, and the cluster restored from
//! what the target holds: its catalog and the segment index uploaded beside the WAL.

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::Utc;
use nix::sys::signal::Signal;
use object_store::ObjectStoreExt;
use object_store::path::Path as Key;

use crate::harness::{self, Garage, block_on};
use crate::wal_pitr::{
    Restored, assert_restored, base_backup, base_job, batch, pitr, restored_batches, rfc3339,
    wait_past,
};
use crate::wal_support::{ARCHIVE_TIMEOUT, JOB, WalFixture, wait_receiving};

const PREFIX: &str = "atp-po";
/// Not wal_pitr's port: both tests may run at once.
const PORT: &str = "25998";

/// The names in the index uploaded to the target, or none when it is not there.
fn remote_index(garage: &Garage) -> Option<BTreeSet<String>> {
    let key = Key::from(format!("{PREFIX}/wal/{JOB}/index.jsonl"));
    let bytes = block_on(async { garage.store().get(&key).await?.bytes().await }).ok()?;
    let text = String::from_utf8(bytes.to_vec()).expect("UTF-8");
    Some(
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
                v["name"].as_str().expect("name").to_owned()
            })
            .collect(),
    )
}

/// The segment files at the target (the index and any mark aside).
fn remote_segments(garage: &Garage) -> BTreeSet<String> {
    use futures::TryStreamExt;
    use object_store::ObjectStore;
    let prefix = Key::from(format!("{PREFIX}/wal/{JOB}"));
    block_on(async {
        garage
            .store()
            .list(Some(&prefix))
            .try_collect::<Vec<_>>()
            .await
    })
    .unwrap_or_default()
    .into_iter()
    .filter_map(|o| o.location.filename().map(str::to_owned))
    .filter_map(|n| n.strip_suffix(".zst.age").map(str::to_owned))
    .collect()
}

fn local_index(w: &WalFixture) -> BTreeSet<String> {
    w.index()
        .iter()
        .map(|v| v["name"].as_str().expect("name").to_owned())
        .collect()
}

/// Waits until every locally indexed segment is at the target and in its uploaded index.
fn wait_offsite(w: &WalFixture, garage: &Garage) -> BTreeSet<String> {
    let ok = harness::wait_until(ARCHIVE_TIMEOUT, || {
        let local = local_index(w);
        remote_index(garage).is_some_and(|r| r == local) && remote_segments(garage) == local
    });
    assert!(
        ok,
        "locally {:?}, at the target {:?}, in its index {:?}",
        local_index(w),
        remote_segments(garage),
        remote_index(garage)
    );
    local_index(w)
}

#[test]
fn wal_offsite_index_at_the_target_lists_exactly_the_uploaded_segments() {
    let w = WalFixture::new();
    let garage = Garage::start();
    let credentials = garage.credentials_file(w.fx.dir.path());
    let daemon = w
        .daemon(&format!(
            "offsite = \"s3\"\n{}",
            base_job(&w, "pitr-drill = false")
        ))
        .toml(&garage.offsite_toml("s3", &credentials, PREFIX, ""))
        .toml(&garage.offsite_toml("empty", &credentials, "atp-po-empty", ""))
        .spawn();
    wait_receiving(&daemon, 1);
    // No index at a target the archive never copied to: refused, naming the target.
    let dir = w.fx.dir.path().join("restored");
    let now = rfc3339(Utc::now());
    let out = pitr(&daemon, &now, &dir, &["--target", "empty", "--dry-run"]);
    assert_eq!(out.status, 22, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr
            .contains("offsite target empty has no WAL index for job wal"),
        "{}",
        out.stderr
    );
    let out = pitr(&daemon, &now, &dir, &["--target", "nowhere", "--dry-run"]);
    assert_eq!(out.status, 2, "{}{}", out.stdout, out.stderr);
    assert!(
        out.stderr.contains("no offsite target \"nowhere\""),
        "{}",
        out.stderr
    );
    // --target with --to-dir is for --pitr only, not a files backup's restore.
    let files = crate::backup_support::ctl(
        &daemon,
        &[
            "restore",
            "20261206T000000Z-files",
            "--to-dir",
            "/tmp/x",
            "--target",
            "s3",
        ],
    );
    assert_eq!(files.status, 2, "{}{}", files.stdout, files.stderr);
    assert!(
        files
            .stderr
            .contains("--target is for database restores and --pitr"),
        "{}",
        files.stderr
    );

    for tag in ["a", "b"] {
        let seg = w.write_and_switch(tag, 2_000);
        w.wait_archived(&daemon, &seg);
    }
    let first = wait_offsite(&w, &garage);
    assert!(first.len() >= 2, "{first:?}");
    // A later batch: the index is written again, whole, with the new segment.
    let seg = w.write_and_switch("c", 2_000);
    w.wait_archived(&daemon, &seg);
    let all = wait_offsite(&w, &garage);
    assert!(all.contains(&seg) && all.is_superset(&first), "{all:?}");
    assert!(!dir.exists());
}

#[test]
fn wal_pitr_restore_from_garage_with_the_local_archive_deleted() {
    let w = WalFixture::new();
    w.fx.sql("CREATE TABLE marks (batch int, n int)");
    let garage = Garage::start();
    let credentials = garage.credentials_file(w.fx.dir.path());
    let mut daemon = w
        .daemon(&format!(
            "offsite = \"s3\"\n{}",
            base_job(&w, "pitr-drill = false\noffsite = \"s3\"")
        ))
        .toml(&garage.offsite_toml("s3", &credentials, PREFIX, ""))
        .spawn();
    wait_receiving(&daemon, 1);
    base_backup(&w, &daemon);
    let t1 = batch(&w, &daemon, 1);
    wait_past(t1, Duration::from_millis(500));
    let t2 = batch(&w, &daemon, 2);
    wait_past(t2, Duration::from_secs(1));
    let target = Utc::now();
    wait_past(target, Duration::from_secs(1));
    let t3 = batch(&w, &daemon, 3);
    assert!(t1 < t2 && t2 < target && target < t3);
    wait_offsite(&w, &garage);

    // Nothing local left: the archive and the base backups are gone.
    daemon.signal(Signal::SIGTERM);
    assert!(daemon.wait_exit(Duration::from_secs(30)).is_some());
    std::fs::remove_dir_all(w.archive_dir()).expect("remove the archive-dir");
    std::fs::remove_dir_all(w.fx.backup_dir()).expect("remove backup-dir");
    daemon.restart();

    let dir = w.fx.dir.path().join("restored");
    let time = rfc3339(target);
    let dry = pitr(&daemon, &time, &dir, &["--target", "s3", "--dry-run"]);
    assert_eq!(dry.status, 0, "{}{}", dry.stdout, dry.stderr);
    assert!(!dir.exists(), "a dry run changes nothing");
    let local = pitr(&daemon, &time, &dir, &["--dry-run"]);
    assert_ne!(
        local.status, 0,
        "the local archive is gone: {}",
        local.stdout
    );

    let _restored = Restored(dir.clone());
    let out = pitr(
        &daemon,
        &time,
        &dir,
        &["--target", "s3", "--start", "--port", PORT],
    );
    assert_restored(&out, &daemon);
    assert_eq!(
        restored_batches(&w, PORT),
        "{1,2}",
        "batches 1 and 2, not 3"
    );
    let spool = w.spool_dir(&daemon);
    let state = spool.parent().and_then(|p| p.parent()).expect("state-dir");
    let scratch: Vec<_> = std::fs::read_dir(state.join("restore"))
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().contains("pitr-offsite"))
        .collect();
    assert!(scratch.is_empty(), "the download folder is removed");
}
