use chrono::{DateTime, NaiveDate, TimeDelta, TimeZone, Utc};
use chrono_tz::America::New_York;
use chrono_tz::Europe::Berlin;
use chrono_tz::{Tz, UTC};

use super::{Schedule, ScheduleError};

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("test time")
        .with_timezone(&Utc)
}

fn sched(text: &str) -> Schedule {
    Schedule::parse(text).expect("test schedule")
}

fn ats(texts: &[&str]) -> Vec<DateTime<Utc>> {
    texts.iter().map(|t| at(t)).collect()
}

#[test]
fn parse_accepts_and_keeps_the_text() {
    let cases = [
        ("30 2 * * *", "30 2 * * *"),
        ("  30 2 * * *\n", "30 2 * * *"),
        ("*/20 * * * * *", "*/20 * * * * *"),
        ("0 0 13 * FRI", "0 0 13 * FRI"),
        ("0 0 L * *", "0 0 L * *"),
        ("@hourly", "@hourly"),
        ("@DAILY", "@DAILY"),
        ("@weekly", "@weekly"),
        ("@monthly", "@monthly"),
        ("@yearly", "@yearly"),
        ("@annually", "@annually"),
        ("every 30s", "every 30s"),
        ("every 2h", "every 2h"),
        ("every 1h 30m", "every 1h 30m"),
        ("EVERY 90s", "EVERY 90s"),
        ("every 1500ms", "every 1500ms"),
    ];
    for (text, kept) in cases {
        let schedule = Schedule::parse(text).unwrap_or_else(|e| panic!("{text:?}: {e}"));
        assert_eq!(schedule.as_str(), kept);
        assert_eq!(schedule.to_string(), kept);
        let reparsed: Schedule = kept.parse().expect("FromStr");
        assert_eq!(reparsed.as_str(), kept);
    }
}

#[test]
fn parse_rejects_with_a_message_that_quotes_the_text() {
    let cases = [
        ("", "schedule is empty"),
        ("   ", "schedule is empty"),
        ("* * * *", "has 4 fields"),
        ("0 0 0 1 1 * 2026", "has 7 fields: expected 5"),
        ("0 0 0 1 1 * 2026", "a year field is not supported"),
        ("@reboot", "unknown nickname"),
        ("@daily extra", "unknown nickname"),
        ("61 * * * *", "is not a valid cron pattern"),
        ("0 2 * * MOONDAY", "is not a valid cron pattern"),
        ("every", "needs a duration"),
        ("every   ", "needs a duration"),
        ("every 0s", "at least 1s"),
        ("every 500ms", "at least 1s"),
        ("every soon", "has an invalid duration"),
        ("0 0 30 2 *", "never fires"),
        ("0 0 31 4 *", "never fires"),
    ];
    for (text, want) in cases {
        let err = Schedule::parse(text).expect_err(text);
        let message = err.to_string();
        assert!(message.contains(want), "{text:?}: {message}");
        if !text.trim().is_empty() {
            assert!(message.contains(&format!("{:?}", text.trim())), "{message}");
        }
    }
}

#[test]
fn parse_errors_carry_the_cause() {
    for text in ["61 * * * *", "every soon"] {
        let err = Schedule::parse(text).expect_err(text);
        assert!(matches!(
            err,
            ScheduleError::Cron { .. } | ScheduleError::Duration { .. }
        ));
        let cause = std::error::Error::source(&err).expect("a cause");
        assert!(!cause.to_string().is_empty());
    }
}

#[test]
fn day_of_month_or_day_of_week() {
    // January 2026: the 13th is a Tuesday; February 13th is a Friday and fires once.
    let got = sched("0 0 13 * 5").upcoming(at("2026-01-01T00:00:00Z"), UTC, 9);
    let want = ats(&[
        "2026-01-02T00:00:00Z",
        "2026-01-09T00:00:00Z",
        "2026-01-13T00:00:00Z",
        "2026-01-16T00:00:00Z",
        "2026-01-23T00:00:00Z",
        "2026-01-30T00:00:00Z",
        "2026-02-06T00:00:00Z",
        "2026-02-13T00:00:00Z",
        "2026-02-20T00:00:00Z",
    ]);
    assert_eq!(got, want);
}

