//! Several offsite targets per backup job (`offsite = ["eu", "us"]`), two prefixes of one real
//! Garage: each copy is tracked, listed, verified, pinned and pruned per target; a target that
//! refuses us or hangs holds up no other, and catches up on the next run after it comes back.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use crate::alerts_support::HangingReceiver;
use crate::backup_support::{BackgroundRun, backups, ctl, ctl_json, run_job, wait_past_second_of};
use crate::harness::{DaemonBuilder, wait_until};
use crate::offsite_support::{Offsite, nightly};

const EU: &str = "atp-re/eu";
const US: &str = "atp-re/us";

/// Fail fast at a target that refuses or does not answer.
const QUICK: &str = "retries = 0\nretry-timeout = \"1s\"\nrequest-timeout = \"5s\"\n";

/// `[offsite.eu]` (with its own credentials file and `eu_extra`), `[offsite.us]`, and the
/// encrypted job `nightly` copying to both, eu first; `more` is appended.
fn two_targets(o: &Offsite, eu_credentials: &Path, eu_extra: &str, more: &str) -> DaemonBuilder {
    let eu = o.garage.offsite_toml("eu", eu_credentials, EU, eu_extra);
    with_eu(o, &eu, more)
}

/// [`two_targets`] with eu's table as given.
fn with_eu(o: &Offsite, eu: &str, more: &str) -> DaemonBuilder {
    let us = o.garage.offsite_toml("us", &o.credentials, US, QUICK);
    o.fetch_anywhere(o.fx.daemon(&format!(
        "{eu}{us}\n[jobs.nightly]\nkind = \"backup\"\nverify = \"checksum\"\nencrypt-to = [\"{}\"]\n\
         offsite = [\"eu\", \"us\"]\n\n{more}",
        o.public
    )))
}

/// A credentials file of eu's own, with the right key (rewrite it with [`refuse`]).
fn eu_credentials(o: &Offsite) -> PathBuf {
    let dir = o.fx.dir.path().join("eu");
    std::fs::create_dir_all(&dir).unwrap();
    o.garage.credentials_file(&dir)
}

/// The key's secret in `path` made wrong: the target refuses every request.
fn refuse(o: &Offsite, path: &Path) {
    std::fs::write(
        path,
        format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            o.garage.key_id,
            "0".repeat(64)
        ),
    )
    .unwrap();
}

/// The run's copies as (target, id, stage), in the order the run reports them.
fn copies(run: &Value) -> Vec<(String, String, String)> {
    run["details"]["offsite"]
        .as_array()
        .unwrap_or_else(|| panic!("no offsite records: {run:#}"))
        .iter()
        .map(|c| {
            let s = |k: &str| c[k].as_str().unwrap_or_default().to_owned();
            (s("target"), s("id"), s("stage"))
        })
        .collect()
}

fn triple(target: &str, id: &str, stage: &str) -> (String, String, String) {
    (target.to_owned(), id.to_owned(), stage.to_owned())
}

