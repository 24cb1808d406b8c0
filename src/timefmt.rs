//! Times for people: "in 3h", "12m ago", "02:30", "Sun 05:00".

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

/// `t` relative to `now`: "in 3h", "12m ago", "now".
pub fn relative(t: DateTime<Utc>, now: DateTime<Utc>) -> String {
    let secs = (t - now).num_seconds();
    let span = short_span(secs.unsigned_abs());
    match secs {
        -1..=1 => "now".to_owned(),
        s if s > 0 => format!("in {span}"),
        _ => format!("{span} ago"),
    }
}

/// The largest one or two units: "45s", "12m", "3h 5m", "2d 4h".
pub fn short_span(secs: u64) -> String {
    let (d, h, m, s) = (
        secs / 86_400,
        secs % 86_400 / 3600,
        secs % 3600 / 60,
        secs % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{s}s"),
        (0, 0, _) => format!("{m}m"),
        (0, _, 0) => format!("{h}h"),
        (0, _, _) => format!("{h}h {m}m"),
        (_, 0, _) => format!("{d}d"),
        _ => format!("{d}d {h}h"),
    }
}

/// A wall-clock time in `tz`: "02:30" today, "Sun 05:00" within a week, else "2026-12-24 02:30".
pub fn clock(t: DateTime<Utc>, now: DateTime<Utc>, tz: Tz) -> String {
    let local = t.with_timezone(&tz);
    let today = now.with_timezone(&tz).date_naive();
    let days = (local.date_naive() - today).num_days();
    if days == 0 {
        local.format("%H:%M").to_string()
    } else if days.abs() < 7 {
        local.format("%a %H:%M").to_string()
    } else {
        local.format("%Y-%m-%d %H:%M").to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cases() {
        let now: DateTime<Utc> = "2026-11-28T12:00:00Z".parse().unwrap();
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        assert_eq!(relative(at("2026-11-28T15:00:00Z"), now), "in 3h");
        assert_eq!(relative(at("2026-11-28T11:48:00Z"), now), "12m ago");
        assert_eq!(relative(now, now), "now");
        assert_eq!(relative(at("2026-11-30T16:00:00Z"), now), "in 2d 4h");
        assert_eq!(short_span(3 * 3600 + 5 * 60 + 7), "3h 5m");
        assert_eq!(
            clock(at("2026-11-28T01:30:00Z"), now, chrono_tz::Europe::Berlin),
            "02:30"
        );
        assert_eq!(
            clock(at("2026-11-29T04:00:00Z"), now, chrono_tz::UTC),
            "Sun 04:00"
        );
        assert_eq!(
            clock(at("2026-12-24T02:30:00Z"), now, chrono_tz::UTC),
            "2026-12-24 02:30"
        );
    }
}
