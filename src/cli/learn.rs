//! `snigate learn`: a rule file that allows what recorded access logs show was used (allowed,
//! denied and would-be-denied connections alike), to review and then enforce. Exact names by
//! default; a wildcard only where many names share a parent below a registrable domain.

use std::collections::{BTreeSet, HashMap};
use std::fmt::Write as _;
use std::net::IpAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, UNIX_EPOCH};

use serde_json::json;

use super::common::EXIT_USAGE;
use super::logs::{self, Connection, Listeners, LogFilter, Protocol, Recorded};
use crate::config::Config;
use crate::outcome::rfc3339;
use crate::rules::suffix::below_registrable;

/// Arguments of `snigate learn`.
#[derive(Debug, clap::Args)]
pub struct LearnArgs {
    /// JSON access logs as snigate writes them (`-`: standard input; gzip read as such).
    #[arg(value_name = "LOG", required = true)]
    pub logs: Vec<PathBuf>,
    /// Collapse names into `*.parent` only when at least this many distinct names share the
    /// parent (and the parent lies below a registrable domain).
    #[arg(long, value_name = "N", default_value_t = 5, value_parser = clap::value_parser!(u32).range(2..))]
    pub min_names: u32,
    /// Print one JSON object (the rules with their counts) instead of a rule file.
    #[arg(long)]
    pub json: bool,
    /// The configuration the logs were recorded under: its listeners' modes give the port a
    /// denied connection asked for where the log does not show it (else 443 is assumed).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Which recorded connections to learn from.
    #[command(flatten)]
    pub filter: LogFilter,
}

/// What the logs show of one name or address.
#[derive(Debug, Default, Clone)]
struct Seen {
    /// Connections.
    count: u64,
    /// Unix seconds of the last one (0: no time recorded).
    last: i64,
    /// Destination ports.
    ports: BTreeSet<u16>,
    /// Whether one spoke neither TLS nor HTTP (decided by the destination alone).
    other: bool,
}

impl Seen {
    fn add(&mut self, c: &Connection) {
        self.count += 1;
        self.last = self.last.max(c.time.unwrap_or(0));
        self.ports.insert(c.port);
        self.other |= c.protocol == Protocol::Other;
    }

    fn merge(&mut self, other: &Seen) {
        self.count += other.count;
        self.last = self.last.max(other.last);
        self.ports.extend(&other.ports);
        self.other |= other.other;
    }
}

/// One learned rule.
#[derive(Debug)]
struct Learned {
    /// The rule's target: a name, `*.parent`, or `ip ADDR/LEN`.
    target: String,
    /// Distinct names it covers (1 for an exact name or an address).
    names: usize,
    /// What the logs show of it.
    seen: Seen,
    /// Whether the rule carries the `port` clause (an `ip` rule only for what spoke neither
    /// TLS nor HTTP: see [`ip_rule`]).
    by_port: bool,
}

impl Learned {
    fn line(&self) -> String {
        let mut line = format!("allow {}", self.target);
        if self.by_port {
            line.push_str(" port ");
            line.push_str(&ports(&self.seen.ports));
        }
        line
    }

