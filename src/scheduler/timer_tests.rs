use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::America::New_York;
use chrono_tz::Europe::Berlin;
use chrono_tz::{Tz, UTC};

use super::{JobTimer, Tick};
use crate::scheduler::Schedule;

fn at(text: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(text)
        .expect("test time")
        .with_timezone(&Utc)
}

fn timer(text: &str, catch_up: bool, last: Option<&str>, now: &str, tz: Tz) -> JobTimer {
    let schedule = Schedule::parse(text).expect("test schedule");
    JobTimer::new(schedule, catch_up, last.map(at), at(now), tz)
}

fn fire(slot: &str, late: bool) -> Tick {
    Tick::Fire {
        slot: at(slot),
        late,
    }
}

fn missed(slot: &str) -> Tick {
    Tick::Missed { slot: at(slot) }
}

fn wait(next: &str) -> Tick {
    Tick::Wait(Some(at(next)))
}

/// Polls at each time in turn, as a scheduler would, and returns every tick that was not a
/// wait. After a fire or a miss, polling again at the same time must wait for `next()`.
fn drive(
    timer: &mut JobTimer,
    tz: Tz,
    times: impl IntoIterator<Item = DateTime<Utc>>,
) -> Vec<Tick> {
    let mut ticks = Vec::new();
    for now in times {
        let tick = timer.poll(now, tz);
        if let Tick::Wait(next) = tick {
            assert!(
                next.is_none_or(|n| n > now),
                "waiting for the past at {now}"
            );
            continue;
        }
        ticks.push(tick);
        let again = timer.poll(now, tz);
        assert_eq!(again, Tick::Wait(timer.next()), "second poll at {now}");
    }
    ticks
}

/// Every whole minute from `from` up to, not including, `to`.
fn minutes(from: &str, to: &str) -> impl Iterator<Item = DateTime<Utc>> {
    let (from, to) = (at(from), at(to));
    (0..)
        .map(move |m| from + TimeDelta::minutes(m))
        .take_while(move |t| *t < to)
}

#[test]
fn on_time_fires_exactly_once() {
    let mut t = timer("0 * * * *", false, None, "2026-05-04T09:30:00Z", UTC);
    assert_eq!(t.next(), Some(at("2026-05-04T10:00:00Z")));
    let steps = [
        ("2026-05-04T09:59:59Z", wait("2026-05-04T10:00:00Z")),
        ("2026-05-04T10:00:00Z", fire("2026-05-04T10:00:00Z", false)),
        ("2026-05-04T10:00:00Z", wait("2026-05-04T11:00:00Z")),
        ("2026-05-04T10:00:30Z", wait("2026-05-04T11:00:00Z")),
    ];
    for (now, want) in steps {
        assert_eq!(t.poll(at(now), UTC), want, "at {now}");
    }
    assert_eq!(t.last_slot(), Some(at("2026-05-04T10:00:00Z")));
    assert_eq!(t.schedule().as_str(), "0 * * * *");
}

#[test]
fn grace_decides_between_on_time_and_late() {
    let cases = [
        (
            "2026-05-04T10:00:00Z",
            false,
            fire("2026-05-04T10:00:00Z", false),
        ),
        (
            "2026-05-04T10:00:59Z",
            false,
            fire("2026-05-04T10:00:00Z", false),
        ),
        (
            "2026-05-04T10:01:00Z",
            false,
            fire("2026-05-04T10:00:00Z", false),
        ),
        (
            "2026-05-04T10:01:01Z",
            false,
            missed("2026-05-04T10:00:00Z"),
        ),
        (
            "2026-05-04T10:01:01Z",
            true,
            fire("2026-05-04T10:00:00Z", true),
        ),
    ];
    for (now, catch_up, want) in cases {
        let mut t = timer("0 * * * *", catch_up, None, "2026-05-04T09:30:00Z", UTC);
        assert_eq!(t.poll(at(now), UTC), want, "at {now}, catch-up {catch_up}");
    }
}

