//! `snigate import salesforce-ip-ranges` and `snigate salesforce tenant`: argument
//! definitions, file handling and exit codes around [`crate::salesforce`].

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::Subcommand;

use super::common::{EXIT_INVALID, EXIT_USAGE, parse_verdict};
use crate::rules::rule::Verdict;
use crate::rules::salesforce::{Direction, ImportOptions, Tenant, import_ip_ranges, tenant_rules};

/// Arguments of `snigate import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// What to import.
    #[command(subcommand)]
    pub source: ImportSource,
}

/// The sources `snigate import` understands.
#[derive(Debug, Subcommand)]
pub enum ImportSource {
    /// Turn Salesforce's ip-ranges.json (https://ip-ranges.salesforce.com/ip-ranges.json)
    /// into `ip` rules, for connections without SNI.
    SalesforceIpRanges(IpRangesArgs),
}

/// Arguments of `snigate import salesforce-ip-ranges`.
#[derive(Debug, clap::Args)]
pub struct IpRangesArgs {
    /// The downloaded ip-ranges.json.
    pub file: PathBuf,
    /// Keep entries of this region only (repeatable; `us-east-1`, `eu-central-1`, …).
    #[arg(long = "region", value_name = "REGION")]
    pub regions: Vec<String>,
    /// Keep entries of this direction only: `inbound` is what clients connect to.
    #[arg(long, value_name = "inbound|outbound", value_parser = str::parse::<Direction>)]
    pub direction: Option<Direction>,
    /// The action of the generated rules.
    #[arg(long, value_name = "allow|deny", default_value = "allow", value_parser = parse_verdict)]
    pub action: Verdict,
    /// Write the rules to this file (atomically: a temporary file, then a rename) instead of
    /// stdout.
    #[arg(long, value_name = "PATH")]
    pub output: Option<PathBuf>,
}

/// Arguments of `snigate salesforce`.
#[derive(Debug, clap::Args)]
pub struct SalesforceArgs {
    /// What to generate.
    #[command(subcommand)]
    pub command: SalesforceCommand,
}

/// The `snigate salesforce` subcommands.
#[derive(Debug, Subcommand)]
pub enum SalesforceCommand {
    /// Print a tenant-restriction rule file: this org's hosts allowed, every other org's denied.
    Tenant(TenantArgs),
}

/// Arguments of `snigate salesforce tenant`.
#[derive(Debug, clap::Args)]
pub struct TenantArgs {
    /// The org's My Domain name (`acme` for acme.my.salesforce.com).
    #[arg(long, value_name = "NAME")]
    pub my_domain: String,
    /// Allow only this sandbox (repeatable). Without it, every `NAME--*` sandbox is allowed.
    #[arg(long = "sandbox", value_name = "SANDBOX")]
    pub sandboxes: Vec<String>,
    /// The org is a Developer Edition org (hosts in the `develop` partition, no sandboxes).
    #[arg(long)]
    pub developer_edition: bool,
    /// Write the rules to this file (atomically) instead of stdout.
    #[arg(long, value_name = "PATH")]
    pub output: Option<PathBuf>,
}

/// `snigate import …`.
pub fn import_command(args: &ImportArgs) -> ExitCode {
    match &args.source {
        ImportSource::SalesforceIpRanges(args) => ip_ranges_command(args),
    }
}

fn ip_ranges_command(args: &IpRangesArgs) -> ExitCode {
    const CMD: &str = "snigate import salesforce-ip-ranges";
    let shown = args.file.display().to_string();
    let text = match std::fs::read_to_string(&args.file) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::InvalidData => {
            eprintln!("{CMD}: {shown}: not UTF-8 text: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
        Err(e) => {
            eprintln!("{CMD}: {shown}: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let source = args.file.file_name().map_or_else(|| shown.clone(), |n| n.to_string_lossy().into_owned());
    let opts = ImportOptions { regions: args.regions.clone(), direction: args.direction, action: args.action };
    let imported = match import_ip_ranges(&shown, &source, &text, &opts) {
        Ok(imported) => imported,
        Err(e) => {
            eprintln!("{CMD}: {e}");
            return ExitCode::from(if e.is_invalid_input() { EXIT_INVALID } else { EXIT_USAGE });
        }
    };
    let code = emit(CMD, args.output.as_deref(), &imported.text);
    if code == ExitCode::SUCCESS
        && let Some(path) = &args.output
    {
        eprintln!(
            "{CMD}: wrote {} rule(s) from {} of {} entries to {}",
            imported.rules,
            imported.entries.0,
            imported.entries.1,
            path.display()
        );
    }
    code
}

/// `snigate salesforce …`.
pub fn salesforce_command(args: &SalesforceArgs) -> ExitCode {
    match &args.command {
        SalesforceCommand::Tenant(args) => tenant_command(args),
    }
}

fn tenant_command(args: &TenantArgs) -> ExitCode {
    const CMD: &str = "snigate salesforce tenant";
    match Tenant::new(&args.my_domain, &args.sandboxes, args.developer_edition) {
        Ok(tenant) => emit(CMD, args.output.as_deref(), &tenant_rules(&tenant)),
        Err(e) => {
            eprintln!("{CMD}: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Prints `text`, or writes it to `output` atomically.
fn emit(cmd: &str, output: Option<&Path>, text: &str) -> ExitCode {
    let result = match output {
        None => io::stdout().lock().write_all(text.as_bytes()),
        Some(path) => write_atomically(path, text),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let target = output.map_or_else(|| "stdout".to_string(), |p| p.display().to_string());
            eprintln!("{cmd}: cannot write {target}: {e}");
            ExitCode::from(EXIT_USAGE)
        }
    }
}

/// Writes a temporary file next to `path`, flushes it to disk and renames it over `path`, so
/// that readers (and snigate's rule watcher) see the old file or the new one, never a part.
/// On any error the temporary file is removed and `path` is untouched.
fn write_atomically(path: &Path, text: &str) -> io::Result<()> {
    let name =
        path.file_name().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the output path names no file"))?;
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    let tmp = dir.join(format!(".{}.{}.tmp", name.to_string_lossy(), std::process::id()));
    let written = OpenOptions::new().write(true).create_new(true).open(&tmp).and_then(|mut file| {
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}
