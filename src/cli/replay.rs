//! `snigate replay`: every connection of recorded access logs decided again under other rules,
//! with the same compiled `RuleSet` the proxy decides with: what would flip, and which rules no
//! recorded connection used. A gate for rule changes, like `promtool test rules` for alerts.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{Value, json};

use super::common::{EXIT_INVALID, EXIT_USAGE};
use super::logs::{self, Connection, Listeners, LogFilter, Recorded};
use crate::config::Config;
use crate::policy::decide::RuleSet;
use crate::rules::file::{load_rules, preset_rules};
use crate::rules::rule::{Rule, Verdict};

/// Arguments of `snigate replay`.
#[derive(Debug, clap::Args)]
pub struct ReplayArgs {
    /// JSON access logs as snigate writes them (`-`: standard input); repeatable.
    #[arg(long = "log", value_name = "LOG", required = true)]
    pub logs: Vec<PathBuf>,
    /// The rule files (or directories of `*.rules`) to decide with; repeatable. With
    /// `--config`, they replace the configuration's.
    #[arg(long = "rules", value_name = "PATH")]
    pub rules: Vec<PathBuf>,
    /// Decide with this configuration's default, `no_sni`, lists and public-suffix setting.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Which recorded connections to replay.
    #[command(flatten)]
    pub filter: LogFilter,
}

/// What a replay found.
#[derive(Default)]
struct Tally {
    records: u64,
    same: u64,
    allow_to_deny: u64,
    deny_to_allow: u64,
    /// Of `allow_to_deny`: let through, and reported, by a report scope of the configuration.
    reported: u64,
    not_replayable: u64,
    unreadable: u64,
    /// (name or destination, direction) → (count, the new deciding rule).
    flips: BTreeMap<(String, &'static str), (u64, String)>,
    /// The rules that decided some connection, as `file:line`.
    used: BTreeSet<String>,
}

impl Tally {
    fn replay(&mut self, set: &RuleSet, listeners: &Listeners, c: &Connection) {
        self.records += 1;
        if c.recorded == Recorded::Unreplayable {
            self.not_replayable += 1;
            return;
        }
        let d = set.decide(c.name.as_ref(), c.client, c.dst, c.port);
        let rule = d.rule.map_or_else(|| d.reason.as_str().to_string(), |r| r.to_string());
        if let Some(r) = d.rule {
            self.used.insert(r.to_string());
        }
        let direction = match (c.recorded, d.verdict) {
            (Recorded::Allowed, Verdict::Deny) => "allow_to_deny",
            (Recorded::Denied, Verdict::Allow) => "deny_to_allow",
            _ => {
                self.same += 1;
                return;
            }
        };
        match direction {
            "allow_to_deny" => {
                self.allow_to_deny += 1;
                let always = d.rule.is_some_and(|r| r.always_enforced());
                self.reported += u64::from(!always && listeners.reports(c));
            }
            _ => self.deny_to_allow += 1,
        }
        let what =
            c.name.as_ref().map_or_else(|| c.dst.map_or("(no name)".into(), |d| d.to_string()), |n| n.to_string());
        let entry = self.flips.entry((what, direction)).or_insert((0, rule));
        entry.0 += 1;
    }
}

/// Runs `snigate replay`.
pub(super) fn replay_command(args: &ReplayArgs) -> ExitCode {
    let (set, rules, listeners) = match ruleset(args) {
        Ok(loaded) => loaded,
        Err((code, message)) => {
            eprintln!("snigate replay: {message}");
            return ExitCode::from(code);
        }
    };
    let mut tally = Tally::default();
    // Streamed: memory follows the distinct names flipped, not the logs' length.
    let read = logs::read(&args.logs, |mut c| {
        if args.filter.keeps(&c) {
            listeners.settle(&mut c);
            tally.replay(&set, &listeners, &c);
        }
    });
    match read {
        Ok(skipped) => tally.unreadable = skipped.unreadable,
        Err(e) => {
            eprintln!("snigate replay: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    }
    let unused: Vec<String> =
        rules.iter().map(|r| format!("{}:{}", r.file, r.line)).filter(|r| !tally.used.contains(r)).collect();
    print(&tally, &unused, args.json);
    ExitCode::from(u8::from(tally.allow_to_deny > tally.reported))
}

/// The rules to replay with, and the rule files' rules (to tell the unused ones).
fn ruleset(args: &ReplayArgs) -> Result<(RuleSet, Vec<Rule>, Listeners), (u8, String)> {
    let invalid = |e: crate::rules::file::RuleErrors| (EXIT_INVALID, format!("invalid rules:\n{e}"));
    let mut config = match &args.config {
        Some(path) => Config::load(path).map_err(|e| (EXIT_USAGE, e.to_string()))?,
        None => {
            let mut config = Config::embedded();
            config.rules.lists.clear();
            config
        }
    };
    if !args.rules.is_empty() {
        let absolute = args.rules.iter().map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone())).collect();
        config.rules.files = Some(absolute);
    }
    let set = config.compile_rules().map_err(invalid)?;
    let rules = match &config.rules.files {
        Some(files) => load_rules(files),
        None => preset_rules(),
    }
    .map_err(invalid)?;
    let listeners = match args.config {
        Some(_) => Listeners::of(&config),
        None => Listeners::default(),
    };
    Ok((set, rules, listeners))
}

fn print(t: &Tally, unused: &[String], as_json: bool) {
    let flips: Vec<Value> = t
        .flips
        .iter()
        .map(|((name, direction), (count, rule))| json!({"name": name, "direction": direction, "count": count, "rule": rule}))
        .collect();
    if as_json {
        let v = json!({
            "records": t.records,
            "same": t.same,
            "allow_to_deny": t.allow_to_deny,
            "deny_to_allow": t.deny_to_allow,
            "reported": t.reported,
            "not_replayable": t.not_replayable,
            "unreadable": t.unreadable,
            "flips": flips,
            "unused_rules": unused,
        });
        println!("{v}");
        return;
    }
    println!(
        "{} connections: {} the same, {} allow to deny{}, {} deny to allow, {} not replayable{}",
        t.records,
        t.same,
        t.allow_to_deny,
        if t.reported > 0 {
            format!(" ({} of them reported, not denied, by a report scope)", t.reported)
        } else {
            String::new()
        },
        t.deny_to_allow,
        t.not_replayable,
        if t.unreadable > 0 { format!(" ({} unreadable lines skipped)", t.unreadable) } else { String::new() }
    );
    for ((name, direction), (count, rule)) in &t.flips {
        println!("{direction:>13}  {count:>6}  {name}  (now: {rule})");
    }
    for rule in unused {
        println!("       unused          {rule}");
    }
}
