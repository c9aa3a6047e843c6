//! `snigate check`: validates rule files and lists, and says where they say less than they seem to.

use std::path::PathBuf;
use std::process::ExitCode;

use super::common::{EXIT_INVALID, EXIT_USAGE, ListArgs, load};
use crate::rules::check::check;

/// Arguments of `snigate check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Rule files, or directories of `*.rules` files. None: the embedded Salesforce preset.
    pub files: Vec<PathBuf>,
    /// Large lists to load with the rules.
    #[command(flatten)]
    pub lists: ListArgs,
}

pub(super) fn check_command(args: &CheckArgs) -> ExitCode {
    let loaded = match load(&args.files, &args.lists) {
        Ok(loaded) => loaded,
        Err(Ok(errors)) => {
            for e in &errors.0 {
                println!("error: {e}");
            }
            println!("invalid: {} error(s)", errors.0.len());
            return ExitCode::from(EXIT_INVALID);
        }
        Err(Err(usage)) => {
            eprintln!("snigate check: {usage}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let report = check(&loaded.rules, &loaded.lists);
    let mut out = String::new();
    for s in &loaded.sources {
        out.push_str(&format!("loaded {s}\n"));
    }
    out.push_str(&format!("{}\n", report.counts));
    for list in &loaded.lists {
        if list.skipped > 0 {
            out.push_str(&format!("list {}: {} malformed line(s) skipped (lenient)\n", list.name, list.skipped));
        }
    }
    for f in &report.findings {
        out.push_str(&format!("{f}\n"));
    }
    out.push_str("valid\n");
    print!("{out}");
    ExitCode::SUCCESS
}
