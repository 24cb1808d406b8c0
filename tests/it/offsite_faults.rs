//! Offsite faults against a real Garage: the server down during the copy, a short outage the
//! request retries ride out, an upload frozen and cut mid-way, and an object corrupted at the
//! target. The local backup is never affected, nothing unfinished is ever listed as a backup,
//! and what a run could not copy the next run does.

use std::time::Duration;

use nix::sys::signal::{Signal, kill};

use crate::backup_support::{BackgroundRun, backups, ctl, ctl_json, wait_past_second_of};
use crate::fault_support::{self, Row};
use crate::harness::{self, Daemon, wait_until};
use crate::offsite_support::{Offsite, PREFIX, backup_copied, nightly};

fn remote_ids(daemon: &Daemon) -> Vec<(String, String)> {
    ctl_json(daemon, &["backups", "--remote"])["backups"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| {
            (
                b["id"].as_str().unwrap().to_owned(),
                b["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Starts `nightly` in the background and waits until its progress says `step`.
fn run_until(o: &Offsite, daemon: &Daemon, step: &str) -> BackgroundRun {
    let run = BackgroundRun::start(daemon, o.fx.dir.path(), "nightly");
    let out = o.fx.dir.path().join("run-nightly.out");
    let reached = wait_until(Duration::from_secs(60), || {
        std::fs::read_to_string(&out).is_ok_and(|t| t.contains(step))
    });
    assert!(reached, "the run reached {step:?}");
    run
}

/// A daemon whose `nightly` dumps a database big enough for several 5 MiB parts, uploaded
/// one at a time.
fn big_copy(o: &Offsite, target_extra: &str) -> Daemon {
    o.fx.create_bulk_table(120_000);
    o.daemon(
        &format!("part-size = \"5MiB\"\nconcurrency = 1\n{target_extra}"),
        "compress = \"none\"\n",
        "",
    )
    .spawn()
}

/// Records the scenario's row of the fault summary: a loss is an expected backup that is not
/// verified in backup-dir, or whose copy is not a verified remote backup.
fn summarize(
    daemon: &Daemon,
    scenario: &str,
    runs: usize,
    faults: usize,
    ids: &[&str],
    notes: &str,
) {
    let local = backups(daemon);
    let remote = remote_ids(daemon);
    let losses = ids
        .iter()
        .map(|id| {
            let here = local
                .iter()
                .any(|b| b["id"] == *id && b["state"] == "verified");
            let there = remote
                .iter()
                .any(|(r, state)| r == id && state == "verified");
            usize::from(!here) + usize::from(!there)
        })
        .sum();
    fault_support::record(&Row {
        scenario,
        seed: None,
        runs,
        faults,
        losses,
        crashes: 0,
        notes: notes.to_owned(),
    });
}

#[test]
fn offsite_a_target_that_is_down_fails_only_the_copy_and_the_next_run_catches_up() {
    let mut o = Offsite::new();
    let daemon = o
        .daemon(
            "retries = 1\nretry-timeout = \"2s\"\nrequest-timeout = \"5s\"\n",
            "",
            "",
        )
        .spawn();
    o.garage.kill();
    let run = nightly(&daemon);
    assert_eq!(
        run["outcome"], "succeeded",
        "the local backup is unaffected: {run:#}"
    );
    let first = run["details"]["id"].as_str().unwrap().to_owned();
    let copy = &run["details"]["offsite"][0];
    assert_eq!(copy["stage"], "failed", "{run:#}");
    assert!(
        copy["error"].as_str().unwrap().contains("offsite s3"),
        "{copy}"
    );
    assert!(
        run["message"].as_str().unwrap().contains("offsite s3"),
        "{run:#}"
    );
    let listed = backups(&daemon);
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0]["state"], "verified");
    assert_eq!(listed[0]["offsite"], "s3: failed");
    assert!(
        ctl(&daemon, &["backups", "--remote"]).status != 0,
        "an unreachable target is an error, not an empty listing"
    );

    o.garage.restart();
    wait_past_second_of(&first);
    let run = nightly(&daemon);
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
    let second = run["details"]["id"].as_str().unwrap().to_owned();
    let copies = run["details"]["offsite"].as_array().unwrap();
    let stage_of = |id: &str| {
        copies
            .iter()
            .find(|c| c["id"] == id)
            .map(|c| c["stage"].clone())
    };
    assert_eq!(stage_of(&second), Some("verified".into()), "{copies:?}");
    assert_eq!(
        stage_of(&first),
        Some("verified".into()),
        "the owed copy is made: {copies:?}"
    );
    assert_eq!(
        copies.iter().find(|c| c["id"] == first.as_str()).unwrap()["attempts"],
        2
    );
    summarize(
        &daemon,
        "offsite_target_down",
        2,
        1,
        &[&first, &second],
        "target down for a whole run; the next run copies its own and the owed one",
    );
    let mut remote = remote_ids(&daemon);
    remote.sort();
    assert_eq!(
        remote,
        [
            (first, "verified".to_owned()),
            (second, "verified".to_owned())
        ]
    );
}

#[test]
fn offsite_request_retries_with_backoff_ride_out_a_short_outage() {
    let mut o = Offsite::new();
    let daemon = o
        .daemon(
            "retries = 20\nretry-timeout = \"60s\"\nrequest-timeout = \"10s\"\n",
            "",
            "",
        )
        .spawn();
    o.garage.kill();
    let run = run_until(&o, &daemon, "offsite: copying");
    // Some requests have now failed against the dead server; the retries go on.
    std::thread::sleep(Duration::from_millis(1500));
    o.garage.restart();
    let run = run.finish();
    let id = run["details"]["id"].as_str().unwrap_or_default().to_owned();
    summarize(
        &daemon,
        "offsite_short_outage",
        1,
        1,
        &[&id],
        "target down as the upload starts, back 1.5 s later; ridden out by request retries",
    );
    assert_eq!(run["details"]["offsite"][0]["stage"], "verified", "{run:#}");
    assert_eq!(
        run["details"]["offsite"][0]["attempts"], 1,
        "one run, retried requests"
    );
}

#[test]
fn offsite_an_upload_frozen_then_cut_midway_is_never_a_remote_backup_and_is_redone() {
    let mut o = Offsite::new();
    let daemon = big_copy(&o, "retries = 0\nrequest-timeout = \"3s\"\n");
    let run = run_until(&o, &daemon, "offsite: uploading");
    let garage_pid = o.garage.pid();
    kill(garage_pid, Signal::SIGSTOP).unwrap();
    let run = run.finish();
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
    let id = run["details"]["id"].as_str().unwrap().to_owned();
    assert_eq!(run["details"]["offsite"][0]["stage"], "failed", "{run:#}");
    // Cut: the frozen server dies with the upload half-done, and comes back.
    o.garage.kill();
    o.garage.restart();
    let objects = o.objects();
    assert!(
        !objects.iter().any(|(k, _)| k.ends_with("/manifest.json")),
        "no commit marker for an unfinished copy: {objects:?}"
    );
    assert!(
        !remote_ids(&daemon)
            .iter()
            .any(|(_, state)| state == "verified"),
        "nothing unfinished is listed as a backup"
    );
    assert_eq!(backups(&daemon)[0]["offsite"], "s3: failed");

    wait_past_second_of(&id);
    let (second, copy) = backup_copied(&daemon);
    summarize(
        &daemon,
        "offsite_upload_cut",
        2,
        2,
        &[&id, &second],
        "multipart upload frozen (SIGSTOP) then the server killed; no manifest, redone next run",
    );
    assert_eq!(copy["stage"], "verified");
    let remote = remote_ids(&daemon);
    assert!(
        remote.contains(&(id, "verified".to_owned())),
        "the cut copy was redone: {remote:?}"
    );
}

#[test]
fn offsite_a_copy_corrupted_at_the_target_fails_remote_verification_and_fetch() {
    let o = Offsite::new();
    let daemon = o.daemon("", "", "").spawn();
    let (id, copy) = backup_copied(&daemon);
    assert_eq!(copy["stage"], "verified");
    let key = format!("{PREFIX}/{id}/database.backup.age");
    let mut bytes = o.get(&key);
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    o.put(&key, bytes);

    let verified = ctl(&daemon, &["backups", "verify", &id, "--remote"]);
    let local_ok = backups(&daemon)[0]["state"] == "verified";
    fault_support::record(&Row {
        scenario: "offsite_corrupted_copy",
        seed: None,
        runs: 1,
        faults: 1,
        losses: usize::from(verified.status != 1) + usize::from(!local_ok),
        crashes: 0,
        notes: "one bit flipped at the target: remote verify and fetch must fail, local intact"
            .into(),
    });
    assert_eq!(verified.status, 1, "{}{}", verified.stdout, verified.stderr);
    assert!(
        verified.stdout.contains("FAILED")
            && verified.stdout.contains("database.backup.age")
            && verified.stdout.contains("SHA-256"),
        "{}",
        verified.stdout
    );
    let to = o.fx.dir.path().join("fetched");
    let fetched = ctl(
        &daemon,
        &["backups", "fetch", &id, "--to", to.to_str().unwrap()],
    );
    assert_ne!(fetched.status, 0, "{}", fetched.stdout);
    assert!(fetched.stderr.contains("SHA-256"), "{}", fetched.stderr);
    assert!(
        harness::wait_until(Duration::from_secs(5), || std::fs::read_dir(&to)
            .map(|d| d.count() == 0)
            .unwrap_or(true)),
        "nothing half-fetched is left in {}",
        to.display()
    );
    // The local backup is untouched by any of it.
    assert_eq!(backups(&daemon)[0]["state"], "verified");
    let local = ctl(&daemon, &["backups", "verify", &id, "--level", "checksum"]);
    assert_eq!(local.status, 0, "{}", local.stdout);
}

#[test]
fn offsite_a_daemon_killed_mid_upload_leaves_the_copy_pending_and_the_next_run_finishes_it() {
    let o = Offsite::new();
    let mut daemon = big_copy(&o, "");
    let run = run_until(&o, &daemon, "offsite: uploading");
    // Hold the server so the upload cannot finish before the kill lands.
    kill(o.garage.pid(), Signal::SIGSTOP).unwrap();
    daemon.signal(Signal::SIGKILL);
    assert!(daemon.wait_exit(Duration::from_secs(10)).is_some());
    drop(run);
    kill(o.garage.pid(), Signal::SIGCONT).unwrap();

    daemon.restart();
    let listed = backups(&daemon);
    assert_eq!(listed.len(), 1, "the published backup survived: {listed:?}");
    assert_eq!(listed[0]["offsite"], "s3: pending", "{listed:?}");
    let first = listed[0]["id"].as_str().unwrap().to_owned();
    assert!(
        !remote_ids(&daemon)
            .iter()
            .any(|(id, state)| *id == first && state == "verified"),
        "the cut copy is not a remote backup"
    );
    wait_past_second_of(&first);
    let run = nightly(&daemon);
    let second = run["details"]["id"].as_str().unwrap_or_default().to_owned();
    summarize(
        &daemon,
        "offsite_daemon_kill",
        2,
        1,
        &[&first, &second],
        "daemon kill -9 mid-upload; copy left pending, finished by the next run",
    );
    let copies = run["details"]["offsite"].as_array().unwrap();
    let owed = copies
        .iter()
        .find(|c| c["id"] == first.as_str())
        .expect("the pending copy is taken up");
    assert_eq!(owed["stage"], "verified", "{copies:?}");
    assert_eq!(owed["attempts"], 2);
    let metrics = ctl(&daemon, &["metrics"]).stdout;
    assert!(
        metrics
            .contains("atpred_offsite_copies{job=\"nightly\",target=\"s3\",stage=\"verified\"} 2"),
        "{metrics}"
    );
}
