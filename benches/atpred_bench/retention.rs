//! Issue "retention": planning over 100,000 backups with the offline planner
//! (`atprectl retention`, the same pure `jobs::retention::plan` the prune job runs), end to end:
//! process start, reading the timestamps, planning, printing the plan.

use std::fmt::Write as _;
use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use chrono::{Duration, TimeZone, Utc};

use crate::Env;
use crate::stats::{cells, list};

pub const BACKUPS: usize = 100_000;

/// Wall time of each round, seconds.
pub struct Retention {
    pub secs: Vec<f64>,
    pub kept: usize,
}

pub fn run(env: &Env) -> Result<Retention> {
    // One backup an hour for about 11.4 years, newest first, at 02:30 past the hour.
    let newest = Utc
        .with_ymd_and_hms(2026, 11, 28, 2, 30, 0)
        .single()
        .context("a valid date")?;
    let mut input = String::with_capacity(BACKUPS * 21);
    for i in 0..BACKUPS {
        let t = newest - Duration::hours(i as i64);
        let _ = writeln!(
            input,
            "{}",
            t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
    }
    let mut secs = Vec::new();
    let mut kept = 0;
    for _ in 0..=env.runs {
        let t0 = Instant::now();
        let mut child = Command::new(env.bin.join("atprectl"))
            .args([
                "--json",
                "retention",
                "--keep-last",
                "3",
                "--keep-daily",
                "7",
                "--keep-weekly",
                "4",
                "--keep-monthly",
                "12",
                "--keep-yearly",
                "5",
                "--now",
                "2026-11-28T03:00:00Z",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawn atprectl retention")?;
        child
            .stdin
            .take()
            .context("stdin")?
            .write_all(input.as_bytes())?;
        let out = child.wait_with_output()?;
        let elapsed = t0.elapsed().as_secs_f64();
        if !out.status.success() {
            bail!(
                "atprectl retention exited {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            );
        }
        let plan: serde_json::Value = serde_json::from_slice(&out.stdout)?;
        kept = count_kept(&plan);
        if kept == 0 {
            bail!("the plan keeps nothing: {plan}");
        }
        secs.push(elapsed);
    }
    // The first run warms the page cache and is not counted.
    secs.remove(0);
    Ok(Retention { secs, kept })
}

/// Decisions of the JSON plan that keep their backup.
fn count_kept(plan: &serde_json::Value) -> usize {
    plan["decisions"].as_array().map_or(0, |decisions| {
        decisions
            .iter()
            .filter(|d| d["keep"].as_bool() == Some(true))
            .count()
    })
}

pub fn table(out: &mut String, r: &Retention) {
    let _ = writeln!(out, "## Retention (issue \"retention\")\n");
    let (m, range) = cells(&r.secs, 3);
    let _ = writeln!(out, "| what | wall s | min – max | every run (s) | aim |");
    let _ = writeln!(out, "| --- | ---: | ---: | --- | --- |");
    let _ = writeln!(
        out,
        "| `atprectl retention` over {BACKUPS} hourly backups (keep-last 3, daily 7, weekly 4, monthly 12, yearly 5): {} kept | {m} | {range} | {} | < 1 s |\n",
        r.kept,
        list(&r.secs, 3)
    );
}
