//! Property tests for the retention planner: the safety rules, independence of input order, and
//! monotonicity (keeping more by any rule never removes a backup that keeping less keeps).

use chrono::{TimeZone, Utc};
use chrono_tz::Tz;
use proptest::prelude::*;

use super::calendar_duration::CalendarDuration;
use super::retention::*;

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
                // Whole hours now and then, so that backups share periods and boundaries.
                time: Utc
                    .timestamp_opt(1_700_000_000 + secs - secs % 7200 * (i as i64 % 2), 0)
                    .unwrap(),
                verified,
                in_use,
            })
            .collect()
    })
}

fn arb_count() -> impl Strategy<Value = Count> {
    prop_oneof![4 => (0u32..6).prop_map(Count::N), 1 => Just(Count::All)]
}

fn arb_duration() -> impl Strategy<Value = CalendarDuration> {
    (0u32..2, 0u32..4, 0u32..40, 0u32..30).prop_map(|(years, months, days, hours)| {
        CalendarDuration {
            years,
            months,
            days,
            hours,
        }
    })
}

fn periods<T: std::fmt::Debug>(
    value: impl Strategy<Value = T>,
) -> impl Strategy<Value = std::collections::BTreeMap<Period, T>> {
    prop::collection::btree_map(prop::sample::select(Period::ALL.to_vec()), value, 0..3)
}

fn arb_policy() -> impl Strategy<Value = Policy> {
    (
        prop::option::of(arb_count()),
        periods(arb_count()),
        prop::option::of(arb_duration()),
        periods(arb_duration()),
        1u32..5,
    )
        .prop_map(
            |(keep_last, keep_periods, keep_within, keep_within_periods, min_keep)| Policy {
                keep_last,
                keep_periods,
                keep_within,
                keep_within_periods,
                min_keep,
            },
        )
}

/// One count rule and a `min-keep`: small policies, which leave room for `min-keep` to act.
fn arb_small_policy() -> impl Strategy<Value = Policy> {
    (
        prop::sample::select(vec![None, Some(Period::Daily), Some(Period::Yearly)]),
        1u32..3,
        2u32..5,
    )
        .prop_map(|(period, n, min_keep)| {
            let mut p = Policy {
                min_keep,
                ..Policy::default()
            };
            match period {
                None => p.keep_last = Some(Count::N(n)),
                Some(period) => {
                    p.keep_periods.insert(period, Count::N(n));
                }
            }
            p
        })
}

/// A policy that keeps at least as much as `p` by every rule: counts raised (or made `-1`),
/// durations lengthened part by part, rules added.
fn more_than(p: &Policy) -> impl Strategy<Value = Policy> + use<> {
    let p = p.clone();
    (
        arb_count(),
        periods(arb_count()),
        arb_duration(),
        periods(arb_duration()),
        any::<bool>(),
    )
        .prop_map(move |(last, counts, within, windows, add_within)| {
            let up = |a: Option<Count>, b: Count| match (a, b) {
                (Some(Count::N(a)), Count::N(b)) => Some(Count::N(a + b)),
                (Some(_), _) => Some(Count::All),
                (None, b) => Some(b),
            };
            let longer = |a: CalendarDuration, b: CalendarDuration| CalendarDuration {
                years: a.years + b.years,
                months: a.months + b.months,
                days: a.days + b.days,
                hours: a.hours + b.hours,
            };
            let mut q = p.clone();
            q.keep_last = up(q.keep_last, last);
            for (period, n) in counts {
                let now = q.keep_periods.get(&period).copied();
                q.keep_periods.insert(period, up(now, n).unwrap_or(n));
            }
            q.keep_within = match q.keep_within {
                Some(d) => Some(longer(d, within)),
                None if add_within => Some(within),
                None => None,
            };
            for (period, d) in windows {
                let now = q
                    .keep_within_periods
                    .get(&period)
                    .copied()
                    .unwrap_or_default();
                q.keep_within_periods.insert(period, longer(now, d));
            }
            q
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

fn kept_ids(plan: &Plan) -> std::collections::BTreeSet<String> {
    plan.decisions
        .iter()
        .filter(|d| d.keep)
        .map(|d| d.id.clone())
        .collect()
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
    fn order_of_input_does_not_matter(
        (c, shuffled) in arb_candidates().prop_flat_map(|c| (Just(c.clone()), Just(c).prop_shuffle())),
        p in arb_policy(),
        tz in arb_tz(),
    ) {
        let now = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        prop_assert_eq!(plan(&c, &p, now, tz), plan(&shuffled, &p, now, tz));
    }

    #[test]
    fn keeping_more_never_removes_what_keeping_less_keeps(
        c in arb_candidates(),
        (less, more) in prop_oneof![arb_policy(), arb_small_policy()]
            .prop_flat_map(|p| (Just(p.clone()), more_than(&p))),
        tz in arb_tz(),
    ) {
        let now = Utc.timestamp_opt(1_800_000_000, 0).unwrap();
        let (small, large) = (kept_ids(&plan(&c, &less, now, tz)), kept_ids(&plan(&c, &more, now, tz)));
        let lost: Vec<_> = small.difference(&large).collect();
        prop_assert!(lost.is_empty(), "{more:?} removes {lost:?} that {less:?} keeps");
    }
}
