//! The daemon. Everything lives in the library; see `atpred::daemon`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    atpred::daemon::main(atpred::cli::DaemonArgs::parse())
}