#[test]
fn first_start_makes_nothing_up() {
    for catch_up in [false, true] {
        // Started 20 minutes after a slot, and exactly on one.
        for now in ["2026-05-04T10:20:00Z", "2026-05-04T10:00:00Z"] {
            let mut t = timer("0 * * * *", catch_up, None, now, UTC);
            assert_eq!(t.next(), Some(at("2026-05-04T11:00:00Z")));
            assert_eq!(t.poll(at(now), UTC), wait("2026-05-04T11:00:00Z"));
            assert_eq!(t.last_slot(), None);
        }
    }
}

#[test]
fn restart_coalesces_missed_slots_into_one() {
    // Down from 05-01 02:00 until 05-04 10:00: the slots of 05-02, 05-03 and 05-04 passed.
    let cases = [
        (true, fire("2026-05-04T02:00:00Z", true)),
        (false, missed("2026-05-04T02:00:00Z")),
    ];
    for (catch_up, want) in cases {
        let mut t = timer(
            "0 2 * * *",
            catch_up,
            Some("2026-05-01T02:00:00Z"),
            "2026-05-04T10:00:00Z",
            UTC,
        );
        let ticks = drive(
            &mut t,
            UTC,
            minutes("2026-05-04T10:00:00Z", "2026-05-05T01:00:00Z"),
        );
        assert_eq!(ticks, [want]);
        assert_eq!(t.last_slot(), Some(at("2026-05-04T02:00:00Z")));
        assert_eq!(t.next(), Some(at("2026-05-05T02:00:00Z")));
    }
}

#[test]
fn restart_with_nothing_missed_waits() {
    let mut t = timer(
        "0 2 * * *",
        true,
        Some("2026-05-04T02:00:00Z"),
        "2026-05-04T10:00:00Z",
        UTC,
    );
    assert_eq!(
        t.poll(at("2026-05-04T10:00:00Z"), UTC),
        wait("2026-05-05T02:00:00Z")
    );
}

#[test]
fn restart_just_after_a_slot_fires_it_on_time() {
    // 06:00 and 07:00 were missed, but 08:00 is 30 s ago: one on-time run covers all three.
    for catch_up in [false, true] {
        let mut t = timer(
            "0 * * * *",
            catch_up,
            Some("2026-05-04T05:00:00Z"),
            "2026-05-04T08:00:30Z",
            UTC,
        );
        let ticks = drive(&mut t, UTC, [at("2026-05-04T08:00:30Z")]);
        assert_eq!(ticks, [fire("2026-05-04T08:00:00Z", false)]);
    }
}

#[test]
fn clock_jump_forward_handles_the_skipped_slots_once() {
    let cases = [
        (true, fire("2026-05-04T13:00:00Z", true)),
        (false, missed("2026-05-04T13:00:00Z")),
    ];
    for (catch_up, jumped) in cases {
        let mut t = timer("0 * * * *", catch_up, None, "2026-05-04T08:30:00Z", UTC);
        // Running normally, then the clock steps from 09:05 to 13:20.
        let times = minutes("2026-05-04T08:30:00Z", "2026-05-04T09:06:00Z")
            .chain(minutes("2026-05-04T13:20:00Z", "2026-05-04T14:01:00Z"));
        let ticks = drive(&mut t, UTC, times);
        let want = [
            fire("2026-05-04T09:00:00Z", false),
            jumped,
            fire("2026-05-04T14:00:00Z", false),
        ];
        assert_eq!(ticks, want, "catch-up {catch_up}");
    }
}

#[test]
fn long_suspend_of_a_frequent_job_is_one_tick() {
    // Three days asleep under a 10-minute schedule: 432 slots passed, one is handled.
    let cases = [
        (true, fire("2026-05-07T10:00:00Z", true)),
        (false, missed("2026-05-07T10:00:00Z")),
    ];
    for (catch_up, want) in cases {
        let mut t = timer(
            "every 10m",
            catch_up,
            Some("2026-05-04T10:00:00Z"),
            "2026-05-04T10:05:00Z",
            UTC,
        );
        let ticks = drive(
            &mut t,
            UTC,
            [at("2026-05-04T10:05:00Z"), at("2026-05-07T10:05:00Z")],
        );
        assert_eq!(ticks, [want]);
        assert_eq!(t.next(), Some(at("2026-05-07T10:10:00Z")));
    }
}

