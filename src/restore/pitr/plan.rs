//! Planning a point-in-time restore, pure: from the verified base backups, the archive's index
//! and the target time, which base, which segments, how much space — or the refusal that
//! names what is missing.
//!
//! The stop time of a base backup is when it finished (its manifest's `finished`, after
//! pg_basebackup's stop): a restore to T takes the newest base that finished before T. The WAL
//! needed runs from the base's start segment to the first segment completed at or after T
//! (it holds the WAL written up to T), and at least to the segment of the base's stop LSN
//! (recovery is consistent only past it). A drill has no target time: it replays every
//! segment archived by its cutoff.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::wal::segment::SegmentName;

/// A verified physical base backup, as the planner needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct Base {
    pub id: String,
    pub finished: DateTime<Utc>,
    pub timeline: u32,
    pub start_wal_file: String,
    /// `X/Y`.
    pub stop_lsn: String,
    /// Bytes of the unpacked tar.
    pub tar_bytes: u64,
}

/// An archived segment, as the index lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct Segment {
    pub name: String,
    pub wal_bytes: u64,
    pub completed: DateTime<Utc>,
    pub archived: DateTime<Utc>,
}

/// What a restore (or drill) will use.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PitrPlan {
    /// The base backup's id.
    pub base: String,
    pub base_finished: DateTime<Utc>,
    pub timeline: u32,
    /// The segments to stage, in WAL order (first..last, no hole).
    pub segments: Vec<String>,
    /// When the last staged segment was completed: the newest point the WAL reaches.
    pub reaches: DateTime<Utc>,
    /// Bytes the data directory needs: the unpacked base plus the staged segments (twice:
    /// staged, and copied into pg_wal by recovery).
    pub space_needed: u64,
    /// `recovery_target_time`; none for a drill (it replays all it staged).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<DateTime<Utc>>,
    /// The last segment is staged from this in-flight copy ([`super::latest`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partial: Option<Tail>,
}

/// An in-flight segment's archived copy, staged as the plan's last segment.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Tail {
    /// Its index line's name (`SEGMENT.partial`).
    pub name: String,
    /// Bytes of WAL it holds (the rest is zeros: replay ends there).
    pub holds: u64,
    /// Its last write: the newest point it reaches.
    pub completed: DateTime<Utc>,
}

impl PitrPlan {
    /// The index line the `i`th segment is staged from: its own, or the in-flight copy's.
    pub fn index_name(&self, i: usize) -> &str {
        match &self.partial {
            Some(t) if i + 1 == self.segments.len() => &t.name,
            _ => self.segments.get(i).map_or("", String::as_str),
        }
    }

    pub fn first(&self) -> &str {
        self.segments.first().map_or("", String::as_str)
    }

    pub fn last(&self) -> &str {
        self.segments.last().map_or("", String::as_str)
    }
}

/// Why no plan.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("{0}")]
    NoBase(String),
    #[error("{0}")]
    NotArchived(String),
    #[error("{0}")]
    Gap(String),
}

/// The plan of a restore to `target`.
pub fn to_time(
    bases: &[Base],
    segments: &[Segment],
    target: DateTime<Utc>,
) -> Result<PitrPlan, PlanError> {
    let base = bases
        .iter()
        .filter(|b| b.finished < target)
        .max_by_key(|b| b.finished)
        .ok_or_else(|| no_base_before(bases, target))?;
    let (start, stop, line) = positions(base, segments)?;
    let end = line
        .iter()
        .find(|s| s.number >= start.number && s.completed >= target)
        .ok_or_else(|| {
            let newest = line.last().map_or_else(
                || "nothing is archived yet".to_owned(),
                |s| {
                    format!(
                        "the newest archived segment, {}, was completed at {}",
                        s.name, s.completed
                    )
                },
            );
            PlanError::NotArchived(format!(
                "{target} is later than what is archived: {newest}; try an earlier time, or wait \
                 for the archive to catch up"
            ))
        })?;
    let end = end.number.max(stop);
    let plan = contiguous(base, &line, start.number, end)?;
    Ok(PitrPlan {
        target: Some(target),
        ..plan
    })
}

