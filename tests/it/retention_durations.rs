//! Retention durations take restic's grammar exactly, in every config key and every
//! `atprectl retention --keep-within*` flag: anything else is refused naming the key (or flag),
//! the grammar and that `m` means months. Counts take restic's `-1` ("keep all") and nothing
//! below it.

use std::path::Path;

use crate::backup_support::{quote, shell_status};
use crate::harness::{self, CtlOutput, Daemon};
use crate::prune_support::prune_job;

/// What humantime (the old parser) or a human might write; none of it is restic's grammar.
const BAD: &[&str] = &[
    "30s", "5min", "1w", "1 d", " 2d", "1.5d", "-1d", "", "7", "2D", "1d ", "1d2",
];

const KEYS: &[&str] = &[
    "keep-within",
    "keep-within-hourly",
    "keep-within-daily",
    "keep-within-weekly",
    "keep-within-monthly",
    "keep-within-yearly",
];

fn says_the_grammar(text: &str) -> bool {
    text.contains("restic's duration grammar") && text.contains("m (months, not minutes)")
}

fn check(jobs: &str) -> CtlOutput {
    let dir = harness::tempdir();
    Daemon::builder(&dir).toml(jobs).check()
}

fn retention(args: &str) -> CtlOutput {
    let ctl = quote(Path::new(env!("CARGO_BIN_EXE_atprectl")));
    shell_status(&format!(
        "echo 2026-11-28T10:00:00Z | {ctl} --socket /nonexistent/atpred.sock --json retention {args} --now 2026-11-28T12:00:00Z"
    ))
}

#[test]
fn retention_durations_bad_in_config_are_refused_naming_key_and_grammar() {
    for (n, bad) in BAD.iter().enumerate() {
        // Each bad value in turn at each key, so that every key and every value is tried.
        let key = KEYS[n % KEYS.len()];
        let out = check(&prune_job(
            "tidy",
            &format!("keep-last = 1\n{key} = {bad:?}"),
        ));
        assert_eq!(out.status, 78, "{key} = {bad:?}: {out:?}");
        assert!(
            out.stderr.contains(&format!("jobs.tidy.{key}")) && says_the_grammar(&out.stderr),
            "{key} = {bad:?} names the key and the grammar: {}",
            out.stderr
        );
    }
    for key in KEYS {
        let out = check(&prune_job("tidy", &format!("{key} = \"1y2m3d3h\"")));
        assert_eq!(out.status, 0, "{key} in restic's grammar passes: {out:?}");
    }
}

#[test]
fn retention_durations_bad_in_flags_are_refused_naming_flag_and_grammar() {
    for (n, bad) in BAD.iter().enumerate() {
        let flag = format!("--{}", KEYS[n % KEYS.len()]);
        let out = retention(&format!("{flag} {}", quote(Path::new(bad))));
        assert_eq!(out.status, 2, "{flag} {bad:?}: {out:?}");
        assert!(
            out.stderr.contains(&flag) && says_the_grammar(&out.stderr),
            "{flag} {bad:?} names the flag and the grammar: {}",
            out.stderr
        );
        assert!(out.stdout.is_empty(), "no plan: {}", out.stdout);
    }
}

#[test]
fn retention_durations_minus_one_keeps_all_and_less_is_refused() {
    let out = check(&prune_job("tidy", "keep-daily = -1\nkeep-last = -1"));
    assert_eq!(out.status, 0, "-1 is restic's keep-all: {out:?}");
    let out = check(&prune_job("tidy", "keep-daily = -2"));
    assert_eq!(out.status, 78, "{out:?}");
    assert!(
        out.stderr.contains("jobs.tidy.keep-daily") && out.stderr.contains("-1 to keep all"),
        "{}",
        out.stderr
    );
    let out = retention("--keep-hourly -1");
    assert_eq!(out.status, 0, "{out:?}");
    assert!(out.stdout.contains("hourly snapshot"), "{}", out.stdout);
    let out = retention("--keep-hourly -2");
    assert_eq!(out.status, 2, "{out:?}");
    assert!(
        out.stderr.contains("--keep-hourly") && out.stderr.contains("-1 to keep all"),
        "{}",
        out.stderr
    );
}