#[test]
fn clock_jump_backward_never_fires_a_slot_twice() {
    let mut t = timer("0 * * * *", true, None, "2026-05-04T09:50:00Z", UTC);
    // 10:00 fires, then the clock steps back from 10:05 to 09:10.
    let times = minutes("2026-05-04T09:50:00Z", "2026-05-04T10:06:00Z")
        .chain(minutes("2026-05-04T09:10:00Z", "2026-05-04T11:01:00Z"));
    let ticks = drive(&mut t, UTC, times);
    let want = [
        fire("2026-05-04T10:00:00Z", false),
        fire("2026-05-04T11:00:00Z", false),
    ];
    assert_eq!(ticks, want);
}

#[test]
fn backward_jump_within_a_day_keeps_waiting_for_the_slot_after_the_last() {
    // The last slot is 23 h ahead of the corrected clock: still trusted.
    let mut t = timer(
        "0 2 * * *",
        false,
        Some("2026-05-05T02:00:00Z"),
        "2026-05-04T03:00:00Z",
        UTC,
    );
    assert_eq!(
        t.poll(at("2026-05-04T03:00:00Z"), UTC),
        wait("2026-05-06T02:00:00Z")
    );
    assert_eq!(t.last_slot(), Some(at("2026-05-05T02:00:00Z")));
}

#[test]
fn last_slot_far_in_the_future_is_forgotten() {
    // Persisted while the clock read 2031; corrected since.
    let mut t = timer(
        "0 * * * *",
        true,
        Some("2031-01-01T00:00:00Z"),
        "2026-05-04T10:20:00Z",
        UTC,
    );
    assert_eq!(t.last_slot(), None);
    assert_eq!(t.next(), Some(at("2026-05-04T11:00:00Z")));
    let ticks = drive(
        &mut t,
        UTC,
        minutes("2026-05-04T10:20:00Z", "2026-05-04T11:01:00Z"),
    );
    assert_eq!(ticks, [fire("2026-05-04T11:00:00Z", false)]);
}

#[test]
fn clock_corrected_from_the_future_while_running_resumes_from_now() {
    let mut t = timer("0 * * * *", true, None, "2031-01-01T00:30:00Z", UTC);
    let times = minutes("2031-01-01T00:30:00Z", "2031-01-01T01:01:00Z")
        .chain(minutes("2026-05-04T10:20:00Z", "2026-05-04T11:01:00Z"));
    let ticks = drive(&mut t, UTC, times);
    let want = [
        fire("2031-01-01T01:00:00Z", false),
        fire("2026-05-04T11:00:00Z", false),
    ];
    assert_eq!(ticks, want);

    // Started while the clock was wrong, corrected before the first slot.
    let mut t = timer("0 * * * *", true, None, "2031-01-01T00:30:00Z", UTC);
    assert_eq!(
        t.poll(at("2026-05-04T10:20:00Z"), UTC),
        wait("2026-05-04T11:00:00Z")
    );
}

#[test]
fn wait_is_none_when_no_slot_is_left() {
    let mut t = timer("@yearly", true, None, "5000-06-01T00:00:00Z", UTC);
    assert_eq!(t.next(), None);
    assert_eq!(t.poll(at("5000-07-01T00:00:00Z"), UTC), Tick::Wait(None));
}

#[test]
fn every_keeps_its_phase_across_restarts() {
    let mut t = timer("every 2h", false, None, "2026-05-04T10:15:00Z", Berlin);
    assert_eq!(
        t.poll(at("2026-05-04T10:15:00Z"), Berlin),
        wait("2026-05-04T12:00:00Z")
    );
    let mut t = timer(
        "every 2h",
        false,
        Some("2026-05-04T12:00:00Z"),
        "2026-05-04T12:30:00Z",
        Berlin,
    );
    assert_eq!(
        t.poll(at("2026-05-04T12:30:00Z"), Berlin),
        wait("2026-05-04T14:00:00Z")
    );
}

