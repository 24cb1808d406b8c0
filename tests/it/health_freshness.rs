//! The backup-freshness check against the real scheduler's notion of time: a daily backup job
//! whose slot passed (plus its timeout) with no verified backup fails the check; a verified
//! backup taken since makes it ok; `backup-max-age` fails an old backup whatever the schedule.

use chrono::{Timelike, Utc};

use crate::health_support::{Stack, health_now};

/// A daily cron line for three minutes ago (UTC), so its last slot is due now with a 1 m timeout.
fn three_minutes_ago() -> String {
    let t = Utc::now() - chrono::TimeDelta::minutes(3);
    format!("{} {} * * *", t.minute(), t.hour())
}

fn nightly(schedule: &str) -> String {
    format!(
        "[jobs.nightly]\nkind = \"backup\"\nschedule = \"{schedule}\"\ntimeout = \"1m\"\nverify = \"checksum\"\n"
    )
}

#[test]
fn a_missed_scheduled_backup_fails_freshness_until_one_is_taken() {
    let stack = Stack::new();
    let schedule = three_minutes_ago();
    let daemon = stack
        .daemon("checks = [\"backup-freshness\"]")
        .toml(&nightly(&schedule))
        .spawn();
    let (code, checks) = health_now(&daemon);
    let fresh = &checks["backup-freshness"];
    assert_eq!((code, &fresh["status"]), (1, &"fail".into()), "{fresh}");
    let message = fresh["message"].as_str().unwrap();
    assert!(
        message.contains("nightly: no verified backup of the run due")
            && message.contains("(newest: none ever)"),
        "{message}"
    );

    let run = daemon.ctl(["run", "nightly", "--wait"]);
    assert_eq!(run.status, 0, "{run:?}\n{}", daemon.log());
    let (code, checks) = health_now(&daemon);
    let fresh = &checks["backup-freshness"];
    assert_eq!((code, &fresh["status"]), (0, &"ok".into()), "{fresh}");
    assert!(
        fresh["message"]
            .as_str()
            .unwrap()
            .starts_with("nightly: newest verified"),
        "{fresh}"
    );
}

#[test]
fn a_backup_older_than_backup_max_age_fails_freshness() {
    let stack = Stack::new();
    // On demand only: the schedule cannot fail it, the age can.
    let daemon = stack
        .daemon("checks = [\"backup-freshness\"]\nbackup-max-age = \"1s\"")
        .toml("[jobs.nightly]\nkind = \"backup\"\nverify = \"checksum\"\n")
        .spawn();
    let (code, checks) = health_now(&daemon);
    assert_eq!(code, 1, "no backup at all with a max age: {checks:#?}");
    let run = daemon.ctl(["run", "nightly", "--wait"]);
    assert_eq!(run.status, 0, "{run:?}");
    // The backup started before the run's slow verification ended: by now it is over 1 s old.
    assert!(crate::harness::wait_until(
        std::time::Duration::from_secs(10),
        || {
            let (code, checks) = health_now(&daemon);
            code == 1
                && checks["backup-freshness"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("more than backup-max-age 1s")
        }
    ));
}
