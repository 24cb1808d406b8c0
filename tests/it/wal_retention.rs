//! WAL retention by the prune job against a real primary: the WAL of the oldest retained base
//! backup stays and older segments go (index and files), a pinned old base holds its WAL, a
//! gap before the oldest base is never pruned across, the copies at a Garage target are pruned
//! the same way behind a `offsite-<target>.pruned` mark, and a base backup of a linked job
//! clears the recreated-slot marker.

use std::path::Path;

use futures::TryStreamExt;
use object_store::path::Path as Key;
use object_store::{ObjectStore, ObjectStoreExt};
use serde_json::Value;

use crate::backup_support::{backup_ok, ctl, manifest, run_job, wait_past_second_of};
use crate::harness::{self, Daemon, Garage, block_on};
use crate::wal_support::{ARCHIVE_TIMEOUT, JOB, WalFixture, wait_check, wait_receiving};

const PREFIX: &str = "atp-re";

/// A physical backup job `base` encrypted to the fixture's key, plus `extra` lines.
fn base_job(wf: &WalFixture, name: &str, extra: &str) -> String {
    format!(
        "[jobs.{name}]\nkind = \"backup\"\nmethod = \"physical\"\nverify = \"checksum\"\nencrypt-to = [\"{}\"]\npitr-drill = false\n{extra}\n",
        wf.public
    )
}

fn prune(name: &str, policy: &str) -> String {
    format!("[jobs.{name}]\nkind = \"prune\"\nof = [\"base\"]\n{policy}\n")
}

/// Three base backups with WAL written and switched before, between and after them, all
/// archived. Returns the bases as (id, start WAL file), oldest first.
fn three_bases(wf: &WalFixture, daemon: &Daemon) -> Vec<(String, String)> {
    wait_receiving(daemon, 1);
    let mut bases: Vec<(String, String)> = Vec::new();
    for tag in ["a", "b", "c"] {
        let seg = wf.write_and_switch(tag, 5_000);
        wf.wait_archived(daemon, &seg);
        if let Some((last, _)) = bases.last() {
            wait_past_second_of(last);
        }
        let id = backup_ok(daemon, "base");
        let start = manifest(daemon, &id)["physical"]["start_wal_file"]
            .as_str()
            .expect("start_wal_file")
            .to_owned();
        bases.push((id, start));
    }
    let last = wf.write_and_switch("d", 5_000);
    wf.wait_archived(daemon, &last);
    for (_, start) in &bases {
        wf.wait_archived(daemon, start);
    }
    bases
}

fn indexed(wf: &WalFixture) -> Vec<String> {
    let mut names: Vec<String> = wf
        .index()
        .iter()
        .filter_map(|e| e["name"].as_str().map(str::to_owned))
        .filter(|n| n.len() == 24)
        .collect();
    names.sort();
    names
}

fn archived_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .expect("archive-dir")
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".zst.age"))
        .collect();
    names.sort();
    names
}

/// The index lists exactly the segments from `keep_from` on that it listed `before`, and the
/// folder holds exactly their files.
fn assert_kept_from(wf: &WalFixture, before: &[String], keep_from: &str) {
    let want: Vec<String> = before
        .iter()
        .filter(|n| n.as_str() >= keep_from)
        .cloned()
        .collect();
    assert!(
        before.iter().any(|n| n.as_str() < keep_from),
        "nothing older than {keep_from} to prune in {before:?}"
    );
    assert_eq!(indexed(wf), want, "the index after the prune");
    let files: Vec<String> = want.iter().map(|n| format!("{n}.zst.age")).collect();
    assert_eq!(
        archived_files(&wf.archive_dir()),
        files,
        "the files after the prune"
    );
}

fn pruned(daemon: &Daemon, job: &str) -> Value {
    let run = run_job(daemon, job);
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
    run
}

