//! The `command` channel: the argv (no shell) through [`crate::process`] — its own process
//! group, a scrubbed environment, killed as a group at the channel's timeout or the daemon's
//! stop — with the event in `ATPRED_EVENT_*` variables ([`Event::env`]). Exit status 0 is
//! delivered; any other is a failure worth retrying (the script's mail relay may be down).
//! Health's deprecated `on-change` also gets its old variables ([`health_vars`]).

use tokio_util::sync::CancellationToken;

use super::{Failed, one_line};
use crate::alerts::event::Event;
use crate::config::NotifyChannel;
use crate::process::{self, ProcessSpec};

pub async fn run(
    channel: &NotifyChannel,
    argv: &[String],
    health_env: bool,
    event: &Event,
    stop: &CancellationToken,
) -> Result<String, Failed> {
    let mut spec = ProcessSpec::new(&argv[0]).args(&argv[1..]);
    for (key, value) in event.env() {
        spec = spec.env(key, value);
    }
    if health_env {
        for (key, value) in health_vars(event) {
            spec = spec.env(key, value);
        }
    }
    let name = channel.name.as_str();
    let run = process::run(&spec, stop, |_, line| {
        tracing::info!(channel = name, "notify command: {line}");
    });
    // Dropping the future at the deadline kills the command's process group.
    let out = match tokio::time::timeout(channel.timeout, run).await {
        Ok(Ok(out)) => out,
        Ok(Err(e)) => return Err(Failed::retry(e.to_string())),
        Err(_) => {
            return Err(Failed::retry(format!(
                "{} did not end within {}; killed",
                argv[0],
                humantime::format_duration(channel.timeout)
            )));
        }
    };
    let status = process::describe_status(&out.status);
    if out.status.success() {
        let last = out.stdout_tail.last().map(|l| one_line(l, 200));
        return Ok(match last {
            Some(l) if !l.is_empty() => format!("{status}: {l}"),
            _ => status,
        });
    }
    Err(Failed::retry(format!(
        "{} ended with {status}: {}",
        argv[0],
        one_line(&out.stderr_summary(3), 300)
    )))
}

/// The variables health's deprecated `on-change` command got, from a `health` event.
fn health_vars(event: &Event) -> Vec<(&'static str, String)> {
    let field = |v: &Option<String>| v.clone().unwrap_or_default();
    vec![
        ("ATPRED_JOB", field(&event.job)),
        ("ATPRED_CHECK", field(&event.check)),
        ("ATPRED_STATUS", field(&event.status)),
        ("ATPRED_PREVIOUS", field(&event.previous)),
        ("ATPRED_MESSAGE", event.message.clone()),
    ]
}
