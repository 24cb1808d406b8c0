//! `atprectl`: one function per command, rendering tables or `--json`, mapping outcomes to
//! exit codes (0 ok, 1 job failed, 2 usage, 69 unreachable, 75 busy (also: another restore is
//! running), 76 protocol mismatch, 77 not permitted; 10-15 restore refusals and 130 Ctrl-C
//! while following a restore, in [`restore`]).

mod evidence;
mod pitr;
mod render;
mod restore;
mod retention;
mod schedule;

use std::process::ExitCode;

use clap::CommandFactory;

use crate::cli::{BackupsCommand, CtlArgs, CtlCommand, DaemonArgs};
use crate::client::{Client, ClientError};
use crate::config::VerifyLevel;
use crate::protocol::{ErrorCode, HealthStatus, Request, Response};

pub const EXIT_FAILED: u8 = 1;
pub const EXIT_USAGE: u8 = 2;
pub const EXIT_UNAVAILABLE: u8 = 69;
/// EX_TEMPFAIL: the daemon is at its connection limit; trying again later works.
pub const EXIT_BUSY: u8 = 75;
pub const EXIT_PROTOCOL: u8 = 76;
pub const EXIT_NOPERM: u8 = 77;

pub fn main(args: CtlArgs) -> ExitCode {
    match &args.command {
        CtlCommand::Completions { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(*shell, &mut CtlArgs::command(), "atprectl", &mut script);
            render::write_stdout(&script);
            return ExitCode::SUCCESS;
        }
        CtlCommand::Retention(r) => return ExitCode::from(retention::run(r, args.json)),
        CtlCommand::Schedule(s) => return ExitCode::from(schedule::run(s, args.json)),
        CtlCommand::Man { daemon } => {
            // The daemon is an administrator's command (section 8), atprectl a user's (1).
            let man = if *daemon {
                clap_mangen::Man::new(DaemonArgs::command()).section("8")
            } else {
                clap_mangen::Man::new(CtlArgs::command())
            };
            let mut page = Vec::new();
            return match man.render(&mut page) {
                Ok(()) => {
                    render::write_stdout(&page);
                    ExitCode::SUCCESS
                }
                Err(e) => fail(EXIT_FAILED, &e.to_string()),
            };
        }
        _ => {}
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => return fail(EXIT_FAILED, &format!("cannot start the runtime: {e}")),
    };
    match runtime.block_on(run(&args)) {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            let code = match e {
                ClientError::Unreachable { .. } => EXIT_UNAVAILABLE,
                ClientError::NotPermitted(_) => EXIT_NOPERM,
                ClientError::Busy(_) => EXIT_BUSY,
                ClientError::ProtocolMismatch(_) => EXIT_PROTOCOL,
                ClientError::Protocol(_) | ClientError::Closed => EXIT_FAILED,
            };
            fail(code, &e.to_string())
        }
    }
}

fn fail(code: u8, message: &str) -> ExitCode {
    eprintln!("atprectl: {message}");
    ExitCode::from(code)
}