#[test]
fn wal_retention_keeps_the_wal_of_the_oldest_retained_base_and_removes_older() {
    let wf = WalFixture::new();
    let daemon = wf
        .daemon("")
        .toml(&base_job(&wf, "base", ""))
        .toml(&prune("prune", "keep-last = 2"))
        .spawn();
    let bases = three_bases(&wf, &daemon);
    let before = indexed(&wf);

    let dry = ctl(&daemon, &["run", "prune", "--dry-run"]);
    assert!(
        dry.stdout
            .contains(&format!("wal     {JOB}: keep from {}", bases[1].1)),
        "{}",
        dry.stdout
    );
    assert_eq!(indexed(&wf), before, "a dry run removes nothing");
    // A file an interrupted prune left behind: below the cutoff and in no index line.
    let orphan = wf.archive_dir().join("000000010000000000000000.zst.age");
    std::fs::copy(
        wf.archive_dir().join(format!("{}.zst.age", before[0])),
        &orphan,
    )
    .expect("plant a leftover");

    let run = pruned(&daemon, "prune");
    let wal = &run["details"]["wal"][0];
    assert_eq!(wal["plan"]["keep_from"], bases[1].1.as_str(), "{run:#}");
    assert!(
        run["message"]
            .as_str()
            .unwrap_or("")
            .contains(&format!("WAL of {JOB}: removed")),
        "{run:#}"
    );
    assert_kept_from(&wf, &before, &bases[1].1);
    assert!(!orphan.exists(), "the leftover below the cutoff goes too");
    // What stays still replays: decrypted, the kept segments chain for pg_waldump.
    let plain = wf.fx.dir.path().join("plain");
    let names = wf.restore_segments(&plain);
    let dump = wf.waldump(&plain, &names);
    assert_eq!(dump.status, 0, "{}{}", dump.stdout, dump.stderr);
    // The archiver follows the rewritten index and goes on appending to it.
    let next = wf.write_and_switch("e", 5_000);
    wf.wait_archived(&daemon, &next);
    assert!(
        indexed(&wf)
            .iter()
            .all(|n| n.as_str() >= bases[1].1.as_str())
    );
    wait_check(&daemon, "ok", "receiving");
}

#[test]
fn wal_retention_a_pinned_old_base_keeps_its_wal() {
    let wf = WalFixture::new();
    let daemon = wf
        .daemon("")
        .toml(&base_job(&wf, "base", ""))
        .toml(&prune("prune", "keep-last = 1"))
        .spawn();
    let bases = three_bases(&wf, &daemon);
    let before = indexed(&wf);
    let pin = ctl(
        &daemon,
        &["backups", "pin", &bases[0].0, "--reason", "audit"],
    );
    assert_eq!(pin.status, 0, "{}{}", pin.stdout, pin.stderr);

    let run = pruned(&daemon, "prune");
    assert_eq!(
        run["details"]["removed"],
        serde_json::json!([bases[1].0]),
        "{run:#}"
    );
    let plan = &run["details"]["wal"][0]["plan"];
    assert_eq!(plan["keep_from"], bases[0].1.as_str(), "{run:#}");
    assert!(
        plan["reasons"][0]
            .as_str()
            .unwrap_or("")
            .contains("(pinned)"),
        "{run:#}"
    );
    // The segments between the pinned base and the newest stay, though base 2 went.
    assert_kept_from(&wf, &before, &bases[0].1);
}

#[test]
fn wal_retention_a_gap_before_the_oldest_base_is_not_pruned_across() {
    let wf = WalFixture::new();
    let daemon = wf
        .daemon("")
        .toml(&base_job(&wf, "base", ""))
        .toml(&prune("prune", "keep-last = 1"))
        .spawn();
    let bases = three_bases(&wf, &daemon);
    let before = indexed(&wf);
    assert!(before.len() >= 4 && before[2] < bases[2].1, "{before:?}");
    // A segment lost from the archive (its line and its file), before the oldest retained base.
    let lost = before[2].clone();
    let index = wf.archive_dir().join("index.jsonl");
    let kept: String = std::fs::read_to_string(&index)
        .expect("index")
        .lines()
        .filter(|l| !l.contains(&lost))
        .map(|l| format!("{l}\n"))
        .collect();
    let tmp = wf.archive_dir().join(".index.test.tmp");
    std::fs::write(&tmp, kept).expect("write the index");
    std::fs::rename(&tmp, &index).expect("replace the index");
    std::fs::remove_file(wf.archive_dir().join(format!("{lost}.zst.age"))).expect("remove");
    let gap = format!("gap in the archive: {lost} to {lost} missing");
    wait_check(&daemon, "fail", &gap);

    let run = pruned(&daemon, "prune");
    let plan = &run["details"]["wal"][0]["plan"];
    assert_eq!(plan["keep_from"], before[1].as_str(), "{run:#}");
    assert!(plan.to_string().contains("a gap in the archive"), "{run:#}");
    let after = indexed(&wf);
    let want: Vec<String> = before[1..]
        .iter()
        .filter(|n| **n != lost)
        .cloned()
        .collect();
    assert_eq!(
        after, want,
        "only what lies before the segment before the gap goes"
    );
    // The gap is still there to be named.
    wait_check(&daemon, "fail", &gap);
}

