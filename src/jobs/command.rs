//! `kind = "command"`: runs a configured argv (no shell) in its own process group.
//!
//! Output lines go to the log with the run's fields; a non-zero exit fails the run with the
//! tail of stderr. Exit codes 75 (EX_TEMPFAIL) count as transient, so `retries` applies.

use serde_json::json;

use super::{JobContext, JobError, JobReport};
use crate::config::CommandSpec;
use crate::process::{self, ProcessError, ProcessSpec, Stream};

/// Output lines logged per run; the rest is counted, not logged.
const MAX_LOGGED_LINES: usize = 1000;
const EX_TEMPFAIL: i32 = 75;

pub async fn run(ctx: &JobContext, spec: &CommandSpec) -> Result<JobReport, JobError> {
    if ctx.dry_run {
        return Ok(JobReport {
            message: format!("would run {}", shell_words(&spec.argv)),
            details: json!({ "argv": spec.argv }),
        });
    }
    let mut proc_spec = ProcessSpec::new(&spec.argv[0])
        .args(&spec.argv[1..])
        .env("ATPRED_JOB", ctx.job.name.as_str())
        .env("ATPRED_RUN_ID", ctx.run_id.as_str());
    proc_spec.cwd = spec.working_dir.clone();
    for (k, v) in &spec.env {
        proc_spec = proc_spec.env(k, v);
    }
    ctx.progress(format!("running {}", shell_words(&spec.argv)));
    let mut logged = 0usize;
    let output = process::run(&proc_spec, &ctx.cancel, |stream, line| {
        logged += 1;
        if logged <= MAX_LOGGED_LINES {
            let stream = match stream {
                Stream::Stdout => "stdout",
                Stream::Stderr => "stderr",
            };
            tracing::info!(stream, "{line}");
        }
    })
    .await;
    let output = match output {
        Ok(o) => o,
        Err(ProcessError::Cancelled) => return Err(JobError::Cancelled),
        Err(e) => return Err(JobError::permanent(e.to_string())),
    };
    let status = process::describe_status(&output.status);
    let details = json!({ "exit_code": output.status.code(), "output_lines": logged });
    if output.status.success() {
        return Ok(JobReport {
            message: format!("{} ended with {status}", spec.argv[0]),
            details,
        });
    }
    let tail = output.stderr_summary(5);
    let message = if tail.is_empty() {
        format!("{} failed with {status}", spec.argv[0])
    } else {
        format!("{} failed with {status}: {tail}", spec.argv[0])
    };
    if output.status.code() == Some(EX_TEMPFAIL) {
        Err(JobError::Transient { message, details })
    } else {
        Err(JobError::Permanent { message, details })
    }
}

/// The argv as a reader would type it (for messages only; nothing is ever run through a shell).
fn shell_words(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:@%+,".contains(c))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}