#[test]
fn next_after_cases() {
    #[rustfmt::skip]
    let cases: [(&str, Tz, &str, &str); 19] = [
        // A seconds field, and strictness at an exact slot.
        ("*/20 * * * * *", UTC, "2026-05-04T12:00:05Z", "2026-05-04T12:00:20Z"),
        ("*/20 * * * * *", UTC, "2026-05-04T12:00:20Z", "2026-05-04T12:00:40Z"),
        ("*/20 * * * * *", UTC, "2026-05-04T12:00:40Z", "2026-05-04T12:01:00Z"),
        ("*/20 * * * * *", Berlin, "2026-05-04T12:00:59.999Z", "2026-05-04T12:01:00Z"),
        ("0 * * * *", UTC, "2026-05-04T11:59:59.900Z", "2026-05-04T12:00:00Z"),
        ("0 * * * *", UTC, "2026-05-04T12:00:00.500Z", "2026-05-04T13:00:00Z"),
        // Nicknames in a time zone: midnight CEST is 22:00Z, midnight EDT 04:00Z.
        ("@daily", Berlin, "2026-06-01T12:00:00Z", "2026-06-01T22:00:00Z"),
        ("@daily", New_York, "2026-06-01T12:00:00Z", "2026-06-02T04:00:00Z"),
        ("@hourly", Berlin, "2026-06-01T12:00:00Z", "2026-06-01T13:00:00Z"),
        ("@weekly", UTC, "2026-01-01T00:00:00Z", "2026-01-04T00:00:00Z"),
        ("@monthly", Berlin, "2026-01-15T00:00:00Z", "2026-01-31T23:00:00Z"),
        ("@yearly", Berlin, "2026-06-01T00:00:00Z", "2026-12-31T23:00:00Z"),
        ("@annually", UTC, "2026-06-01T00:00:00Z", "2027-01-01T00:00:00Z"),
        // `every` counts from the epoch in UTC; the zone does not matter.
        ("every 30s", Berlin, "2026-05-04T12:00:10Z", "2026-05-04T12:00:30Z"),
        ("every 30s", UTC, "2026-05-04T12:00:30Z", "2026-05-04T12:01:00Z"),
        ("every 2h", Berlin, "2026-03-29T01:00:00Z", "2026-03-29T02:00:00Z"),
        ("every 2h", New_York, "2026-03-29T01:00:00Z", "2026-03-29T02:00:00Z"),
        // 2026-01-01T00:00Z is 327264 periods of 90 minutes after the epoch.
        ("every 1h 30m", UTC, "2026-01-01T00:00:00Z", "2026-01-01T01:30:00Z"),
        ("every 1500ms", UTC, "2026-01-01T00:00:00Z", "2026-01-01T00:00:01.500Z"),
    ];
    for (text, tz, after, want) in cases {
        let got = sched(text).next_after(at(after), tz);
        assert_eq!(got, Some(at(want)), "{text:?} in {tz} after {after}");
    }
}

#[test]
fn every_is_stable_across_restarts() {
    let schedule = sched("every 7m");
    let mut after = at("2026-05-04T00:00:00Z");
    for _ in 0..500 {
        let next = schedule
            .next_after(after, Berlin)
            .expect("every never ends");
        assert!(next > after && next - after <= TimeDelta::minutes(7));
        assert_eq!(next.timestamp() % 420, 0, "{next}");
        after += TimeDelta::seconds(61);
    }
}

