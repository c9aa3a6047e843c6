#![forbid(unsafe_code)]
//! The `snigate` binary: parses arguments and hands them to the library.

use std::process::ExitCode;

use clap::Parser;
use snigate::cli::{Cli, EXIT_USAGE, run};

fn main() -> ExitCode {
    match Cli::try_parse() {
        Ok(cli) => run(cli),
        Err(e) => {
            let _ = e.print();
            if e.use_stderr() { ExitCode::from(EXIT_USAGE) } else { ExitCode::SUCCESS }
        }
    }
}
