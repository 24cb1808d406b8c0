//! When one job runs: the pure decision logic of the scheduler.
//!
//! A [`JobTimer`] is told the time whenever the scheduler wakes and answers with a [`Tick`]:
//! wait, fire a slot, or record a slot as missed. It never reads a clock, so it decides the same
//! way whether the time moved normally, jumped forward (suspend, a clock step, a daemon that was
//! down) or went back.
//!
//! Rules:
//! - A slot is on time while `now - slot <= GRACE`; it fires once.
//! - On a first start (no last slot) nothing is made up: the first slot is the first after `now`.
//! - Slots passed over (daemon down, suspend, clock jump) coalesce: only the newest of them is
//!   handled, as a late [`Tick::Fire`] with catch-up, else as [`Tick::Missed`]. If the newest
//!   passed slot is still on time, it fires on time and covers the older ones.
//! - A slot at or before the last slot handled never fires again, even if the clock goes back
//!   (see [`JobTimer::poll`] for the one exception).

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;

use super::Schedule;

/// How late a slot may be handled and still count as on time.
pub const GRACE: Duration = Duration::from_secs(60);

const GRACE_DELTA: TimeDelta = TimeDelta::seconds(GRACE.as_secs() as i64);

/// How far the last slot may lie ahead of `now` before it is taken for a clock that was wrong.
const FUTURE_LIMIT: TimeDelta = TimeDelta::hours(24);

/// What the scheduler does for one job now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tick {
    /// Nothing due; the earliest wall-clock time to look again (None = never fires again).
    Wait(Option<DateTime<Utc>>),
    /// Run the job now for the slot `slot` (the scheduled time). `late` = this slot was missed
    /// (daemon down, clock jump, suspend) and is made up because catch-up is on.
    Fire { slot: DateTime<Utc>, late: bool },
    /// A slot passed while the job could not fire on time and catch-up is off: record it as
    /// missed, do not run.
    Missed { slot: DateTime<Utc> },
}

/// The timing state of one job.
#[derive(Clone, Debug)]
pub struct JobTimer {
    schedule: Schedule,
    catch_up: bool,
    last_slot: Option<DateTime<Utc>>,
    /// Slots at or before this instant are never handled: the last slot handled, or the time the
    /// timer started without one.
    floor: DateTime<Utc>,
    next: Option<DateTime<Utc>>,
}

impl JobTimer {
    /// `last_slot`: the last slot handled (fired or recorded missed; persisted across restarts by
    /// the caller), None on a first start.
    pub fn new(
        schedule: Schedule,
        catch_up: bool,
        last_slot: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        tz: Tz,
    ) -> Self {
        let mut timer = JobTimer {
            schedule,
            catch_up,
            last_slot,
            floor: last_slot.unwrap_or(now),
            next: None,
        };
        timer.forget_future(now);
        timer.next = timer.schedule.next_after(timer.floor, tz);
        timer
    }

    /// Decides what to do at `now`. Call it whenever the scheduler wakes: at the time the last
    /// [`Tick::Wait`] named, earlier, or later after a suspend or clock step. After a `Fire` or
    /// `Missed`, polling again with the same `now` returns `Wait(next)`.
    ///
    /// When the clock goes back, slots up to the last one handled are not run again and the
    /// timer waits for the first slot after it. Exception: if the last slot lies more than 24 h
    /// ahead of `now`, the clock was wrong in the future and has been corrected; waiting for it
    /// could mean never running, so the timer forgets the last slot (`last_slot()` becomes None)
    /// and resumes like a first start at `now`.
    pub fn poll(&mut self, now: DateTime<Utc>, tz: Tz) -> Tick {
        self.forget_future(now);
        // Recomputed on every wake, so a changed time zone takes effect at once.
        self.next = self.schedule.next_after(self.floor, tz);
        let Some(first_due) = self.next.filter(|next| *next <= now) else {
            return Tick::Wait(self.next);
        };
        let slot = self.newest_due(first_due, now, tz);
        self.floor = slot;
        self.last_slot = Some(slot);
        self.next = self.schedule.next_after(slot, tz);
        if now - slot <= GRACE_DELTA {
            Tick::Fire { slot, late: false }
        } else if self.catch_up {
            Tick::Fire { slot, late: true }
        } else {
            Tick::Missed { slot }
        }
    }

    /// The last slot handled (fired or recorded missed).
    pub fn last_slot(&self) -> Option<DateTime<Utc>> {
        self.last_slot
    }

    /// The next planned slot, as of the last `new` or `poll`.
    pub fn next(&self) -> Option<DateTime<Utc>> {
        self.next
    }

    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }

    fn forget_future(&mut self, now: DateTime<Utc>) {
        if self.floor - now > FUTURE_LIMIT {
            self.floor = now;
            self.last_slot = None;
        }
    }

    /// The newest slot in `[first_due, now]`. Walking slot by slot from `first_due` could take
    /// millions of steps after a long downtime, so it first looks back from `now` over windows
    /// that double until one holds a slot, and walks only the last window.
    fn newest_due(&self, first_due: DateTime<Utc>, now: DateTime<Utc>, tz: Tz) -> DateTime<Utc> {
        let mut back = TimeDelta::seconds(1);
        let mut newest = loop {
            let from = match now.checked_sub_signed(back) {
                Some(from) if from >= first_due => from,
                _ => break first_due,
            };
            match self.schedule.next_after(from, tz) {
                Some(slot) if slot <= now => break slot,
                _ => back = back.checked_mul(2).unwrap_or(TimeDelta::MAX),
            }
        };
        while let Some(slot) = self.schedule.next_after(newest, tz).filter(|s| *s <= now) {
            newest = slot;
        }
        newest
    }
}

#[cfg(test)]
#[path = "timer_tests.rs"]
mod tests;
