#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Why tokio-cron-scheduler (0.15) does not decide when our jobs run.
//!
//! Each test asserts a defect of the crate as it is, so it fails once the crate is fixed: when
//! one does, reconsider whether the crate could schedule jobs, and then delete the test. Nothing
//! here waits on real time: the crate's own parse of a job is read back from the job it builds.

use chrono::{DateTime, FixedOffset, TimeZone, Timelike, Utc};
use chrono_tz::Europe::Berlin;
use chrono_tz::UTC;
use tokio_cron_scheduler::{Job, JobSchedulerError};

use atpred::scheduler::Schedule;

fn utc(y: i32, mo: u32, d: u32, h: u32) -> DateTime<Utc> {
    Utc.with_ymd_and_hms(y, mo, d, h, 0, 0)
        .single()
        .expect("test time")
}

#[test]
fn rejects_a_standard_five_field_line() {
    // It requires a seconds field; every crontab in the world has five fields.
    let result = Job::new("30 2 * * *", |_id, _scheduler| {});
    assert!(matches!(result, Err(JobSchedulerError::ParseSchedule)));
    assert!(Schedule::parse("30 2 * * *").is_ok());
}

#[test]
fn combines_day_of_month_and_day_of_week_with_and() {
    // cron runs "13th of the month, Friday" on every 13th and every Friday. The crate parses with
    // croner's `dom_and_dow(true)` and runs only on a Friday the 13th.
    let mut job = Job::new("0 0 0 13 * Fri", |_id, _scheduler| {}).expect("six fields parse");
    let cron = job
        .job_data()
        .expect("job data")
        .schedule()
        .expect("the schedule the scheduler reads back");
    let start = utc(2026, 1, 1, 0);
    let theirs = cron.iter_after(start).next();
    assert_eq!(theirs, Some(utc(2026, 2, 13, 0)));

    // 2026-01-02 is the first Friday.
    let ours = Schedule::parse("0 0 13 * 5").expect("schedule");
    assert_eq!(ours.next_after(start, UTC), Some(utc(2026, 1, 2, 0)));
}

#[test]
fn freezes_the_utc_offset_when_the_job_is_created() {
    // `Job::new_tz` stores one offset (the zone's at creation) and the scheduler loop computes
    // every next tick in `FixedOffset::east_opt(time_offset_seconds)` (scheduler.rs in 0.15.1).
    // The steps below repeat that computation on the job's stored data.
    let mut job = Job::new_tz("0 0 2 * * *", Berlin, |_id, _scheduler| {}).expect("job");
    let data = job.job_data().expect("job data");
    assert!(
        [3600, 7200].contains(&data.time_offset_seconds),
        "one fixed offset, CET or CEST: {}",
        data.time_offset_seconds
    );
    let offset = FixedOffset::east_opt(data.time_offset_seconds).expect("offset");
    let cron = data.schedule().expect("schedule");
    let local_hour = |from: DateTime<Utc>| {
        let tick = cron
            .iter_after(from.with_timezone(&offset))
            .next()
            .expect("a next tick");
        tick.with_timezone(&Berlin).hour()
    };
    // Whatever the season the job was made in, it runs at the wrong hour in the other one.
    let hours = [
        local_hour(utc(2026, 1, 10, 12)),
        local_hour(utc(2026, 7, 10, 12)),
    ];
    assert!(hours.contains(&2), "{hours:?}");
    assert_ne!(hours, [2, 2], "a 02:00 Berlin job ran at 02:00 all year");

    let ours = Schedule::parse("0 2 * * *").expect("schedule");
    for from in [utc(2026, 1, 10, 12), utc(2026, 7, 10, 12)] {
        let next = ours.next_after(from, Berlin).expect("next");
        assert_eq!(next.with_timezone(&Berlin).hour(), 2);
    }
}
