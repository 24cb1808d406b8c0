//! A Redis backup job uses the machinery every backup shares: retention and pins decide over
//! its backups, the freshness check and the metrics see the job, and its verified backups are
//! copied to an offsite target (a real Garage), listed there with their source.

use chrono::Utc;

use crate::backup_encryption::{keygen, require_age};
use crate::backup_support::{backup_ok, backups, ctl, ctl_json, run_job};
use crate::harness::Garage;
use crate::health_support::health_now;
use crate::prune_support::{craft_copy, prune_job};
use crate::redis_support::RedisFixture;

#[test]
fn redis_backups_are_pruned_pinned_checked_for_freshness_and_measured() {
    let fx = RedisFixture::new(false);
    fx.populate();
    let extra = format!(
        "verify = \"checksum\"\n{}\n[jobs.health]\nkind = \"health\"\nchecks = [\"backup-freshness\"]\n\
         backup-max-age = \"1h\"\n",
        prune_job("prune", "keep-last = 1\nof = [\"cache\"]")
    );
    let daemon = fx.daemon(&extra).spawn();
    let (code, checks) = health_now(&daemon);
    assert_eq!(code, 1, "no backup yet: {checks:?}");

    let newest = backup_ok(&daemon, "cache");
    let dir = fx.backup_dir();
    let pinned = craft_copy(&dir, &newest, Utc::now() - chrono::TimeDelta::days(2));
    let old = craft_copy(&dir, &newest, Utc::now() - chrono::TimeDelta::days(3));
    let pin = ctl(
        &daemon,
        &["backups", "pin", &pinned, "--reason", "incident 7"],
    );
    assert_eq!(pin.status, 0, "{}", pin.stderr);

    let run = run_job(&daemon, "prune");
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
    let left: Vec<String> = backups(&daemon)
        .iter()
        .map(|b| b["id"].as_str().expect("id").to_owned())
        .collect();
    assert!(left.contains(&newest) && left.contains(&pinned), "{left:?}");
    assert!(
        !left.contains(&old),
        "retention removed the oldest: {left:?}"
    );

    let (code, checks) = health_now(&daemon);
    let fresh = &checks["backup-freshness"];
    assert_eq!((code, &fresh["status"]), (0, &"ok".into()), "{fresh}");
    assert!(
        fresh["message"]
            .as_str()
            .expect("message")
            .contains("cache: newest verified"),
        "{fresh}"
    );

    let metrics = daemon.ctl(["metrics"]).stdout;
    for name in [
        "atpred_backup_bytes",
        "atpred_backup_last_verified_timestamp_seconds",
    ] {
        assert!(
            metrics
                .lines()
                .any(|l| l.starts_with(name) && l.contains("job=\"cache\"")),
            "no {name} for the redis job:\n{metrics}"
        );
    }
}

#[test]
fn redis_backup_is_copied_offsite_and_listed_there_with_its_source() {
    require_age();
    let fx = RedisFixture::new(false);
    fx.populate();
    let garage = Garage::start();
    let (key, public) = keygen(fx.dir.path());
    let credentials = garage.credentials_file(fx.dir.path());
    let target = garage.offsite_toml("s3", &credentials, "atp-re/cache", "");
    let daemon = fx
        .daemon(&format!(
            "verify = \"full\"\nencrypt-to = [\"{public}\"]\nverify-identity-file = {}\n\
             offsite = \"s3\"\n{target}",
            crate::harness::toml_path(&key)
        ))
        .spawn();
    let run = run_job(&daemon, "cache");
    assert_eq!(run["outcome"], "succeeded", "{run:#}");
    let id = run["details"]["id"].as_str().expect("id").to_owned();
    let copy = &run["details"]["offsite"][0];
    assert_eq!(
        (&copy["id"], &copy["stage"]),
        (&id.as_str().into(), &"verified".into()),
        "{run:#}"
    );
    let remote = ctl_json(&daemon, &["backups", "--remote"]);
    let listed = remote["backups"]
        .as_array()
        .expect("a list")
        .iter()
        .find(|b| b["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} not listed remotely: {remote:#}"))
        .clone();
    assert_eq!(listed["source"], "redis", "{listed:#}");
    let verify = ctl(&daemon, &["backups", "verify", &id, "--remote"]);
    assert_eq!(verify.status, 0, "{}{}", verify.stdout, verify.stderr);
}
