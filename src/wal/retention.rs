//! WAL retention, the pure part: which archived segments a prune may remove.
//!
//! Every segment from the start of the oldest retained base backup on is kept (a base backup is
//! retained while it is in the catalog: pinned, kept by the policy, or one that failed its
//! verification and was not removed yet), and nothing newer is ever removed. Two rules keep
//! more:
//!
//! - **Gaps.** A gap in the archive is never pruned across silently: when a gap lies before
//!   the cutoff, the segment just before the first such gap is kept with everything after it,
//!   so the gap check still sees (and names) the missing range.
//! - **Owed copies** (local archive only): a segment not yet at every offsite target of the
//!   job stays, or it could never be copied there.
//!
//! Without any retained base backup nothing is removed: there is no restore to size it by.
//! Timeline history files are never removed (a few bytes each, and a restore across a
//! promotion needs them); neither is a segment of a later timeline than the oldest base's.

use serde::Serialize;

use super::segment::SegmentName;

/// A retained base backup, by where its WAL starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Base {
    pub id: String,
    /// The segment holding its start LSN (backup_label's `START WAL LOCATION` file).
    pub start: SegmentName,
    pub pinned: bool,
}

/// What to remove, and why the rest stays.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct WalPlan {
    /// The first segment kept; `None` when nothing is removed for want of a base backup.
    pub keep_from: Option<String>,
    /// The WAL position (bytes) of `keep_from`'s start: what is below it is gone.
    #[serde(skip)]
    pub keep_from_lsn: Option<u64>,
    /// Why the cutoff is where it is, in words.
    pub reasons: Vec<String>,
    /// Segment names removed, oldest first.
    pub remove: Vec<String>,
    /// How many segments stay.
    pub kept: usize,
}

/// The plan over the `archived` segments, given the retained `bases` and, for the local
/// archive, the oldest segment some offsite target still lacks (`owed`).
pub fn plan(archived: &[SegmentName], bases: &[Base], owed: Option<SegmentName>) -> WalPlan {
    let mut segments = archived.to_vec();
    segments.sort_by_key(|s| (s.number, s.timeline));
    let Some(oldest) = bases
        .iter()
        .min_by_key(|b| (b.start.number, b.start.timeline))
    else {
        return WalPlan {
            reasons: vec!["no retained base backup: every segment is kept".into()],
            kept: segments.len(),
            ..WalPlan::default()
        };
    };
    let mut cutoff = oldest.start;
    let mut reasons = vec![format!(
        "the oldest retained base backup {}{} starts in {}",
        oldest.id,
        if oldest.pinned { " (pinned)" } else { "" },
        oldest.start.name()
    )];
    if let Some(o) = owed.filter(|o| o.number < cutoff.number) {
        cutoff = o;
        reasons.push(format!(
            "{} and later are not at every offsite target yet",
            o.name()
        ));
    }
    if let Some((before, first, last)) = first_gap_below(&segments, cutoff.number) {
        cutoff = before;
        reasons.push(format!(
            "a gap in the archive ({first} to {last} missing) lies before it: kept from {}, the segment before the gap",
            before.name()
        ));
    }
    let (remove, kept): (Vec<SegmentName>, Vec<SegmentName>) = segments
        .into_iter()
        .partition(|s| s.number < cutoff.number && s.timeline <= oldest.start.timeline);
    WalPlan {
        keep_from: Some(cutoff.name()),
        keep_from_lsn: Some(cutoff.number * cutoff.wal_bytes),
        reasons,
        remove: remove.iter().map(SegmentName::name).collect(),
        kept: kept.len(),
    }
}

/// The first gap between two archived segments of one timeline whose lower side is below
/// `cutoff`: the segment before it and the missing range's first and last names.
fn first_gap_below(sorted: &[SegmentName], cutoff: u64) -> Option<(SegmentName, String, String)> {
    super::segment::gaps(sorted)
        .into_iter()
        .filter(|(before, _, _)| before.number < cutoff)
        .min_by_key(|(before, _, _)| before.number)
        .map(|(before, first, last)| (before, first.name(), last.name()))
}

