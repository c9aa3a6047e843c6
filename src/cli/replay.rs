//! `snigate replay`: every connection of recorded access logs decided again under other rules,
//! with the same compiled `RuleSet` the proxy decides with: what would flip, and which rules no
//! recorded connection used. A gate for rule changes, like `promtool test rules` for alerts.

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::{Value, json};

use super::common::{EXIT_INVALID, EXIT_USAGE};
use crate::config::Config;
use crate::name::Name;
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
}

/// How a recorded connection was decided by the policy of its time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Recorded {
    /// The policy allowed it (whether the upstream then answered or not).
    Allowed,
    /// The policy denied it, or would have (a report scope let it through).
    Denied,
    /// Denied for a reason no rule changes (the destination guard, limits, a malformed hello).
    Unreplayable,
}

/// One recorded connection, as far as the rules see it.
struct Connection {
    recorded: Recorded,
    name: Option<Name>,
    client: IpAddr,
    dst: Option<SocketAddr>,
    port: u16,
}

/// Reads one access-log line: `None` for a line that is not a connection's (a summary line),
/// `Err` for one that cannot be read.
fn connection(line: &str) -> Result<Option<Connection>, ()> {
    let v: Value = serde_json::from_str(line).map_err(drop)?;
    let Some(verdict) = v["verdict"].as_str() else { return Ok(None) };
    let reason = v["reason"].as_str().ok_or(())?;
    let recorded = match (verdict, reason) {
        (_, "report") => Recorded::Denied,
        ("allow" | "error", _) => Recorded::Allowed,
        ("deny", "rule" | "default" | "no_sni") => Recorded::Denied,
        _ => Recorded::Unreplayable,
    };
    let client: SocketAddr = v["client"].as_str().and_then(|c| c.parse().ok()).ok_or(())?;
    let addr = |key: &str| v[key].as_str().and_then(|a| a.parse::<SocketAddr>().ok());
    let host = v["host"].as_str().map(|h| h.rsplit_once(':').map_or((h, None), |(n, p)| (n, p.parse::<u16>().ok())));
    let name = v["sni"].as_str().or(host.map(|(n, _)| n)).and_then(|n| Name::parse(n.as_bytes(), false).ok());
    // The destination the rules saw: the original one (transparent), else, for a connection
    // without a name, the address it went to.
    let dst = addr("original_dst").or_else(|| if name.is_none() { addr("upstream") } else { None });
    let port = dst
        .map(|d| d.port())
        .or(host.and_then(|(_, p)| p))
        .or_else(|| addr("upstream").map(|u| u.port()))
        .unwrap_or(443);
    Ok(Some(Connection { recorded, name, client: client.ip(), dst, port }))
}

/// What a replay found.
#[derive(Default)]
struct Tally {
    records: u64,
    same: u64,
    allow_to_deny: u64,
    deny_to_allow: u64,
    not_replayable: u64,
    unreadable: u64,
    /// (name or destination, direction) → (count, the new deciding rule).
    flips: BTreeMap<(String, &'static str), (u64, String)>,
    /// The rules that decided some connection, as `file:line`.
    used: BTreeSet<String>,
}

impl Tally {
    fn replay(&mut self, set: &RuleSet, c: &Connection) {
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
            "allow_to_deny" => self.allow_to_deny += 1,
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
    let (set, rules) = match ruleset(args) {
        Ok(loaded) => loaded,
        Err((code, message)) => {
            eprintln!("snigate replay: {message}");
            return ExitCode::from(code);
        }
    };
    let mut tally = Tally::default();
    for path in &args.logs {
        let reader: Box<dyn BufRead> = match path.as_os_str() == "-" {
            true => Box::new(std::io::stdin().lock()),
            false => match std::fs::File::open(path) {
                Ok(f) => Box::new(std::io::BufReader::new(f)),
                Err(e) => {
                    eprintln!("snigate replay: {}: {e}", path.display());
                    return ExitCode::from(EXIT_USAGE);
                }
            },
        };
        // Streamed: memory follows the distinct names flipped, not the log's length.
        for line in reader.lines() {
            let Ok(line) = line else {
                tally.unreadable += 1;
                continue;
            };
            match connection(&line) {
                Ok(Some(c)) => tally.replay(&set, &c),
                Ok(None) => {}
                Err(()) => tally.unreadable += 1,
            }
        }
    }
    let unused: Vec<String> =
        rules.iter().map(|r| format!("{}:{}", r.file, r.line)).filter(|r| !tally.used.contains(r)).collect();
    print(&tally, &unused, args.json);
    ExitCode::from(u8::from(tally.allow_to_deny > 0))
}

/// The rules to replay with, and the rule files' rules (to tell the unused ones).
fn ruleset(args: &ReplayArgs) -> Result<(RuleSet, Vec<Rule>), (u8, String)> {
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
    Ok((set, rules))
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
            "not_replayable": t.not_replayable,
            "unreadable": t.unreadable,
            "flips": flips,
            "unused_rules": unused,
        });
        println!("{v}");
        return;
    }
    println!(
        "{} connections: {} the same, {} allow to deny, {} deny to allow, {} not replayable{}",
        t.records,
        t.same,
        t.allow_to_deny,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_log_line_says_what_the_rules_saw() {
        let allowed = r#"{"client":"10.0.0.1:4000","sni":"a.example.com","verdict":"allow","reason":"rule","upstream":"192.0.2.1:443"}"#;
        let c = connection(allowed).unwrap().unwrap();
        assert_eq!((c.recorded, c.name.unwrap().as_str(), c.port), (Recorded::Allowed, "a.example.com", 443));
        let reported = r#"{"client":"10.0.0.1:4000","host":"b.example.com:8080","verdict":"allow","reason":"report"}"#;
        let c = connection(reported).unwrap().unwrap();
        assert_eq!((c.recorded, c.name.unwrap().as_str(), c.port), (Recorded::Denied, "b.example.com", 8080));
        let guarded = r#"{"client":"10.0.0.1:4000","sni":"c.example.com","verdict":"deny","reason":"dst_denied"}"#;
        assert_eq!(connection(guarded).unwrap().unwrap().recorded, Recorded::Unreplayable);
        let no_name = r#"{"client":"10.0.0.1:4000","original_dst":"192.0.2.9:25","verdict":"deny","reason":"no_sni"}"#;
        let c = connection(no_name).unwrap().unwrap();
        assert_eq!((c.dst, c.port), (Some("192.0.2.9:25".parse().unwrap()), 25));
        assert!(connection(r#"{"event":"log_suppressed"}"#).unwrap().is_none());
        assert!(connection("not json").is_err());
    }
}
