//! restic's own retention tests, run against `atprectl retention --json`: every time-based case of
//! `TestApplyPolicy` must keep exactly restic's kept set, with restic's reason words.
//!
//! The data is restic's, unchanged, in `tests/data/restic-policy/` (BSD-2-Clause, Copyright (c)
//! 2014, Alexander Neumann; see the README there): the 103 input snapshots and the 40 policies
//! are read from `snapshot_policy_test.go` itself, the expected kept sets and reasons from
//! `testdata/policy_keep_snapshots_N`. Cases that keep by tag are skipped (atpred has no tags);
//! case 0, the empty policy, which restic answers by keeping everything, atpred refuses (exit 2)
//! and that is checked too.

use std::path::{Path, PathBuf};

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::backup_support::{quote, shell_status};
use crate::harness::{self, CtlOutput};

/// The reasons atpred adds on top of restic's rules (its own safety rules).
const ATPRED_OWN: &[&str] = &["newest verified", "min-keep"];

fn data_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/restic-policy")
}

/// The input snapshots, as RFC 3339 lines: every `parseTimeUTC("...")` of the
/// `testExpireSnapshots` list.
fn snapshots(go: &str) -> Vec<String> {
    let start = go
        .find("var testExpireSnapshots")
        .expect("the snapshot list");
    let end = go.find("var tests = ").expect("the policy list");
    go[start..end]
        .split("parseTimeUTC(\"")
        .skip(1)
        .map(|s| {
            format!(
                "{}Z",
                s[..s.find('"').expect("a quoted time")].replace(' ', "T")
            )
        })
        .collect()
}

/// A policy: its fields as (Go name, value), the value being a number or a duration's text.
type GoPolicy = Vec<(String, String)>;

/// The `tests` slice: one entry per top-level `{...}`.
fn policies(go: &str) -> Vec<GoPolicy> {
    let start = go
        .find("var tests = []data.ExpirePolicy{")
        .expect("the policy list")
        + "var tests = []data.ExpirePolicy{".len();
    let body = &go[start..start + go[start..].find("\n\t}\n").expect("its end")];
    let mut out = Vec::new();
    let (mut depth, mut open) = (0, 0);
    for (i, c) in body.char_indices() {
        match c {
            '{' => {
                if depth == 0 {
                    open = i + 1;
                }
                depth += 1;
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    out.push(fields(&body[open..i]));
                }
            }
            _ => {}
        }
    }
    out
}

fn fields(text: &str) -> GoPolicy {
    let mut parts = Vec::new();
    let (mut depth, mut from) = (0, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' | '{' => depth += 1,
            ')' | '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[from..i]);
                from = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[from..]);
    parts
        .into_iter()
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (name, value) = p.split_once(':').expect("Name: value");
            let value = value.trim();
            let value = match value.strip_prefix("data.ParseDurationOrPanic(\"") {
                Some(d) => d.trim_end_matches("\")").to_owned(),
                None => value.to_owned(),
            };
            (name.trim().to_owned(), value)
        })
        .collect()
}

/// The `atprectl retention` flag for a Go field name.
fn flag(name: &str) -> String {
    let rest = name.strip_prefix("Within").unwrap_or(name);
    let within = if name.starts_with("Within") {
        "within"
    } else {
        ""
    };
    let parts: Vec<String> = ["keep", within, &rest.to_lowercase()]
        .into_iter()
        .filter(|p| !p.is_empty())
        .map(str::to_owned)
        .collect();
    format!("--{}", parts.join("-"))
}

/// (time, reasons) of each kept snapshot, sorted.
type Kept = Vec<(DateTime<Utc>, Vec<String>)>;

fn time(v: &Value) -> DateTime<Utc> {
    v.as_str()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("a time: {v}"))
}

fn golden(n: usize) -> Kept {
    let path = data_dir().join(format!("testdata/policy_keep_snapshots_{n}"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let v: Value = serde_json::from_str(&text).expect("golden JSON");
    let keep = v["keep"].as_array().expect("keep");
    let reasons = v["reasons"].as_array().expect("reasons");
    assert_eq!(keep.len(), reasons.len(), "case {n}: one reason per kept");
    let mut out: Kept = reasons
        .iter()
        .map(|r| {
            let matches = r["matches"].as_array().expect("matches");
            (
                time(&r["snapshot"]["time"]),
                matches
                    .iter()
                    .map(|m| m.as_str().expect("a reason").to_owned())
                    .collect(),
            )
        })
        .collect();
    out.sort();
    out
}

fn retention(input: &Path, args: &str) -> CtlOutput {
    let ctl = quote(Path::new(env!("CARGO_BIN_EXE_atprectl")));
    shell_status(&format!(
        "{ctl} --socket /nonexistent/atpred.sock --json retention {args} \
         --now 2016-02-01T00:00:00Z --timezone UTC < {}",
        quote(input)
    ))
}

fn kept(out: &CtlOutput) -> Kept {
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:?}"));
    let mut kept: Kept = v["decisions"]
        .as_array()
        .expect("decisions")
        .iter()
        .filter(|d| d["keep"] == Value::Bool(true))
        .map(|d| {
            let reasons = d["reasons"].as_array().expect("reasons");
            (
                time(&d["time"]),
                reasons
                    .iter()
                    .map(|r| r.as_str().expect("a reason").to_owned())
                    .filter(|r| !ATPRED_OWN.contains(&r.as_str()))
                    .collect(),
            )
        })
        .collect();
    kept.sort();
    kept
}

#[test]
fn retention_restic_golden_table_every_time_based_case() {
    let go = std::fs::read_to_string(data_dir().join("snapshot_policy_test.go"))
        .expect("restic's test source");
    let times = snapshots(&go);
    assert_eq!(times.len(), 103, "restic's list of snapshots");
    let dir = harness::tempdir();
    let input = dir.path().join("times");
    std::fs::write(&input, times.join("\n") + "\n").expect("write the input");
    let policies = policies(&go);
    assert_eq!(policies.len(), 40, "restic's list of policies");

    let mut ran = 0;
    let mut failures = Vec::new();
    for (n, policy) in policies.iter().enumerate() {
        if policy.iter().any(|(name, _)| name == "Tags") {
            continue;
        }
        let args: Vec<String> = policy
            .iter()
            .map(|(name, value)| format!("{} {value}", flag(name)))
            .collect();
        let args = args.join(" ");
        let out = retention(&input, &args);
        if policy.is_empty() {
            assert_eq!(out.status, 2, "the empty policy is refused: {out:?}");
            assert!(out.stderr.contains("keeps nothing"), "{out:?}");
            continue;
        }
        ran += 1;
        assert_eq!(out.status, 0, "case {n} ({args}): {out:?}");
        let (got, want) = (kept(&out), golden(n));
        if got != want {
            let extra: Vec<_> = got.iter().filter(|k| !want.contains(k)).collect();
            let missing: Vec<_> = want.iter().filter(|k| !got.contains(k)).collect();
            failures.push(format!(
                "case {n} ({args}): kept {} want {}; not in restic's: {extra:?}; missing: {missing:?}",
                got.len(),
                want.len()
            ));
        }
    }
    assert_eq!(ran, 36, "every time-based case ran");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
