//! Case tables and property tests for the retention planner.

use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use proptest::prelude::*;

use super::retention::*;

fn at(s: &str) -> DateTime<Utc> {
    s.parse().unwrap()
}

fn verified(id: &str, time: DateTime<Utc>) -> Candidate {
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

const NOW: &str = "2026-11-28T12:00:00Z";

#[rustfmt::skip]
#[test]
fn each_rule_alone() {
    let utc: Tz = chrono_tz::UTC;
    let cases: &[(&str, Policy, &[&str])] = &[
        ("last 3", policy(|p| p.keep_last = Some(3)),
            &["20261127T023000Z", "20261126T023000Z", "20261125T023000Z"]),
        ("daily 2", policy(|p| { p.keep_periods.insert(Period::Daily, 2); }),
            &["20261127T023000Z", "20261126T023000Z"]),
        // ISO weeks: 2026-11-27 is a Friday (W48 starts Monday 11-23); the newest of W47 is Sunday 11-22.
        ("weekly 3", policy(|p| { p.keep_periods.insert(Period::Weekly, 3); }),
            &["20261127T023000Z", "20261122T023000Z", "20261115T023000Z"]),
        ("monthly 3", policy(|p| { p.keep_periods.insert(Period::Monthly, 3); }),
            &["20261127T023000Z", "20261031T023000Z", "20260930T023000Z"]),
        // Year boundary: the newest of 2025 is 12-31, of 2024 is 12-31.
        ("yearly 5", policy(|p| { p.keep_periods.insert(Period::Yearly, 5); }),
            &["20261127T023000Z", "20251231T023000Z", "20241231T023000Z"]),
        ("within 2d", policy(|p| p.keep_within = Some(Duration::from_secs(2 * 86400))),
            &["20261127T023000Z", "20261126T023000Z", "20261125T023000Z"]),
        ("within-weekly 15d", policy(|p| { p.keep_within_periods.insert(Period::Weekly, Duration::from_secs(15 * 86400)); }),
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
        p.keep_last = Some(2);
        p.keep_periods.insert(Period::Daily, 3);
        p.keep_periods.insert(Period::Monthly, 2);
    });
    let plan = plan(&two_years(), &p, at(NOW), chrono_tz::UTC);
    let newest = &plan.decisions[0];
    assert_eq!(
        newest.reasons,
        [
            "newest verified",
            "last 2",
            "daily 2026-11-27",
            "monthly 2026-11"
        ]
    );
    let d = plan
        .decisions
        .iter()
        .find(|d| d.id == "20261031T023000Z")
        .unwrap();
    assert_eq!(d.reasons, ["monthly 2026-10"]);
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
    ];
    let p = policy(|p| {
        p.keep_periods.insert(Period::Daily, 5);
    });
    assert_eq!(
        kept(&plan(&backups, &p, at(NOW), chrono_tz::UTC)),
        ["a"],
        "UTC: one day"
    );
    assert_eq!(
        kept(&plan(&backups, &p, at(NOW), chrono_tz::Europe::Berlin)),
        ["a", "b"],
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
        p.keep_last = Some(1);
        p.min_keep = 2;
    });
    let plan = plan(&c, &p, at(NOW), chrono_tz::UTC);
    let keep = |id: &str| plan.decisions.iter().find(|d| d.id == id).unwrap().clone();
    assert!(!keep("failed-old").keep, "a newer verified backup exists");
    assert!(keep("failed-new").keep, "no newer verified backup yet");
    assert!(keep("v2-in-use").keep);
    assert_eq!(keep("v3").reasons, ["newest verified", "last 1"]);
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
        policy(|p| p.keep_last = Some(1)),
        policy(|p| {
            p.keep_periods.insert(Period::Daily, 1);
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

fn arb_candidates() -> impl Strategy<Value = Vec<Candidate>> {
    prop::collection::vec(
        (
            0i64..(3 * 365 * 86400),
            any::<bool>(),
            prop::bool::weighted(0.1),
        ),
        0..60,
    )
    .prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (secs, verified, in_use))| Candidate {
                id: format!("b{i}"),
                time: Utc.timestamp_opt(1_700_000_000 + secs, 0).unwrap(),
                verified,
                in_use,
            })
            .collect()
    })
}

fn arb_policy() -> impl Strategy<Value = Policy> {
    (
        prop::option::of(0u32..5),
        prop::collection::btree_map(prop::sample::select(Period::ALL.to_vec()), 0u32..6, 0..3),
        prop::option::of(0u64..(90 * 86400)),
        prop::collection::btree_map(
            prop::sample::select(Period::ALL.to_vec()),
            0u64..(90 * 86400),
            0..2,
        ),
        1u32..5,
    )
        .prop_map(|(last, periods, within, within_periods, min_keep)| Policy {
            keep_last: last,
            keep_periods: periods,
            keep_within: within.map(Duration::from_secs),
            keep_within_periods: within_periods
                .into_iter()
                .map(|(p, s)| (p, Duration::from_secs(s)))
                .collect(),
            min_keep,
        })
}

fn arb_tz() -> impl Strategy<Value = Tz> {
    prop::sample::select(vec![
        chrono_tz::UTC,
        chrono_tz::Europe::Berlin,
        chrono_tz::America::New_York,
        chrono_tz::Australia::Lord_Howe,
    ])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn safety_rules_hold(c in arb_candidates(), p in arb_policy(), now_secs in 0i64..(4 * 365 * 86400), tz in arb_tz()) {
        let now = Utc.timestamp_opt(1_700_000_000 + now_secs, 0).unwrap();
        let plan = plan(&c, &p, now, tz);
        prop_assert_eq!(plan.decisions.len(), c.len());
        let decision = |id: &str| plan.decisions.iter().find(|d| d.id == id).unwrap();
        let newest_verified = c.iter().filter(|x| x.verified).max_by(|a, b| a.time.cmp(&b.time).then_with(|| a.id.cmp(&b.id)));
        if let Some(n) = newest_verified {
            prop_assert!(decision(&n.id).keep, "newest verified {} removed", n.id);
        }
        let newest_until_now = c.iter().filter(|x| x.verified && x.time <= now).max_by(|a, b| a.time.cmp(&b.time).then_with(|| a.id.cmp(&b.id)));
        if let Some(n) = newest_until_now {
            prop_assert!(decision(&n.id).keep, "the newest verified backup up to now, {}, removed", n.id);
        }
        let verified_total = c.iter().filter(|x| x.verified).count();
        let verified_kept = c.iter().filter(|x| x.verified && decision(&x.id).keep).count();
        prop_assert!(verified_kept >= verified_total.min(p.min_keep as usize), "min-keep broken");
        for x in &c {
            let d = decision(&x.id);
            if x.in_use { prop_assert!(d.keep, "{} in use removed", x.id); }
            if x.time > now { prop_assert!(d.keep, "{} from the future removed", x.id); }
            if !x.verified && !d.keep {
                prop_assert!(c.iter().any(|v| v.verified && v.time > x.time), "{} removed with no newer verified", x.id);
            }
            prop_assert!(d.keep != d.reasons.iter().any(|r| r == "no rule keeps it" || r.starts_with("not verified; ")));
        }
    }

    #[test]
    fn order_of_input_does_not_matter(c in arb_candidates(), p in arb_policy(), tz in arb_tz()) {
        let now = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        let mut reversed = c.clone();
        reversed.reverse();
        prop_assert_eq!(plan(&c, &p, now, tz), plan(&reversed, &p, now, tz));
    }
}
