//! Job schedules: the text a job's `schedule` is written in, and the instants it fires at.
//!
//! Three forms are accepted:
//! - a cron pattern of 5 fields (minute resolution) or 6 fields (a leading seconds field), where
//!   day-of-month and day-of-week combine with OR as in cron (`0 0 13 * 5` is every 13th and every
//!   Friday);
//! - a nickname: `@hourly`, `@daily`, `@weekly`, `@monthly`, `@yearly`, `@annually`;
//! - `every <duration>` (humantime, at least one second): multiples of the duration since the Unix
//!   epoch, so the phase does not move when the daemon restarts, and no time zone applies.
//!
//! A cron pattern is read on the wall clock of the job's time zone. When the clock skips or
//! repeats an hour, what happens depends on the hour field:
//! - It names hours (`30 2 * * *`, `30 2,14 * * *`, `*/15 2 * * *`): every wall-clock time it
//!   schedules runs once. A time that does not exist on the spring-forward day runs at the first
//!   instant after the gap (03:00 for a 02:30 job in Berlin), several such times coalescing into
//!   one run; a time that happens twice on the fall-back day runs only the first time.
//! - It is `*` or `*/n` (`0 * * * *`, `@hourly`, `*/20 * * * * *`): it follows real time. Times
//!   inside a gap do not exist and are skipped; times in a repeated hour run on both passes, so
//!   an hourly job runs every real hour.
//!
//! This is the rule of Vixie cron, except that Vixie also counts a `*` in the minute field as
//! real time. We do not use croner's own time zone handling: it treats any list, range or step
//! (`30 2,14 * * *`) as real time, which drops the 02:30 run on the spring-forward day. croner
//! only matches patterns against the wall clock here; the mapping to instants is ours.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, LocalResult, NaiveDate, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::Cron;
use croner::errors::CronError;
use croner::parser::{CronParser, Seconds, Year};

/// A parsed job schedule.
#[derive(Clone, Debug)]
pub struct Schedule {
    text: String,
    kind: Kind,
}

#[derive(Clone, Debug)]
enum Kind {
    Cron { cron: Box<Cron>, clock: Clock },
    Every(Duration),
}

/// How a cron pattern meets a clock that skips or repeats wall-clock times (see the module doc).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Clock {
    /// The hour field names hours: each scheduled wall-clock time runs once.
    Wall,
    /// The hour field is a wildcard: runs follow real time.
    Real,
}

/// Why a schedule's text was rejected.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("schedule is empty")]
    Empty,
    #[error(
        "schedule {text:?} has {fields} fields: expected 5 (minute hour day-of-month month \
         day-of-week) or 6 (seconds first){year}"
    )]
    FieldCount {
        text: String,
        fields: usize,
        year: &'static str,
    },
    #[error(
        "schedule {text:?}: unknown nickname, expected @hourly, @daily, @weekly, @monthly, \
         @yearly or @annually"
    )]
    Nickname { text: String },
    #[error("schedule {text:?} is not a valid cron pattern")]
    Cron {
        text: String,
        #[source]
        source: CronError,
    },
    #[error("schedule {text:?}: `every` needs a duration, such as \"every 30m\"")]
    MissingDuration { text: String },
    #[error("schedule {text:?} has an invalid duration")]
    Duration {
        text: String,
        #[source]
        source: humantime::DurationError,
    },
    #[error("schedule {text:?}: the interval must be at least 1s")]
    TooShort { text: String },
    #[error("schedule {text:?} never fires")]
    Never { text: String },
}

impl Schedule {
    /// Parses a schedule; see the module doc for the forms. Leading and trailing whitespace is
    /// trimmed; a 7-field pattern (with a year) is rejected, and so is one that never fires
    /// (`0 0 30 2 *`).
    pub fn parse(text: &str) -> Result<Schedule, ScheduleError> {
        let text = text.trim();
        if text.is_empty() {
            return Err(ScheduleError::Empty);
        }
        let kind = match every_argument(text) {
            Some(duration) => parse_every(text, duration)?,
            None => parse_cron(text)?,
        };
        Ok(Schedule {
            text: text.to_owned(),
            kind,
        })
    }

    /// The first fire time strictly after `after`, evaluated in `tz`. None if none exists (croner
    /// searches up to the year 5000).
    pub fn next_after(&self, after: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        match &self.kind {
            Kind::Every(period) => every_next_after(*period, after),
            Kind::Cron { cron, clock } => cron_next_after(cron, *clock, after, tz),
        }
    }