#[test]
fn frequent_slots_polled_late_run_once() {
    // Slots at :00 and :30; the scheduler wakes at :50, when both are within the grace.
    let mut t = timer("every 30s", false, None, "2026-05-04T09:59:59Z", UTC);
    let ticks = drive(&mut t, UTC, [at("2026-05-04T10:00:50Z")]);
    assert_eq!(ticks, [fire("2026-05-04T10:00:30Z", false)]);
}

/// A day and a half around each transition, polled every minute: the exact fire list, all on
/// time. Local times are in comments.
#[test]
fn dst_days_through_the_timer() {
    #[rustfmt::skip]
    let cases: [(&str, Tz, &str, &str, &[&str]); 6] = [
        ("30 2 * * *", Berlin, "2026-03-28T12:00:00Z", "2026-03-30T12:00:00Z", &[
            "2026-03-29T01:00:00Z", // 03:00 CEST, the end of the gap
            "2026-03-30T00:30:00Z", // 02:30 CEST
        ]),
        ("30 2 * * *", Berlin, "2026-10-24T12:00:00Z", "2026-10-26T12:00:00Z", &[
            "2026-10-25T00:30:00Z", // 02:30 CEST, the first pass only
            "2026-10-26T01:30:00Z", // 02:30 CET
        ]),
        ("30 2 * * *", New_York, "2026-03-07T12:00:00Z", "2026-03-09T12:00:00Z", &[
            "2026-03-08T07:00:00Z", // 03:00 EDT, the end of the gap
            "2026-03-09T06:30:00Z", // 02:30 EDT
        ]),
        ("30 1 * * *", New_York, "2026-10-31T12:00:00Z", "2026-11-02T12:00:00Z", &[
            "2026-11-01T05:30:00Z", // 01:30 EDT, the first pass only
            "2026-11-02T06:30:00Z", // 01:30 EST
        ]),
        ("30 2 * * *", New_York, "2026-10-31T12:00:00Z", "2026-11-02T12:00:00Z", &[
            "2026-11-01T07:30:00Z", // 02:30 EST: not repeated in New York
            "2026-11-02T07:30:00Z",
        ]),
        ("0,30 2 * * *", Berlin, "2026-03-28T12:00:00Z", "2026-03-30T12:00:00Z", &[
            "2026-03-29T01:00:00Z", // 02:00 and 02:30 coalesce at 03:00 CEST
            "2026-03-30T00:00:00Z",
            "2026-03-30T00:30:00Z",
        ]),
    ];
    for (text, tz, from, to, slots) in cases {
        let mut t = timer(text, false, None, from, tz);
        let ticks = drive(&mut t, tz, minutes(from, to));
        let want: Vec<Tick> = slots.iter().map(|s| fire(s, false)).collect();
        assert_eq!(ticks, want, "{text:?} in {tz}");
    }
}

#[test]
fn hourly_through_the_timer_on_transition_days() {
    // Whole-hour zones: every real hour is a local :00, so one fire per UTC hour of the local
    // day: 25 on the fall-back day, 23 on the spring-forward day.
    let cases = [
        (Berlin, "2026-10-24T22:00:00Z", "2026-10-25T23:00:00Z", 25),
        (Berlin, "2026-03-28T23:00:00Z", "2026-03-29T22:00:00Z", 23),
        (New_York, "2026-11-01T04:00:00Z", "2026-11-02T05:00:00Z", 25),
        (New_York, "2026-03-08T05:00:00Z", "2026-03-09T04:00:00Z", 23),
    ];
    for (tz, day_start, day_end, count) in cases {
        let start = (at(day_start) - TimeDelta::minutes(1)).to_rfc3339();
        let mut t = timer("0 * * * *", false, None, &start, tz);
        let ticks = drive(&mut t, tz, minutes(&start, day_end));
        let want: Vec<Tick> = (0..count)
            .map(|h| Tick::Fire {
                slot: at(day_start) + TimeDelta::hours(h),
                late: false,
            })
            .collect();
        assert_eq!(ticks, want, "{tz} from {day_start}");
    }
}
