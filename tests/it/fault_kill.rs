//! kill -9 of the daemon at random moments of a backup run (dump, verification, publish) and of
//! a prune run, each followed by a restart. Nothing may be lost: every backup listed before is
//! still listed (unless the prune's own plan removes it) and still passes `sha256sum -c`; no
//! partial, failed or trash folder is left or listed after the restart; no pg_dump, pg_restore
//! or psql of this test outlives the daemon; the daemon starts again every time.
//!
//! The moment is random but aimed: a phase is picked, the run's progress stream says when it
//! starts, and the kill comes after a random fraction of that phase's duration as measured by
//! an undisturbed calibration run. 20 rounds by default, 200 with `ATPRED_FAULT_LONG=1`; the
//! seed is printed (`ATPRED_FAULT_SEED` replays it). The fixed-moment cases (mid-dump, while
//! pg_dump waits for a lock, the directory format) are in `backup_crash`.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use nix::sys::signal::{Signal, kill};
use rand::Rng;

use crate::backup_support::{Fixture, backups, entries, quote, shell_status};
use crate::fault_support::{self, Row, WatchedRun, pg_tools_naming};
use crate::harness::{self, Daemon};
use crate::prune_support::craft_copy;

/// About 8 MB in the dump: a dump phase of a fraction of a second to a second in a debug
/// build, so twenty rounds stay within a minute or two.
const ROWS: u32 = 60_000;
/// Backups the prune job keeps; every prune round first crafts older copies for it to remove.
const KEEP: usize = 3;
const CRAFTED: usize = 6;
const JOBS: &str = "[jobs.nightly]\nkind = \"backup\"\nverify = \"full\"\n\n\
                    [jobs.tidy]\nkind = \"prune\"\nkeep-last = 3\nof = [\"nightly\"]\n";
const RUN_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Dump,
    Verify,
    Publish,
    Prune,
}

const PHASES: [Phase; 4] = [Phase::Dump, Phase::Verify, Phase::Publish, Phase::Prune];

/// How long each phase took in the undisturbed calibration runs.
struct Durations {
    dump: Duration,
    verify: Duration,
    publish: Duration,
    prune: Duration,
}

impl Durations {
    fn of(&self, phase: Phase) -> Duration {
        match phase {
            Phase::Dump => self.dump,
            Phase::Verify => self.verify,
            Phase::Publish => self.publish,
            Phase::Prune => self.prune,
        }
    }
}

/// The progress message that opens `phase` (prune reports none: its run starts at `accepted`).
fn opening(phase: Phase) -> Option<&'static str> {
    match phase {
        Phase::Dump => Some("dump:"),
        Phase::Verify => Some("verify:"),
        Phase::Publish => Some("publish"),
        Phase::Prune => None,
    }
}

/// The ids `atprectl backups` lists, with their states.
fn listed(daemon: &Daemon) -> Vec<(String, String)> {
    backups(daemon)
        .iter()
        .map(|b| {
            (
                b["id"].as_str().expect("id").to_owned(),
                b["state"].as_str().expect("state").to_owned(),
            )
        })
        .collect()
}

/// Waits until the UTC second differs from `since`'s, so the next backup gets a new id.
fn next_second(since: chrono::DateTime<Utc>) {
    let second = since.format("%Y%m%dT%H%M%S").to_string();
    let moved = harness::wait_until(Duration::from_secs(3), || {
        Utc::now().format("%Y%m%dT%H%M%S").to_string() != second
    });
    assert!(moved, "the clock did not move past {second}");
}

/// Crafts `CRAFTED` copies of `source` dated days back (older than any real backup), so the
/// prune job has folders to remove; `serial` keeps their ids apart from earlier rounds'.
fn craft_old_copies(fx: &Fixture, source: &str, serial: &mut i64) -> Vec<String> {
    (0..CRAFTED)
        .map(|_| {
            *serial += 1;
            let started = Utc::now() - TimeDelta::days(30) - TimeDelta::hours(*serial);
            craft_copy(&fx.backup_dir(), source, started)
        })
        .collect()
}

