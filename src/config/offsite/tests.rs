//! `[offsite.NAME]` tables and the jobs that use them: defaults, and each bad value naming
//! its key and line.

use std::time::Duration;

use crate::config::tests::load;
use crate::config::{ConfigError, JobSpec};
use crate::jobs::prune::Target;

const RECIPIENT: &str = "age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p";

fn with(target: &str, jobs: &str) -> String {
    format!(
        "[daemon]\nstate-dir = \"/tmp/atpred-test/state\"\n\n[offsite.s3]\n{target}\n\n{jobs}\n"
    )
}

const TARGET: &str = "bucket = \"atpre-backups\"\ncredentials-file = \"/etc/atpre/s3.credentials\"";

fn backup_job(extra: &str) -> String {
    format!("[jobs.nightly]\nkind = \"backup\"\noffsite = \"s3\"\n{extra}\n")
}

#[test]
fn a_minimal_target_loads_with_defaults() {
    let c = load(
        &with(
            TARGET,
            &backup_job(&format!("encrypt-to = [\"{RECIPIENT}\"]")),
        ),
        &[],
    )
    .unwrap();
    let t = &c.offsite["s3"];
    assert_eq!(t.endpoint, None, "AWS itself");
    assert!(!t.path_style, "AWS: virtual-hosted requests");
    assert_eq!((t.region.as_str(), t.prefix.as_str()), ("us-east-1", ""));
    assert_eq!((t.part_size, t.concurrency, t.retries), (16 << 20, 4, 10));
    assert_eq!(t.retry_timeout, Duration::from_secs(120));
    assert!(!t.allow_plaintext);
    let JobSpec::Backup(b) = &c.jobs[&"nightly".parse().unwrap()].spec else {
        panic!("a backup job")
    };
    assert_eq!(b.offsite, ["s3"], "the single-string form");

    let c = load(
        &with(
            &format!("{TARGET}\nendpoint = \"http://127.0.0.1:3900/\"\nprefix = \"/atp-re/\"\npart-size = \"8MiB\""),
            "[jobs.prune-s3]\nkind = \"prune\"\nkeep-last = 3\ntarget = \"offsite\"\noffsite = \"s3\"\n",
        ),
        &[],
    )
    .unwrap();
    let t = &c.offsite["s3"];
    assert_eq!(t.endpoint.as_deref(), Some("http://127.0.0.1:3900"));
    assert!(
        t.path_style,
        "a custom endpoint: path-style, as Garage and MinIO expect"
    );
    assert_eq!((t.prefix.as_str(), t.part_size), ("atp-re", 8 << 20));
    let JobSpec::Prune(p) = &c.jobs[&"prune-s3".parse().unwrap()].spec else {
        panic!("a prune job")
    };
    assert_eq!(p.target, Target::Offsite("s3".into()));
}

const US: &str =
    "[offsite.us]\nbucket = \"atpre-us\"\ncredentials-file = \"/etc/atpre/us.credentials\"\n";

fn offsite_of(c: &crate::config::Config) -> Vec<String> {
    let JobSpec::Backup(b) = &c.jobs[&"nightly".parse().unwrap()].spec else {
        panic!("a backup job")
    };
    b.offsite.clone()
}

#[test]
fn a_backup_job_copies_to_a_list_of_targets_in_its_order() {
    let job = format!(
        "{US}[jobs.nightly]\nkind = \"backup\"\noffsite = [\"us\", \"s3\"]\nencrypt-to = [\"{RECIPIENT}\"]\n"
    );
    let c = load(&with(TARGET, &job), &[]).unwrap();
    assert_eq!(offsite_of(&c), ["us", "s3"]);
    // An environment override is a string: one target, as before.
    let c = load(
        &with(TARGET, &job),
        &[("ATPRED__JOBS__NIGHTLY__OFFSITE", "us")],
    )
    .unwrap();
    assert_eq!(offsite_of(&c), ["us"]);
    let job = "[jobs.nightly]\nkind = \"backup\"\noffsite = []\n";
    assert!(offsite_of(&load(&with(TARGET, job), &[]).unwrap()).is_empty());
}

