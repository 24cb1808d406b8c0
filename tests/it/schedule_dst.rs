//! `atprectl schedule` on the two 2026 DST days of Europe/Berlin and America/New_York, checked
//! against the table in the README ("Schedules and DST"): what users read there is what runs.
//! `atpred --check --from` prints the same lines for the jobs of a configuration.

use std::path::Path;
use std::process::Command;

use crate::backup_support::{quote, shell_status};
use crate::harness::{self, CtlOutput, Daemon};

/// A row of the README's table: zone, schedule, from, and the expected lines.
struct Row {
    zone: String,
    expr: String,
    from: String,
    lines: Vec<String>,
}

fn rows() -> Vec<Row> {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md"))
        .expect("README.md");
    let begin = readme
        .find("<!-- dst-table begin -->")
        .expect("the table's start");
    let end = readme
        .find("<!-- dst-table end -->")
        .expect("the table's end");
    readme[begin..end]
        .lines()
        .filter(|l| l.starts_with("| ") && !l.starts_with("| zone") && !l.starts_with("| ---"))
        .map(|l| {
            let cells: Vec<&str> = l.trim_matches('|').split(" | ").map(str::trim).collect();
            let [zone, expr, from, runs] = cells[..] else {
                panic!("4 cells: {l}");
            };
            Row {
                zone: zone.to_owned(),
                expr: expr.trim_matches('`').to_owned(),
                from: from.to_owned(),
                lines: runs.split("<br>").map(str::to_owned).collect(),
            }
        })
        .collect()
}

fn schedule(args: &str) -> CtlOutput {
    let ctl = quote(Path::new(env!("CARGO_BIN_EXE_atprectl")));
    shell_status(&format!("{ctl} --socket /nonexistent/atpred.sock {args}"))
}

#[test]
fn schedule_dst_days_match_the_readme_table() {
    let rows = rows();
    assert!(rows.len() >= 12, "the table is there: {}", rows.len());
    for zone in ["Europe/Berlin", "America/New_York"] {
        assert!(
            rows.iter()
                .any(|r| r.zone == zone && r.from.starts_with("2026-03"))
        );
        assert!(
            rows.iter().any(|r| r.zone == zone
                && (r.from.starts_with("2026-10") || r.from.starts_with("2026-11")))
        );
    }
    for row in &rows {
        let out = schedule(&format!(
            "schedule {} --tz {} --from {} -n {}",
            quote(Path::new(&row.expr)),
            row.zone,
            row.from,
            row.lines.len()
        ));
        assert_eq!(out.status, 0, "{out:?}");
        let got: Vec<&str> = out.stdout.lines().collect();
        assert_eq!(
            got, row.lines,
            "{} in {} from {}",
            row.expr, row.zone, row.from
        );
    }
    for mark in ["shifted from", "coalesced", "first pass", "second pass"] {
        assert!(
            rows.iter().flat_map(|r| &r.lines).any(|l| l.contains(mark)),
            "the table shows {mark}"
        );
    }
}

#[test]
fn schedule_json_and_a_bad_expression() {
    let out = schedule(
        "--json schedule '0,30 2 * * *' --tz Europe/Berlin --from 2026-03-28T12:00:00Z -n 2",
    );
    assert_eq!(out.status, 0, "{out:?}");
    let v: serde_json::Value = serde_json::from_str(&out.stdout).expect("JSON");
    assert_eq!(v[0]["at"], "2026-03-29T01:00:00Z", "{v}");
    assert_eq!(v[0]["dst"], "coalesced", "{v}");
    assert_eq!(
        v[0]["scheduled"],
        serde_json::json!(["02:00", "02:30"]),
        "{v}"
    );
    assert_eq!(v[1]["dst"], serde_json::Value::Null, "{v}");
    let out = schedule("schedule 'fri-mon' -n 2");
    assert_eq!(out.status, 2, "{out:?}");
    assert!(out.stderr.contains("fri-mon"), "{}", out.stderr);
}

#[test]
fn schedule_check_from_prints_the_same_for_every_job() {
    let dir = harness::tempdir();
    let builder = Daemon::builder(&dir)
        .set("daemon", "timezone", harness::toml_str("Europe/Berlin"))
        .toml(
            "[jobs.a]\nkind = \"command\"\ncommand = [\"true\"]\nschedule = \"0,30 2 * * *\"\n\
             [jobs.b]\nkind = \"command\"\ncommand = [\"true\"]\nschedule = \"30 * * * *\"\n",
        );
    let config = builder.write_config();
    let out = Command::new(env!("CARGO_BIN_EXE_atpred"))
        .arg("--config")
        .arg(&config)
        .args(["--check", "--from", "2026-03-28T12:00:00Z"])
        .output()
        .expect("run atpred --check");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (expr, from) in [
        ("0,30 2 * * *", "2026-03-28T12:00:00Z"),
        ("30 * * * *", "2026-03-28T12:00:00Z"),
    ] {
        let preview = schedule(&format!(
            "schedule '{expr}' --tz Europe/Berlin --from {from} -n 3"
        ));
        for line in preview.stdout.lines() {
            assert!(
                stdout.contains(&format!("  {line}\n")),
                "{line:?} in {stdout}"
            );
        }
    }
    assert!(
        stdout.contains("coalesced 02:00, 02:30 into one run"),
        "{stdout}"
    );
}