/// `backups --remote --target NAME`: (id, state) of each listed backup.
fn listed_at(daemon: &crate::harness::Daemon, target: &str) -> Vec<(String, String)> {
    let out = ctl_json(daemon, &["backups", "--remote", "--target", target]);
    out["backups"]
        .as_array()
        .unwrap_or_else(|| panic!("{out:#}"))
        .iter()
        .map(|b| {
            (
                b["id"].as_str().unwrap().to_owned(),
                b["state"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// The OFFSITE column of backup `id` in the local JSON listing.
fn offsite_column(daemon: &crate::harness::Daemon, id: &str) -> String {
    let listed = backups(daemon);
    listed
        .iter()
        .find(|b| b["id"] == id)
        .and_then(|b| b["offsite"].as_str())
        .unwrap_or_else(|| panic!("{id} not listed with an offsite stage: {listed:?}"))
        .to_owned()
}

#[test]
fn offsite_targets_one_refusing_the_other_is_copied_and_the_first_catches_up_next_run() {
    let o = Offsite::new();
    let eu = eu_credentials(&o);
    refuse(&o, &eu);
    let daemon = two_targets(&o, &eu, QUICK, "").spawn();
    let run = nightly(&daemon);
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
    let first = run["details"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        copies(&run),
        [
            triple("eu", &first, "failed"),
            triple("us", &first, "verified")
        ],
        "{run:#}"
    );
    let message = run["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("offsite eu: {first} FAILED"))
            && message.contains(&format!("offsite us: {first} verified")),
        "the failure is eu's only: {message}"
    );
    // Each copy's stage, in the job's order, in the listing and the table.
    assert_eq!(offsite_column(&daemon, &first), "eu: failed, us: verified");
    let table = ctl(&daemon, &["backups"]);
    assert!(
        table.stdout.contains("OFFSITE") && table.stdout.contains("eu: failed, us: verified"),
        "{}",
        table.stdout
    );
    // Listed per target: us has it, eu is an error (not an empty list), no target is ambiguous.
    assert_eq!(
        listed_at(&daemon, "us"),
        [(first.clone(), "verified".to_owned())]
    );
    let eu_listing = ctl(&daemon, &["backups", "--remote", "--target", "eu"]);
    assert_ne!(eu_listing.status, 0, "{}", eu_listing.stdout);
    assert!(
        eu_listing.stderr.contains("offsite eu"),
        "{}",
        eu_listing.stderr
    );
    let neither = ctl(&daemon, &["backups", "--remote"]);
    assert!(
        neither.status != 0 && neither.stderr.contains("--target"),
        "{}",
        neither.stderr
    );
    let metrics = ctl(&daemon, &["metrics"]).stdout;
    for (target, stage) in [("eu", "failed"), ("us", "verified")] {
        let line = format!(
            "atpred_offsite_copies{{job=\"nightly\",target=\"{target}\",stage=\"{stage}\"}} 1"
        );
        assert!(metrics.contains(&line), "{line} in {metrics}");
    }
    assert!(o.objects_under(EU).is_empty(), "{:?}", o.objects_under(EU));
    assert_eq!(o.committed_under(US), [first.as_str()]);

    // eu accepts us again: the next run copies the new backup to both and eu catches up.
    o.garage.credentials_file(eu.parent().unwrap());
    wait_past_second_of(&first);
    let run = nightly(&daemon);
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
    let second = run["details"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        copies(&run),
        [
            triple("eu", &second, "verified"),
            triple("eu", &first, "verified"),
            triple("us", &second, "verified"),
        ],
        "{run:#}"
    );
    let caught_up = run["details"]["offsite"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["target"] == "eu" && c["id"] == first.as_str())
        .unwrap();
    assert_eq!(caught_up["attempts"], 2, "{caught_up}");
    for id in [&first, &second] {
        assert_eq!(offsite_column(&daemon, id), "eu: verified, us: verified");
    }
    assert_eq!(o.committed_under(EU), [first.clone(), second.clone()]);
    assert_eq!(o.committed_under(US), [first.clone(), second.clone()]);
    assert_eq!(
        listed_at(&daemon, "eu"),
        [
            (first.clone(), "verified".to_owned()),
            (second.clone(), "verified".to_owned())
        ]
    );
    let verified = ctl(
        &daemon,
        &["backups", "verify", &first, "--remote", "--target", "eu"],
    );
    assert_eq!(verified.status, 0, "{}{}", verified.stdout, verified.stderr);
    assert!(!daemon.log().contains(&o.garage.secret), "no secret logged");
}

#[test]
fn offsite_targets_a_hanging_target_does_not_hold_up_another() {
    let o = Offsite::new();
    let hanging = HangingReceiver::start();
    let eu = eu_credentials(&o);
    // eu accepts connections and never answers: each request waits out request-timeout.
    let eu_toml = o
        .garage
        .offsite_toml(
            "eu",
            &eu,
            EU,
            "retries = 0\nretry-timeout = \"1s\"\nrequest-timeout = \"20s\"\n",
        )
        .replace(
            &o.garage.endpoint(),
            &format!("http://127.0.0.1:{}", hanging.port),
        );
    let daemon = with_eu(&o, &eu_toml, "").spawn();
    let run = BackgroundRun::start(&daemon, o.fx.dir.path(), "nightly");
    let state = o.fx.dir.path().join("state/offsite");
    let stage = |target: &str| -> Option<(String, String)> {
        let entry = std::fs::read_dir(state.join(target))
            .ok()?
            .flatten()
            .next()?;
        let r: Value = serde_json::from_slice(&std::fs::read(entry.path()).ok()?).ok()?;
        Some((
            r["id"].as_str()?.to_owned(),
            r["stage"].as_str()?.to_owned(),
        ))
    };
    let us_done = wait_until(Duration::from_secs(60), || {
        stage("us").is_some_and(|(_, s)| s == "verified")
    });
    assert!(us_done, "us verified: {:?}", stage("us"));
    // us is committed while eu, first in the list, is still waiting for an answer.
    let (id, eu_stage) = stage("eu").expect("eu's copy was started");
    assert_eq!(eu_stage, "pending", "eu still hangs when us is done");
    assert!(
        hanging.accepted() >= 1,
        "eu's requests went to the hanging server"
    );
    assert_eq!(o.committed_under(US), [id.as_str()]);
    let run = run.finish();
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
    assert_eq!(
        copies(&run),
        [triple("eu", &id, "failed"), triple("us", &id, "verified")],
        "{run:#}"
    );
    assert_eq!(offsite_column(&daemon, &id), "eu: failed, us: verified");
}

const PRUNES: &str = "[jobs.prune-eu]\nkind = \"prune\"\ntarget = \"offsite\"\noffsite = \"eu\"\n\
    keep-last = 1\nof = [\"nightly\"]\n\n[jobs.prune-us]\nkind = \"prune\"\ntarget = \"offsite\"\n\
    offsite = \"us\"\nkeep-last = 2\nof = [\"nightly\"]\n";

fn removed(run: &Value) -> Vec<String> {
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
    serde_json::from_value(run["details"]["removed"].clone()).unwrap()
}

#[test]
fn offsite_targets_are_pinned_and_pruned_each_with_its_own_retention() {
    let o = Offsite::new();
    let eu = eu_credentials(&o);
    let daemon = two_targets(&o, &eu, QUICK, PRUNES).spawn();
    let mut ids: Vec<String> = Vec::new();
    for _ in 0..3 {
        if let Some(last) = ids.last() {
            wait_past_second_of(last);
        }
        let run = nightly(&daemon);
        let id = run["details"]["id"].as_str().unwrap().to_owned();
        assert_eq!(
            copies(&run),
            [triple("eu", &id, "verified"), triple("us", &id, "verified")],
            "{run:#}"
        );
        ids.push(id);
    }
    assert_eq!(o.committed_under(EU), ids);
    assert_eq!(o.committed_under(US), ids);

    // A pin goes beside the copy at every target.
    let pinned = ctl(&daemon, &["backups", "pin", &ids[0], "--reason", "audit"]);
    assert_eq!(pinned.status, 0, "{}{}", pinned.stdout, pinned.stderr);
    assert!(
        pinned.stdout.contains("eu: pinned, us: pinned"),
        "{}",
        pinned.stdout
    );
    for prefix in [EU, US] {
        let key = format!("{prefix}/{}/pin.json", ids[0]);
        assert!(
            o.objects_under(prefix).iter().any(|(k, _)| *k == key),
            "{key}"
        );
    }

    // Each target's prune job applies its own policy to that target only.
    assert_eq!(removed(&run_job(&daemon, "prune-eu")), [ids[1].clone()]);
    assert_eq!(o.committed_under(EU), [ids[0].clone(), ids[2].clone()]);
    assert_eq!(o.committed_under(US), ids, "eu's prune leaves us alone");
    assert!(removed(&run_job(&daemon, "prune-us")).is_empty());
    assert_eq!(
        o.committed_under(US),
        ids,
        "keep-last = 2 and the pinned one"
    );

    // us refusing: the unpin fails, and the pin already removed at eu is put back.
    let good = std::fs::read(&o.credentials).unwrap();
    refuse(&o, &o.credentials);
    let refused = ctl(&daemon, &["backups", "unpin", &ids[0]]);
    assert_ne!(refused.status, 0, "{}", refused.stdout);
    assert!(
        refused.stderr.contains("stays pinned") && refused.stderr.contains("offsite us"),
        "{}",
        refused.stderr
    );
    std::fs::write(&o.credentials, good).unwrap();
    for prefix in [EU, US] {
        let key = format!("{prefix}/{}/pin.json", ids[0]);
        assert!(
            o.objects_under(prefix).iter().any(|(k, _)| *k == key),
            "{key} is back"
        );
    }
    assert!(
        backups(&daemon)
            .iter()
            .any(|b| b["id"] == ids[0].as_str() && b["pinned"].is_string()),
        "pinned here still"
    );

    let unpinned = ctl(&daemon, &["backups", "unpin", &ids[0]]);
    assert_eq!(unpinned.status, 0, "{}{}", unpinned.stdout, unpinned.stderr);
    assert!(
        unpinned.stdout.contains("eu: unpinned, us: unpinned"),
        "{}",
        unpinned.stdout
    );
    assert_eq!(removed(&run_job(&daemon, "prune-eu")), [ids[0].clone()]);
    assert_eq!(removed(&run_job(&daemon, "prune-us")), [ids[0].clone()]);
    assert_eq!(o.committed_under(EU), [ids[2].clone()]);
    assert_eq!(o.committed_under(US), ids[1..].to_vec());
    assert_eq!(
        listed_at(&daemon, "eu"),
        [(ids[2].clone(), "verified".to_owned())]
    );
    assert_eq!(backups(&daemon).len(), 3, "the local catalog is untouched");
}
