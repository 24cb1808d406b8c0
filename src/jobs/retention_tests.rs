//! Case tables and property tests for the retention planner.

use chrono::{DateTime, Utc};
use chrono_tz::Tz;

use super::calendar_duration::CalendarDuration;
use super::retention::*;

pub(super) fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

pub(super) fn verified(id: &str, time: DateTime<Utc>) -> Candidate {
    Candidate {
        id: id.into(),
        time,
        verified: true,
        in_use: false,
    }
}

/// A nightly backup at 02:30 UTC from 2024-12-01 to 2026-11-27 (two years).
fn two_years() -> Vec<Candidate> {
    let start = at("2024-12-01T02:30:00Z");
    (0..727)
        .map(|d| {
            let t = start + chrono::Duration::days(d);
            verified(&t.format("%Y%m%dT%H%M%SZ").to_string(), t)
        })
        .collect()
}

fn kept(plan: &Plan) -> Vec<String> {
    plan.decisions
        .iter()
        .filter(|d| d.keep)
        .map(|d| d.id.clone())
        .collect()
}

fn policy(f: impl FnOnce(&mut Policy)) -> Policy {
    let mut p = Policy {
        min_keep: 1,
        ..Policy::default()
    };
    f(&mut p);
    p
}

fn dur(s: &str) -> CalendarDuration {
    s.parse().unwrap()
}

const NOW: &str = "2026-11-28T12:00:00Z";

#[rustfmt::skip]
#[test]
fn each_rule_alone() {
    let utc: Tz = chrono_tz::UTC;
    let cases: &[(&str, Policy, &[&str])] = &[
        ("last 3", policy(|p| p.keep_last = Some(Count::N(3))),
            &["20261127T023000Z", "20261126T023000Z", "20261125T023000Z"]),
        ("daily 2", policy(|p| { p.keep_periods.insert(Period::Daily, Count::N(2)); }),
            &["20261127T023000Z", "20261126T023000Z"]),
        // ISO weeks: 2026-11-27 is a Friday (W48 starts Monday 11-23); the newest of W47 is Sunday 11-22.
        ("weekly 3", policy(|p| { p.keep_periods.insert(Period::Weekly, Count::N(3)); }),
            &["20261127T023000Z", "20261122T023000Z", "20261115T023000Z"]),
        ("monthly 3", policy(|p| { p.keep_periods.insert(Period::Monthly, Count::N(3)); }),
            &["20261127T023000Z", "20261031T023000Z", "20260930T023000Z"]),
        // Year boundary: the newest of 2025 is 12-31, of 2024 is 12-31; two years are left of
        // the count when the walk reaches the oldest backup, so that one stays too (restic 0.16+).
        ("yearly 5", policy(|p| { p.keep_periods.insert(Period::Yearly, Count::N(5)); }),
            &["20261127T023000Z", "20251231T023000Z", "20241231T023000Z", "20241201T023000Z"]),
        // Strictly newer than the cutoff, as restic: 11-25 02:30 is exactly 2 days old and goes.
        ("within 2d", policy(|p| p.keep_within = Some(dur("2d"))),
            &["20261127T023000Z", "20261126T023000Z"]),
        ("within-weekly 15d", policy(|p| { p.keep_within_periods.insert(Period::Weekly, dur("15d")); }),
            &["20261127T023000Z", "20261122T023000Z", "20261115T023000Z"]),
    ];
    let all = two_years();
    for (what, policy, want) in cases {
        let plan = plan(&all, policy, at(NOW), utc);
        assert_eq!(kept(&plan), *want, "{what}");
        assert_eq!(plan.decisions.len(), all.len(), "{what}: a decision for every backup");
    }
}

#[test]
fn rules_combine_and_explain() {
    let p = policy(|p| {
        p.keep_last = Some(Count::N(2));
        p.keep_periods.insert(Period::Daily, Count::N(3));
        p.keep_periods.insert(Period::Monthly, Count::N(2));
    });
    let plan = plan(&two_years(), &p, at(NOW), chrono_tz::UTC);
    let newest = &plan.decisions[0];
    assert_eq!(
        newest.reasons,
        [
            "newest verified",
            "last snapshot",
            "daily snapshot",
            "monthly snapshot"
        ]
    );
    let d = plan
        .decisions
        .iter()
        .find(|d| d.id == "20261031T023000Z")
        .unwrap();
    assert_eq!(d.reasons, ["monthly snapshot"]);
    assert_eq!(kept(&plan).len(), 4);
    let removed = plan
        .decisions
        .iter()
        .find(|d| d.id == "20261101T023000Z")
        .unwrap();
    assert!(!removed.keep);
    assert_eq!(removed.reasons, ["no rule keeps it"]);
}

