//! `snigate check`: validates a configuration, its rule files and lists (or rule files and lists
//! alone), and says where they say less than they seem to. Every problem is printed at once.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;

use super::common::{EXIT_INVALID, EXIT_USAGE, ListArgs, list_specs, load};
use crate::config::{Config, ConfigError, Enforce, NoSni};
use crate::rules::check::{Finding, check};
use crate::rules::file::{PRESET, RuleError, acknowledges};
use crate::rules::list::ListSpec;

/// Arguments of `snigate check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Rule files, or directories of `*.rules` files. None: the embedded Salesforce preset.
    #[arg(conflicts_with = "config")]
    pub files: Vec<PathBuf>,
    /// Validate this configuration file and every rule file and list it names.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print one JSON object per finding (`severity`, `code`, `file`, `line`, `message`).
    #[arg(long)]
    pub json: bool,
    /// Warnings fail the check too (exit 1).
    #[arg(long)]
    pub strict: bool,
    /// Print errors only.
    #[arg(long)]
    pub quiet: bool,
    /// Large lists to load with the rules.
    #[command(flatten)]
    pub lists: ListArgs,
}

/// How much a finding matters: errors make the files invalid, warnings do under `--strict`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    /// Worth knowing; never fails the check.
    Info,
    /// Probably not what was meant; fails under `--strict`.
    Warning,
    /// Invalid: snigate would refuse to start or reload.
    Error,
}

impl Severity {
    /// The JSON spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

/// One problem or observation, where it is.
#[derive(Debug, Clone)]
pub struct Item {
    /// How much it matters.
    pub severity: Severity,
    /// A stable snake_case name of its kind.
    pub code: &'static str,
    /// The file it is in.
    pub file: String,
    /// 1-based line, when it is about one.
    pub line: Option<usize>,
    /// What it says, without its place.
    pub message: String,
    /// The line printed in text mode.
    text: String,
}

impl Item {
    fn config(e: ConfigError) -> Item {
        let text = format!("error: {e}");
        Item { severity: Severity::Error, code: e.code, file: e.file, line: e.line, message: e.reason, text }
    }

    fn rule(e: RuleError) -> Item {
        let line = (e.line > 0).then_some(e.line as usize);
        let text = format!("error: {e}");
        Item {
            severity: Severity::Error,
            code: "invalid_rule",
            file: e.file.to_string(),
            line,
            message: e.kind.to_string(),
            text,
        }
    }
}

/// What a check found: what was loaded, and every item.
#[derive(Debug, Default)]
pub(super) struct Audit {
    /// Lines that say what was loaded and counted (text mode, not `--quiet`).
    notes: Vec<String>,
    /// Errors, warnings and observations, in file order.
    items: Vec<Item>,
}

impl Audit {
    fn count(&self, severity: Severity) -> usize {
        self.items.iter().filter(|i| i.severity == severity).count()
    }

