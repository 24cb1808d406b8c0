//! `atprectl retention`: the retention planner offline, on timestamps read from stdin.

use std::io::BufRead;

use chrono::{DateTime, Utc};

use crate::cli::RetentionArgs;
use crate::jobs::prune;
use crate::jobs::retention::{self, Candidate, Period, Policy};

/// Plans and prints; returns the exit code (2 on unreadable input or a policy that keeps nothing).
pub fn run(args: &RetentionArgs, json: bool) -> u8 {
    let policy = policy(args);
    if policy.keeps_nothing() {
        eprintln!("atprectl: this policy keeps nothing: give at least one --keep-* option");
        return super::EXIT_USAGE;
    }
    let mut candidates = Vec::new();
    for (n, line) in std::io::stdin().lock().lines().enumerate() {
        let line = match line {
            Ok(l) => l,
            Err(e) => {
                eprintln!("atprectl: reading stdin: {e}");
                return super::EXIT_USAGE;
            }
        };
        let text = line.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        match DateTime::parse_from_rfc3339(text) {
            Ok(t) => candidates.push(Candidate {
                id: text.to_owned(),
                time: t.with_timezone(&Utc),
                verified: true,
                in_use: false,
            }),
            Err(e) => {
                eprintln!(
                    "atprectl: line {}: {text:?} is not an RFC 3339 time: {e}",
                    n + 1
                );
                return super::EXIT_USAGE;
            }
        }
    }
    let plan = retention::plan(
        &candidates,
        &policy,
        args.now.unwrap_or_else(Utc::now),
        args.timezone,
    );
    let text = if json {
        serde_json::to_string(&plan).unwrap_or_default() + "\n"
    } else {
        prune::render(&plan)
    };
    super::render::write_stdout(text.as_bytes());
    0
}

fn policy(args: &RetentionArgs) -> Policy {
    let counts = [
        (Period::Hourly, args.keep_hourly),
        (Period::Daily, args.keep_daily),
        (Period::Weekly, args.keep_weekly),
        (Period::Monthly, args.keep_monthly),
        (Period::Yearly, args.keep_yearly),
    ];
    let within = [
        (Period::Hourly, args.keep_within_hourly),
        (Period::Daily, args.keep_within_daily),
        (Period::Weekly, args.keep_within_weekly),
        (Period::Monthly, args.keep_within_monthly),
        (Period::Yearly, args.keep_within_yearly),
    ];
    Policy {
        keep_last: args.keep_last,
        keep_periods: counts
            .into_iter()
            .filter_map(|(p, n)| Some((p, n?)))
            .collect(),
        keep_within: args.keep_within,
        keep_within_periods: within
            .into_iter()
            .filter_map(|(p, d)| Some((p, d?)))
            .collect(),
        min_keep: args.min_keep,
    }
}