async fn run(args: &CtlArgs) -> Result<u8, ClientError> {
    let mut client = Client::connect(&args.socket).await?;
    let request = match &args.command {
        CtlCommand::Status => Request::Status,
        CtlCommand::Jobs => Request::Jobs,
        CtlCommand::Run {
            job,
            wait,
            dry_run,
            force,
        } => Request::Run {
            job: match job.parse() {
                Ok(j) => j,
                Err(e) => return Ok(usage(&e)),
            },
            wait: *wait,
            dry_run: *dry_run,
            force: *force,
        },
        CtlCommand::Cancel { job } => match job.parse() {
            Ok(job) => Request::Cancel { job },
            Err(e) => return Ok(usage(&e)),
        },
        CtlCommand::History { job, limit } => Request::History {
            job: match job.as_deref().map(str::parse).transpose() {
                Ok(j) => j,
                Err(e) => return Ok(usage(&e)),
            },
            limit: *limit,
        },
        CtlCommand::Reload => Request::Reload,
        CtlCommand::Backups {
            action: None,
            remote,
            target,
        } => Request::Backups {
            remote: *remote || target.is_some(),
            target: target.clone(),
        },
        CtlCommand::Backups {
            action: Some(BackupsCommand::Show { id }),
            ..
        } => Request::BackupShow { id: id.clone() },
        CtlCommand::Backups {
            action:
                Some(BackupsCommand::Verify {
                    id,
                    level,
                    remote,
                    target,
                }),
            ..
        } => Request::BackupVerify {
            id: id.clone(),
            level: VerifyLevel::parse(level),
            remote: *remote || target.is_some(),
            target: target.clone(),
        },
        CtlCommand::Backups {
            action:
                Some(BackupsCommand::Fetch {
                    id,
                    to,
                    identity,
                    target,
                }),
            ..
        } => Request::BackupFetch {
            id: id.clone(),
            to: to.as_deref().map(absolute),
            identity: identity.as_deref().map(absolute),
            target: target.clone(),
        },
        CtlCommand::Backups {
            action: Some(BackupsCommand::Pin { id, reason }),
            ..
        } => Request::BackupPin {
            id: id.clone(),
            reason: reason.clone(),
        },
        CtlCommand::Backups {
            action: Some(BackupsCommand::Unpin { id }),
            ..
        } => Request::BackupUnpin { id: id.clone() },
        CtlCommand::Restore(r) => match restore::request(r) {
            Ok(request) => request,
            Err(code) => return Ok(code),
        },
        CtlCommand::Health { now } => Request::Health { now: *now },
        CtlCommand::Metrics => Request::Metrics,
        CtlCommand::Notify {
            action: crate::cli::NotifyCommand::Test { name },
        } => Request::NotifyTest {
            channel: name.clone(),
        },
        CtlCommand::Completions { .. }
        | CtlCommand::Man { .. }
        | CtlCommand::Retention(_)
        | CtlCommand::Schedule(_) => {
            return Ok(0);
        }
    };
    let follow = matches!(
        request,
        Request::Run { wait: true, .. }
            | Request::Run { dry_run: true, .. }
            | Request::Restore { .. }
            | Request::RestorePitr { .. }
    );
    let mut interrupt = restore::catch_interrupt(&request);
    let mut reply = restore::or_interrupt(&mut interrupt, client.request(&request)).await?;
    loop {
        let Some(response) = reply else {
            return Ok(restore::interrupted());
        };
        let code = show(&response, args.json);
        let done = match &response {
            Response::Accepted { .. } | Response::Progress { .. } => !follow,
            _ => true,
        };
        if done {
            if let (Response::PitrRestored { report }, CtlCommand::Restore(r)) =
                (&response, &args.command)
                && code == 0
                && r.pitr.start
            {
                return Ok(pitr::start(
                    &report.to_dir,
                    report.owner.as_deref(),
                    r.pitr.port,
                ));
            }
            return Ok(code);
        }
        reply = restore::or_interrupt(&mut interrupt, client.next()).await?;
    }
}

/// A path as the daemon must see it: relative ones are taken from our working directory.
fn absolute(p: &std::path::Path) -> std::path::PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

fn usage(message: &str) -> u8 {
    eprintln!("atprectl: {message}");
    EXIT_USAGE
}

/// Prints one response; returns the exit code it implies.
fn show(response: &Response, json: bool) -> u8 {
    if json {
        match serde_json::to_string(response) {
            Ok(line) => render::write_stdout(format!("{line}\n").as_bytes()),
            Err(e) => eprintln!("atprectl: {e}"),
        }
    } else {
        render::print(response);
    }
    match response {
        Response::Finished { run } if !run.outcome.is_success() => EXIT_FAILED,
        Response::Verified { passed: false, .. } => EXIT_FAILED,
        Response::Health { checks } if checks.iter().any(|c| c.status == HealthStatus::Fail) => {
            EXIT_FAILED
        }
        Response::Error { code, message } => {
            if !json {
                eprintln!("atprectl: {message}");
            }
            match code {
                ErrorCode::UnknownJob
                | ErrorCode::UnknownBackup
                | ErrorCode::UnknownChannel
                | ErrorCode::BadRequest => EXIT_USAGE,
                ErrorCode::NotPermitted => EXIT_NOPERM,
                ErrorCode::Busy | ErrorCode::RestoreBusy => EXIT_BUSY,
                ErrorCode::RestoreSourceDatabase => restore::EXIT_SOURCE_DATABASE,
                ErrorCode::RestoreTargetNotEmpty => restore::EXIT_TARGET_NOT_EMPTY,
                ErrorCode::RestoreNoSpace => restore::EXIT_NO_SPACE,
                ErrorCode::RestoreReplacedExists => restore::EXIT_REPLACED_EXISTS,
                ErrorCode::RestoreSafetyBackup => restore::EXIT_SAFETY_BACKUP,
                ErrorCode::PitrNoBase => pitr::EXIT_NO_BASE,
                ErrorCode::PitrGap => pitr::EXIT_GAP,
                ErrorCode::PitrNotArchived => pitr::EXIT_NOT_ARCHIVED,
                ErrorCode::PitrNoArchiveJob => pitr::EXIT_NO_ARCHIVE_JOB,
                ErrorCode::ProtocolMismatch | ErrorCode::HelloFirst | ErrorCode::BadFrame => {
                    EXIT_PROTOCOL
                }
                _ => EXIT_FAILED,
            }
        }
        _ => 0,
    }
}
