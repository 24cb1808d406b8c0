//! The day-of-week field as cronie reads it, rewritten into a form croner reads the same way.
//!
//! croner turns a range ending in `SUN` into one ending in 7, so `sun-sun` became `0-7`, every
//! day. cronie reads names as numbers (SUN = 0) and, when a range ends in 0 after a larger start,
//! reads the end as 7 (`mon-0` is `mon-7`); a field starting with `*` is a wildcard whatever
//! follows (`*,0`). Here each range is written out in numbers after those rules, so croner has
//! nothing left to reinterpret. A range that still runs backwards (`fri-mon`) is passed on
//! unchanged, for croner to refuse with its own message.

const NAMES: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

/// The field rewritten; items that are not ranges are passed on as written.
pub(super) fn normalize(field: &str) -> String {
    // cronie marks the field a wildcard when it starts with `*` (the OR rule then ignores it).
    if field.split(',').any(|item| item == "*") {
        return "*".to_owned();
    }
    field
        .split(',')
        .map(normalize_item)
        .collect::<Vec<_>>()
        .join(",")
}

fn normalize_item(item: &str) -> String {
    let (range, step) = match item.split_once('/') {
        Some((range, step)) => (range, Some(step)),
        None => (item, None),
    };
    let Some((start, end)) = range.split_once('-') else {
        return item.to_owned();
    };
    let (Some(start), Some(mut end)) = (day(start), day(end)) else {
        return item.to_owned();
    };
    if end == 0 && start > 0 {
        end = 7;
    }
    if start > end {
        return item.to_owned();
    }
    match step {
        Some(step) => format!("{start}-{end}/{step}"),
        None => format!("{start}-{end}"),
    }
}

/// A day as cronie reads it: a number 0..=7 or a three-letter name (any case).
fn day(text: &str) -> Option<u32> {
    if let Ok(n) = text.parse::<u32>() {
        return (n <= 7).then_some(n);
    }
    let lower = text.to_ascii_lowercase();
    NAMES.iter().position(|n| *n == lower).map(|i| i as u32)
}

#[cfg(test)]
mod tests {
    #[test]
    fn cron_dow_normalize_follows_cronie() {
        for (field, want) in [
            ("sun-sun", "0-0"),
            ("SUN-SUN", "0-0"),
            ("mon-0", "1-7"),
            ("mon-sun", "1-7"),
            ("7-sun", "7-7"),
            ("sat-0/1", "6-7/1"),
            ("*,0", "*"),
            ("0,*", "*"),
            ("fri-mon", "fri-mon"),
            ("1-5,sun", "1-5,sun"),
            ("*/2", "*/2"),
            ("L", "L"),
            ("5#3", "5#3"),
        ] {
            assert_eq!(super::normalize(field), want, "{field}");
        }
    }

    /// Every fire time in the four weeks from Thursday 2026-01-01, as weekday names.
    fn days(text: &str) -> Vec<String> {
        let schedule =
            crate::scheduler::Schedule::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        let from = chrono::DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .to_utc();
        schedule
            .upcoming(from, chrono_tz::UTC, 60)
            .into_iter()
            .filter(|t| *t < from + chrono::TimeDelta::days(28))
            .map(|t| t.format("%a").to_string())
            .collect()
    }

    #[test]
    fn cron_dow_sun_sun_is_sundays_only_as_0_0_and_7_7() {
        let sundays = vec!["Sun"; 4];
        for text in [
            "0 12 * * sun-sun",
            "0 12 * * 0-0",
            "0 12 * * 7-7",
            "0 12 * * SUN-sun",
        ] {
            assert_eq!(days(text), sundays, "{text}");
        }
        assert_eq!(days("0 12 * * mon-0"), days("0 12 * * mon-7"));
        assert_eq!(days("0 12 * * mon-0").len(), 28, "Monday to Sunday");
        assert_eq!(days("0 12 * * tue-0"), days("0 12 * * tue-7"));
        assert_eq!(days("0 12 * * tue-0").len(), 24, "Tuesday to Sunday");
        assert_eq!(days("0 12 * * *,0"), days("0 12 * * *"));
        assert_eq!(days("0 12 * * *,0").len(), 28);
        // `*,0` is a wildcard for cron's OR rule too: only the 13th.
        assert_eq!(days("0 12 13 * *,0"), ["Tue"]);
    }

    #[test]
    fn cron_dow_wrap_around_ranges_stay_refused() {
        for text in ["0 0 * * fri-mon", "0 0 * * 5-1", "0 0 * * sat-mon/2"] {
            let e = crate::scheduler::Schedule::parse(text).unwrap_err();
            assert!(
                e.to_string().contains("is not a valid cron pattern"),
                "{text}: {e}"
            );
        }
    }
}