/// (what is wrong, target lines, job tables, the key the error names, words it must say)
const BAD: &[(&str, &str, &str, &str, &str)] = &[
    (
        "no bucket",
        "credentials-file = \"/etc/atpre/s3\"",
        "",
        "offsite.s3.bucket",
        "missing",
    ),
    (
        "bucket with capitals",
        "bucket = \"Backups\"\ncredentials-file = \"/etc/a\"",
        "",
        "offsite.s3.bucket",
        "bucket name",
    ),
    (
        "no credentials",
        "bucket = \"b\"",
        "",
        "offsite.s3.credentials-file",
        "aws_access_key_id",
    ),
    (
        "relative credentials",
        "bucket = \"b\"\ncredentials-file = \"s3.cred\"",
        "",
        "offsite.s3.credentials-file",
        "absolute",
    ),
    (
        "plain http to another host",
        "bucket = \"b\"\ncredentials-file = \"/etc/a\"\nendpoint = \"http://s3.example.com\"",
        "",
        "offsite.s3.endpoint",
        "https://",
    ),
    (
        "credentials in the endpoint",
        "bucket = \"b\"\ncredentials-file = \"/etc/a\"\nendpoint = \"https://key:secret@s3.example.com\"",
        "",
        "offsite.s3.endpoint",
        "credentials-file",
    ),
    (
        "a query in the endpoint",
        "bucket = \"b\"\ncredentials-file = \"/etc/a\"\nendpoint = \"https://s3.example.com/?X-Amz-Security-Token=hunter2\"",
        "",
        "offsite.s3.endpoint",
        "query",
    ),
    (
        "plain http with a token",
        "bucket = \"b\"\ncredentials-file = \"/etc/a\"\nendpoint = \"http://s3.example.com?token=hunter2\"",
        "",
        "offsite.s3.endpoint",
        "http://s3.example.com?token=***",
    ),
    (
        "not a URL",
        "bucket = \"b\"\ncredentials-file = \"/etc/a\"\nendpoint = \"s3.example.com\"",
        "",
        "offsite.s3.endpoint",
        "https://",
    ),
    (
        "parts under S3's minimum",
        "bucket = \"b\"\ncredentials-file = \"/etc/a\"\npart-size = \"1MiB\"",
        "",
        "offsite.s3.part-size",
        "5MiB",
    ),
    (
        "part size in apples",
        "bucket = \"b\"\ncredentials-file = \"/etc/a\"\npart-size = \"ten apples\"",
        "",
        "offsite.s3.part-size",
        "size",
    ),
    (
        "no concurrency",
        "bucket = \"b\"\ncredentials-file = \"/etc/a\"\nconcurrency = 0",
        "",
        "offsite.s3.concurrency",
        "between",
    ),
    (
        "unknown key",
        "bucket = \"b\"\ncredentials-file = \"/etc/a\"\nsecret-key = \"x\"",
        "",
        "offsite",
        "unknown field",
    ),
    (
        "dot-dot prefix",
        "bucket = \"b\"\ncredentials-file = \"/etc/a\"\nprefix = \"a/../b\"",
        "",
        "offsite.s3.prefix",
        "..",
    ),
    (
        "a backup job naming no target",
        TARGET,
        "[jobs.nightly]\nkind = \"backup\"\noffsite = \"s4\"\nencrypt-to = [\"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"]\n",
        "jobs.nightly.offsite",
        "no [offsite.s4]",
    ),
    (
        "a list naming an unknown target",
        TARGET,
        "[jobs.nightly]\nkind = \"backup\"\noffsite = [\"s3\", \"eu\"]\nencrypt-to = [\"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"]\n",
        "jobs.nightly.offsite",
        "no [offsite.eu]",
    ),
    (
        "a list naming a target twice",
        TARGET,
        "[jobs.nightly]\nkind = \"backup\"\noffsite = [\"s3\", \"s3\"]\nencrypt-to = [\"age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p\"]\n",
        "jobs.nightly.offsite",
        "listed twice",
    ),
    (
        "offsite neither a name nor a list",
        TARGET,
        "[jobs.nightly]\nkind = \"backup\"\noffsite = 3\n",
        "jobs.nightly.offsite",
        "a list of them",
    ),
    (
        "a prune job naming several targets",
        TARGET,
        "[jobs.p]\nkind = \"prune\"\nkeep-last = 1\ntarget = \"offsite\"\noffsite = [\"s3\"]\n",
        "jobs.p.offsite",
        "its own prune job",
    ),
    (
        "a plaintext backup job",
        TARGET,
        "[jobs.nightly]\nkind = \"backup\"\noffsite = \"s3\"\n",
        "jobs.nightly.offsite",
        "refuses plaintext",
    ),
    (
        "an offsite prune without a target",
        TARGET,
        "[jobs.p]\nkind = \"prune\"\nkeep-last = 1\ntarget = \"offsite\"\n",
        "jobs.p.offsite",
        "offsite = \\\"NAME\\\"",
    ),
    (
        "a local prune naming a target",
        TARGET,
        "[jobs.p]\nkind = \"prune\"\nkeep-last = 1\noffsite = \"s3\"\n",
        "jobs.p.offsite",
        "only with target",
    ),
    (
        "a prune target of neither kind",
        TARGET,
        "[jobs.p]\nkind = \"prune\"\nkeep-last = 1\ntarget = \"tape\"\n",
        "jobs.p.target",
        "\"local\" or \"offsite\"",
    ),
    (
        "offsite on a command job",
        TARGET,
        "[jobs.c]\nkind = \"command\"\ncommand = [\"true\"]\noffsite = \"s3\"\n",
        "jobs.c.offsite",
        "not a setting",
    ),
];

#[test]
fn bad_targets_and_jobs_name_their_key_and_line() {
    for (what, target, jobs, key, words) in BAD {
        let text = with(target, jobs);
        let err = load(&text, &[]).expect_err(what);
        let shown = err.to_string();
        assert!(shown.contains(key), "{what}: {shown:?} does not name {key}");
        assert!(
            !shown.contains("hunter2"),
            "{what}: {shown:?} quotes a secret"
        );
        let words = words.replace("\\\"", "\"");
        assert!(
            shown.contains(&words),
            "{what}: {shown:?} does not say {words:?}"
        );
        let ConfigError::Invalid(inv) = &err else {
            panic!("{what}: {err:?}")
        };
        if *key != "offsite" {
            assert!(inv.position.is_some(), "{what}: no line in {shown}");
        }
    }
}
