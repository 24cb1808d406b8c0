//! `atprectl restore`: the confirmation (typing the database name on a terminal; `--yes`
//! otherwise), then the request, following its progress until the answer.

use std::io::{BufRead, IsTerminal, Write};

use crate::cli::RestoreArgs;
use crate::protocol::Request;
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
/// Refused by the daemon: `--replace`'s safety backup of the target could not be taken.
pub const EXIT_SAFETY_BACKUP: u8 = 16;

/// The request, or the exit code of a refusal made here.
pub fn request(args: &RestoreArgs) -> Result<Request, u8> {
    if !args.dry_run && !args.yes {
        confirm(&args.to)?;
    }
    Ok(Request::Restore {
        id: args.id.clone(),
        options: Options {
            to: args.to.clone(),
            jobs: args.jobs.unwrap_or(0),
            schemas: args.schema.clone(),
            tables: args.table.clone(),
            replace: args.replace,
        },
        dry_run: args.dry_run,
    })
}

fn confirm(to: &str) -> Result<(), u8> {
    let stdin = std::io::stdin();
    if !stdin.is_terminal() {
        eprintln!(
            "atprectl: refusing to restore without confirmation: no terminal to ask on; \
             add --yes (or try --dry-run first)"
        );
        return Err(EXIT_NEEDS_YES);
    }
    eprint!("Restore into database {to:?}? Type its name to go on: ");
    let _ = std::io::stderr().flush();
    let mut line = String::new();
    if stdin.lock().read_line(&mut line).is_err() || line.trim_end_matches(['\n', '\r']) != to {
        eprintln!("atprectl: not confirmed (the name typed was not {to:?}); nothing done");
        return Err(EXIT_NOT_CONFIRMED);
    }
    Ok(())
}
