//! `snigate match`: the verdict for a name, the rule that decided it, and why.

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;

use serde_json::json;

use super::common::{EXIT_INVALID, EXIT_USAGE, ListArgs, compile, configured_for, parse_verdict};
use crate::name::Name;
use crate::policy::decide::Decision;
use crate::proxy::report::Scopes;
use crate::reason::Reason;
use crate::rules::file::rule_text;
use crate::rules::precedence::Kind;
use crate::rules::rule::Verdict;

/// Arguments of `snigate match`.
#[derive(Debug, clap::Args)]
pub struct MatchArgs {
    /// The server name to decide.
    #[arg(required_unless_present = "no_sni")]
    pub name: Option<String>,
    /// Decide a connection without SNI (by the `ip` rules and `--dst`).
    #[arg(long, conflicts_with = "name")]
    pub no_sni: bool,
    /// A rule file, or a directory of `*.rules` files (repeatable). None: the embedded
    /// Salesforce preset.
    #[arg(long = "rules", value_name = "PATH")]
    pub rules: Vec<PathBuf>,
    /// The client address, for rules with `from`.
    #[arg(long, value_name = "IP", default_value = "0.0.0.0")]
    pub from: IpAddr,
    /// The destination, `IP:PORT` or `IP`, for `ip` rules. Its port is the destination port
    /// when `--port` is not given.
    #[arg(long, value_name = "IP:PORT", value_parser = parse_dst)]
    pub dst: Option<SocketAddr>,
    /// The destination port, for rules with `port`. Without it (or a port in `--dst`), rules
    /// with `port` do not apply.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// Verdict for names no rule matches.
    #[arg(long, value_name = "allow|deny", default_value = "deny", value_parser = parse_verdict)]
    pub default: Verdict,
    /// Accept `_` in the name.
    #[arg(long)]
    pub sni_allow_underscore: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Decide as this configuration's listener would: its rules, default, `no_sni`, lists,
    /// mode, ports and `upstream_port` (instead of `--rules`, `--list` and `--default`).
    #[arg(long, value_name = "FILE", conflicts_with_all = ["rules", "lists", "default"])]
    pub config: Option<PathBuf>,
    /// With `--config`: the listener (its name, or its address when unnamed). Default: the first.
    #[arg(long, value_name = "NAME", requires = "config")]
    pub listener: Option<String>,
    /// Large lists to load with the rules.
    #[command(flatten)]
    pub lists: ListArgs,
}

/// `IP:PORT`, or `IP` with port 0: no port.
fn parse_dst(text: &str) -> Result<SocketAddr, String> {
    text.parse::<SocketAddr>()
        .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 0)))
        .map_err(|_| format!("`{text}` is not IP:PORT or IP"))
}

/// The destination port to decide with: `--port`, else `--dst`'s, else 0 (unknown).
fn port(args: &MatchArgs) -> Result<u16, String> {
    match (args.port, args.dst.map(|d| d.port()).filter(|&p| p != 0)) {
        (Some(port), Some(dst)) if port != dst => Err(format!("--port {port} and --dst port {dst} disagree")),
        (Some(port), _) | (None, Some(port)) => Ok(port),
        (None, None) => Ok(0),
    }
}

