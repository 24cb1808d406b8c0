//! The backup-freshness check: for each backup job, the newest verified backup against the
//! job's own schedule and against `backup-max-age`.
//!
//! A scheduled run is "due" once its slot plus the job's `timeout` (the longest a run may take)
//! has passed; the newest verified backup must have started at or after the last due slot.
//! The schedule is evaluated in `daemon.timezone`, exactly as the scheduler does, so there are
//! no false alarms from time zones or DST.

use chrono::{DateTime, TimeDelta, Utc};
use chrono_tz::Tz;

use super::board::Probe;
use crate::config::{Config, HealthSpec, JobConfig, JobSpec};
use crate::jobs::catalog::{self, State};
use crate::protocol::HealthStatus;
use crate::scheduler::Schedule;

pub async fn check(config: &Config, spec: &HealthSpec, now: DateTime<Utc>) -> Probe {
    let dir = config.daemon.backup_dir.clone();
    let entries = match tokio::task::spawn_blocking(move || catalog::list(&dir)).await {
        Ok(Ok(entries)) => entries,
        Ok(Err(_)) if !config.daemon.backup_dir.exists() => Vec::new(),
        Ok(Err(e)) => return Probe::new(HealthStatus::Fail, e.to_string()),
        Err(e) => return Probe::new(HealthStatus::Fail, format!("catalog: {e}")),
    };
    let tz = config.daemon.timezone;
    let mut status = HealthStatus::Ok;
    let mut notes = Vec::new();
    for job in config
        .jobs
        .values()
        .filter(|j| matches!(j.spec, JobSpec::Backup(_)))
    {
        let newest = entries
            .iter()
            .filter(|e| e.state == State::Verified)
            .filter_map(|e| e.manifest.as_ref())
            // A safety backup is of the restore's target, not of the job's database.
            .filter(|m| m.job == job.name.as_str() && !m.is_safety())
            .map(|m| m.started)
            .max();
        let (s, note) = judge(job, newest, spec.backup_max_age, now, tz);
        status = status.max(s);
        notes.push(note);
    }
    if notes.is_empty() {
        notes.push("no backup jobs".into());
    }
    Probe::new(status, notes.join("; "))
}

fn judge(
    job: &JobConfig,
    newest: Option<DateTime<Utc>>,
    max_age: Option<std::time::Duration>,
    now: DateTime<Utc>,
    tz: Tz,
) -> (HealthStatus, String) {
    let name = &job.name;
    let grace = TimeDelta::from_std(job.timeout).unwrap_or(TimeDelta::MAX);
    let due = job
        .schedule
        .as_ref()
        .and_then(|s| last_slot(s, now - grace, tz));
    if let Some(due) = due
        && newest.is_none_or(|n| n < due)
    {
        let last = newest.map_or("none ever".to_owned(), |n| n.to_rfc3339());
        return (
            HealthStatus::Fail,
            format!(
                "{name}: no verified backup of the run due {} (newest: {last})",
                due.with_timezone(&tz).format("%Y-%m-%d %H:%M %Z")
            ),
        );
    }
    match (newest, max_age) {
        (Some(n), Some(max)) if now - n > TimeDelta::from_std(max).unwrap_or(TimeDelta::MAX) => (
            HealthStatus::Fail,
            format!(
                "{name}: newest verified backup is {} old, more than backup-max-age {}",
                age(now - n),
                humantime::format_duration(max)
            ),
        ),
        (None, Some(_)) => (
            HealthStatus::Fail,
            format!("{name}: no verified backup at all"),
        ),
        (Some(n), _) => (
            HealthStatus::Ok,
            format!("{name}: newest verified {} ago", age(now - n)),
        ),
        (None, None) => (HealthStatus::Ok, format!("{name}: no backup yet, none due")),
    }
}

fn age(d: TimeDelta) -> String {
    let secs = u64::try_from(d.num_seconds()).unwrap_or(0);
    humantime::format_duration(std::time::Duration::from_secs(secs)).to_string()
}

/// The last slot of `schedule` at or before `at`. Searches back a widening window so that an
/// every-minute schedule costs about sixty steps and a yearly one a few hundred.
fn last_slot(schedule: &Schedule, at: DateTime<Utc>, tz: Tz) -> Option<DateTime<Utc>> {
    for window in [
        TimeDelta::hours(2),
        TimeDelta::days(2),
        TimeDelta::days(35),
        TimeDelta::days(800),
    ] {
        let mut from = at - window;
        let mut last = None;
        while let Some(slot) = schedule.next_after(from, tz) {
            if slot > at {
                break;
            }
            last = Some(slot);
            from = slot;
        }
        if last.is_some() {
            return last;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        s.parse().unwrap()
    }

    #[test]
    fn the_last_slot_is_found_in_the_time_zone() {
        let daily: Schedule = "30 2 * * *".parse().unwrap();
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        assert_eq!(
            last_slot(&daily, t("2026-11-28T12:00:00Z"), berlin),
            Some(t("2026-11-28T01:30:00Z"))
        );
        assert_eq!(
            last_slot(&daily, t("2026-11-28T01:29:00Z"), berlin),
            Some(t("2026-11-27T01:30:00Z"))
        );
        let often: Schedule = "every 15m".parse().unwrap();
        assert_eq!(
            last_slot(&often, t("2026-11-28T12:07:00Z"), chrono_tz::UTC),
            Some(t("2026-11-28T12:00:00Z"))
        );
    }
}