/// The plan of a drill of `base`: every segment archived by `cutoff` from its start, at least
/// to its stop segment.
pub fn drill(
    base: &Base,
    segments: &[Segment],
    cutoff: DateTime<Utc>,
) -> Result<PitrPlan, PlanError> {
    let (start, stop, line) = positions(base, segments)?;
    let end = line
        .iter()
        .filter(|s| s.number >= start.number && s.archived <= cutoff)
        .map(|s| s.number)
        .max()
        .unwrap_or(0)
        .max(stop);
    contiguous(base, &line, start.number, end)
}

/// A segment on the base's timeline.
pub(super) struct OnLine {
    pub(super) name: String,
    pub(super) number: u64,
    pub(super) wal_bytes: u64,
    pub(super) completed: DateTime<Utc>,
    pub(super) archived: DateTime<Utc>,
}

/// The base's start segment, its stop segment's number, and the archive's segments of its
/// timeline in WAL order.
pub(super) fn positions(
    base: &Base,
    segments: &[Segment],
) -> Result<(OnLine, u64, Vec<OnLine>), PlanError> {
    // A timeline history file's line carries its own size: the first segment's says it.
    let wal_bytes = segments
        .iter()
        .find(|s| SegmentName::parse(&s.name, s.wal_bytes).is_some())
        .map_or(16 << 20, |s| s.wal_bytes);
    let mut line: Vec<OnLine> = segments
        .iter()
        .filter_map(|s| {
            let n = SegmentName::parse(&s.name, s.wal_bytes)?;
            (n.timeline == base.timeline).then(|| OnLine {
                name: s.name.clone(),
                number: n.number,
                wal_bytes: s.wal_bytes,
                completed: s.completed,
                archived: s.archived,
            })
        })
        .collect();
    line.sort_by_key(|s| s.number);
    let start = SegmentName::parse(&base.start_wal_file, wal_bytes).ok_or_else(|| {
        PlanError::NoBase(format!(
            "{}: its start segment {:?} is not a WAL file name",
            base.id, base.start_wal_file
        ))
    })?;
    let stop = parse_lsn(&base.stop_lsn)
        .map(|lsn| lsn.saturating_sub(1) / wal_bytes)
        .ok_or_else(|| {
            PlanError::NoBase(format!(
                "{}: stop LSN {:?} unreadable",
                base.id, base.stop_lsn
            ))
        })?;
    let first = OnLine {
        name: base.start_wal_file.clone(),
        number: start.number,
        wal_bytes,
        completed: base.finished,
        archived: base.finished,
    };
    Ok((first, stop.max(start.number), line))
}

/// The plan staging segments `start..=end` of `line`, or the first hole in them.
pub(super) fn contiguous(
    base: &Base,
    line: &[OnLine],
    start: u64,
    end: u64,
) -> Result<PitrPlan, PlanError> {
    let wal_bytes = line.first().map_or(16 << 20, |s| s.wal_bytes);
    let name = |number| {
        SegmentName {
            timeline: base.timeline,
            number,
            wal_bytes,
        }
        .name()
    };
    let have: Vec<&OnLine> = line
        .iter()
        .filter(|s| (start..=end).contains(&s.number))
        .collect();
    let mut next = start;
    for s in &have {
        if s.number > next {
            return Err(gap(base, &name(next), &name(s.number - 1)));
        }
        next = s.number + 1;
    }
    if next <= end {
        return Err(gap(base, &name(next), &name(end)));
    }
    let reaches = have.last().map_or(base.finished, |s| s.completed);
    let staged: u64 = have.iter().map(|s| s.wal_bytes).sum();
    Ok(PitrPlan {
        base: base.id.clone(),
        base_finished: base.finished,
        timeline: base.timeline,
        segments: have.iter().map(|s| s.name.clone()).collect(),
        reaches,
        space_needed: base.tar_bytes + 2 * staged,
        target: None,
        partial: None,
    })
}

fn gap(base: &Base, first: &str, last: &str) -> PlanError {
    let range = if first == last {
        first.to_owned()
    } else {
        format!("{first} to {last}")
    };
    PlanError::Gap(format!(
        "gap in the archive between base backup {} and the target: {range} missing",
        base.id
    ))
}

