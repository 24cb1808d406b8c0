//! The retention planner: a pure function of (catalog, policy, now) that says, for every backup,
//! keep or remove and why. restic's `forget` semantics, which operators already know:
//!
//! - `keep-last N`: the N newest backups;
//! - `keep-hourly/daily/weekly/monthly/yearly N`: walking from the newest backup back, the newest
//!   backup of each of the N most recent periods (in the daemon's time zone; weeks are ISO
//!   weeks) that have backups;
//! - `keep-within D`: every backup up to D older than the newest one; `keep-within-daily D` (and
//!   the other periods): the newest backup of each period within D of the newest one.
//!
//! Only verified, complete backups count. Safety rules, each proved by a property test: the
//! newest verified backup is never removed; at least `min-keep` verified backups remain; a
//! backup in use (being verified or restored) is kept; backups dated in the future are kept with
//! a warning; failed backups are removed only once a newer verified backup exists.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Datelike, Timelike, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// Calendar periods.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Period {
    Hourly,
    Daily,
    Weekly,
    Monthly,
    Yearly,
}

impl Period {
    pub const ALL: [Period; 5] = [
        Period::Hourly,
        Period::Daily,
        Period::Weekly,
        Period::Monthly,
        Period::Yearly,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Period::Hourly => "hourly",
            Period::Daily => "daily",
            Period::Weekly => "weekly",
            Period::Monthly => "monthly",
            Period::Yearly => "yearly",
        }
    }

    /// The period `t` falls in, as shown in reasons: "2026-11-27 14h", "2026-11-27",
    /// "2026-W47", "2026-11", "2026".
    pub fn label(self, t: DateTime<Utc>, tz: Tz) -> String {
        let l = t.with_timezone(&tz);
        match self {
            Period::Hourly => format!("{} {:02}h", l.format("%Y-%m-%d"), l.hour()),
            Period::Daily => l.format("%Y-%m-%d").to_string(),
            Period::Weekly => {
                let w = l.iso_week();
                format!("{}-W{:02}", w.year(), w.week())
            }
            Period::Monthly => l.format("%Y-%m").to_string(),
            Period::Yearly => l.format("%Y").to_string(),
        }
    }
}

/// What to keep. `Default` keeps nothing by rule; validation refuses such a policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub keep_last: Option<u32>,
    /// `keep-hourly` ... `keep-yearly`.
    pub keep_periods: BTreeMap<Period, u32>,
    pub keep_within: Option<Duration>,
    /// `keep-within-hourly` ... `keep-within-yearly`.
    pub keep_within_periods: BTreeMap<Period, Duration>,
    /// Verified backups that always remain (at least 1).
    pub min_keep: u32,
}

impl Policy {
    /// True when no rule would keep anything.
    pub fn keeps_nothing(&self) -> bool {
        self.keep_last.unwrap_or(0) == 0
            && self.keep_periods.values().all(|n| *n == 0)
            && self.keep_within.is_none_or(|d| d.is_zero())
            && self.keep_within_periods.values().all(Duration::is_zero)
    }
}

/// A backup as the planner sees it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Candidate {
    pub id: String,
    pub time: DateTime<Utc>,
    pub verified: bool,
    /// Being verified or restored right now.
    pub in_use: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Decision {
    pub id: String,
    pub time: DateTime<Utc>,
    pub keep: bool,
    /// Why: "last 3", "daily 2026-11-27", "weekly 2026-W47", "within 2d", "newest verified",
    /// "min-keep", "in use", "dated in the future", "failed, a newer verified backup exists".
    pub reasons: Vec<String>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// Newest first.
    pub decisions: Vec<Decision>,
    pub warnings: Vec<String>,
}

impl Plan {
    pub fn removals(&self) -> impl Iterator<Item = &Decision> {
        self.decisions.iter().filter(|d| !d.keep)
    }
}