fn remote_wal(garage: &Garage) -> Vec<String> {
    let store = garage.store();
    let mut names: Vec<String> = block_on(async {
        store
            .list(Some(&Key::from(format!("{PREFIX}/wal/{JOB}"))))
            .try_collect::<Vec<_>>()
            .await
    })
    .expect("list the target")
    .into_iter()
    .filter_map(|o| o.location.filename().map(str::to_owned))
    // The segments; index.jsonl and pruned.json beside them describe them.
    .filter(|n| n.ends_with(".age") || n.ends_with(".zst"))
    .collect();
    names.sort();
    names
}

#[test]
fn wal_retention_offsite_prunes_the_same_segments_and_writes_the_mark() {
    let wf = WalFixture::new();
    let garage = Garage::start();
    let credentials = garage.credentials_file(wf.fx.dir.path());
    let target = garage.offsite_toml("s3", &credentials, PREFIX, "");
    let daemon = wf
        .daemon("offsite = \"s3\"")
        .toml(&target)
        .toml(&base_job(&wf, "base", "offsite = \"s3\""))
        .toml(&prune("prune", "keep-last = 2"))
        .toml(&prune(
            "prune-s3",
            "keep-last = 2\ntarget = \"offsite\"\noffsite = \"s3\"",
        ))
        .spawn();
    let bases = three_bases(&wf, &daemon);
    let before = indexed(&wf);
    let all_files: Vec<String> = before.iter().map(|n| format!("{n}.zst.age")).collect();
    // Copied, read back and recorded: nothing is owed to the target any more.
    let record = wf.archive_dir().join("offsite-s3.jsonl");
    let shipped = || std::fs::read_to_string(&record).unwrap_or_default();
    assert!(
        harness::wait_until(ARCHIVE_TIMEOUT, || remote_wal(&garage) == all_files
            && before.iter().all(|n| shipped().contains(n.as_str()))),
        "the target has {:?}, not {all_files:?}",
        remote_wal(&garage)
    );

    let dry = ctl(&daemon, &["run", "prune-s3", "--dry-run"]);
    assert!(
        dry.stdout
            .contains(&format!("wal     {JOB}: keep from {}", bases[1].1)),
        "{}",
        dry.stdout
    );
    assert_eq!(remote_wal(&garage), all_files, "a dry run removes nothing");

    pruned(&daemon, "prune");
    let run = pruned(&daemon, "prune-s3");
    assert_eq!(
        run["details"]["wal"][0]["plan"]["keep_from"],
        bases[1].1.as_str(),
        "{run:#}"
    );
    assert_kept_from(&wf, &before, &bases[1].1);
    assert_eq!(
        remote_wal(&garage),
        archived_files(&wf.archive_dir()),
        "the same segments are left at the target as locally"
    );
    let mark: Value = serde_json::from_slice(
        &std::fs::read(wf.archive_dir().join("offsite-s3.pruned")).expect("the mark"),
    )
    .expect("the mark is JSON");
    assert_eq!(mark["target"], "s3");
    assert_eq!(mark["below"], bases[1].1.as_str(), "{mark:#}");
    assert!(mark["below_lsn"].as_str().is_some_and(|l| l.contains('/')));
    // The target carries the same mark, for a restore from it alone.
    let key = Key::from(format!("{PREFIX}/wal/{JOB}/pruned.json"));
    let there = block_on(async { garage.store().get(&key).await?.bytes().await })
        .expect("pruned.json at the target");
    let there: Value = serde_json::from_slice(&there).expect("pruned.json is JSON");
    assert_eq!(there, mark, "the uploaded mark is the local one");
}

#[test]
fn wal_recreated_slot_marker_is_cleared_by_the_next_base_backup_of_a_linked_job() {
    let wf = WalFixture::new();
    std::fs::create_dir_all(wf.archive_dir()).expect("archive-dir");
    harness::set_mode(&wf.archive_dir(), 0o700);
    let at = (chrono::Utc::now() - chrono::Duration::minutes(1)).to_rfc3339();
    let marker = wf.archive_dir().join("slot-recreated.json");
    std::fs::write(
        &marker,
        format!("{{\"slot\":\"atpred_wal\",\"at\":\"{at}\",\"after_segment\":null}}"),
    )
    .expect("marker");
    let daemon = wf
        .daemon("base-backups = [\"base\"]")
        .toml(&base_job(&wf, "base", ""))
        .toml(&base_job(&wf, "other", ""))
        .spawn();
    wait_receiving(&daemon, 1);
    wait_check(&daemon, "fail", "a new base backup is required");
    // A base backup of a job the archive does not count leaves the marker.
    backup_ok(&daemon, "other");
    assert!(marker.exists(), "not a linked job: the marker stays");
    backup_ok(&daemon, "base");
    assert!(!marker.exists(), "the linked job's base backup clears it");
    wait_check(&daemon, "ok", "receiving");
}