#[test]
fn fault_kill_9_at_random_moments_loses_no_backup_and_leaves_nothing_behind() {
    let (mut rng, seed) = fault_support::seeded("fault_kill");
    let fx = Fixture::new();
    fx.create_bulk_table(ROWS);
    let mut daemon = fx.daemon(JOBS).spawn();
    let dir = fx.dir.path().to_path_buf();
    let markers = [fx.pg.socket_dir(), dir.as_path()];
    let mut serial = 0;

    // Calibration: one undisturbed backup and one undisturbed prune, timed by their progress.
    let mut last_start = Utc::now();
    let watch = WatchedRun::start(&daemon, "nightly");
    let at = |prefix: &str| watch.progress(prefix, RUN_TIMEOUT).expect(prefix);
    let (dump, verify, publish) = (at("dump:"), at("verify:"), at("publish"));
    let end = watch
        .wait_for(RUN_TIMEOUT, |v| v["type"] == "finished")
        .expect("finished");
    let replies = watch.finish(RUN_TIMEOUT);
    let outcome = &replies.last().expect("replies").1["run"]["outcome"];
    assert_eq!(outcome, "succeeded", "calibration backup: {replies:?}");
    let newest = listed(&daemon).last().expect("one backup").0.clone();
    craft_old_copies(&fx, &newest, &mut serial);
    let t0 = Instant::now();
    let watch = WatchedRun::start(&daemon, "tidy");
    watch
        .wait_for(RUN_TIMEOUT, |v| v["type"] == "finished")
        .expect("the prune finished");
    let prune = t0.elapsed();
    drop(watch);
    let durations = Durations {
        dump: verify - dump,
        verify: publish - verify,
        publish: end - publish,
        prune,
    };
    eprintln!(
        "fault_kill: calibration: dump {:?}, verify {:?}, publish {:?}, prune run {:?}",
        durations.dump, durations.verify, durations.publish, durations.prune
    );

    let rounds = fault_support::rounds(20, 200);
    let (mut losses, mut crashes, mut problems) = (0, 0, Vec::new());
    for round in 1..=rounds {
        let phase = PHASES[rng.random_range(0..PHASES.len())];
        let fraction: f64 = rng.random();
        let before = listed(&daemon);
        let mut ids: Vec<String> = before.iter().map(|(id, _)| id.clone()).collect();
        let job = if phase == Phase::Prune {
            let newest = ids.last().expect("a backup to copy").clone();
            ids.extend(craft_old_copies(&fx, &newest, &mut serial));
            ids.sort();
            "tidy"
        } else {
            next_second(last_start);
            last_start = Utc::now();
            "nightly"
        };
        // What must survive: everything, or what the prune's plan keeps (the newest KEEP).
        let must_keep: BTreeSet<String> = match phase {
            Phase::Prune => ids.iter().rev().take(KEEP).cloned().collect(),
            _ => ids.iter().cloned().collect(),
        };
        let may_exist: BTreeSet<String> = ids.iter().cloned().collect();

        let watch = WatchedRun::start(&daemon, job);
        let opened = match opening(phase) {
            Some(prefix) => watch.progress(prefix, RUN_TIMEOUT),
            None => watch.wait_for(RUN_TIMEOUT, |v| v["type"] == "accepted"),
        };
        let opened = opened.unwrap_or_else(|| panic!("round {round}: {phase:?} never began"));
        let delay = durations.of(phase).mul_f64(fraction);
        std::thread::sleep(delay.saturating_sub(opened.elapsed()));
        let finished_before = watch.is_finished();
        daemon.signal(Signal::SIGKILL);
        assert!(
            daemon.wait_exit(Duration::from_secs(10)).is_some(),
            "SIGKILL ends the daemon"
        );
        drop(watch.finish(Duration::from_secs(10)));

        let mut orphans = Vec::new();
        let gone = harness::wait_until(Duration::from_secs(10), || {
            orphans = pg_tools_naming(&markers);
            orphans.is_empty()
        });
        if !gone {
            problems.push(format!(
                "round {round} ({phase:?}): orphans outlived the daemon by 10 s: {orphans:?}"
            ));
            for (pid, _) in &orphans {
                let _ = kill(*pid, Signal::SIGKILL);
            }
        }
        let on_disk_at_kill = entries(&fx.backup_dir());

        daemon.restart();
        let after = listed(&daemon);
        let after_ids: BTreeSet<String> = after.iter().map(|(id, _)| id.clone()).collect();
        let lost: Vec<&String> = must_keep.difference(&after_ids).collect();
        losses += lost.len();
        if !lost.is_empty() {
            problems.push(format!("round {round} ({phase:?}): lost {lost:?}"));
        }
        for (id, state) in &after {
            let new = !may_exist.contains(id);
            if new && (phase == Phase::Prune || !id.ends_with("-nightly")) {
                problems.push(format!("round {round}: {id} appeared from nowhere"));
            }
            let sums = shell_status(&format!(
                "cd {} && sha256sum -c --quiet SHA256SUMS",
                quote(&fx.backup_dir().join(id))
            ));
            if state != "verified" || sums.status != 0 {
                losses += 1;
                problems.push(format!(
                    "round {round} ({phase:?}): {id} listed as {state}, sha256sum -c: {}{}",
                    sums.stdout, sums.stderr
                ));
            }
        }
        let left: Vec<String> = entries(&fx.backup_dir())
            .into_iter()
            .filter(|name| !after_ids.contains(name))
            .collect();
        if !left.is_empty() {
            problems.push(format!(
                "round {round} ({phase:?}): left on disk after the restart: {left:?}"
            ));
        }
        if daemon.log().contains("panicked") {
            crashes += 1;
            problems.push(format!("round {round}: the daemon panicked"));
        }
        let hidden = on_disk_at_kill
            .iter()
            .filter(|n| n.starts_with('.'))
            .count();
        eprintln!(
            "fault_kill round {round}/{rounds}: kill -9 {delay:?} into {phase:?} (run finished \
             first: {finished_before}); at the kill {} entries ({hidden} partial or trash); after \
             the restart {} listed, {} lost, {} left over",
            on_disk_at_kill.len(),
            after.len(),
            lost.len(),
            left.len()
        );
    }

    // Whatever survived still restores: the daemon's own full verification of each.
    for (id, _) in listed(&daemon) {
        let out = crate::backup_support::ctl(&daemon, &["backups", "verify", &id]);
        if out.status != 0 {
            losses += 1;
            problems.push(format!(
                "{id} fails verification: {}{}",
                out.stdout, out.stderr
            ));
        }
    }
    fault_support::record(&Row {
        scenario: "kill -9 (backup, verify, publish, prune)",
        seed: Some(seed),
        runs: rounds,
        faults: rounds,
        losses,
        crashes,
        notes: format!("{} backups at the end", listed(&daemon).len()),
    });
    assert!(problems.is_empty(), "seed {seed}:\n{}", problems.join("\n"));
}
