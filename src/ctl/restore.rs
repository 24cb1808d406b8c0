//! `atprectl restore`: the confirmation (typing the database name, or the folder's path for
//! `--to-dir --replace`, on a terminal; `--yes` otherwise), then the request, following its progress until the answer.

use std::io::{BufRead, IsTerminal, Write};

use tokio::signal::unix::{Signal, SignalKind, signal};

use crate::cli::RestoreArgs;
use crate::client::ClientError;
use crate::protocol::{Request, Response};
use crate::restore::Options;

/// Refused: no terminal to confirm on and no `--yes`.
pub const EXIT_NEEDS_YES: u8 = 10;
/// Refused: the name typed at the confirmation was not the target's.
pub const EXIT_NOT_CONFIRMED: u8 = 11;
/// Refused by the daemon: the target is the backup's own source database.
pub const EXIT_SOURCE_DATABASE: u8 = 12;
/// Refused by the daemon: the target exists and is not empty.
pub const EXIT_TARGET_NOT_EMPTY: u8 = 13;
/// Refused by the daemon: not enough space in restore-scratch-dir.
pub const EXIT_NO_SPACE: u8 = 14;
/// Refused by the daemon: `--replace` would keep the old database under a name already taken.
pub const EXIT_REPLACED_EXISTS: u8 = 15;
/// Ctrl-C while following a restore (128 + SIGINT): atprectl stopped following, the restore
/// goes on in the daemon.
pub const EXIT_INTERRUPTED: u8 = 130;
/// Refused by the daemon: `--replace`'s safety backup of the target could not be taken.
pub const EXIT_SAFETY_BACKUP: u8 = 16;

/// The request, or the exit code of a refusal made here.
pub fn request(args: &RestoreArgs) -> Result<Request, u8> {
    if args.pitr.pitr {
        return super::pitr::request(args).ok_or(super::EXIT_USAGE);
    }
    if args.to_dir.is_some() && args.dry_run {
        eprintln!(
            "atprectl: --dry-run is for database restores and --pitr, not a files backup's --to-dir"
        );
        return Err(super::EXIT_USAGE);
    }
    if args.to_dir.is_some() && args.target.is_some() {
        eprintln!(
            "atprectl: --target is for database restores and --pitr, not a files backup's --to-dir"
        );
        return Err(super::EXIT_USAGE);
    }
    let to = args.to.clone().unwrap_or_default();
    // Staging an RDB beside a server's dump.rdb changes nothing the server uses, and a files
    // restore without --replace only fills a new or empty folder: no question.
    let quiet = args.redis_dir.is_some() || (args.to_dir.is_some() && !args.replace);
    if !args.dry_run && !args.yes && !quiet {
        match &args.to_dir {
            Some(dir) => confirm(
                &Confirm::Folder,
                &super::absolute(dir).display().to_string(),
            )?,
            None => confirm(&Confirm::Database, &to)?,
        }
    }
    Ok(Request::Restore {
        id: args.id.clone().unwrap_or_default(),
        options: Options {
            to,
            redis_dir: args.redis_dir.as_deref().map(super::absolute),
            to_dir: args.to_dir.as_deref().map(super::absolute),
            jobs: args.jobs.unwrap_or(0),
            schemas: args.schema.clone(),
            tables: args.table.clone(),
            replace: args.replace,
            globals: args.globals,
            target: args.target.clone(),
            identity: args.identity.as_deref().map(super::absolute),
        },
        dry_run: args.dry_run,
    })
}

/// What the operator is asked to confirm by typing its name.
enum Confirm {
    /// `--to DB`: type the database's name.
    Database,
    /// `--to-dir DIR --replace`: type the folder's path.
    Folder,
}

fn confirm(what: &Confirm, to: &str) -> Result<(), u8> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        eprintln!(
            "atprectl: refusing to restore without confirmation: no terminal to ask on; \
             add --yes (or try --dry-run first)"
        );
        return Err(EXIT_NEEDS_YES);
    }
    let (question, typed) = match what {
        Confirm::Database => (
            format!("Restore into database {to:?}? Type its name"),
            "name",
        ),
        Confirm::Folder => (
            format!(
                "Replace everything in the folder {to:?} with the backup's tree? Type its path"
            ),
            "path",
        ),
    };
    eprint!("{question} to go on: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    if stdin.lock().read_line(&mut line).is_err() || line.trim_end_matches(['\n', '\r']) != to {
        eprintln!("atprectl: not confirmed (the {typed} typed was not {to:?}); nothing done");
        return Err(EXIT_NOT_CONFIRMED);
    }
    Ok(())
}

/// For a restore (not a dry run), Ctrl-C is caught: it stops atprectl following the restore,
/// not the restore, which is the daemon's run (see [`interrupted`]). `None` otherwise.
pub fn catch_interrupt(request: &Request) -> Option<Signal> {
    match request {
        Request::Restore { dry_run: false, .. } | Request::RestorePitr { dry_run: false, .. } => {
            signal(SignalKind::interrupt()).ok()
        }
        _ => None,
    }
}

/// Awaits `reply`; `Ok(None)` when Ctrl-C came first.
pub async fn or_interrupt(
    interrupt: &mut Option<Signal>,
    reply: impl std::future::Future<Output = Result<Response, ClientError>>,
) -> Result<Option<Response>, ClientError> {
    match interrupt {
        None => reply.await.map(Some),
        Some(sig) => tokio::select! {
            r = reply => r.map(Some),
            _ = sig.recv() => Ok(None),
        },
    }
}

/// Says what Ctrl-C did (and did not do); returns [`EXIT_INTERRUPTED`].
pub fn interrupted() -> u8 {
    eprintln!(
        "atprectl: stopped following the restore; it goes on in the daemon: `atprectl history \
         restore` shows how it ends, `atprectl cancel restore` stops it (the target stays as it was)"
    );
    EXIT_INTERRUPTED
}

/// The globals report of a restore or its dry run: the counts, then one line per item.
pub fn globals_lines(items: Option<&[crate::restore::globals::Item]>) -> String {
    let Some(items) = items else {
        return String::new();
    };
    let mut out = format!("{}\n", crate::restore::globals::summary(items));
    for item in items {
        out.push_str(&format!("  {}\n", crate::restore::globals::line(item)));
    }
    out
}
