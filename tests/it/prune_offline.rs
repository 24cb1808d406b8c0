//! `atprectl retention`: the planner offline, on RFC 3339 lines read from stdin, with no daemon:
//! the plan as text and as JSON, exit 2 naming a line that is not a time, exit 2 without a rule.

use std::collections::BTreeMap;

use crate::backup_support::{quote, shell_status};
use crate::harness::{self, CtlOutput};
use crate::prune_support::{as_text, decision, parse_plan, parse_plan_json, sorted};

const POLICY: &str = "--keep-daily 7 --keep-weekly 4 --now 2026-11-28T12:00:00Z";

/// `atprectl [--json] retention ARGS < input` (no socket: none is needed).
fn retention(json: bool, args: &str, input: &str) -> CtlOutput {
    let dir = harness::tempdir();
    let file = dir.path().join("times");
    std::fs::write(&file, input).expect("write the input");
    let ctl = quote(std::path::Path::new(env!("CARGO_BIN_EXE_atprectl")));
    let json = if json { "--json " } else { "" };
    shell_status(&format!(
        "{ctl} --socket /nonexistent/atpred.sock {json}retention {args} < {}",
        quote(&file)
    ))
}

/// Two months of backups across ISO weeks 44 to 48 of 2026 (Monday 23 November opens W48).
const TIMES: &str = "# newest first is not required\n\
2026-11-02T02:00:00Z\n\
2026-11-28T10:00:00Z\n\
2026-11-28T02:00:00Z\n\
\n\
2026-11-27T02:00:00Z\n\
2026-11-20T02:00:00Z\n\
2026-11-19T02:00:00Z\n\
2026-11-10T02:00:00Z\n\
2026-10-30T02:00:00Z\n\
2026-10-20T02:00:00Z\n";

fn expected() -> BTreeMap<String, crate::prune_support::Decision> {
    let keep = |reasons: &[&str]| decision(true, reasons);
    BTreeMap::from(
        [
            (
                "2026-11-28T10:00:00Z",
                keep(&["newest verified", "daily snapshot", "weekly snapshot"]),
            ),
            (
                "2026-11-28T02:00:00Z",
                decision(false, &["no rule keeps it"]),
            ),
            ("2026-11-27T02:00:00Z", keep(&["daily snapshot"])),
            (
                "2026-11-20T02:00:00Z",
                keep(&["daily snapshot", "weekly snapshot"]),
            ),
            ("2026-11-19T02:00:00Z", keep(&["daily snapshot"])),
            (
                "2026-11-10T02:00:00Z",
                keep(&["daily snapshot", "weekly snapshot"]),
            ),
            (
                "2026-11-02T02:00:00Z",
                keep(&["daily snapshot", "weekly snapshot"]),
            ),
            ("2026-10-30T02:00:00Z", keep(&["daily snapshot"])),
            (
                "2026-10-20T02:00:00Z",
                decision(false, &["no rule keeps it"]),
            ),
        ]
        .map(|(t, d)| (t.to_owned(), d)),
    )
}

#[test]
fn prune_offline_retention_prints_the_plan_as_text_and_json() {
    let out = retention(false, POLICY, TIMES);
    assert_eq!(out.status, 0, "{out:?}");
    let text = out.stdout.clone();
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(
        lines.len(),
        9,
        "one line per backup, no warning:\n{}",
        out.stdout
    );
    assert!(
        lines[0].starts_with("keep") && lines[0].contains("2026-11-28T10:00:00Z"),
        "newest first:\n{}",
        out.stdout
    );

    let out = retention(true, POLICY, TIMES);
    assert_eq!(out.status, 0, "{out:?}");
    let plan: serde_json::Value =
        serde_json::from_str(out.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {}", out.stdout));
    let decisions = parse_plan_json(&plan);
    assert_eq!(sorted(&decisions), expected(), "{plan:#}");
    assert_eq!(plan["warnings"], serde_json::json!([]), "{plan:#}");
    assert_eq!(
        parse_plan(&text),
        as_text(&decisions),
        "text and JSON agree:\n{text}"
    );
}

#[test]
fn prune_offline_retention_exits_2_naming_a_bad_line() {
    let input = "2026-11-28T10:00:00Z\n\n2026-11-27 02:00\n";
    let out = retention(false, POLICY, input);
    assert_eq!(out.status, 2, "{out:?}");
    assert!(
        out.stderr.contains("line 3") && out.stderr.contains("2026-11-27 02:00"),
        "names the line: {}",
        out.stderr
    );
    assert!(
        out.stdout.is_empty(),
        "no plan from bad input: {}",
        out.stdout
    );
}

#[test]
fn prune_offline_retention_exits_2_without_a_keep_rule() {
    let out = retention(false, "--now 2026-11-28T12:00:00Z", TIMES);
    assert_eq!(out.status, 2, "{out:?}");
    assert!(out.stderr.contains("keeps nothing"), "{}", out.stderr);
    let out = retention(false, "--keep-daily 0", TIMES);
    assert_eq!(out.status, 2, "{out:?}");
    assert!(out.stdout.is_empty(), "{}", out.stdout);
}
