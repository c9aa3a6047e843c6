//! The command line: the argument definitions, and one file per subcommand.
//!
//! Exit codes (stable): 0 success, 1 invalid input, 64 usage or configuration error, 69 an
//! address another process holds, 71 another OS error, 77 a permission the process lacks.

mod check;
mod common;
mod docs;
mod explain;
mod healthcheck;
mod hello;
mod learn;
mod logs;
mod replay;
mod run;
mod salesforce;

use std::process::ExitCode;

use clap::{CommandFactory, Parser, Subcommand};

pub use check::{CheckArgs, Item, Severity};
pub use common::{EXIT_INVALID, EXIT_NOPERM, EXIT_OSERR, EXIT_UNAVAILABLE, EXIT_USAGE, ListArgs};
pub use docs::CompletionsArgs;
pub use explain::MatchArgs;
pub use healthcheck::HealthcheckArgs;
pub use hello::HelloArgs;
pub use learn::LearnArgs;
pub use logs::{LogFilter, log_line};
pub use replay::ReplayArgs;
pub use run::{MetricsFlag, RunArgs, configuration};
pub use salesforce::{ImportArgs, ImportSource, IpRangesArgs, SalesforceArgs, SalesforceCommand, TenantArgs};

/// `snigate --version`: the version, the commit it was built from, the build date and the
/// compiled-in Public Suffix List.
static VERSION: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
    format!(
        "{} (commit {}, built {}; public suffix list: {})",
        env!("CARGO_PKG_VERSION"),
        env!("SNIGATE_COMMIT"),
        env!("SNIGATE_BUILD_DATE"),
        crate::rules::suffix::PUBLIC_SUFFIX_LIST
    )
});

/// The exit codes, as `snigate --help` lists them.
const EXIT_CODES: &str = "\
Exit codes:
  0   success
  1   invalid input: rule files, lists, a hello, a configuration `check` reads
  64  usage or configuration error (`run`, `match`, `hello`)
  69  unavailable: another process listens on the address
  71  another OS error
  77  permission denied: a port below 1024 needs CAP_NET_BIND_SERVICE (or root)";

/// snigate: an SNI-inspecting TCP edge filter.
#[derive(Debug, Parser)]
#[command(name = "snigate", version = VERSION.as_str(), about, after_help = EXIT_CODES)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the proxy (on the embedded default configuration when given none).
    Run(RunArgs),
    /// Parse a captured ClientHello (raw bytes or hex text) and print what snigate sees in it.
    Hello(HelloArgs),
    /// Decide recorded connections (JSON access logs) again under other rules: what flips, and
    /// which rules none used. Exit 1 when something allowed would be denied.
    Replay(ReplayArgs),
    /// Print a rule file that allows what recorded connections (JSON access logs) used:
    /// exact names, wildcards only where many names share a parent, with counts and last seen.
    Learn(LearnArgs),
    /// Validate rule files: print counts, duplicates, shadowed rules and conflicts.
    Check(CheckArgs),
    /// Print the verdict for a name, the rule that decided it, and why.
    Match(MatchArgs),
    /// Generate rules from published data (Salesforce's ip-ranges.json).
    Import(ImportArgs),
    /// Salesforce rule generators (tenant restriction).
    Salesforce(SalesforceArgs),
    /// Probe a health endpoint: exit 0 when it answers 200 (for container HEALTHCHECKs, which
    /// have no curl on an empty base image).
    Healthcheck(HealthcheckArgs),
    /// Print a shell completion script (`snigate completions bash > /etc/bash_completion.d/snigate`).
    Completions(CompletionsArgs),
    /// Print the man page (`snigate man > snigate.1`).
    Man,
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Run(args) => run::run_command(&args),
        Command::Hello(args) => hello::hello_command(&args),
        Command::Replay(args) => replay::replay_command(&args),
        Command::Learn(args) => learn::learn_command(&args),
        Command::Check(args) => check::check_command(&args),
        Command::Match(args) => explain::match_command(&args),
        Command::Import(args) => salesforce::import_command(&args),
        Command::Salesforce(args) => salesforce::salesforce_command(&args),
        Command::Healthcheck(args) => healthcheck::healthcheck_command(&args),
        Command::Completions(args) => docs::completions_command(&args, Cli::command()),
        Command::Man => docs::man_command(Cli::command()),
    }
}
