//! `atpred --check [--from T]`: each job with its next three fire times after T (default: now),
//! marked as `atprectl schedule` marks them.

use std::fmt::Write;

use chrono::{DateTime, Utc};

use crate::config::Config;

pub fn describe_jobs(config: &Config, now: DateTime<Utc>) -> String {
    let tz = config.daemon.timezone;
    let mut out = format!(
        "{}: ok, {} job(s), time zone {}\n",
        config.source.display(),
        config.jobs.len(),
        tz.name()
    );
    for job in config.jobs.values() {
        let _ = write!(out, "{} ({})", job.name, job.spec.kind());
        match &job.schedule {
            None if job.spec.kind() == crate::config::Kind::WalArchive => {
                out.push_str(": continuous, while the daemon runs\n");
            }
            None => out.push_str(": no schedule, runs on demand\n"),
            Some(schedule) => {
                let _ = writeln!(out, ": \"{schedule}\"");
                for fire in super::preview(schedule, tz, now, 3) {
                    let _ = writeln!(out, "  {}", fire.line(tz));
                }
            }
        }
    }
    out
}
