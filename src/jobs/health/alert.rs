//! Alerts on a transition: an event for the `[daemon] notify` channels (through the outbox),
//! and the deprecated aliases kept for one release, the `on-change` command (argv, no shell,
//! in its own process group) and the `webhook` JSON POST, each bounded by `check-timeout`.
//! Their failures are logged and never fail the health run.

use serde_json::json;

use super::board::Transition;
use crate::config::HealthSpec;
use crate::jobs::JobContext;
use crate::process::{self, ProcessSpec};
use crate::secret::SecretUrl;

pub async fn send(ctx: &JobContext, spec: &HealthSpec, t: &Transition) {
    if let Some(notifier) = &ctx.notifier {
        notifier.daemon(&crate::alerts::daemon_events::health(
            ctx.job.name.as_str(),
            &t.check,
            t.status.as_str(),
            t.previous_str(),
            &t.message,
        ));
    }
    if let Some(argv) = &spec.on_change {
        run_command(ctx, spec, argv, t).await;
    }
    if let Some(url) = &spec.webhook {
        post(ctx, spec, url, t).await;
    }
}

async fn run_command(ctx: &JobContext, spec: &HealthSpec, argv: &[String], t: &Transition) {
    let proc_spec = ProcessSpec::new(&argv[0])
        .args(&argv[1..])
        .env("ATPRED_JOB", ctx.job.name.as_str())
        .env("ATPRED_CHECK", &t.check)
        .env("ATPRED_STATUS", t.status.as_str())
        .env("ATPRED_PREVIOUS", t.previous_str())
        .env("ATPRED_MESSAGE", &t.message);
    let check = t.check.as_str();
    // Dropping the future at the deadline kills the command's process group.
    let run = process::run(&proc_spec, &ctx.cancel, |_, line| {
        tracing::info!(check, "on-change: {line}");
    });
    match tokio::time::timeout(spec.check_timeout, run).await {
        Ok(Ok(out)) if out.status.success() => {}
        Ok(Ok(out)) => tracing::warn!(
            check,
            "on-change command {} ended with {}: {}",
            argv[0],
            process::describe_status(&out.status),
            out.stderr_summary(3)
        ),
        Ok(Err(e)) => tracing::warn!(check, "on-change command {}: {e}", argv[0]),
        Err(_) => tracing::warn!(
            check,
            "on-change command {} did not end within {}; killed",
            argv[0],
            humantime::format_duration(spec.check_timeout)
        ),
    }
}

async fn post(ctx: &JobContext, spec: &HealthSpec, url: &SecretUrl, t: &Transition) {
    let check = t.check.as_str();
    let body = json!({
        "job": ctx.job.name,
        "check": t.check,
        "status": t.status,
        "previous": t.previous_str(),
        "message": t.message,
    });
    let shown = url.redacted();
    let client = match super::http::client(Some(spec.check_timeout), None) {
        Ok(c) => c,
        Err(e) => return tracing::warn!(check, "webhook: {e}"),
    };
    let request = client
        .post(url.expose())
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string());
    match request.send().await {
        Ok(r) if r.status().is_success() => {}
        Ok(r) => tracing::warn!(check, "webhook {shown} answered {}", r.status().as_u16()),
        Err(e) => tracing::warn!(check, "webhook {shown}: {}", super::http::describe(e)),
    }
}
