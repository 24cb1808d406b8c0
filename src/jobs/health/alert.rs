//! Alerts on a transition: a `health` event for the `[daemon] notify` channels, the health
//! job's own `notify` channels, and the implicit channels of its deprecated `on-change` and
//! `webhook` keys ([`crate::config::health_alias`]), all through the outbox: a channel that is
//! slow, down or hanging never holds up or fails the health run.

use super::board::Transition;
use crate::config::HealthSpec;
use crate::jobs::JobContext;

pub fn send(ctx: &JobContext, spec: &HealthSpec, t: &Transition) {
    if let Some(notifier) = &ctx.notifier {
        let event = crate::alerts::daemon_events::health(
            ctx.job.name.as_str(),
            &t.check,
            t.status.as_str(),
            t.previous_str(),
            &t.message,
        );
        notifier.health(&ctx.job, spec, &event);
    }
}