#[test]
fn periods_are_taken_in_the_daemon_time_zone() {
    // 23:30 UTC is 00:30 (winter) or 01:30 (summer) the next day in Berlin.
    let backups = [
        verified("a", at("2026-07-01T23:30:00Z")),
        verified("b", at("2026-07-01T12:00:00Z")),
        // An older day, so that "b" is not the oldest backup (which a count not used up keeps).
        verified("c", at("2026-06-20T12:00:00Z")),
    ];
    let p = policy(|p| {
        p.keep_periods.insert(Period::Daily, Count::N(5));
    });
    assert_eq!(
        kept(&plan(&backups, &p, at(NOW), chrono_tz::UTC)),
        ["a", "c"],
        "UTC: one day"
    );
    assert_eq!(
        kept(&plan(&backups, &p, at(NOW), chrono_tz::Europe::Berlin)),
        ["a", "b", "c"],
        "Berlin: two days"
    );
    // Around the spring DST change the hourly label follows local time.
    let t = at("2026-03-29T01:30:00Z");
    assert_eq!(
        Period::Hourly.label(t, chrono_tz::Europe::Berlin),
        "2026-03-29 03h"
    );
    assert_eq!(
        Period::Weekly.label(at("2026-01-01T12:00:00Z"), chrono_tz::UTC),
        "2026-W01"
    );
    assert_eq!(
        Period::Weekly.label(at("2027-01-01T12:00:00Z"), chrono_tz::UTC),
        "2026-W53"
    );
}

#[test]
fn failed_in_use_future_and_min_keep() {
    let mut c = vec![
        Candidate {
            id: "failed-old".into(),
            time: at("2026-11-20T00:00:00Z"),
            verified: false,
            in_use: false,
        },
        verified("v1", at("2026-11-21T00:00:00Z")),
        Candidate {
            id: "v2-in-use".into(),
            time: at("2026-11-22T00:00:00Z"),
            verified: true,
            in_use: true,
        },
        verified("v3", at("2026-11-23T00:00:00Z")),
        Candidate {
            id: "failed-new".into(),
            time: at("2026-11-24T00:00:00Z"),
            verified: false,
            in_use: false,
        },
    ];
    let p = policy(|p| {
        p.keep_last = Some(Count::N(1));
        p.min_keep = 2;
    });
    let plan = plan(&c, &p, at(NOW), chrono_tz::UTC);
    let keep = |id: &str| plan.decisions.iter().find(|d| d.id == id).unwrap().clone();
    assert!(!keep("failed-old").keep, "a newer verified backup exists");
    assert!(keep("failed-new").keep, "no newer verified backup yet");
    assert!(keep("v2-in-use").keep);
    assert_eq!(keep("v3").reasons, ["newest verified", "last snapshot"]);
    assert!(!keep("v1").keep, "min-keep 2 is met by v3 and v2 (in use)");
    c.push(verified("future", at("2027-01-01T00:00:00Z")));
    let plan = super::retention::plan(&c, &p, at(NOW), chrono_tz::UTC);
    assert!(
        plan.decisions
            .iter()
            .find(|d| d.id == "future")
            .unwrap()
            .keep
    );
    assert_eq!(plan.warnings.len(), 1);
}

#[test]
fn a_backup_dated_in_the_future_does_not_displace_the_one_made_now() {
    let c = [
        verified("future", at("2026-11-30T02:00:00Z")),
        verified("now", at("2026-11-28T11:00:00Z")),
    ];
    for p in [
        policy(|p| p.keep_last = Some(Count::N(1))),
        policy(|p| {
            p.keep_periods.insert(Period::Daily, Count::N(1));
        }),
    ] {
        let plan = plan(&c, &p, at(NOW), chrono_tz::UTC);
        assert_eq!(kept(&plan), ["future", "now"], "{p:?}");
        assert!(
            plan.decisions[1]
                .reasons
                .contains(&"newest verified".to_owned()),
            "{plan:?}"
        );
        assert_eq!(plan.decisions[0].reasons, ["dated in the future"]);
    }
}

/// `min-keep` is a floor on the newest N verified backups, not "top up to N with whatever no
/// rule kept": with the latter, adding `keep-yearly 2` here kept last year's backup, filled the
/// count and removed v3, which `keep-last 1` alone kept.
#[test]
fn min_keep_is_the_newest_n_so_keeping_more_removes_nothing() {
    let c = [
        verified("v4", at("2026-11-27T02:30:00Z")),
        verified("v3", at("2026-11-26T02:30:00Z")),
        verified("v2", at("2026-11-20T02:30:00Z")),
        verified("v1", at("2025-06-01T02:30:00Z")),
    ];
    let less = policy(|p| {
        p.keep_last = Some(Count::N(1));
        p.min_keep = 2;
    });
    let mut more = less.clone();
    more.keep_periods.insert(Period::Yearly, Count::N(2));
    assert_eq!(
        kept(&plan(&c, &less, at(NOW), chrono_tz::UTC)),
        ["v4", "v3"]
    );
    assert_eq!(
        kept(&plan(&c, &more, at(NOW), chrono_tz::UTC)),
        ["v4", "v3", "v1"]
    );
}
