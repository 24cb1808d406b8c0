//! The retention planner: a pure function of (catalog, policy, now) that says, for every backup,
//! keep or remove and why. restic's `forget` semantics, to the letter (restic's own golden table
//! runs against it in `tests/it/retention_restic.rs`):
//!
//! - `keep-last N`: the N newest backups;
//! - `keep-hourly/daily/weekly/monthly/yearly N`: walking from the newest backup back, the newest
//!   backup of each of the N most recent periods (in the daemon's time zone; weeks are ISO
//!   weeks) that have backups; `-1` keeps the newest of every period; a count not used up when
//!   the walk reaches the oldest backup keeps that one too ("oldest yearly snapshot");
//! - `keep-within D`: every backup strictly newer than the newest one minus D, D in restic's
//!   calendar grammar ([`CalendarDuration`]); `keep-within-daily D` (and the other periods): the
//!   newest backup of each period in that window, and the oldest backup if the window reaches it.
//!
//! Only verified, complete backups count. Safety rules, each proved by a property test: the
//! newest verified backup is never removed; the newest `min-keep` verified backups remain; a
//! backup in use (being verified or restored) is kept; backups dated in the future are kept with
//! a warning; failed backups are removed only once a newer verified backup exists.

use chrono::{DateTime, Datelike, Timelike, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

use super::calendar_duration::CalendarDuration;

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

/// A bucket's count: restic's `N` or `-1` ("keep all in this bucket").
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Count {
    N(u32),
    All,
}

impl Count {
    /// restic's number: `-1` is all, 0 or more is a count; anything else is refused.
    pub fn from_restic(n: i64) -> Result<Count, String> {
        match n {
            -1 => Ok(Count::All),
            n => u32::try_from(n).map(Count::N).map_err(|_| {
                format!(
                    "{n} is not a count: write a number from 0, or -1 to keep all (as restic does)"
                )
            }),
        }
    }

    fn is_zero(self) -> bool {
        self == Count::N(0)
    }
}

impl std::str::FromStr for Count {
    type Err = String;
    fn from_str(s: &str) -> Result<Count, String> {
        let n: i64 = s.parse().map_err(|_| {
            format!("{s:?} is not a count: write a number from 0, or -1 to keep all")
        })?;
        Count::from_restic(n)
    }
}

/// What to keep. `Default` keeps nothing by rule; validation refuses such a policy.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    pub keep_last: Option<Count>,
    /// `keep-hourly` ... `keep-yearly`.
    pub keep_periods: BTreeMap<Period, Count>,
    pub keep_within: Option<CalendarDuration>,
    /// `keep-within-hourly` ... `keep-within-yearly`.
    pub keep_within_periods: BTreeMap<Period, CalendarDuration>,
    /// The newest `min_keep` verified backups always remain (at least 1).
    pub min_keep: u32,
}

impl Policy {
    /// True when no rule would keep anything.
    pub fn keeps_nothing(&self) -> bool {
        self.keep_last.is_none_or(Count::is_zero)
            && self.keep_periods.values().all(|n| n.is_zero())
            && self.keep_within.is_none_or(|d| d.is_zero())
            && self
                .keep_within_periods
                .values()
                .all(CalendarDuration::is_zero)
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
    /// Why: restic's words for its rules ("last snapshot", "daily snapshot", "oldest monthly
    /// snapshot", "within 2d", "weekly within 1m"), so that a plan can be diffed against
    /// restic's, and atpred's own: "newest verified", "min-keep", "in use", "dated in the
    /// future", "not verified, but ...".
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
    // The newest `min-keep` verified backups stay whatever the rules say. A floor on the
    // newest rather than "top up to N with whatever no rule kept" so that keeping more by rule
    // never removes a backup that keeping less kept (the property test checks that).
    for &i in verified.iter().take(policy.min_keep.max(1) as usize) {
        if reasons[i].is_empty() {
            reasons[i].push("min-keep".into());
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

/// The keep rules, applied to verified backups only (indices into `sorted`, newest first), as
/// restic's `ApplyPolicy` applies them: one walk from the newest backup back, every rule looking
/// at each backup in turn. A count bucket keeps the newest backup of each new period while its
/// count lasts (`-1`: always); a rule that still has room when the walk reaches the oldest backup
/// keeps that too ("oldest ... snapshot"), which keeps the longest history the counts allow.
fn apply_rules(
    sorted: &[&Candidate],
    verified: &[usize],
    policy: &Policy,
    tz: Tz,
    reasons: &mut [Vec<String>],
) {
    let Some(&newest) = verified.first() else {
        return;
    };
    let newest_time = sorted[newest].time;
    // Period `None` is `keep-last`: every backup is a period of its own.
    let mut counts: Vec<Bucket> = policy
        .keep_last
        .map(|n| (None, n))
        .into_iter()
        .chain(policy.keep_periods.iter().map(|(&p, &n)| (Some(p), n)))
        .filter(|(_, n)| !n.is_zero())
        .map(|(period, left)| Bucket {
            period,
            left,
            last: None,
            reason: format!("{} snapshot", period.map_or("last", Period::name)),
        })
        .collect();
    let within = policy
        .keep_within
        .filter(|d| !d.is_zero())
        .map(|d| (d.cutoff(newest_time, tz), format!("within {d}")));
    let mut windows: Vec<(Option<DateTime<Utc>>, Bucket)> = policy
        .keep_within_periods
        .iter()
        .filter(|(_, d)| !d.is_zero())
        .map(|(&p, d)| {
            let bucket = Bucket {
                period: Some(p),
                left: Count::All,
                last: None,
                reason: format!("{} within {d}", p.name()),
            };
            (d.cutoff(newest_time, tz), bucket)
        })
        .collect();
    let after = |cutoff: Option<DateTime<Utc>>, t: DateTime<Utc>| cutoff.is_none_or(|c| t > c);
    for (nr, &i) in verified.iter().enumerate() {
        let oldest = nr + 1 == verified.len();
        let t = sorted[i].time;
        if let Some((cutoff, why)) = &within
            && after(*cutoff, t)
        {
            reasons[i].push(why.clone());
        }
        for bucket in &mut counts {
            if let Some(why) = bucket.offer(nr, t, tz, oldest) {
                reasons[i].push(why);
            }
        }
        for (cutoff, bucket) in &mut windows {
            if after(*cutoff, t)
                && let Some(why) = bucket.offer(nr, t, tz, oldest)
            {
                reasons[i].push(why);
            }
        }
    }
}

/// One of restic's buckets: a period, what is left of its count, and the period of the backup it
/// kept last.
struct Bucket {
    period: Option<Period>,
    left: Count,
    last: Option<PeriodKey>,
    reason: String,
}

/// Which period a backup falls in; for `keep-last` its place in the walk.
#[derive(PartialEq)]
enum PeriodKey {
    Place(usize),
    Label(String),
}

impl Bucket {
    /// Offers the backup at place `nr` of the walk; returns the reason when the bucket keeps it.
    fn offer(&mut self, nr: usize, t: DateTime<Utc>, tz: Tz, oldest: bool) -> Option<String> {
        if self.left == Count::N(0) {
            return None;
        }
        let key = match self.period {
            None => PeriodKey::Place(nr),
            Some(p) => PeriodKey::Label(p.label(t, tz)),
        };
        let new_period = self.last.as_ref() != Some(&key);
        if !new_period && !oldest {
            return None;
        }
        self.last = Some(key);
        if let Count::N(n) = &mut self.left {
            *n -= 1;
        }
        Some(if new_period {
            self.reason.clone()
        } else {
            format!("oldest {}", self.reason)
        })
    }
}
