//! restic's retention durations: `NyNmNdNh` (years, **months**, days, hours), and the cutoff they
//! give, computed the way Go's `time.AddDate` computes it, so that a `keep-within` copied from a
//! restic command keeps what restic keeps. This module owns the grammar and the arithmetic; the
//! planner and both front ends (config keys, `atprectl retention` flags) use it.

use std::fmt;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Offset, TimeZone, Utc};
use chrono_tz::Tz;
use serde::{Deserialize, Serialize};

/// The grammar, as quoted in every error.
pub const GRAMMAR: &str = "restic's duration grammar: one or more NUMBER+UNIT with no spaces, units y (years), m (months, not minutes), d (days), h (hours), e.g. \"2d\", \"1m14d\", \"1y2m3d3h\"";

/// A calendar duration as restic writes it. Units may repeat and come in any order ("1y1d1m"),
/// as restic accepts them; the parts add up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CalendarDuration {
    pub years: u32,
    pub months: u32,
    pub days: u32,
    pub hours: u32,
}

/// Why a duration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurationError {
    #[error("{text:?} is not a duration in {GRAMMAR}: {why}")]
    Invalid { text: String, why: String },
}

impl CalendarDuration {
    /// Parses restic's grammar. Negative numbers, fractions, spaces and any other unit (`s`,
    /// `min`, `w`, ...) are refused: a duration that means something else than in restic must
    /// not silently keep less.
    pub fn parse(text: &str) -> Result<Self, DurationError> {
        let bad = |why: String| DurationError::Invalid {
            text: text.to_owned(),
            why,
        };
        if text.is_empty() {
            return Err(bad("it is empty".into()));
        }
        let mut d = CalendarDuration::default();
        let mut rest = text;
        while !rest.is_empty() {
            let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
            if digits == 0 {
                return Err(bad(format!("expected a number at {rest:?}")));
            }
            let n: u32 = rest[..digits]
                .parse()
                .map_err(|_| bad(format!("{} is too large", &rest[..digits])))?;
            let mut units = rest[digits..].chars();
            let part = match units.next() {
                Some('y') => &mut d.years,
                Some('m') => &mut d.months,
                Some('d') => &mut d.days,
                Some('h') => &mut d.hours,
                Some(c) => return Err(bad(format!("{c:?} after {n} is not a unit"))),
                None => return Err(bad(format!("no unit after {n}"))),
            };
            *part = part
                .checked_add(n)
                .ok_or_else(|| bad("it is too large".into()))?;
            rest = units.as_str();
        }
        Ok(d)
    }

    /// True when every part is 0 (restic: the rule is off).
    pub fn is_zero(&self) -> bool {
        *self == CalendarDuration::default()
    }

    /// `newest` minus this duration: `AddDate(-y, -m, -d)` in `tz` (Go's normalisation: 31 March
    /// minus a month is 3 March), then minus the hours as elapsed time. `None` when the result
    /// falls outside the representable range (then everything is within).
    pub fn cutoff(&self, newest: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
        let local = newest.with_timezone(&tz).naive_local();
        let months = i64::from(local.year()) * 12 + i64::from(local.month0())
            - i64::from(self.years) * 12
            - i64::from(self.months);
        let year = i32::try_from(months.div_euclid(12)).ok()?;
        let month = u32::try_from(months.rem_euclid(12)).ok()? + 1;
        let first = NaiveDate::from_ymd_opt(year, month, 1)?;
        let day = first.checked_add_signed(Duration::days(
            i64::from(local.day()) - 1 - i64::from(self.days),
        ))?;
        let naive = day.and_time(local.time());
        // Go's `time.Date` resolves a local time with two offset look-ups, which picks one of
        // the two readings of a repeated hour and moves a time in a skipped hour forward. Done
        // the same way here so that a cutoff on a DST day matches restic's to the second.
        let offset_at = |t: chrono::NaiveDateTime| {
            i64::from(tz.offset_from_utc_datetime(&t).fix().local_minus_utc())
        };
        let guess = naive - Duration::seconds(offset_at(naive));
        let at = (naive - Duration::seconds(offset_at(guess))).and_utc();
        at.checked_sub_signed(Duration::hours(i64::from(self.hours)))
    }
}

impl std::str::FromStr for CalendarDuration {
    type Err = DurationError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// restic's spelling: the non-zero parts in the order y, m, d, h ("1y1d1m" prints "1y1m1d").
impl fmt::Display for CalendarDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (n, unit) in [
            (self.years, 'y'),
            (self.months, 'm'),
            (self.days, 'd'),
            (self.hours, 'h'),
        ] {
            if n != 0 {
                write!(f, "{n}{unit}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cut(d: &str, newest: &str) -> String {
        let newest: DateTime<Utc> = newest.parse().unwrap();
        CalendarDuration::parse(d)
            .unwrap()
            .cutoff(newest, chrono_tz::UTC)
            .unwrap()
            .to_rfc3339()
    }

    #[test]
    fn calendar_duration_parses_restic_grammar_only() {
        let ok = CalendarDuration::parse("1y1d1m").unwrap();
        assert_eq!((ok.years, ok.months, ok.days, ok.hours), (1, 1, 1, 0));
        assert_eq!(ok.to_string(), "1y1m1d");
        assert_eq!(CalendarDuration::parse("1d1d").unwrap().days, 2);
        for bad in [
            "", "30s", "5min", "1w", "1 d", " 1d", "1.5d", "-1d", "d", "1", "1D", "1dx",
        ] {
            let e = CalendarDuration::parse(bad).unwrap_err().to_string();
            assert!(e.contains("m (months, not minutes)"), "{bad:?}: {e}");
        }
    }

    #[test]
    fn calendar_duration_cutoff_is_go_add_date() {
        // Go: time.Date(2026,3,31,...).AddDate(0,-1,0) is 3 March (28 February + 3 days).
        assert_eq!(
            cut("1m", "2026-03-31T10:00:00Z"),
            "2026-03-03T10:00:00+00:00"
        );
        assert_eq!(
            cut("1y", "2024-02-29T10:00:00Z"),
            "2023-03-01T10:00:00+00:00"
        );
        assert_eq!(
            cut("1y2m3d3h", "2016-01-18T12:02:03Z"),
            "2014-11-15T09:02:03+00:00"
        );
        assert_eq!(
            cut("13d23h", "2016-01-18T12:02:03Z"),
            "2016-01-04T13:02:03+00:00"
        );
    }
}
