//! `snigate replay`: every connection of recorded access logs decided again under other rules,
//! with the same compiled `RuleSet` the proxy decides with: what would flip, and which rules no
//! recorded connection used. A gate for rule changes, like `promtool test rules` for alerts.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{Value, json};

use super::common::{EXIT_INVALID, EXIT_USAGE};
use super::logs::{self, Connection, Listeners, LogFilter, Recorded};
use crate::config::Config;
use crate::policy::decide::RuleSet;
use crate::policy::origin::RuleRef;
use crate::rules::rule::Verdict;

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
    /// The flips to deny and to allow: name (or destination) → count and the new deciding
    /// rule. Looked up by the borrowed name; a new entry's rule text is made once.
    flips: [HashMap<Box<str>, (u64, String)>; 2],
    /// By rule index: whether the rule decided some connection.
    used: Vec<bool>,
}

/// The directions of a flip, as `flips` indexes them and the report names them.
const DIRECTIONS: [&str; 2] = ["allow_to_deny", "deny_to_allow"];

impl Tally {
    fn replay(&mut self, set: &RuleSet, listeners: &Listeners, c: &Connection) {
        self.records += 1;
        if c.recorded == Recorded::Unreplayable {
            self.not_replayable += 1;
            return;
        }
        let d = set.decide(c.name.as_ref(), c.client, c.dst, c.port);
        if let Some(r) = d.rule {
            self.used[r.index()] = true;
        }
        let direction = match (c.recorded, d.verdict) {
            (Recorded::Allowed, Verdict::Deny) => {
                self.allow_to_deny += 1;
                let always = d.rule.is_some_and(|r| r.always_enforced());
                self.reported += u64::from(!always && listeners.reports(c));
                0
            }
            (Recorded::Denied, Verdict::Allow) => {
                self.deny_to_allow += 1;
                1
            }
            _ => {
                self.same += 1;
                return;
            }
        };
        let rule = || d.rule.map_or_else(|| d.reason.as_str().to_string(), |r| r.to_string());
        let flips = &mut self.flips[direction];
        let entry = match &c.name {
            Some(name) => flips.get_mut(name.as_str()),
            None => None,
        };
        match entry {
            Some(entry) => entry.0 += 1,
            None => {
                let what = c
                    .name
                    .as_ref()
                    .map_or_else(|| c.dst.map_or("(no name)".into(), |d| d.to_string()), |n| n.to_string());
                flips.entry(what.into()).or_insert((0, rule())).0 += 1;
            }
        }
    }
}

/// Runs `snigate replay`.
pub(super) fn replay_command(args: &ReplayArgs) -> ExitCode {
    let (set, listeners) = match ruleset(args) {
        Ok(loaded) => loaded,
        Err((code, message)) => {
            eprintln!("snigate replay: {message}");
            return ExitCode::from(code);
        }
    };
    let mut tally = Tally { used: vec![false; set.len()], ..Tally::default() };
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
    // The rules of the rule files (lists are not reported) that decided nothing: streamed out,
    // as a large rule file's unused rules are many.
    let unused = set.rules().filter(|r| r.line().is_some() && !tally.used[r.index()]);
    print(&tally, unused, args.json);
    ExitCode::from(u8::from(tally.allow_to_deny > tally.reported))
}

/// The rules to replay with, and what the configuration says of its listeners.
fn ruleset(args: &ReplayArgs) -> Result<(RuleSet, Listeners), (u8, String)> {
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
    let listeners = match args.config {
        Some(_) => Listeners::of(&config),
        None => Listeners::default(),
    };
    Ok((set, listeners))
}

fn print<'r>(t: &Tally, unused: impl Iterator<Item = RuleRef<'r>>, as_json: bool) {
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    // Allow-to-deny first (what the gate is about), each direction by count, then by name.
    let mut sorted: Vec<(usize, &str, u64, &str)> = (0..2)
        .flat_map(|d| t.flips[d].iter().map(move |(name, (count, rule))| (d, &**name, *count, rule.as_str())))
        .collect();
    sorted.sort_by(|a, b| (a.0, std::cmp::Reverse(a.2), a.1).cmp(&(b.0, std::cmp::Reverse(b.2), b.1)));
    let flips: Vec<Value> = sorted
        .iter()
        .map(|(d, name, count, rule)| json!({"name": name, "direction": DIRECTIONS[*d], "count": count, "rule": rule}))
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
        });
        // The object without its closing brace, then `unused_rules` one by one.
        let head = v.to_string();
        let _ = write!(out, "{},\"unused_rules\":[", &head[..head.len() - 1]);
        for (i, rule) in unused.enumerate() {
            let _ = write!(out, "{}{}", if i == 0 { "" } else { "," }, Value::from(rule.to_string()));
        }
        let _ = writeln!(out, "]}}");
        return;
    }
    let _ = writeln!(
        out,
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
    for (d, name, count, rule) in &sorted {
        let _ = writeln!(out, "{:>13}  {count:>6}  {name}  (now: {rule})", DIRECTIONS[*d]);
    }
    for rule in unused {
        let _ = writeln!(out, "       unused          {rule}");
    }
}