/// Local times are in comments; every instant is UTC.
#[test]
fn dst_transitions() {
    #[rustfmt::skip]
    let cases: [(&str, Tz, &str, &[&str]); 10] = [
        // Berlin springs forward 2026-03-29 02:00 CET -> 03:00 CEST: 02:30 runs at 03:00 CEST.
        ("30 2 * * *", Berlin, "2026-03-27T12:00:00Z", &[
            "2026-03-28T01:30:00Z", // 02:30 CET
            "2026-03-29T01:00:00Z", // 03:00 CEST, the end of the gap
            "2026-03-30T00:30:00Z", // 02:30 CEST
        ]),
        // Berlin falls back 2026-10-25 03:00 CEST -> 02:00 CET: 02:30 runs the first time only.
        ("30 2 * * *", Berlin, "2026-10-23T12:00:00Z", &[
            "2026-10-24T00:30:00Z", // 02:30 CEST
            "2026-10-25T00:30:00Z", // 02:30 CEST, first pass; not 01:30Z (second pass)
            "2026-10-26T01:30:00Z", // 02:30 CET
        ]),
        // New York springs forward 2026-03-08 02:00 EST -> 03:00 EDT.
        ("30 2 * * *", New_York, "2026-03-06T12:00:00Z", &[
            "2026-03-07T07:30:00Z", // 02:30 EST
            "2026-03-08T07:00:00Z", // 03:00 EDT, the end of the gap
            "2026-03-09T06:30:00Z", // 02:30 EDT
        ]),
        // New York falls back 2026-11-01 02:00 EDT -> 01:00 EST: 01:xx repeats, not 02:xx.
        ("30 1 * * *", New_York, "2026-10-30T12:00:00Z", &[
            "2026-10-31T05:30:00Z", // 01:30 EDT
            "2026-11-01T05:30:00Z", // 01:30 EDT, first pass; not 06:30Z (EST)
            "2026-11-02T06:30:00Z", // 01:30 EST
        ]),
        ("30 2 * * *", New_York, "2026-10-31T12:00:00Z", &[
            "2026-11-01T07:30:00Z", // 02:30 EST happens once
            "2026-11-02T07:30:00Z",
        ]),
        // A list of hours still names 02:30: it runs at the end of the gap (croner alone skips it)
        // and once in the repeated hour (croner alone runs it twice).
        ("30 2,14 * * *", Berlin, "2026-03-28T12:00:00Z", &[
            "2026-03-28T13:30:00Z",
            "2026-03-29T01:00:00Z",
            "2026-03-29T12:30:00Z",
            "2026-03-30T00:30:00Z",
        ]),
        ("30 2,14 * * *", Berlin, "2026-10-24T12:00:00Z", &[
            "2026-10-24T12:30:00Z",
            "2026-10-25T00:30:00Z",
            "2026-10-25T13:30:00Z",
            "2026-10-26T01:30:00Z",
        ]),
        // 02:00 and 02:30 both fall in the gap and coalesce into one run at 03:00 CEST.
        ("0,30 2 * * *", Berlin, "2026-03-28T12:00:00Z", &[
            "2026-03-29T01:00:00Z",
            "2026-03-30T00:00:00Z",
            "2026-03-30T00:30:00Z",
        ]),
        // Wildcard hours follow real time: 02:xx CET does not exist and is skipped ...
        ("0 * * * *", Berlin, "2026-03-28T23:30:00Z", &[
            "2026-03-29T00:00:00Z", // 01:00 CET
            "2026-03-29T01:00:00Z", // 03:00 CEST
            "2026-03-29T02:00:00Z", // 04:00 CEST
        ]),
        // ... and 02:xx runs on both passes.
        ("*/30 * * * *", Berlin, "2026-10-24T23:45:00Z", &[
            "2026-10-25T00:00:00Z", // 02:00 CEST
            "2026-10-25T00:30:00Z", // 02:30 CEST
            "2026-10-25T01:00:00Z", // 02:00 CET
            "2026-10-25T01:30:00Z", // 02:30 CET
            "2026-10-25T02:00:00Z", // 03:00 CET
        ]),
    ];
    for (text, tz, after, want) in cases {
        let got = sched(text).upcoming(at(after), tz, want.len());
        assert_eq!(got, ats(want), "{text:?} in {tz} after {after}");
    }
}

/// The slots of `schedule` on one local calendar day in `tz`.
fn slots_on_day(schedule: &Schedule, tz: Tz, day: NaiveDate) -> Vec<DateTime<Utc>> {
    let midnight = |d: NaiveDate| {
        let naive = d.and_hms_opt(0, 0, 0).expect("midnight");
        tz.from_local_datetime(&naive)
            .single()
            .expect("midnight exists")
            .with_timezone(&Utc)
    };
    let (start, end) = (midnight(day), midnight(day.succ_opt().expect("a next day")));
    schedule
        .upcoming(start - TimeDelta::seconds(1), tz, 100)
        .into_iter()
        .take_while(|t| *t < end)
        .collect()
}

fn hours_from(first: &str, count: i64) -> Vec<DateTime<Utc>> {
    (0..count)
        .map(|h| at(first) + TimeDelta::hours(h))
        .collect()
}

