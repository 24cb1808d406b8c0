//! "When will this run?": the next fire times of a schedule as the scheduler itself would fire
//! them, each marked when a DST change shifted, coalesced or repeated it. Used by
//! `atprectl schedule` and `atpred --check`.
//!
//! The times come from [`JobTimer`], the code that decides when jobs run, polled at each time it
//! asks to be woken: what is printed is what runs, not a second implementation of it.

use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone, Utc};
use chrono_tz::Tz;
use serde::Serialize;

use super::{JobTimer, Schedule, Tick};

/// What a DST change did to a fire time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Dst {
    /// One scheduled time fell in the skipped hour and runs when it ends.
    Shifted,
    /// Several scheduled times (in the skipped hour, and maybe the time it ends at) run once.
    Coalesced,
    /// In a repeated hour, the first pass; a pattern naming its hour runs only then.
    FirstPass,
    /// In a repeated hour, the second pass (patterns with `*` in the hour field).
    SecondPass,
}

/// One fire time.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Fire {
    pub at: DateTime<Utc>,
    /// The wall clock in the zone, with its offset (RFC 3339).
    pub local: String,
    /// The zone's abbreviation then ("CEST").
    pub zone: String,
    pub dst: Option<Dst>,
    /// For shifted and coalesced runs: the scheduled wall-clock times ("02:30").
    pub scheduled: Vec<String>,
}

impl Fire {
    /// The line `atprectl schedule` prints: "2026-03-29 03:00:00 CEST  shifted from 02:30".
    pub fn line(&self, tz: Tz) -> String {
        let wall = self.at.with_timezone(&tz).format("%Y-%m-%d %H:%M:%S %Z");
        match self.note() {
            Some(note) => format!("{wall}  {note}"),
            None => wall.to_string(),
        }
    }

    fn note(&self) -> Option<String> {
        Some(match self.dst? {
            Dst::Shifted => format!(
                "shifted from {} (skipped by DST)",
                self.scheduled.join(", ")
            ),
            Dst::Coalesced => format!("coalesced {} into one run", self.scheduled.join(", ")),
            Dst::FirstPass => "first pass of the repeated hour".into(),
            Dst::SecondPass => "second pass of the repeated hour".into(),
        })
    }
}

/// The first `n` fire times strictly after `from`, as a [`JobTimer`] started at `from` fires
/// them (no catch-up, no last slot).
pub fn preview(schedule: &Schedule, tz: Tz, from: DateTime<Utc>, n: usize) -> Vec<Fire> {
    let mut timer = JobTimer::new(schedule.clone(), false, None, from, tz);
    let mut now = from;
    let mut out = Vec::new();
    while out.len() < n {
        match timer.poll(now, tz) {
            Tick::Wait(Some(at)) => now = at,
            Tick::Wait(None) => break,
            Tick::Fire { slot, .. } | Tick::Missed { slot } => {
                out.push(fire(schedule, slot, tz));
            }
        }
    }
    out
}

fn fire(schedule: &Schedule, at: DateTime<Utc>, tz: Tz) -> Fire {
    let local = at.with_timezone(&tz);
    let hm = |t: NaiveDateTime| {
        let text = t.format("%H:%M:%S").to_string();
        text.strip_suffix(":00").map(str::to_owned).unwrap_or(text)
    };
    let gap = schedule.gap_matches(at, tz);
    let (dst, scheduled) = match gap.len() {
        0 => (repeated(at, tz), Vec::new()),
        1 => (Some(Dst::Shifted), gap.into_iter().map(hm).collect()),
        _ => (Some(Dst::Coalesced), gap.into_iter().map(hm).collect()),
    };
    Fire {
        at,
        local: local.to_rfc3339(),
        zone: local.format("%Z").to_string(),
        dst,
        scheduled,
    }
}

/// Which pass of a repeated hour `at` is in, if its wall-clock time happens twice.
fn repeated(at: DateTime<Utc>, tz: Tz) -> Option<Dst> {
    match tz.from_local_datetime(&at.with_timezone(&tz).naive_local()) {
        LocalResult::Ambiguous(first, _) if first.with_timezone(&Utc) == at => Some(Dst::FirstPass),
        LocalResult::Ambiguous(..) => Some(Dst::SecondPass),
        _ => None,
    }
}
