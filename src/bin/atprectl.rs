//! The control client. Everything lives in the library; see `atpred::ctl`.

use std::process::ExitCode;

use clap::Parser;

fn main() -> ExitCode {
    atpred::ctl::main(atpred::cli::CtlArgs::parse())
}
