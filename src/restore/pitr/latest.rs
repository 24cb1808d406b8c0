//! Restores that reach past the last completed segment: `--latest` (no target time: recovery
//! replays all there is and ends where the WAL ends), and `--time T` later than the last
//! completed segment. Both may end in the in-flight segment's archived copy
//! ([`crate::wal::partial`]) when it is the segment right after the last completed one on the
//! base's timeline: it is staged under the full segment name, and PostgreSQL stops replaying
//! at the end of its valid WAL (the zero padding after it). A partial whose completed segment
//! is archived, or that does not follow the last completed one, is never used.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::plan::{self, Base, PitrPlan, PlanError, Segment, Tail};
use crate::wal::index::Entry;
use crate::wal::partial;
use crate::wal::segment::SegmentName;

/// Where recovery stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Goal {
    /// `recovery_target_time`.
    Time(DateTime<Utc>),
    /// The end of the archive, the newest in-flight copy included.
    Latest,
}

impl Goal {
    /// `--time T` or `--latest`: exactly one.
    pub fn of(time: Option<DateTime<Utc>>, latest: bool) -> Result<Goal, String> {
        match (time, latest) {
            (Some(t), false) => Ok(Goal::Time(t)),
            (None, true) => Ok(Goal::Latest),
            (Some(_), true) => Err(
                "--time and --latest both given: name a time, or --latest for the end of the \
                 archive, not both"
                    .into(),
            ),
            (None, false) => Err(
                "no recovery target: give --time T (RFC 3339) or --latest (the end of the \
                 archive, the in-flight segment included)"
                    .into(),
            ),
        }
    }
}

impl std::fmt::Display for Goal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Goal::Time(t) => write!(f, "{t}"),
            Goal::Latest => f.write_str("the latest WAL"),
        }
    }
}

/// The plan for `goal` over the index's `entries`.
pub fn plan(bases: &[Base], entries: &[Entry], goal: Goal) -> Result<PitrPlan, PlanError> {
    let segments = segments(entries);
    match goal {
        Goal::Latest => {
            let base = bases.iter().max_by_key(|b| b.finished).ok_or_else(|| {
                PlanError::NoBase("there is no verified physical base backup".into())
            })?;
            with_tail(base, &segments, entries)
        }
        Goal::Time(t) => match plan::to_time(bases, &segments, t) {
            Err(PlanError::NotArchived(why)) => {
                let base = bases
                    .iter()
                    .filter(|b| b.finished < t)
                    .max_by_key(|b| b.finished)
                    .ok_or_else(|| plan::no_base_before(bases, t))?;
                let p = with_tail(base, &segments, entries)?;
                match &p.partial {
                    Some(tail) if tail.completed >= t => Ok(PitrPlan {
                        target: Some(t),
                        ..p
                    }),
                    Some(tail) => Err(PlanError::NotArchived(format!(
                        "{why}; the in-flight segment's archived copy reaches {}",
                        tail.completed
                    ))),
                    None => Err(PlanError::NotArchived(why)),
                }
            }
            other => other,
        },
    }
}

/// The archive's completed segments as the planner takes them (partials left out).
pub fn segments(entries: &[Entry]) -> Vec<Segment> {
    entries
        .iter()
        .filter(|e| e.holds.is_none())
        .map(|e| Segment {
            name: e.name.clone(),
            wal_bytes: e.wal_bytes,
            completed: e.completed,
            archived: e.archived,
        })
        .collect()
}