pub(super) fn no_base_before(bases: &[Base], target: DateTime<Utc>) -> PlanError {
    let oldest = bases.iter().map(|b| b.finished).min().map_or_else(
        || "there is no verified physical base backup".to_owned(),
        |t| format!("the oldest verified one finished at {t}"),
    );
    PlanError::NoBase(format!(
        "no physical base backup finished before {target}: {oldest}"
    ))
}

/// `X/Y` as a byte position.
pub fn parse_lsn(lsn: &str) -> Option<u64> {
    let (hi, lo) = lsn.split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEG: u64 = 16 << 20;

    fn at(secs: i64) -> DateTime<Utc> {
        DateTime::from_timestamp(1_800_000_000 + secs, 0).unwrap()
    }

    fn seg(n: u64, completed: i64) -> Segment {
        Segment {
            name: SegmentName {
                timeline: 1,
                number: n,
                wal_bytes: SEG,
            }
            .name(),
            wal_bytes: SEG,
            completed: at(completed),
            archived: at(completed + 1),
        }
    }

    fn base(id: &str, start: u64, finished: i64) -> Base {
        Base {
            id: id.into(),
            finished: at(finished),
            timeline: 1,
            start_wal_file: SegmentName {
                timeline: 1,
                number: start,
                wal_bytes: SEG,
            }
            .name(),
            stop_lsn: format!("0/{:X}", start * SEG + 0x138),
            tar_bytes: 1000,
        }
    }

    #[test]
    fn takes_the_newest_base_before_the_time_and_the_segments_up_to_it() {
        let bases = [base("a", 2, 10), base("b", 5, 50)];
        // A history file's line (its own size) first: it says nothing of segment sizes.
        let history = Segment {
            name: "00000002.history".into(),
            wal_bytes: 41,
            ..seg(0, 0)
        };
        let segs: Vec<Segment> = std::iter::once(history)
            .chain((2..=9).map(|n| seg(n, n as i64 * 10)))
            .collect();
        let p = to_time(&bases, &segs, at(65)).unwrap();
        assert_eq!(p.base, "b");
        assert_eq!(
            (p.first(), p.last()),
            ("000000010000000000000005", "000000010000000000000007")
        );
        assert_eq!(p.space_needed, 1000 + 2 * 3 * SEG);
        let p = to_time(&bases, &segs, at(45)).unwrap();
        assert_eq!((p.base.as_str(), p.segments.len()), ("a", 4));
    }

    #[test]
    fn refusals_name_what_is_missing() {
        let bases = [base("a", 2, 10)];
        let mut segs: Vec<Segment> = (2..=9).map(|n| seg(n, n as i64 * 10)).collect();
        let early = to_time(&bases, &segs, at(5)).unwrap_err();
        assert!(
            matches!(&early, PlanError::NoBase(m) if m.contains("oldest verified one")),
            "{early}"
        );
        let late = to_time(&bases, &segs, at(500)).unwrap_err();
        assert!(
            matches!(&late, PlanError::NotArchived(m) if m.contains("000000010000000000000009")),
            "{late}"
        );
        segs.retain(|s| !s.name.ends_with("04") && !s.name.ends_with("05"));
        let gap = to_time(&bases, &segs, at(75)).unwrap_err();
        assert_eq!(
            gap,
            PlanError::Gap(
                "gap in the archive between base backup a and the target: \
                 000000010000000000000004 to 000000010000000000000005 missing"
                    .into()
            )
        );
    }

    #[test]
    fn a_drill_replays_what_was_archived_by_its_cutoff_and_at_least_to_the_stop() {
        let b = base("a", 2, 10);
        let segs: Vec<Segment> = (2..=9).map(|n| seg(n, n as i64 * 10)).collect();
        let p = drill(&b, &segs, at(61)).unwrap();
        assert_eq!(p.last(), "000000010000000000000006");
        assert!(p.target.is_none());
        let p = drill(&b, &segs, at(0)).unwrap();
        assert_eq!(p.segments, vec!["000000010000000000000002".to_owned()]);
        let missing = drill(&b, &segs[1..], at(100)).unwrap_err();
        assert!(
            matches!(missing, PlanError::Gap(m) if m.contains("000000010000000000000002 missing"))
        );
    }
}
