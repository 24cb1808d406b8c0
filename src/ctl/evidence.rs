//! The drill and restore evidence of a backup as `atprectl backups show` prints it below the
//! manifest, and the time estimate of a restore plan.

use chrono::{DateTime, Utc};

use crate::restore::evidence::{Drill, Estimate, Evidence, Loaded};
use crate::timefmt;

/// The evidence lines; says so when the backup was never drilled or restored. A backup
/// drilled at backup time before evidence was recorded shows its manifest's verification.
pub fn render(
    evidence: Option<&Evidence>,
    manifest: &serde_json::Value,
    now: DateTime<Utc>,
) -> String {
    let e = evidence.cloned().unwrap_or_default();
    let mut out = String::new();
    let v = &manifest["verification"];
    match &e.last_drill {
        Some(d) => out.push_str(&drill("last drill", d, now)),
        None if v["level"] == "restore" => out.push_str(&format!(
            "last drill: at backup time, {} (no evidence recorded; see verification above)\n",
            v["outcome"].as_str().unwrap_or("?")
        )),
        None => out.push_str("last drill: none recorded\n"),
    }
    if let (Some(p), Some(d)) = (&e.last_passed_drill, &e.last_drill)
        && !d.passed
    {
        out.push_str(&drill("last passed drill", p, now));
    }
    match &e.last_restore {
        Some(r) => out.push_str(&format!(
            "last restore: {} ({}) into {}, took {:.1} s, {} tables, {} rows, pg_restore -j {}; \
             data age then {}\n",
            stamp(r.at),
            timefmt::relative(r.at, now),
            r.database,
            r.duration_ms as f64 / 1000.0,
            r.tables,
            r.rows,
            r.jobs,
            timefmt::short_span(r.data_age_seconds.unsigned_abs())
        )),
        None => out.push_str("last restore: none recorded\n"),
    }
    out
}

fn drill(label: &str, d: &Drill, now: DateTime<Utc>) -> String {
    let loaded = match &d.loaded {
        Some(Loaded::Redis { databases, keys }) => {
            format!("{keys} keys in {databases} database(s)")
        }
        Some(Loaded::Files { entries, bytes }) => format!(
            "{entries} entries, {}",
            crate::jobs::backup::dump::mib(*bytes)
        ),
        None => format!("{} tables, {} rows", d.tables, d.rows),
    };
    let mut out = format!(
        "{label}: {} ({}), {}, took {:.1} s, {loaded}; data age then {}\n",
        stamp(d.at),
        timefmt::relative(d.at, now),
        if d.passed { "passed" } else { "FAILED" },
        d.duration_ms as f64 / 1000.0,
        timefmt::short_span(d.data_age_seconds.unsigned_abs())
    );
    if !d.passed {
        out.push_str(&format!("  {}\n", d.details));
    }
    for s in &d.smoke {
        out.push_str(&format!(
            "  {} {}\n",
            if s.passed { "ok  " } else { "FAIL" },
            s.describe()
        ));
    }
    out
}

/// `estimated time: about 12.3 s (from the last drill of this backup)`.
pub fn estimate(estimate: Option<&Estimate>) -> String {
    match estimate {
        Some(e) => format!(
            "estimated time: about {:.1} s (from {})\n",
            e.millis as f64 / 1000.0,
            e.basis
        ),
        None => "estimated time: unknown (no drill or restore of this job's backups yet)\n".into(),
    }
}

fn stamp(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%SZ").to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_evidence_the_manifest_says_whether_a_drill_was_made() {
        let now = Utc::now();
        let drilled =
            serde_json::json!({ "verification": { "level": "restore", "outcome": "passed" } });
        let checked =
            serde_json::json!({ "verification": { "level": "full", "outcome": "passed" } });
        assert_eq!(
            render(None, &drilled, now),
            "last drill: at backup time, passed (no evidence recorded; see verification above)\n\
             last restore: none recorded\n"
        );
        assert_eq!(
            render(None, &checked, now),
            "last drill: none recorded\nlast restore: none recorded\n"
        );
    }
}
