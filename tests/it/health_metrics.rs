//! Metrics read by a real Prometheus parser (the `prometheus_client` Python package's
//! OpenMetrics parser, installed by .ci/deps) from all three places they are served:
//! `atprectl metrics`, the `[metrics] listen` HTTP endpoint, and the textfile.

use std::io::Write;
use std::process::{Command, Stdio};

use serde_json::Value;

use crate::harness::toml_path;
use crate::health_support::{Stack, health_now};

/// Parses OpenMetrics text on stdin; prints every sample as JSON [name, labels, value].
const PARSER: &str = r#"
import json, sys
from prometheus_client.openmetrics.parser import text_string_to_metric_families
samples = []
for family in text_string_to_metric_families(sys.stdin.read()):
    for s in family.samples:
        samples.append([s.name, s.labels, s.value])
print(json.dumps(samples))
"#;

/// Fetches a URL with the standard library; prints the body.
const FETCH: &str = r#"
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=10) as r:
    sys.stdout.write(r.headers["Content-Type"] + "\n" + r.read().decode())
"#;

pub struct Samples(Vec<(String, serde_json::Map<String, Value>, f64)>);

impl Samples {
    pub fn parse(text: &str) -> Samples {
        let mut child = Command::new("python3")
            .args(["-c", PARSER])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "the Prometheus parser rejected the text (pip install prometheus_client, see .ci/deps): {}\n{text}",
            String::from_utf8_lossy(&out.stderr)
        );
        let rows: Vec<(String, serde_json::Map<String, Value>, f64)> =
            serde_json::from_slice(&out.stdout).unwrap();
        Samples(rows)
    }

    /// The value of the one sample `name` whose labels include `labels`.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let found: Vec<f64> = self
            .0
            .iter()
            .filter(|(n, l, _)| {
                n == name && labels.iter().all(|(k, v)| l.get(*k) == Some(&(*v).into()))
            })
            .map(|(_, _, v)| *v)
            .collect();
        assert_eq!(found.len(), 1, "{name} {labels:?} in {:?}", self.0);
        found[0]
    }
}

#[test]
fn metrics_parse_with_the_expected_families_and_values() {
    let stack = Stack::new();
    let textfile = stack.dir().join("textfile").join("atpred.prom");
    std::fs::create_dir_all(textfile.parent().unwrap()).unwrap();
    let daemon = stack
        .daemon("checks = [\"postgres\", \"redis\", \"http\", \"disk\", \"backup-freshness\"]")
        .toml(&format!(
            "[jobs.nightly]\nkind = \"backup\"\nverify = \"checksum\"\n\
             [jobs.broken]\nkind = \"command\"\ncommand = [\"false\"]\n\
             [metrics]\nlisten = \"127.0.0.1:0\"\ntextfile = {}\n",
            toml_path(&textfile)
        ))
        .spawn();
    assert_eq!(daemon.ctl(["run", "nightly", "--wait"]).status, 0);
    assert_eq!(daemon.ctl(["run", "broken", "--wait"]).status, 1);
    let (code, _) = health_now(&daemon);
    assert_eq!(code, 0, "{}", daemon.log());
    let backups: Value = serde_json::from_str(&daemon.ctl(["--json", "backups"]).stdout).unwrap();
    let backup_bytes = backups["backups"][0]["bytes"].as_f64().unwrap();

    let out = daemon.ctl(["metrics"]);
    assert_eq!(out.status, 0);
    let m = Samples::parse(&out.stdout);
    assert_eq!(m.value("atpred_up", &[]), 1.0);
    assert_eq!(
        m.value(
            "atpred_build_info",
            &[("version", env!("CARGO_PKG_VERSION"))]
        ),
        1.0
    );
    let runs = |job, outcome| {
        m.value(
            "atpred_job_runs_total",
            &[("job", job), ("outcome", outcome)],
        )
    };
    assert_eq!(runs("nightly", "succeeded"), 1.0);
    assert_eq!(runs("broken", "failed"), 1.0);
    assert_eq!(runs("health", "succeeded"), 1.0);
    assert_eq!(
        m.value("atpred_job_duration_seconds_count", &[("job", "nightly")]),
        1.0
    );
    assert!(m.value("atpred_job_duration_seconds_sum", &[("job", "nightly")]) > 0.0);
    let now = chrono::Utc::now().timestamp() as f64;
    let last = m.value(
        "atpred_job_last_success_timestamp_seconds",
        &[("job", "nightly")],
    );
    assert!(now - last < 600.0 && last <= now + 1.0, "{last} vs {now}");
    assert_eq!(m.value("atpred_job_running", &[("job", "broken")]), 0.0);
    assert_eq!(
        m.value("atpred_backup_bytes", &[("job", "nightly")]),
        backup_bytes
    );
    assert!(
        m.value(
            "atpred_backup_last_verified_timestamp_seconds",
            &[("job", "nightly")]
        ) >= last - 600.0
    );
    let backups = |state| m.value("atpred_backups", &[("job", "nightly"), ("state", state)]);
    assert_eq!((backups("verified"), backups("failed")), (1.0, 0.0));
    for check in ["postgres", "redis", "http", "disk", "backup-freshness"] {
        assert_eq!(m.value("atpred_health_status", &[("check", check)]), 0.0);
        assert!(m.value("atpred_health_latency_seconds", &[("check", check)]) >= 0.0);
    }
    let dir = stack.dir().display().to_string();
    assert!(m.value("atpred_disk_free_bytes", &[("path", &dir)]) > 0.0);
    // No secret and no free-form text in any label.
    assert!(!out.stdout.contains("r3dis-Secret-pw") && !out.stdout.contains("Pw7f3a9c1e"));
    assert!(!out.stdout.contains("no answer"));

    // The same over HTTP (the port the system chose is in the log).
    let log = daemon.log();
    let url = log
        .lines()
        .find_map(|l| l.split("metrics served at ").nth(1))
        .unwrap_or_else(|| panic!("no metrics address in\n{log}"))
        .trim()
        .to_owned();
    let fetched = Command::new("python3")
        .args(["-c", FETCH, &url])
        .output()
        .unwrap();
    assert!(fetched.status.success(), "{fetched:?}");
    let fetched = String::from_utf8(fetched.stdout).unwrap();
    let (content_type, body) = fetched.split_once('\n').unwrap();
    assert!(
        content_type.starts_with("application/openmetrics-text"),
        "{content_type}"
    );
    assert_eq!(
        Samples::parse(body).value(
            "atpred_backups",
            &[("job", "nightly"), ("state", "verified")]
        ),
        1.0
    );

    // And the textfile, rewritten after the runs.
    let text = std::fs::read_to_string(&textfile).unwrap();
    let t = Samples::parse(&text);
    assert_eq!(t.value("atpred_up", &[]), 1.0);
    assert!(crate::harness::wait_until(
        std::time::Duration::from_secs(10),
        || {
            let text = std::fs::read_to_string(&textfile).unwrap_or_default();
            Samples::parse(&text).0.iter().any(|(n, l, v)| {
                n == "atpred_health_status" && l.get("check") == Some(&"http".into()) && *v == 0.0
            })
        }
    ));
}
