//! `kind = "health"`: runs its checks concurrently, each under `check-timeout`, records the
//! results on the [`board::Board`], logs transitions once and alerts on them.
//!
//! A hung dependency (a frozen PostgreSQL, a paused Redis, an HTTP server that never answers)
//! fails only its own check at its timeout: every check is its own future, dropped when its
//! deadline passes, and none waits for another. The run fails when any check fails, so
//! `atprectl run health --wait` says so too; warnings do not fail it.

mod alert;
pub mod board;
mod disk;
mod freshness;
pub(crate) mod http;
mod postgres;
mod redis;
mod runs;

use std::time::Instant;

use futures::future::join_all;
use serde_json::json;

use super::{JobContext, JobError, JobReport};
use crate::config::{CheckKind, HealthSpec};
use crate::protocol::HealthStatus;
use board::Probe;

pub async fn run(ctx: &JobContext, spec: &HealthSpec) -> Result<JobReport, JobError> {
    if ctx.dry_run {
        let names: Vec<_> = spec.checks.iter().map(|c| c.name()).collect();
        return Ok(JobReport {
            message: format!("would run the checks {}", names.join(", ")),
            details: json!({ "checks": names }),
        });
    }
    let probes = join_all(spec.checks.iter().map(|kind| probe(ctx, spec, *kind))).await;
    if ctx.cancel.is_cancelled() {
        return Err(JobError::Cancelled);
    }
    let mut details = serde_json::Map::new();
    let mut failed = Vec::new();
    let mut warned = Vec::new();
    for (kind, probe) in spec.checks.iter().zip(probes) {
        let name = kind.name();
        match probe.status {
            HealthStatus::Fail => failed.push(format!("{name}: {}", probe.message)),
            HealthStatus::Warn => warned.push(name),
            HealthStatus::Ok => {}
        }
        details.insert(
            name.into(),
            json!({ "status": probe.status, "message": probe.message }),
        );
        if let Some(t) = ctx
            .health
            .record(&ctx.job.name, name, probe, chrono::Utc::now())
        {
            log_transition(&t);
            if t.alerts() {
                alert::send(ctx, spec, &t);
            }
        }
    }
    let details = serde_json::Value::Object(details);
    if !failed.is_empty() {
        return Err(JobError::Permanent {
            message: format!("failing: {}", failed.join("; ")),
            details,
        });
    }
    let message = if warned.is_empty() {
        format!("{} checks ok", spec.checks.len())
    } else {
        format!("warnings: {}", warned.join(", "))
    };
    Ok(JobReport { message, details })
}

/// Runs one check under the timeout; a check that does not finish in time fails.
async fn probe(ctx: &JobContext, spec: &HealthSpec, kind: CheckKind) -> Probe {
    let t0 = Instant::now();
    let check = async {
        match kind {
            CheckKind::Postgres => postgres::check(&ctx.config).await,
            CheckKind::Redis => redis::check(&ctx.config.redis).await,
            CheckKind::Http => http::check(spec, ctx.now).await,
            CheckKind::Disk => disk::check(spec).await,
            CheckKind::BackupFreshness => freshness::check(&ctx.config, spec, ctx.now).await,
            CheckKind::Jobs => runs::check(&ctx.config, &ctx.recent_runs, spec.failing_runs),
        }
    };
    let result = tokio::select! {
        r = tokio::time::timeout(spec.check_timeout, check) => r.ok(),
        () = ctx.cancel.cancelled() => return Probe::new(HealthStatus::Fail, "cancelled"),
    };
    match result {
        Some(mut p) => {
            if p.latency.is_zero() {
                p.latency = t0.elapsed();
            }
            p
        }
        None => {
            let mut p = Probe::new(
                HealthStatus::Fail,
                format!(
                    "no answer within {}",
                    humantime::format_duration(spec.check_timeout)
                ),
            );
            p.latency = t0.elapsed();
            p
        }
    }
}

fn log_transition(t: &board::Transition) {
    let (check, status, previous) = (t.check.as_str(), t.status.as_str(), t.previous_str());
    match t.status {
        HealthStatus::Ok => tracing::info!(
            check,
            status,
            previous,
            "{check} is ok (was {previous}): {}",
            t.message
        ),
        HealthStatus::Warn => tracing::warn!(
            check,
            status,
            previous,
            "{check} warns (was {previous}): {}",
            t.message
        ),
        HealthStatus::Fail => tracing::error!(
            check,
            status,
            previous,
            "{check} fails (was {previous}): {}",
            t.message
        ),
    }
}
