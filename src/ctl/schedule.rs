//! `atprectl schedule`: a schedule's next fire times, offline, as the daemon's timer fires them.

use chrono::Utc;

use crate::cli::ScheduleArgs;
use crate::scheduler::{Schedule, preview};

/// Prints the fire times; returns the exit code (2 on a schedule that does not parse).
pub fn run(args: &ScheduleArgs, json: bool) -> u8 {
    let schedule = match Schedule::parse(&args.expr) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("atprectl: {e}");
            return super::EXIT_USAGE;
        }
    };
    let fires = preview(
        &schedule,
        args.tz,
        args.from.unwrap_or_else(Utc::now),
        args.n,
    );
    let text = if json {
        serde_json::to_string(&fires).unwrap_or_default() + "\n"
    } else {
        fires.iter().map(|f| f.line(args.tz) + "\n").collect()
    };
    super::render::write_stdout(text.as_bytes());
    0
}
