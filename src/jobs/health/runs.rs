//! The jobs check: a job whose last `failing-runs` runs all failed (or timed out) warns, so a
//! failing rotate or command job is visible. Skipped ticks, cancelled runs, dry runs and
//! health jobs themselves are not counted.

use super::board::Probe;
use crate::config::{Config, JobSpec};
use crate::protocol::{HealthStatus, Outcome, RunRecord};

/// `recent` is the run history, newest first.
pub fn check(config: &Config, recent: &[RunRecord], failing_runs: u32) -> Probe {
    let n = failing_runs as usize;
    let mut failing = Vec::new();
    for job in config
        .jobs
        .values()
        .filter(|j| !matches!(j.spec, JobSpec::Health(_)))
    {
        let last: Vec<&RunRecord> = recent
            .iter()
            .filter(|r| r.job == job.name && !r.dry_run)
            .filter(|r| !matches!(r.outcome, Outcome::Skipped | Outcome::Cancelled))
            .take(n)
            .collect();
        if last.len() == n && last.iter().all(|r| !r.outcome.is_success()) {
            failing.push(format!("{} failed its last {n} run(s)", job.name));
        }
    }
    if failing.is_empty() {
        Probe::new(HealthStatus::Ok, "no job keeps failing")
    } else {
        Probe::new(HealthStatus::Warn, failing.join("; "))
    }
}