/// Plans which backups to keep. Pure: the same inputs always give the same plan.
pub fn plan(candidates: &[Candidate], policy: &Policy, now: DateTime<Utc>, tz: Tz) -> Plan {
    let mut sorted: Vec<&Candidate> = candidates.iter().collect();
    sorted.sort_by(|a, b| b.time.cmp(&a.time).then_with(|| b.id.cmp(&a.id)));
    let mut reasons: Vec<Vec<String>> = vec![Vec::new(); sorted.len()];
    let mut warnings = Vec::new();
    // Backups dated in the future (the clock went back) are kept below but take part in no
    // rule: otherwise they would fill `keep-last` and the period slots, and the backup made
    // just now — the freshest data — would be the one removed.
    let verified: Vec<usize> = (0..sorted.len())
        .filter(|&i| sorted[i].verified && sorted[i].time <= now)
        .collect();

    for (i, c) in sorted.iter().enumerate() {
        if c.in_use {
            reasons[i].push("in use".into());
        }
        if c.time > now {
            reasons[i].push("dated in the future".into());
            warnings.push(format!(
                "{} is dated {}, after now ({now}): kept; is the clock right?",
                c.id, c.time
            ));
        }
    }
    if let Some(&newest) = verified.first() {
        reasons[newest].push("newest verified".into());
        apply_rules(&sorted, &verified, policy, tz, &mut reasons);
    }
    // Failed or unverified backups go once a newer verified one exists; until then they stay.
    for (i, c) in sorted
        .iter()
        .enumerate()
        .filter(|(_, c)| !c.verified && c.time <= now)
    {
        let newer_verified = verified.iter().any(|&v| sorted[v].time > c.time);
        if !newer_verified {
            reasons[i].push("not verified, but no newer verified backup yet".into());
        }
    }
    let mut kept = verified.iter().filter(|&&i| !reasons[i].is_empty()).count();
    for &i in &verified {
        if kept >= policy.min_keep.max(1) as usize {
            break;
        }
        if reasons[i].is_empty() {
            reasons[i].push("min-keep".into());
            kept += 1;
        }
    }
    let decisions = sorted
        .iter()
        .zip(reasons)
        .map(|(c, mut reasons)| {
            let keep = !reasons.is_empty();
            if !keep {
                reasons.push(if c.verified {
                    "no rule keeps it".into()
                } else {
                    "not verified; a newer verified backup exists".into()
                });
            }
            Decision {
                id: c.id.clone(),
                time: c.time,
                keep,
                reasons,
            }
        })
        .collect();
    Plan {
        decisions,
        warnings,
    }
}

/// The keep rules, applied to verified backups only (indices into `sorted`, newest first).
fn apply_rules(
    sorted: &[&Candidate],
    verified: &[usize],
    policy: &Policy,
    tz: Tz,
    reasons: &mut [Vec<String>],
) {
    if let Some(n) = policy.keep_last {
        for &i in verified.iter().take(n as usize) {
            reasons[i].push(format!("last {n}"));
        }
    }
    for (&period, &n) in &policy.keep_periods {
        keep_per_period(sorted, verified, period, n as usize, None, tz, reasons);
    }
    let Some(&newest) = verified.first() else {
        return;
    };
    let newest_time = sorted[newest].time;
    if let Some(within) = policy.keep_within {
        let label = humantime::format_duration(within);
        for &i in verified {
            if within_of(newest_time, sorted[i].time, within) {
                reasons[i].push(format!("within {label}"));
            }
        }
    }
    for (&period, &within) in &policy.keep_within_periods {
        keep_per_period(
            sorted,
            verified,
            period,
            usize::MAX,
            Some((newest_time, within)),
            tz,
            reasons,
        );
    }
}

/// Keeps the newest backup of each of the `n` most recent periods that have backups, optionally
/// only among those within a duration of the newest backup.
fn keep_per_period(
    sorted: &[&Candidate],
    verified: &[usize],
    period: Period,
    n: usize,
    within: Option<(DateTime<Utc>, Duration)>,
    tz: Tz,
    reasons: &mut [Vec<String>],
) {
    let mut last_label: Option<String> = None;
    let mut left = n;
    for &i in verified {
        if left == 0 {
            break;
        }
        let t = sorted[i].time;
        if let Some((newest, d)) = within
            && !within_of(newest, t, d)
        {
            break;
        }
        let label = period.label(t, tz);
        if last_label.as_deref() != Some(&label) {
            let why = match within {
                Some((_, d)) => format!(
                    "within {} {} {label}",
                    humantime::format_duration(d),
                    period.name()
                ),
                None => format!("{} {label}", period.name()),
            };
            reasons[i].push(why);
            last_label = Some(label);
            left -= 1;
        }
    }
}

fn within_of(newest: DateTime<Utc>, t: DateTime<Utc>, d: Duration) -> bool {
    (newest - t).to_std().map_or(true, |age| age <= d)
}
