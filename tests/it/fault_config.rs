//! Malformed configs fed to a running daemon's reload, one after another: every one is refused
//! with an error naming the key and the `file:line:` it comes from, in atprectl's reply and in
//! `status` (`reload_error`), STATUS= says the reload failed, and the old config stays in force
//! (its jobs listed, still runnable). The cases: the 30 of `core_config` (checked there with
//! `--check`) plus the backup, prune and type errors below, 48 in all.

use std::collections::BTreeSet;

use crate::core_config::{Bad, Change, bad_cases, line_of, raw, set};
use crate::core_support::{WAIT, ctl_json, sh_job};
use crate::fault_support::{self, Row};
use crate::harness::{self, Daemon, DaemonBuilder, toml_str};

/// A backup job `b` with the given lines.
macro_rules! backup {
    ($lines:literal) => {
        concat!("[jobs.b]\nkind = \"backup\"\n", $lines)
    };
}

/// A backup job `b` and a prune job `p` with the given lines.
macro_rules! prune {
    ($lines:literal) => {
        concat!(
            "[jobs.b]\nkind = \"backup\"\n\n[jobs.p]\nkind = \"prune\"\n",
            $lines
        )
    };
}

/// Bad settings of backup and prune jobs, wrong types and out-of-range values the `core_config`
/// table does not have.
#[rustfmt::skip]
fn more_bad_cases() -> Vec<Bad> {
    vec![
        raw("jobs.b.format", "format =", backup!("format = \"tar\"")),
        raw("jobs.b.parallel", "parallel =", backup!("parallel = 0")),
        raw("jobs.b.parallel", "parallel =", backup!("parallel = 4")),
        raw("jobs.b.compress", "compress =", backup!("compress = \"lz4\"")),
        raw("jobs.b.compress-level", "compress-level =", backup!("compress-level = 42")),
        raw("jobs.b.compress", "compress =", backup!("format = \"directory\"\ncompress = \"zstd\"")),
        raw("jobs.b.verify", "verify =", backup!("verify = \"paranoid\"")),
        raw("jobs.b.verify-every", "verify-every =", backup!("verify-every = \"often\"")),
        raw("jobs.b.encrypt-to", "encrypt-to =", backup!("encrypt-to = [\"age1-not-a-key\"]")),
        raw("jobs.b.min-free-after", "min-free-after =", backup!("min-free-after = \"lots\"")),
        raw("jobs.b.parallel", "parallel =", backup!("format = \"directory\"\nparallel = \"two\"")),
        raw("jobs.p.min-keep", "min-keep =", prune!("keep-last = 3\nmin-keep = 0")),
        raw("jobs.p.of", "of =", prune!("keep-last = 3\nof = [\"nowhere\"]")),
        raw("jobs.p.keep-within", "keep-within =", prune!("keep-within = \"0s\"")),
        raw("jobs.p.keep-daily", "keep-daily =", prune!("keep-daily = -2")),
        raw("jobs.p.keep-within-daily", "keep-within-daily =", prune!("keep-within-daily = \"soon\"")),
        set("daemon.stop-timeout", "stop-timeout =", "daemon", "stop-timeout", "5"),
        set("postgres.port", "port =", "postgres", "port", "\"5432x\""),
    ]
}

/// The good config: `[postgres]` complete enough for backup jobs to validate (nothing connects)
/// and the job `a`, placed after `extra` so a case's lines come first in the file.
fn config(dir: &tempfile::TempDir, change: Option<&Change>) -> DaemonBuilder {
    let mut builder = Daemon::builder(dir)
        .set("postgres", "host", toml_str("/run/postgresql"))
        .set("postgres", "user", toml_str("atp_user"))
        .set("postgres", "dbname", toml_str("atp_app"));
    match change {
        Some(Change::Set(section, key, value)) => builder = builder.set(section, key, *value),
        Some(Change::Raw(text)) => builder = builder.toml(text),
        None => {}
    }
    builder.toml(&sh_job("a", "true", ""))
}

fn job_names(daemon: &Daemon) -> Vec<String> {
    ctl_json(daemon, &["jobs"])["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| j["name"].as_str().expect("name").to_owned())
        .collect()
}

#[test]
fn fault_malformed_configs_on_reload_name_key_and_line_and_keep_the_old_config() {
    let dir = harness::tempdir();
    let daemon = config(&dir, None).spawn();
    assert_eq!(job_names(&daemon), ["a"]);
    let mut cases = bad_cases();
    cases.extend(more_bad_cases());
    let distinct: BTreeSet<String> = cases
        .iter()
        .map(|c| match &c.change {
            Change::Set(s, k, v) => format!("{s}.{k}={v}"),
            Change::Raw(t) => (*t).to_owned(),
        })
        .collect();
    assert!(distinct.len() >= 40, "{} distinct cases", distinct.len());

    let mut failures = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let builder = config(&dir, Some(&case.change));
        let text = builder.render();
        builder.write_config();
        let at = format!(
            "{}:{}:",
            daemon.config_path().display(),
            line_of(&text, case.line_of)
        );
        let mark = daemon.notify().len();
        let out = daemon.ctl(["reload"]);
        let status = ctl_json(&daemon, &["status"]);
        let reload_error = status["reload_error"].as_str().unwrap_or_default();
        let status_text = daemon.notify().wait_for_since(
            mark,
            |m| {
                m.lines()
                    .any(|l| l.starts_with("STATUS=") && l.contains("reload failed"))
            },
            WAIT,
        );
        let jobs = job_names(&daemon);
        let mut wrong = Vec::new();
        if out.status != 1 {
            wrong.push(format!("reload exit {}", out.status));
        }
        if !out.stderr.contains(case.key) || !out.stderr.contains(&at) {
            wrong.push(format!("the reply does not name {} at {at}", case.key));
        }
        if out.stderr.contains("JobName(") {
            wrong.push("a Rust Debug form in the message".to_owned());
        }
        if !reload_error.contains(case.key) {
            wrong.push(format!("status reload_error: {reload_error:?}"));
        }
        if status_text.is_err() {
            wrong.push("no STATUS= reload failed".to_owned());
        }
        if jobs != ["a"] {
            wrong.push(format!("jobs now {jobs:?}"));
        }
        eprintln!(
            "fault_config case {}/{}: {} -> {}",
            i + 1,
            cases.len(),
            case.key,
            out.stderr.trim()
        );
        if !wrong.is_empty() {
            failures.push(format!(
                "case {i} ({}): {}\n  stderr: {}",
                case.key,
                wrong.join("; "),
                out.stderr.trim()
            ));
        }
    }
    // The old config is still the one in force: its job runs.
    let ran = daemon.ctl(["run", "a", "--wait"]);
    config(&dir, None).write_config();
    let fixed = daemon.ctl(["reload"]);
    let cleared = ctl_json(&daemon, &["status"])["reload_error"].is_null();
    let alive = ran.status == 0 && fixed.status == 0;
    fault_support::record(&Row {
        scenario: "malformed config on reload",
        seed: None,
        runs: cases.len(),
        faults: cases.len(),
        losses: failures.len(),
        crashes: usize::from(!alive),
        notes: format!("{} distinct configs", distinct.len()),
    });
    assert!(failures.is_empty(), "{}", failures.join("\n"));
    assert_eq!(ran.status, 0, "the old job still runs: {ran:?}");
    assert_eq!(fixed.status, 0, "a good config is taken again: {fixed:?}");
    assert!(cleared, "and the reload error is cleared");
}
