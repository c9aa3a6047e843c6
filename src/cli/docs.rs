//! `snigate completions SHELL` and `snigate man`: shell completions and the man page, generated
//! from the argument definitions themselves so that they cannot drift from them.

use std::io::Write;
use std::process::ExitCode;

use clap_complete::Shell;

use super::common::EXIT_OSERR;

/// Arguments of `snigate completions`.
#[derive(Debug, clap::Args)]
pub struct CompletionsArgs {
    /// The shell: bash, zsh, fish, elvish or powershell.
    #[arg(value_enum)]
    pub shell: Shell,
}

/// Prints the completion script of `command` for a shell.
pub(super) fn completions_command(args: &CompletionsArgs, mut command: clap::Command) -> ExitCode {
    let mut out = Vec::new();
    clap_complete::generate(args.shell, &mut command, "snigate", &mut out);
    emit(&out)
}

/// Prints the man page of `command` (roff).
pub(super) fn man_command(command: clap::Command) -> ExitCode {
    let mut out = Vec::new();
    match clap_mangen::Man::new(command).render(&mut out) {
        Ok(()) => emit(&out),
        Err(e) => {
            eprintln!("snigate man: {e}");
            ExitCode::from(EXIT_OSERR)
        }
    }
}

fn emit(bytes: &[u8]) -> ExitCode {
    match std::io::stdout().lock().write_all(bytes) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("snigate: cannot write stdout: {e}");
            ExitCode::from(EXIT_OSERR)
        }
    }
}