    /// The next `n` fire times strictly after `after`, in increasing order (fewer if the schedule
    /// ends).
    pub fn upcoming(&self, after: DateTime<Utc>, tz: Tz, n: usize) -> Vec<DateTime<Utc>> {
        let mut slots = Vec::with_capacity(n.min(1024));
        let mut from = after;
        while slots.len() < n {
            let Some(slot) = self.next_after(from, tz) else {
                break;
            };
            slots.push(slot);
            from = slot;
        }
        slots
    }

    /// The wall-clock times the pattern matched that run at `slot` because a DST gap ended
    /// there (in order; the slot's own wall-clock time last when it matches too). Empty for a
    /// slot that is not the end of a gap, and for real-time patterns, whose gap times are
    /// skipped. The preview (`atprectl schedule`) marks shifted and coalesced runs with it.
    pub fn gap_matches(&self, slot: DateTime<Utc>, tz: Tz) -> Vec<NaiveDateTime> {
        let Kind::Cron {
            cron,
            clock: Clock::Wall,
        } = &self.kind
        else {
            return Vec::new();
        };
        let wall = slot.with_timezone(&tz).naive_local();
        let before = (slot - chrono::TimeDelta::seconds(1))
            .with_timezone(&tz)
            .naive_local();
        // The wall clock jumped from `before` to `wall`: that span was skipped.
        let skipped = wall - before - chrono::TimeDelta::seconds(1);
        if skipped <= chrono::TimeDelta::zero() {
            return Vec::new();
        }
        let mut civil = before;
        let mut out = Vec::new();
        while let Ok(next) = cron.find_next_occurrence(&civil, false) {
            if next > wall {
                break;
            }
            out.push(next);
            civil = next;
        }
        if out.len() == 1 && out[0] == wall {
            out.clear();
        }
        out
    }

    /// The text as written, without surrounding whitespace.
    pub fn as_str(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for Schedule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl FromStr for Schedule {
    type Err = ScheduleError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Schedule::parse(text)
    }
}

/// The rest of `text` after a leading `every` word, if it starts with one.
fn every_argument(text: &str) -> Option<&str> {
    let (word, rest) = text.split_once(char::is_whitespace).unwrap_or((text, ""));
    word.eq_ignore_ascii_case("every").then(|| rest.trim())
}

fn parse_every(text: &str, duration: &str) -> Result<Kind, ScheduleError> {
    if duration.is_empty() {
        return Err(ScheduleError::MissingDuration { text: text.into() });
    }
    let period = humantime::parse_duration(duration).map_err(|source| ScheduleError::Duration {
        text: text.into(),
        source,
    })?;
    if period < Duration::from_secs(1) {
        return Err(ScheduleError::TooShort { text: text.into() });
    }
    Ok(Kind::Every(period))
}

fn parse_cron(text: &str) -> Result<Kind, ScheduleError> {
    let pattern = if text.starts_with('@') {
        expand_nickname(text).ok_or_else(|| ScheduleError::Nickname { text: text.into() })?
    } else {
        text
    };
    let fields: Vec<&str> = pattern.split_whitespace().collect();
    let hour = match fields.as_slice() {
        [_, hour, _, _, _] | [_, _, hour, _, _, _] => *hour,
        _ => {
            return Err(ScheduleError::FieldCount {
                text: text.into(),
                fields: fields.len(),
                year: if fields.len() == 7 {
                    "; a year field is not supported"
                } else {
                    ""
                },
            });
        }
    };
    // The day of week is the last field in both forms; it is read as cronie reads it.
    let (rest, dow) = pattern
        .rsplit_once(char::is_whitespace)
        .unwrap_or((pattern, ""));
    let pattern = format!("{} {}", rest.trim_end(), super::cron_dow::normalize(dow));
    let cron = CronParser::builder()
        .seconds(Seconds::Optional)
        .year(Year::Disallowed)
        .build()
        .parse(&pattern)
        .map_err(|source| ScheduleError::Cron {
            text: text.into(),
            source,
        })?;
    // Without a year field a pattern repeats every 400 years at most, and croner searches up to
    // the year 5000: one search from a fixed point finds out whether it ever fires.
    let reference = NaiveDate::from_ymd_opt(2000, 1, 1).and_then(|d| d.and_hms_opt(0, 0, 0));
    if reference.is_none_or(|r| cron.find_next_occurrence(&r, false).is_err()) {
        return Err(ScheduleError::Never { text: text.into() });
    }
    let clock = if hour.contains('*') {
        Clock::Real
    } else {
        Clock::Wall
    };
    Ok(Kind::Cron {
        cron: Box::new(cron),
        clock,
    })
}

fn expand_nickname(text: &str) -> Option<&'static str> {
    const NICKNAMES: [(&str, &str); 6] = [
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
    ];
    NICKNAMES
        .iter()
        .find(|(name, _)| name.eq_ignore_ascii_case(text))
        .map(|(_, pattern)| *pattern)
}