/// The plan as lines for a prune's dry run and report: `wal JOB: keep from …; remove …`.
pub fn render(job: &str, plan: &WalPlan) -> String {
    let mut out = format!(
        "wal     {job}: keep from {} ({}); ",
        plan.keep_from.as_deref().unwrap_or("the first segment"),
        plan.reasons.join("; ")
    );
    match (plan.remove.first(), plan.remove.last()) {
        (Some(first), Some(last)) => out.push_str(&format!(
            "remove {} segment(s), {first} to {last}; keep {}\n",
            plan.remove.len(),
            plan.kept
        )),
        _ => out.push_str(&format!("remove none; keep {}\n", plan.kept)),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 16 << 20;

    fn seg(n: u64) -> SegmentName {
        SegmentName {
            timeline: 1,
            number: n,
            wal_bytes: SEG,
        }
    }

    fn base(id: &str, n: u64, pinned: bool) -> Base {
        Base {
            id: id.into(),
            start: seg(n),
            pinned,
        }
    }

    fn names(ns: &[u64]) -> Vec<String> {
        ns.iter().map(|n| seg(*n).name()).collect()
    }

    fn archived(ns: impl IntoIterator<Item = u64>) -> Vec<SegmentName> {
        ns.into_iter().map(seg).collect()
    }

    #[test]
    fn wal_retention_range_cases() {
        struct Case {
            what: &'static str,
            archived: Vec<u64>,
            bases: Vec<Base>,
            owed: Option<u64>,
            keep_from: Option<u64>,
            remove: Vec<u64>,
        }
        let cases = [
            Case {
                what: "no base backup: nothing goes",
                archived: vec![1, 2, 3],
                bases: vec![],
                owed: None,
                keep_from: None,
                remove: vec![],
            },
            Case {
                what: "the oldest base's start segment and later stay",
                archived: (1..=9).collect(),
                bases: vec![base("new", 7, false), base("old", 4, false)],
                owed: None,
                keep_from: Some(4),
                remove: vec![1, 2, 3],
            },
            Case {
                what: "a pinned old base holds its WAL",
                archived: (1..=9).collect(),
                bases: vec![base("new", 7, false), base("pinned", 2, true)],
                owed: None,
                keep_from: Some(2),
                remove: vec![1],
            },
            Case {
                what: "a gap before the oldest base: kept from the segment before it",
                archived: vec![1, 2, 3, 6, 7, 8, 9],
                bases: vec![base("b", 8, false)],
                owed: None,
                keep_from: Some(3),
                remove: vec![1, 2],
            },
            Case {
                what: "the first of two gaps decides",
                archived: vec![1, 2, 4, 5, 7, 8],
                bases: vec![base("b", 8, false)],
                owed: None,
                keep_from: Some(2),
                remove: vec![1],
            },
            Case {
                what: "a gap after the cutoff changes nothing",
                archived: vec![1, 2, 3, 4, 6, 7],
                bases: vec![base("b", 3, false)],
                owed: None,
                keep_from: Some(3),
                remove: vec![1, 2],
            },
            Case {
                what: "the base's own start segment missing is a gap kept visible",
                archived: vec![1, 2, 3, 5, 6],
                bases: vec![base("b", 4, false)],
                owed: None,
                keep_from: Some(3),
                remove: vec![1, 2],
            },
            Case {
                what: "segments not yet offsite stay",
                archived: (1..=9).collect(),
                bases: vec![base("b", 6, false)],
                owed: Some(3),
                keep_from: Some(3),
                remove: vec![1, 2],
            },
            Case {
                what: "owed copies above the cutoff change nothing",
                archived: (1..=9).collect(),
                bases: vec![base("b", 3, false)],
                owed: Some(8),
                keep_from: Some(3),
                remove: vec![1, 2],
            },
            Case {
                what: "an archive newer than every base: nothing goes",
                archived: vec![5, 6],
                bases: vec![base("b", 2, false)],
                owed: None,
                keep_from: Some(2),
                remove: vec![],
            },
        ];
        for c in cases {
            let p = plan(&archived(c.archived.clone()), &c.bases, c.owed.map(seg));
            assert_eq!(
                p.keep_from,
                c.keep_from.map(|n| seg(n).name()),
                "{}: {p:?}",
                c.what
            );
            assert_eq!(p.remove, names(&c.remove), "{}: {p:?}", c.what);
            assert_eq!(p.kept + p.remove.len(), c.archived.len(), "{}", c.what);
        }
    }

    #[test]
    fn wal_retention_keeps_later_timelines_and_says_why() {
        let mut segs = archived(1..=4);
        segs.push(SegmentName {
            timeline: 2,
            number: 2,
            wal_bytes: SEG,
        });
        let p = plan(&segs, &[base("b", 4, true)], None);
        assert_eq!(p.remove, names(&[1, 2, 3]));
        assert_eq!(p.kept, 2, "timeline 2's segment stays");
        assert_eq!(p.keep_from_lsn, Some(4 * SEG));
        let text = render("wal", &p);
        assert!(text.contains("base backup b (pinned)"), "{text}");
        assert!(
            text.contains(&format!(
                "remove 3 segment(s), {} to {}",
                seg(1).name(),
                seg(3).name()
            )),
            "{text}"
        );
    }
}