pub(super) fn match_command(args: &MatchArgs) -> ExitCode {
    let port = match port(args) {
        Ok(port) => port,
        Err(usage) => {
            eprintln!("snigate match: {usage}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let configured = match configured_for("match", args.config.as_deref(), args.listener.as_deref()) {
        Ok(configured) => configured,
        Err(code) => return code,
    };
    let compiled;
    let set = match &configured {
        Some(c) => &c.rules,
        None => match compile(&args.rules, &args.lists, args.default) {
            Ok(set) => {
                compiled = set;
                &compiled
            }
            Err(Ok(errors)) => {
                eprintln!("snigate match: invalid rules:\n{errors}");
                return ExitCode::from(EXIT_INVALID);
            }
            Err(Err(usage)) => {
                eprintln!("snigate match: {usage}");
                return ExitCode::from(EXIT_USAGE);
            }
        },
    };
    let underscore = configured.as_ref().map_or(args.sni_allow_underscore, |c| c.config.rules.sni_allow_underscore);
    let name = match args.name.as_deref().map(|n| Name::parse(n.as_bytes(), underscore)) {
        Some(Err(e)) => {
            let shown = args.name.as_deref().unwrap_or_default();
            if args.json {
                println!(
                    "{}",
                    json!({ "name": shown, "verdict": "deny", "reason": Reason::InvalidSni.as_str(), "rule": null, "error": e.to_string() })
                );
            } else {
                println!("deny {shown:?}\nreason: {}\nwhy:    not a valid host name: {e}", Reason::InvalidSni);
            }
            return ExitCode::from(EXIT_INVALID);
        }
        Some(Ok(name)) => Some(name),
        None => None,
    };
    // A configured listener asks with the destination and port its mode gives.
    let (dst, port) = match &configured {
        None => (args.dst, port),
        Some(c) => match c.ask(name.is_some(), args.dst, (port != 0).then_some(port)) {
            Ok(asked) => asked,
            Err(why) => {
                let shown = name.as_ref().map(Name::as_str);
                if args.json {
                    let reason = Reason::DstDenied.as_str();
                    println!(
                        "{}",
                        json!({ "name": shown, "verdict": "deny", "reason": reason, "rule": null, "explanation": why })
                    );
                } else {
                    println!(
                        "deny {}\nreason: {}\nrule:   (none)\nwhy:    {why}",
                        shown.unwrap_or("(no SNI)"),
                        Reason::DstDenied
                    );
                }
                return ExitCode::SUCCESS;
            }
        },
    };
    let unported = port == 0 && set.has_port_rules();
    let d = set.decide(name.as_ref(), args.from, dst, port);
    let why = explain(&d, name.as_ref(), dst, port);
    // The snapshot keeps the rule's line, not its text: read it again.
    let text = d.rule.map(|r| match r.line() {
        Some(line) => {
            let preset = configured.as_ref().map_or(args.rules.is_empty(), |c| c.config.rules.files.is_none());
            rule_text(r.ruleset(), line, preset).unwrap_or_default()
        }
        None => format!("list {}", r.ruleset()),
    });
    // A denial a report scope of the configuration covers for this client (`--from`) is let
    // through and logged as reported, unless its rule's file or list is always enforced.
    let reported = configured.as_ref().is_some_and(|c| {
        d.verdict == Verdict::Deny
            && !d.rule.is_some_and(|r| r.always_enforced())
            && Scopes::of(&c.config).cover(c.index, args.from)
    });
    let (verdict, reason, would) = match reported {
        true => (Verdict::Allow, Reason::Report, Some(d.reason)),
        false => (d.verdict, d.reason, None),
    };
    if args.json {
        let v = json!({
            "name": name.as_ref().map(Name::as_str),
            "verdict": verdict.as_str(),
            "reason": reason.as_str(),
            "would_reason": would.map(Reason::as_str),
            "rule": d.rule.map(|r| r.to_string()),
            "ruleset": d.rule.map(|r| r.ruleset()),
            "rule_text": text,
            "explanation": why,
            "port": (port != 0).then_some(port),
        });
        println!("{v}");
    } else {
        println!("{} {}", verdict, name.as_ref().map_or("(no SNI)", Name::as_str));
        match would {
            Some(would) => println!(
                "reason: {reason} (a report scope covers {}: enforced, it would be denied, {would})",
                args.from
            ),
            None => println!("reason: {reason}"),
        }
        match (d.rule, text) {
            (Some(r), Some(t)) => println!("rule:   {r}  {t}"),
            _ => println!("rule:   (none)"),
        }
        println!("why:    {why}");
        if unported {
            println!("note:   no --port: rules with `port` do not apply");
        }
    }
    ExitCode::SUCCESS
}

/// One sentence on why `d` came out as it did.
fn explain(d: &Decision<'_>, name: Option<&Name>, dst: Option<SocketAddr>, port: u16) -> String {
    let suffix = |labels: u8| {
        let n = name.map_or("", Name::as_str);
        let count = n.split('.').count();
        n.split('.').skip(count.saturating_sub(labels as usize)).collect::<Vec<_>>().join(".")
    };
    match (d.reason, d.matched) {
        (Reason::NoSni, _) => match dst {
            Some(dst) if port != 0 => {
                format!("no SNI, and no `ip` rule matches the destination {} on port {port}", dst.ip())
            }
            Some(dst) => format!("no SNI, and no `ip` rule matches the destination {}", dst.ip()),
            None => "no SNI and no destination to match `ip` rules against".to_string(),
        },
        (Reason::Default, _) => format!("no rule matches; the default verdict is {}", d.verdict),
        (_, Some(m)) => match m.kind {
            Kind::Exact => "an exact rule names it (exact rules win over every other kind)".to_string(),
            Kind::Glob => format!("a leftmost-label glob below {} matches; no exact rule", suffix(m.labels)),
            Kind::Apex if m.labels as usize == name.map_or(0, |n| n.as_str().split('.').count()) => {
                format!("`.{}` covers the apex itself; no exact or glob rule", suffix(m.labels))
            }
            Kind::Apex | Kind::Below => {
                format!("the longest matching suffix is {}; no exact, glob or longer-suffix rule", suffix(m.labels))
            }
            Kind::Any => "only the catch-all `*` matches".to_string(),
            Kind::Ip => match dst {
                Some(dst) => format!("no SNI; the destination {} is in a /{} `ip` rule", dst.ip(), m.labels),
                None => "no SNI; an `ip` rule matches".to_string(),
            },
        },
        (_, None) => String::new(),
    }
}