/// Every completed segment from `base` on, then the in-flight copy that follows the last one.
fn with_tail(base: &Base, segments: &[Segment], entries: &[Entry]) -> Result<PitrPlan, PlanError> {
    let (start, stop, line) = plan::positions(base, segments)?;
    let last = line
        .iter()
        .filter(|s| s.number >= start.number)
        .map(|s| s.number)
        .max();
    let next = last.map_or(start.number, |n| n + 1);
    let tail = entries
        .iter()
        .filter_map(|e| {
            let s = SegmentName::parse(partial::segment_of(e)?, e.wal_bytes)?;
            (s.timeline == base.timeline && s.number == next && s.number >= stop).then_some((s, e))
        })
        .max_by_key(|(_, e)| e.holds);
    let Some((seg, entry)) = tail else {
        return plan::contiguous(base, &line, start.number, last.unwrap_or(0).max(stop));
    };
    let mut p = match seg.number.checked_sub(1).filter(|n| *n >= start.number) {
        Some(end) => plan::contiguous(base, &line, start.number, end)?,
        None => PitrPlan {
            base: base.id.clone(),
            base_finished: base.finished,
            timeline: base.timeline,
            segments: Vec::new(),
            reaches: base.finished,
            space_needed: base.tar_bytes,
            target: None,
            partial: None,
        },
    };
    p.segments.push(seg.name());
    p.reaches = entry.completed;
    p.space_needed += 2 * entry.wal_bytes;
    p.partial = Some(Tail {
        name: entry.name.clone(),
        holds: entry.holds.unwrap_or(0),
        completed: entry.completed,
    });
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 16 << 20;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn name(n: u64) -> String {
        SegmentName {
            timeline: 1,
            number: n,
            wal_bytes: SEG,
        }
        .name()
    }

    fn seg(n: u64, completed: i64) -> Entry {
        Entry {
            name: name(n),
            file: format!("{}.zst", name(n)),
            bytes: 1,
            sha256: String::new(),
            wal_bytes: SEG,
            completed: at(completed),
            archived: at(completed),
            holds: None,
        }
    }

    fn part(n: u64, holds: u64, completed: i64) -> Entry {
        Entry {
            name: format!("{}.partial", name(n)),
            file: format!("{}.partial-{holds:X}.zst", name(n)),
            holds: Some(holds),
            ..seg(n, completed)
        }
    }

    fn base() -> Base {
        Base {
            id: "b".into(),
            finished: at(5),
            timeline: 1,
            start_wal_file: name(2),
            stop_lsn: format!("0/{:X}", 2 * SEG + 0x138),
            tar_bytes: 1000,
        }
    }

    #[test]
    fn goal_needs_exactly_one_of_time_and_latest() {
        assert_eq!(Goal::of(None, true), Ok(Goal::Latest));
        assert_eq!(Goal::of(Some(at(1)), false), Ok(Goal::Time(at(1))));
        assert!(
            Goal::of(Some(at(1)), true)
                .unwrap_err()
                .contains("not both")
        );
        assert!(Goal::of(None, false).unwrap_err().contains("--latest"));
    }

    #[test]
    fn latest_ends_in_the_partial_after_the_last_segment() {
        let entries = vec![seg(2, 10), seg(3, 20), part(4, 500, 31)];
        let p = plan(&[base()], &entries, Goal::Latest).unwrap();
        assert_eq!(p.segments, vec![name(2), name(3), name(4)]);
        assert_eq!(p.index_name(2), format!("{}.partial", name(4)));
        assert_eq!(p.index_name(1), name(3));
        assert_eq!((p.reaches, p.target), (at(31), None));
        assert_eq!(p.partial.as_ref().map(|t| t.holds), Some(500));
    }

    #[test]
    fn a_superseded_or_stray_partial_is_not_used() {
        // 3's partial was superseded by 3 itself; 6's does not follow the last segment.
        let entries = vec![seg(2, 10), part(3, 9, 15), seg(3, 20), part(6, 9, 40)];
        let p = plan(&[base()], &entries, Goal::Latest).unwrap();
        assert_eq!(p.segments, vec![name(2), name(3)]);
        assert!(p.partial.is_none());
        assert_eq!(p.reaches, at(20));
    }

    #[test]
    fn a_time_after_the_last_segment_uses_the_partial_when_it_reaches_it() {
        let entries = vec![seg(2, 10), seg(3, 20), part(4, 500, 31)];
        let p = plan(&[base()], &entries, Goal::Time(at(30))).unwrap();
        assert_eq!((p.last(), p.target), (name(4).as_str(), Some(at(30))));
        assert!(p.partial.is_some());
        let p = plan(&[base()], &entries, Goal::Time(at(15))).unwrap();
        assert!(p.partial.is_none(), "a completed segment reaches it");
        let late = plan(&[base()], &entries, Goal::Time(at(32))).unwrap_err();
        assert!(
            matches!(&late, PlanError::NotArchived(m) if m.contains("in-flight")),
            "{late}"
        );
    }

    #[test]
    fn the_start_segment_itself_may_be_in_flight() {
        let p = plan(&[base()], &[part(2, 64, 7)], Goal::Latest).unwrap();
        assert_eq!(p.segments, vec![name(2)]);
        assert_eq!(p.space_needed, 1000 + 2 * SEG);
    }
}