fn every_next_after(period: Duration, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
    const NANOS: i128 = 1_000_000_000;
    let period = i128::try_from(period.as_nanos()).ok()?;
    let t = i128::from(after.timestamp())
        .checked_mul(NANOS)?
        .checked_add(i128::from(after.timestamp_subsec_nanos()))?;
    let next = t.div_euclid(period).checked_add(1)?.checked_mul(period)?;
    let secs = i64::try_from(next.div_euclid(NANOS)).ok()?;
    let nanos = u32::try_from(next.rem_euclid(NANOS)).ok()?;
    DateTime::from_timestamp(secs, nanos)
}

fn cron_next_after(
    cron: &Cron,
    clock: Clock,
    after: DateTime<Utc>,
    tz: Tz,
) -> Option<DateTime<Utc>> {
    let wall = after.with_timezone(&tz).naive_local();
    let ahead = walk_forward(cron, clock, after, wall, tz);
    let repeat = match clock {
        Clock::Real => second_pass(cron, after, wall, tz),
        Clock::Wall => None,
    };
    match (ahead, repeat) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// The first slot after `after` among the wall-clock times later than `wall` (the wall clock at
/// `after`).
fn walk_forward(
    cron: &Cron,
    clock: Clock,
    after: DateTime<Utc>,
    wall: NaiveDateTime,
    tz: Tz,
) -> Option<DateTime<Utc>> {
    let mut civil = wall;
    loop {
        // croner gives up with an error at the year 5000, which ends the loop.
        civil = cron.find_next_occurrence(&civil, false).ok()?;
        if let Some(slot) = instant(civil, clock, after, tz) {
            return Some(slot);
        }
    }
}

/// The instant a matching wall-clock time runs at, if it is after `after`.
fn instant(
    civil: NaiveDateTime,
    clock: Clock,
    after: DateTime<Utc>,
    tz: Tz,
) -> Option<DateTime<Utc>> {
    let slot = match (tz.from_local_datetime(&civil), clock) {
        (LocalResult::Single(t), _) => t.with_timezone(&Utc),
        (LocalResult::Ambiguous(first, _), Clock::Wall) => first.with_timezone(&Utc),
        (LocalResult::Ambiguous(first, second), Clock::Real) => {
            let first = first.with_timezone(&Utc);
            if first > after {
                first
            } else {
                second.with_timezone(&Utc)
            }
        }
        (LocalResult::None, Clock::Wall) => gap_end(civil, tz)?,
        (LocalResult::None, Clock::Real) => return None,
    };
    (slot > after).then_some(slot)
}

/// When `after` lies in the first pass of a repeated hour, the second pass is still ahead, but
/// its wall-clock times are not later than `wall`: the forward walk never sees them. This finds
/// the first match among them (real-time patterns only).
fn second_pass(
    cron: &Cron,
    after: DateTime<Utc>,
    wall: NaiveDateTime,
    tz: Tz,
) -> Option<DateTime<Utc>> {
    let LocalResult::Ambiguous(first, second) = tz.from_local_datetime(&wall) else {
        return None;
    };
    if first.with_timezone(&Utc) != after {
        return None;
    }
    // The repeated range is `second - first` long and contains `wall`, so it starts after
    // `wall - (second - first)`.
    let mut civil = wall.checked_sub_signed(second - first)?;
    loop {
        civil = cron.find_next_occurrence(&civil, false).ok()?;
        if civil > wall {
            return None;
        }
        if let LocalResult::Ambiguous(_, later) = tz.from_local_datetime(&civil) {
            return Some(later.with_timezone(&Utc));
        }
    }
}

/// The first instant whose wall clock in `tz` reads `civil` or later: for a time inside a gap,
/// the instant the gap ends.
fn gap_end(civil: NaiveDateTime, tz: Tz) -> Option<DateTime<Utc>> {
    // UTC offsets stay within ±15 h, so two days either side of `civil` read as UTC bracket the
    // answer. The search needs the wall clock to move forward over those days, which holds as
    // long as no zone repeats an hour within two days of skipping one.
    let target = civil.and_utc().timestamp();
    let wall_at =
        |t: i64| DateTime::from_timestamp(t, 0).map(|t| t.with_timezone(&tz).naive_local());
    let (mut lo, mut hi) = (target - 2 * 86_400, target + 2 * 86_400);
    while hi - lo > 1 {
        let mid = lo + (hi - lo) / 2;
        if wall_at(mid)? >= civil {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    DateTime::from_timestamp(hi, 0)
}

#[cfg(test)]
#[path = "schedule_tests.rs"]
mod tests;