#[test]
fn hourly_runs_every_real_hour_on_transition_days() {
    // Both zones are a whole number of hours from UTC, so every real hour starts on a local :00:
    // the fall-back day has 25 of them, the spring-forward day 23, one per UTC hour from local
    // midnight on.
    let hourly = sched("0 * * * *");
    let day = |y, m, d| NaiveDate::from_ymd_opt(y, m, d).expect("date");
    let cases = [
        (Berlin, day(2026, 10, 25), "2026-10-24T22:00:00Z", 25),
        (Berlin, day(2026, 3, 29), "2026-03-28T23:00:00Z", 23),
        (New_York, day(2026, 11, 1), "2026-11-01T04:00:00Z", 25),
        (New_York, day(2026, 3, 8), "2026-03-08T05:00:00Z", 23),
        (Berlin, day(2026, 6, 1), "2026-05-31T22:00:00Z", 24),
    ];
    for (tz, date, first, count) in cases {
        assert_eq!(
            slots_on_day(&hourly, tz, date),
            hours_from(first, count),
            "{tz} {date}"
        );
    }
}

/// `next_after` must agree with the list of slots from any starting point, also inside a gap's
/// neighbourhood and on either pass of a repeated hour.
#[test]
fn next_after_agrees_with_the_slot_list_around_transitions() {
    let patterns = [
        "0 * * * *",
        "*/20 * * * *",
        "30 2 * * *",
        "30 1,2 * * *",
        "*/15 2 * * *",
        "* * * * *",
        "*/20 * * * * *",
    ];
    let transitions = [
        (Berlin, "2026-03-29T01:00:00Z"),
        (Berlin, "2026-10-25T01:00:00Z"),
        (New_York, "2026-03-08T07:00:00Z"),
        (New_York, "2026-11-01T06:00:00Z"),
    ];
    for text in patterns {
        let schedule = sched(text);
        for (tz, transition) in transitions {
            let start = at(transition) - TimeDelta::hours(3);
            let end = at(transition) + TimeDelta::hours(3);
            let all = schedule.upcoming(start, tz, 2000);
            assert!(all.windows(2).all(|w| w[0] < w[1]), "{text:?} {tz}");
            assert!(all.last().is_some_and(|t| *t > end), "{text:?} {tz}");
            let mut t = start;
            while t < end {
                let want = all.iter().find(|s| **s > t).copied();
                assert_eq!(
                    schedule.next_after(t, tz),
                    want,
                    "{text:?} in {tz} after {t}"
                );
                t += TimeDelta::seconds(197);
            }
        }
    }
}

#[test]
fn fire_times_strictly_increase_over_a_year() {
    let patterns = [
        "0 * * * *",
        "30 2 * * *",
        "0,30 1-3 * * *",
        "0 0 13 * 5",
        "@weekly",
    ];
    let start = at("2026-01-01T00:00:00Z");
    for text in patterns {
        let schedule = sched(text);
        for tz in [Berlin, New_York, UTC, chrono_tz::Australia::Lord_Howe] {
            let slots = schedule.upcoming(start, tz, 3000);
            assert!(slots.first().is_some_and(|t| *t > start));
            assert!(slots.windows(2).all(|w| w[0] < w[1]), "{text:?} {tz}");
        }
    }
}

#[test]
fn no_fire_time_past_the_year_5000() {
    assert_eq!(
        sched("@yearly").next_after(at("5000-06-01T00:00:00Z"), UTC),
        None
    );
    assert!(
        sched("@yearly")
            .upcoming(at("4999-06-01T00:00:00Z"), UTC, 5)
            .len()
            < 5
    );
}

/// Why the DST mapping is ours: croner alone, given the zone, treats a list of hours like a
/// wildcard and drops the 02:30 run on the spring-forward day. If this starts failing, croner
/// changed and `Clock` may be simpler to express through it.
#[test]
fn croner_alone_drops_a_listed_hour_in_the_gap() {
    let cron = croner::parser::CronParser::builder()
        .seconds(croner::parser::Seconds::Optional)
        .build()
        .parse("30 2,14 * * *")
        .expect("pattern");
    let start = at("2026-03-28T12:00:00Z").with_timezone(&Berlin);
    let got: Vec<DateTime<Utc>> = cron
        .iter_after(start)
        .take(3)
        .map(|t| t.with_timezone(&Utc))
        .collect();
    let want = ats(&[
        "2026-03-28T13:30:00Z",
        "2026-03-29T12:30:00Z",
        "2026-03-30T00:30:00Z",
    ]);
    assert_eq!(got, want);
}
