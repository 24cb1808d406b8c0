//! Health's deprecated `on-change` and `webhook` keys, kept for one release as aliases: each
//! stands for an implicit `[notify.NAME]` channel, so a health transition reaches it through
//! the one delivery system (outbox, retries, `atpred_notifications_total`) like any channel.
//!
//! `on-change` becomes a `command` channel that also sets the old `ATPRED_JOB`,
//! `ATPRED_CHECK`, `ATPRED_STATUS`, `ATPRED_PREVIOUS` and `ATPRED_MESSAGE`; `webhook` a
//! `webhook` channel, whose JSON holds the old body's fields (`job`, `check`, `status`,
//! `previous`, `message`) among the event's. Both are bounded by the job's `check-timeout`.
//! Their names, `health.<job>.on-change` and `health.<job>.webhook`, cannot clash with a
//! configured channel (a `.` is not allowed there).

use std::collections::BTreeMap;

use super::{ChannelKind, Config, HealthSpec, JobSpec, NotifyChannel};
use crate::ids::JobName;

/// The implicit channels of health job `job`.
pub fn channels(job: &JobName, spec: &HealthSpec) -> Vec<NotifyChannel> {
    let mut out = Vec::new();
    if let Some(argv) = &spec.on_change {
        out.push(NotifyChannel {
            name: format!("health.{job}.on-change"),
            kind: ChannelKind::Command {
                argv: argv.clone(),
                health_env: true,
            },
            timeout: spec.check_timeout,
        });
    }
    if let Some(url) = &spec.webhook {
        out.push(NotifyChannel {
            name: format!("health.{job}.webhook"),
            kind: ChannelKind::Webhook { url: url.clone() },
            timeout: spec.check_timeout,
        });
    }
    out
}

/// Adds every health job's implicit channels to `notify`.
pub(super) fn add(config: &Config, notify: &mut BTreeMap<String, NotifyChannel>) {
    for job in config.jobs.values() {
        if let JobSpec::Health(spec) = &job.spec {
            for channel in channels(&job.name, spec) {
                notify.insert(channel.name.clone(), channel);
            }
        }
    }
}