    fn comment(&self) -> String {
        let mut c = String::new();
        if self.names > 1 {
            let _ = write!(c, "{} names, ", self.names);
        }
        let _ =
            write!(c, "{} connection{}, last seen {}", self.seen.count, plural(self.seen.count), last(self.seen.last));
        if !self.by_port {
            let _ = write!(c, "; ports seen: {}", ports(&self.seen.ports));
        }
        c
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn last(unix: i64) -> String {
    match u64::try_from(unix) {
        Ok(s) if s > 0 => rfc3339(UNIX_EPOCH + Duration::from_secs(s)),
        _ => "at an unrecorded time".into(),
    }
}

/// Ports as a `port` clause writes them: runs of consecutive ports as ranges.
fn ports(set: &BTreeSet<u16>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut it = set.iter().copied().peekable();
    while let Some(first) = it.next() {
        let mut end = first;
        while it.peek() == Some(&(end.wrapping_add(1))) && end < u16::MAX {
            end = it.next().unwrap_or(end);
        }
        out.push(if end == first { first.to_string() } else { format!("{first}-{end}") });
    }
    out.join(", ")
}

/// What was read, for the summary.
#[derive(Debug, Default)]
struct Counts {
    /// Connections read (after the filter).
    records: u64,
    /// Of them, learned from.
    learned: u64,
    /// Denied for a reason no rule changes (the guard, limits, a malformed hello), or without
    /// a name or a destination a rule could allow.
    not_learnable: u64,
    /// Lines that could not be read.
    unreadable: u64,
}

/// The parent domain of `name`: all but its first label.
fn parent(name: &str) -> Option<&str> {
    name.split_once('.').map(|(_, p)| p)
}

/// Collapses `names` into rules: a parent with at least `min` distinct names directly below
/// it, and below a registrable domain, becomes `*.parent` (covering every seen name below it,
/// at any depth); the other names stay exact.
fn collapse(names: HashMap<String, Seen>, min: usize) -> Vec<Learned> {
    let mut children: HashMap<&str, usize> = HashMap::new();
    for name in names.keys() {
        if let Some(p) = parent(name) {
            *children.entry(p).or_default() += 1;
        }
    }
    let wide: BTreeSet<String> =
        children.into_iter().filter(|(p, n)| *n >= min && below_registrable(p)).map(|(p, _)| p.to_string()).collect();
    // The widest wildcard that covers a name: its highest collapsed ancestor.
    let cover = |name: &str| {
        let mut found = None;
        let mut at = parent(name);
        while let Some(p) = at {
            if wide.contains(p) {
                found = Some(p.to_string());
            }
            at = parent(p);
        }
        found
    };
    let mut rules: HashMap<String, Learned> = HashMap::new();
    for (name, seen) in names {
        let target = cover(&name).map_or(name, |p| format!("*.{p}"));
        let rule = rules.entry(target.clone()).or_insert_with(|| Learned {
            target,
            names: 0,
            seen: Seen::default(),
            by_port: true,
        });
        rule.names += 1;
        rule.seen.merge(&seen);
    }
    rules.into_values().collect()
}

/// The rule for a destination without a name. Without a `port` clause it decides connections
/// without SNI only; with one, in transparent mode, it also lets every connection to that
/// address and port through before the client speaks, whatever name it then sends. So a port
/// clause is written only for what spoke neither TLS nor HTTP, which needs it.
fn ip_rule(ip: IpAddr, seen: Seen) -> Learned {
    let len = if ip.is_ipv4() { 32 } else { 128 };
    Learned { target: format!("ip {ip}/{len}"), names: 1, by_port: seen.other, seen }
}

/// Sorts rules as a reader looks for them: names by domain (their labels from the right), then
/// addresses.
fn sort(rules: &mut [Learned]) {
    let key = |r: &Learned| {
        let ip = r.target.strip_prefix("ip ").and_then(|t| t.split('/').next()).and_then(|a| a.parse::<IpAddr>().ok());
        let labels: Vec<String> = r.target.trim_start_matches("*.").rsplit('.').map(str::to_string).collect();
        (ip.is_some(), ip, labels, r.target.starts_with("*."))
    };
    rules.sort_by_cached_key(key);
}

/// Runs `snigate learn`.
pub(super) fn learn_command(args: &LearnArgs) -> ExitCode {
    let listeners = match &args.config {
        Some(path) => match Config::load(path) {
            Ok(config) => Listeners::of(&config),
            Err(e) => {
                eprintln!("snigate learn: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        },
        None => Listeners::default(),
    };
    let mut counts = Counts::default();
    let mut names: HashMap<String, Seen> = HashMap::new();
    let mut ips: HashMap<IpAddr, Seen> = HashMap::new();
    let read = logs::read(&args.logs, |mut c| {
        if !args.filter.keeps(&c) {
            return;
        }
        listeners.settle(&mut c);
        counts.records += 1;
        let seen = match (&c.name, c.dst) {
            _ if c.recorded == Recorded::Unreplayable => None,
            (Some(name), _) => Some(names.entry(name.to_string()).or_default()),
            (None, Some(dst)) => Some(ips.entry(dst.ip().to_canonical()).or_default()),
            (None, None) => None,
        };
        match seen {
            Some(seen) => {
                seen.add(&c);
                counts.learned += 1;
            }
            None => counts.not_learnable += 1,
        }
    });
    match read {
        Ok(skipped) => counts.unreadable = skipped.unreadable,
        Err(e) => {
            eprintln!("snigate learn: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    }
    let mut rules = collapse(names, args.min_names as usize);
    rules.extend(ips.into_iter().map(|(ip, seen)| ip_rule(ip, seen)));
    sort(&mut rules);
    print(&rules, &counts, args);
    ExitCode::SUCCESS
}

fn print(rules: &[Learned], counts: &Counts, args: &LearnArgs) {
    let summary = format!(
        "{} rules from {} connections ({} not learnable: denied for a reason no rule changes, or \
         without a name or destination; {} unreadable lines skipped)",
        rules.len(),
        counts.learned,
        counts.not_learnable,
        counts.unreadable
    );
    if args.json {
        let rules: Vec<_> = rules
            .iter()
            .map(|r| {
                json!({
                    "rule": r.line(),
                    "names": r.names,
                    "count": r.seen.count,
                    "last_seen": (r.seen.last > 0).then(|| last(r.seen.last)),
                    "ports": r.seen.ports,
                })
            })
            .collect();
        let v = json!({
            "records": counts.records,
            "learned": counts.learned,
            "not_learnable": counts.not_learnable,
            "unreadable": counts.unreadable,
            "rules": rules,
        });
        println!("{v}");
        return;
    }
    let width = rules.iter().map(|r| r.line().len()).max().unwrap_or(0);
    let mut out = format!(
        "# Learned by `snigate learn` from recorded traffic: {summary}.\n\
         # Names share a wildcard at {} distinct names below a registrable domain. Review before enforcing.\n",
        args.min_names
    );
    for r in rules {
        let _ = writeln!(out, "{:width$}  # {}", r.line(), r.comment());
    }
    print!("{out}");
    eprintln!("snigate learn: {summary}");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(count: u64, last: i64, ports: &[u16]) -> Seen {
        Seen { count, last, ports: ports.iter().copied().collect(), other: false }
    }

    fn learned(names: &[(&str, u64)], min: usize) -> Vec<(String, usize, u64)> {
        let names = names.iter().map(|(n, c)| (n.to_string(), seen(*c, 1, &[443]))).collect();
        let mut rules = collapse(names, min);
        sort(&mut rules);
        rules.into_iter().map(|r| (r.line(), r.names, r.seen.count)).collect()
    }

    #[test]
    fn names_collapse_only_from_enough_siblings_below_a_registrable_domain() {
        let tenants =
            [("a.my.example.com", 1), ("b.my.example.com", 2), ("c.my.example.com", 1), ("d.x.my.example.com", 1)];
        assert_eq!(
            learned(&tenants, 3),
            [("allow *.my.example.com port 443".into(), 4, 5)],
            "three direct children collapse, and the wildcard covers the deeper name too"
        );
        assert_eq!(learned(&tenants, 5).len(), 4, "below --min-names every name stays exact");
        let registrable = [("a.example.com", 1), ("b.example.com", 1), ("c.example.com", 1)];
        assert_eq!(learned(&registrable, 2).len(), 3, "never *.example.com: that is the registrable domain");
        let suffix = [("a.co.uk", 1), ("b.co.uk", 1), ("c.co.uk", 1)];
        assert_eq!(learned(&suffix, 2).len(), 3, "never a wildcard over a public suffix");
        let private = [("a.github.io", 1), ("b.github.io", 1)];
        assert_eq!(learned(&private, 2).len(), 2, "private-section suffixes count too");
        let nested =
            [("a.x.p.example.com", 1), ("b.x.p.example.com", 1), ("c.p.example.com", 1), ("x.p.example.com", 1)];
        let rules = learned(&nested, 2);
        assert_eq!(
            rules,
            [("allow *.p.example.com port 443".into(), 4, 4)],
            "the widest collapsed parent takes the names below it"
        );
        let apex = [("my.example.com", 1), ("a.my.example.com", 1), ("b.my.example.com", 1)];
        let rules: Vec<String> = learned(&apex, 2).into_iter().map(|r| r.0).collect();
        assert_eq!(rules, ["allow my.example.com port 443", "allow *.my.example.com port 443"], "the apex stays exact");
    }

    #[test]
    fn ports_are_written_as_a_port_clause_reads_them() {
        let set = |p: &[u16]| p.iter().copied().collect::<BTreeSet<u16>>();
        assert_eq!(ports(&set(&[443])), "443");
        assert_eq!(ports(&set(&[80, 443, 8000, 8001, 8002, 8443])), "80, 443, 8000-8002, 8443");
        assert_eq!(ports(&set(&[65534, 65535])), "65534-65535");
    }

    #[test]
    fn addresses_take_a_port_clause_only_for_what_spoke_neither_tls_nor_http() {
        let tls = ip_rule("192.0.2.9".parse().unwrap(), seen(3, 0, &[443]));
        assert_eq!(tls.line(), "allow ip 192.0.2.9/32");
        assert!(
            tls.comment().contains("ports seen: 443") && tls.comment().contains("unrecorded time"),
            "{}",
            tls.comment()
        );
        let smtp = ip_rule("2001:db8::25".parse().unwrap(), Seen { other: true, ..seen(1, 1_700_000_000, &[25]) });
        assert_eq!(smtp.line(), "allow ip 2001:db8::25/128 port 25");
        assert_eq!(smtp.comment(), "1 connection, last seen 2023-11-14T22:13:20.000Z");
    }
}