    /// Prints the audit and returns its exit code: `invalid` for errors (and for warnings
    /// when `strict`).
    fn print(&self, json: bool, strict: bool, quiet: bool, invalid: u8) -> ExitCode {
        let shown = |i: &&Item| !quiet || i.severity == Severity::Error;
        let mut out = String::new();
        if json {
            for i in self.items.iter().filter(shown) {
                let v = json!({
                    "severity": i.severity.as_str(),
                    "code": i.code,
                    "file": i.file,
                    "line": i.line,
                    "message": i.message,
                });
                out.push_str(&format!("{v}\n"));
            }
        } else {
            if !quiet {
                self.notes.iter().for_each(|n| out.push_str(&format!("{n}\n")));
            }
            self.items.iter().filter(shown).for_each(|i| out.push_str(&format!("{}\n", i.text)));
        }
        let (errors, warnings) = (self.count(Severity::Error), self.count(Severity::Warning));
        let failed = errors > 0 || (strict && warnings > 0);
        if !json {
            match (errors, failed) {
                (0, true) => out.push_str(&format!("invalid: {warnings} warning(s) under --strict\n")),
                (_, true) => out.push_str(&format!("invalid: {errors} error(s)\n")),
                (_, false) if !quiet => out.push_str("valid\n"),
                _ => {}
            }
        }
        print!("{out}");
        if failed { ExitCode::from(invalid) } else { ExitCode::SUCCESS }
    }
}

pub(super) fn check_command(args: &CheckArgs) -> ExitCode {
    let audit = match &args.config {
        Some(path) => match Config::load(path) {
            Ok(config) => audit_config(&config),
            Err(errors) => Audit { notes: Vec::new(), items: errors.0.into_iter().map(Item::config).collect() },
        },
        None => match list_specs(&args.lists) {
            Ok(specs) => audit_rules(&args.files, &specs),
            Err(usage) => {
                eprintln!("snigate check: {usage}");
                return ExitCode::from(EXIT_USAGE);
            }
        },
    };
    audit.print(args.json, args.strict, args.quiet, EXIT_INVALID)
}

/// `snigate run --check`: the configuration `run` would start with (flags applied), its rules
/// and lists audited as `check --config` does; exit 64 where `run` would refuse to start.
pub(super) fn run_check(config: &Config) -> ExitCode {
    audit_config(config).print(false, false, false, EXIT_USAGE)
}

/// Audits a valid configuration's rule files and lists, leaving out what the configuration
/// resolves.
pub(super) fn audit_config(config: &Config) -> Audit {
    let paths = config.rules.files.clone().unwrap_or_default();
    let specs: Vec<(ListSpec, PathBuf)> = config.rules.lists.iter().map(|l| (l.spec(), l.path.clone())).collect();
    let mut audit = audit_rules(&paths, &specs);
    // `no_sni = "deny"` already closes what this warning is about.
    if config.rules.no_sni == NoSni::Deny {
        audit.items.retain(|i| i.code != "no_sni_bypass");
    }
    audit.items.extend(report_scopes(config, std::time::SystemTime::now()));
    let errors = audit.count(Severity::Error);
    if errors == 0
        && audit.notes.iter().any(|n| n.starts_with("0 rules:"))
        && specs.is_empty()
        && !config.rules.allow_empty
    {
        let message = "no rule at all: every connection would be decided by `default`; add rules, or set [rules] allow_empty = true".to_string();
        let file = paths.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ");
        let text = format!("error: {file}: {message}");
        audit.items.push(Item { severity: Severity::Error, code: "empty_ruleset", file, line: None, message, text });
    }
    audit
}

/// How soon a report scope's end is worth a warning: time to add the rules its traffic needs.
const SCOPE_WARNING_DAYS: i64 = 14;

/// Report scopes that have ended (they enforce now) or end within [`SCOPE_WARNING_DAYS`] of
/// `now`: warnings, so that `--strict` can hold a rollout to its dates.
fn report_scopes(config: &Config, now: std::time::SystemTime) -> Vec<Item> {
    let now = now.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
    let listeners = config.listeners.iter().filter_map(|l| {
        let l = l.get_ref();
        match l.enforce {
            Enforce::Report { until: Some(until) } => Some((format!("listener {:?}", l.label()), until)),
            _ => None,
        }
    });
    let sources = config.report.iter().map(|r| (format!("[[report]] for {}", r.label()), r.until));
    listeners
        .chain(sources)
        .filter_map(|(scope, until)| {
            let left = until.ends_at() - now;
            let message = match left {
                ..=0 => format!("the report scope of {scope} ended on {until}: it enforces"),
                _ if left <= SCOPE_WARNING_DAYS * 86_400 => {
                    format!(
                        "the report scope of {scope} ends on {until}, in {} day(s): then it enforces",
                        (left + 86_399) / 86_400
                    )
                }
                _ => return None,
            };
            let code = if left <= 0 { "report_scope_ended" } else { "report_scope_ending" };
            let text = format!("warning: {message}");
            Some(Item { severity: Severity::Warning, code, file: "configuration".into(), line: None, message, text })
        })
        .collect()
}

/// Audits rule files (none: the embedded preset) and lists.
fn audit_rules(paths: &[PathBuf], specs: &[(ListSpec, PathBuf)]) -> Audit {
    let loaded = match load(paths, specs) {
        Ok(loaded) => loaded,
        Err(errors) => return Audit { notes: Vec::new(), items: errors.0.into_iter().map(Item::rule).collect() },
    };
    let report = check(&loaded.rules, &loaded.lists);
    let mut notes: Vec<String> = loaded.sources.iter().map(|s| format!("loaded {s}")).collect();
    notes.push(report.counts.to_string());
    let mut items = Vec::new();
    for list in &loaded.lists {
        if list.skipped > 0 {
            let message = format!("{} malformed line(s) skipped (lenient)", list.skipped);
            let text = format!("list {}: {message}", list.name);
            items.push(Item {
                severity: Severity::Info,
                code: "list_lines_skipped",
                file: list.name.to_string(),
                line: None,
                message,
                text,
            });
        }
    }
    let mut files = Files::default();
    let mut quiet = 0;
    for f in &report.findings {
        if f.rules().iter().any(|r| files.acknowledges(&r.file, r.line, f.code())) {
            quiet += 1;
            continue;
        }
        items.push(finding(f));
    }
    if quiet > 0 {
        notes.push(format!("{quiet} finding(s) acknowledged in the rule files"));
    }
    Audit { notes, items }
}

/// A rules finding as an item, at the first rule it names.
fn finding(f: &Finding<'_>) -> Item {
    let severity = match f {
        // Nothing in the rules can change it: a fact about Salesforce, not a mistake.
        Finding::OpenFamily { .. } => Severity::Info,
        _ => Severity::Warning,
    };
    let text = f.to_string();
    // The text mode's lines start with their kind; the JSON has it as `code`.
    let message = text.split_once(": ").map_or(text.clone(), |(_, m)| m.to_string());
    let at = f.rules()[0];
    Item { severity, code: f.code(), file: at.file.to_string(), line: Some(at.line as usize), message, text }
}

/// Rule files' text and where each line starts, read once each, for acknowledgements: a
/// check of a large file finds many things, and each looks up two lines.
#[derive(Default)]
struct Files(HashMap<String, Option<(String, Vec<usize>)>>);

impl Files {
    fn acknowledges(&mut self, file: &str, line: u32, code: &str) -> bool {
        let entry = self.0.entry(file.to_string()).or_insert_with(|| {
            let text = match PRESET.iter().find(|(n, _)| *n == file) {
                Some((_, text)) => Some(text.to_string()),
                None => std::fs::read_to_string(file).ok(),
            }?;
            let starts = std::iter::once(0).chain(text.match_indices('\n').map(|(i, _)| i + 1)).collect();
            Some((text, starts))
        });
        let Some((text, starts)) = entry else { return false };
        // The lines `line - 1` and `line`, as `acknowledges` reads them (`str::lines`).
        let at = |i: usize| {
            let (start, end) = (*starts.get(i)?, starts.get(i + 1).map_or(text.len(), |e| e - 1));
            let l = text.get(start..end.max(start))?;
            (start < text.len()).then(|| l.strip_suffix('\r').unwrap_or(l))
        };
        let first = (line as usize).saturating_sub(2);
        let lines: Vec<&str> = (first..line as usize).map_while(at).collect();
        acknowledges(&lines, line - first as u32, code)
    }
}
