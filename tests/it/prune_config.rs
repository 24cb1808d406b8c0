//! A prune job's configuration is checked before anything runs: a policy that keeps nothing,
//! `of` naming a job that is not a backup job, and `min-keep = 0` are refused with exit 78 by
//! `atpred --check` and by the daemon itself, naming the key.

use crate::harness::{self, Daemon};
use crate::prune_support::{NIGHTLY, prune_job};

/// `--check` and a start of the daemon with `jobs` both exit 78 naming `key`.
fn refused(jobs: &str, key: &str) {
    let dir = harness::tempdir();
    let builder = Daemon::builder(&dir).toml(jobs);
    let out = builder.check();
    assert_eq!(out.status, 78, "{jobs}\n{out:?}");
    assert!(
        out.stderr.contains(&format!(": {key}:")) || out.stderr.contains(&format!(": {key} ")),
        "names {key}: {}",
        out.stderr
    );
    let failure = match builder.try_spawn() {
        Ok(_) => panic!("atpred started with {jobs}"),
        Err(f) => f,
    };
    assert_eq!(failure.status.and_then(|s| s.code()), Some(78), "{failure}");
    assert!(failure.log.contains(key), "{failure}");
}

#[test]
fn prune_config_refuses_a_policy_that_keeps_nothing() {
    refused(&prune_job("tidy", ""), "jobs.tidy");
    refused(
        &prune_job("tidy", "keep-last = 0\nkeep-daily = 0"),
        "jobs.tidy",
    );
    // A zero duration is refused at its own key before the policy is judged.
    refused(
        &prune_job("tidy", "keep-within = \"0s\""),
        "jobs.tidy.keep-within",
    );
}

#[test]
fn prune_config_refuses_of_naming_a_job_that_is_not_a_backup_job() {
    let vacuum = "[jobs.vacuum]\nkind = \"command\"\ncommand = [\"true\"]\n";
    let of_vacuum = prune_job("tidy", "keep-last = 3\nof = [\"vacuum\"]");
    refused(&format!("{vacuum}\n{of_vacuum}"), "jobs.tidy.of");
    refused(
        &prune_job("tidy", "keep-last = 3\nof = [\"nowhere\"]"),
        "jobs.tidy.of",
    );
}

#[test]
fn prune_config_refuses_min_keep_0() {
    refused(
        &prune_job("tidy", "keep-last = 3\nmin-keep = 0"),
        "jobs.tidy.min-keep",
    );
}

#[test]
fn prune_config_accepts_a_policy_of_a_backup_job() {
    let dir = harness::tempdir();
    let jobs = format!(
        "{NIGHTLY}\n{}",
        prune_job(
            "tidy",
            "keep-daily = 7\nkeep-within-weekly = \"30d\"\nof = [\"nightly\"]"
        )
    );
    let out = Daemon::builder(&dir)
        .set("postgres", "host", harness::toml_str("/run/postgresql"))
        .set("postgres", "user", harness::toml_str("atp_user"))
        .set("postgres", "dbname", harness::toml_str("atp_app"))
        .toml(&jobs)
        .check();
    assert_eq!(out.status, 0, "the control case passes: {out:?}");
}
