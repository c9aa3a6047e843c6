//! The command line: argument definitions and one function per subcommand.
//!
//! Exit codes (stable): 0 success, 1 invalid input, 64 usage or configuration error.

mod run;
mod salesforce;

pub use run::{MetricsFlag, RunArgs, configuration};
pub use salesforce::{ImportArgs, ImportSource, IpRangesArgs, SalesforceArgs, SalesforceCommand, TenantArgs};

use std::io::{Read, Write};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::json;
use tls_parser::TlsExtensionType;

use crate::hello::{self, ClientHello, HelloError, Limits, Parse};
use crate::{
    Decision, List, ListSpec, MatchKind, Name, Reason, Rule, RuleErrors, RuleRef, RuleSet, Verdict, load_list,
    load_rules, preset_rules,
};

/// Exit code for invalid input (a bad hello, an invalid rules file).
pub const EXIT_INVALID: u8 = 1;
/// Exit code for a usage or configuration error (sysexits EX_USAGE).
pub const EXIT_USAGE: u8 = 64;

/// snigate: an SNI-inspecting TCP edge filter.
#[derive(Debug, Parser)]
#[command(name = "snigate", version, about)]
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
}

/// Arguments of `snigate hello`.
#[derive(Debug, clap::Args)]
pub struct HelloArgs {
    /// The capture: a file of raw bytes or hex text (auto-detected), or `-` for stdin.
    pub file: PathBuf,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Cap on the hello, record headers included, in bytes.
    #[arg(long, default_value_t = hello::DEFAULT_MAX_HELLO_BYTES)]
    pub max_hello_bytes: usize,
    /// Accept `_` in the server name.
    #[arg(long)]
    pub sni_allow_underscore: bool,
    /// Also print the verdict these rules give the hello (a file or a directory; repeatable).
    #[arg(long = "rules", value_name = "PATH")]
    pub rules: Vec<PathBuf>,
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Run(args) => run::run_command(&args),
        Command::Hello(args) => hello_command(&args),
        Command::Check(args) => check_command(&args),
        Command::Match(args) => match_command(&args),
        Command::Import(args) => salesforce::import_command(&args),
        Command::Salesforce(args) => salesforce::salesforce_command(&args),
        Command::Healthcheck(args) => healthcheck_command(&args),
    }
}

/// Arguments of `snigate healthcheck`.
#[derive(Debug, clap::Args)]
pub struct HealthcheckArgs {
    /// The endpoint, `http://HOST:PORT/PATH`.
    #[arg(default_value = "http://127.0.0.1:9464/healthz")]
    pub url: String,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 3.0)]
    pub timeout: f64,
}

fn healthcheck_command(args: &HealthcheckArgs) -> ExitCode {
    match probe(&args.url, std::time::Duration::from_secs_f64(args.timeout.max(0.001))) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("snigate healthcheck: {}: {e}", args.url);
            ExitCode::from(EXIT_INVALID)
        }
    }
}

/// One HTTP/1.0 GET; Ok when the status is 200.
fn probe(url: &str, timeout: std::time::Duration) -> Result<(), String> {
    let rest = url.strip_prefix("http://").ok_or("only http:// URLs")?;
    let (authority, path) = rest.split_once('/').map_or((rest, "/".to_string()), |(a, p)| (a, format!("/{p}")));
    let addr =
        std::net::ToSocketAddrs::to_socket_addrs(authority).map_err(|e| e.to_string())?.next().ok_or("no address")?;
    let mut stream = std::net::TcpStream::connect_timeout(&addr, timeout).map_err(|e| e.to_string())?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {authority}\r\n\r\n").map_err(|e| e.to_string())?;
    let mut status = [0u8; 12];
    stream.read_exact(&mut status).map_err(|e| e.to_string())?;
    match &status[9..12] {
        b"200" => Ok(()),
        other => Err(format!("status {}", String::from_utf8_lossy(other))),
    }
}

fn hello_command(args: &HelloArgs) -> ExitCode {
    let input = match read_input(&args.file) {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("snigate hello: {}: {e}", args.file.display());
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let bytes = match decode_capture(&input) {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("snigate hello: {}: {e}", args.file.display());
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let limits = Limits { max_hello_bytes: args.max_hello_bytes, allow_underscore: args.sni_allow_underscore };
    let result = match hello::parse(&bytes, limits) {
        Parse::Complete(hello) => Ok(hello),
        Parse::Invalid(e) => Err(e),
        Parse::Incomplete { needed } => Err(HelloError::Malformed(if needed > bytes.len() {
            "truncated: the capture ends before the ClientHello does"
        } else {
            "incomplete"
        })),
    };
    let rules = if args.rules.is_empty() {
        None
    } else {
        match load_rules(&args.rules) {
            Ok(rules) => Some(RuleSet::new(rules, Vec::new(), Verdict::Deny)),
            Err(errors) => {
                eprint!("snigate hello: invalid rules:\n{errors}");
                return ExitCode::from(EXIT_USAGE);
            }
        }
    };
    let mut out = std::io::stdout().lock();
    let printed = match (&result, args.json) {
        (Ok(hello), json) => {
            let decision = rules.as_ref().map(|r| r.decide(hello.sni.as_ref(), IpAddr::from([0, 0, 0, 0]), None));
            let verdict = decision.map(|d| (d.verdict.as_str(), d.reason.as_str(), d.rule.map(ToString::to_string)));
            if json {
                let mut v = hello_json(hello);
                if let Some((verdict, reason, rule)) = verdict {
                    v["verdict"] = json!(verdict);
                    v["reason"] = json!(reason);
                    v["rule"] = json!(rule);
                }
                writeln!(out, "{v}")
            } else {
                let mut text = hello_text(hello);
                if let Some((verdict, reason, rule)) = verdict {
                    text += &format!("verdict:        {verdict} ({reason}, rule {})\n", rule.as_deref().unwrap_or("-"));
                }
                write!(out, "{text}")
            }
        }
        (Err(e), true) => writeln!(out, "{}", json!({ "error": e.reason().as_str(), "detail": e.to_string() })),
        (Err(e), false) => writeln!(out, "invalid: {} ({e})", e.reason()),
    };
    match (printed, result) {
        (Err(_), _) | (_, Err(_)) => ExitCode::from(EXIT_INVALID),
        (Ok(()), Ok(_)) => ExitCode::SUCCESS,
    }
}

fn read_input(path: &Path) -> std::io::Result<Vec<u8>> {
    if path == Path::new("-") {
        let mut bytes = Vec::new();
        std::io::stdin().lock().read_to_end(&mut bytes)?;
        Ok(bytes)
    } else {
        std::fs::read(path)
    }
}

/// A capture is hex text when it holds only hex digits and whitespace; anything else is raw
/// bytes. A raw hello starts with 0x16, which is not a hex digit, so the two never overlap.
pub fn decode_capture(input: &[u8]) -> Result<Vec<u8>, hex::FromHexError> {
    let is_hex = input.iter().any(u8::is_ascii_hexdigit)
        && input.iter().all(|b| b.is_ascii_hexdigit() || b.is_ascii_whitespace());
    if !is_hex {
        return Ok(input.to_vec());
    }
    let digits: Vec<u8> = input.iter().copied().filter(u8::is_ascii_hexdigit).collect();
    hex::decode(digits)
}

/// `0` → `ServerName(0)` via tls-parser's names; GREASE and unnamed types by number.
fn extension_name(ty: u16) -> String {
    if hello::is_grease(ty) {
        return format!("grease(0x{ty:04x})");
    }
    if ty == hello::EXT_ECH {
        return format!("encrypted_client_hello(0x{ty:04x})");
    }
    let name = TlsExtensionType(ty).to_string();
    if !name.chars().all(|c| c.is_ascii_alphanumeric()) || name.starts_with(|c: char| c.is_ascii_digit()) {
        format!("0x{ty:04x}")
    } else {
        format!("{name}({ty})")
    }
}

fn hello_json(h: &ClientHello) -> serde_json::Value {
    json!({
        "sni": h.sni,
        "alpn": h.alpn,
        "ech": h.ech,
        "versions": h.offered_versions().iter().map(|&v| hello::version_name(v)).collect::<Vec<_>>(),
        "legacy_version": hello::version_name(h.legacy_version),
        "extensions": h.extensions,
        "records": h.records,
        "bytes": h.wire_bytes,
        "hello_bytes": h.hello_bytes,
    })
}

fn hello_text(h: &ClientHello) -> String {
    let list = |items: Vec<String>| {
        if items.is_empty() { "-".to_string() } else { items.join(", ") }
    };
    format!(
        "sni:            {}\nalpn:           {}\nversions:       {}\nlegacy_version: {}\nech:            {}\nextensions:     {}\nsize:           {} hello bytes in {} record(s), {} bytes on the wire\n",
        h.sni.as_ref().map_or("(none)", |n| n.as_str()),
        list(h.alpn.clone()),
        list(h.offered_versions().into_iter().map(hello::version_name).collect()),
        hello::version_name(h.legacy_version),
        if h.ech { "present (encrypted_client_hello)" } else { "absent" },
        list(h.extensions.iter().map(|&t| extension_name(t)).collect()),
        h.hello_bytes,
        h.records,
        h.wire_bytes,
    )
}

/// Arguments of `snigate check`.
#[derive(Debug, clap::Args)]
pub struct CheckArgs {
    /// Rule files, or directories of `*.rules` files. None: the embedded Salesforce preset.
    pub files: Vec<PathBuf>,
    /// Large lists to load with the rules.
    #[command(flatten)]
    pub lists: ListArgs,
}

/// Large lists on the command line (the configuration file names them otherwise).
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// A large list tied to an action: `deny=blocklist.txt` (repeatable). Its ruleset name
    /// is the file name.
    #[arg(long = "list", value_name = "ACTION=PATH")]
    pub lists: Vec<String>,
    /// Skip and count malformed list lines instead of failing.
    #[arg(long)]
    pub lenient: bool,
}

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
    /// The destination, `IP:PORT` or `IP` (port 443), for `ip` rules.
    #[arg(long, value_name = "IP:PORT", value_parser = parse_dst)]
    pub dst: Option<SocketAddr>,
    /// Verdict for names no rule matches.
    #[arg(long, value_name = "allow|deny", default_value = "deny", value_parser = parse_verdict)]
    pub default: Verdict,
    /// Accept `_` in the name.
    #[arg(long)]
    pub sni_allow_underscore: bool,
    /// Print one JSON object instead of text.
    #[arg(long)]
    pub json: bool,
    /// Large lists to load with the rules.
    #[command(flatten)]
    pub lists: ListArgs,
}

fn parse_dst(text: &str) -> Result<SocketAddr, String> {
    text.parse::<SocketAddr>()
        .or_else(|_| text.parse::<IpAddr>().map(|ip| SocketAddr::new(ip, 443)))
        .map_err(|_| format!("`{text}` is not IP:PORT or IP"))
}

fn parse_verdict(text: &str) -> Result<Verdict, String> {
    match text {
        "allow" => Ok(Verdict::Allow),
        "deny" => Ok(Verdict::Deny),
        _ => Err(format!("`{text}`: expected allow or deny")),
    }
}

/// `ACTION=PATH` → a list spec named after the file.
fn parse_list_arg(arg: &str, lenient: bool) -> Result<(ListSpec, PathBuf), String> {
    let (action, path) = arg.split_once('=').ok_or_else(|| format!("--list {arg}: expected ACTION=PATH"))?;
    let verdict = parse_verdict(action).map_err(|e| format!("--list {arg}: {e}"))?;
    let path = PathBuf::from(path);
    let name = path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned());
    Ok((ListSpec { name, verdict, lenient }, path))
}

/// Everything `check` and `match` load, with every error of every file and list.
struct Loaded {
    rules: Vec<Rule>,
    lists: Vec<List>,
    /// What was loaded, for the report.
    sources: Vec<String>,
}

/// `Err(Ok(errors))`: invalid input; `Err(Err(message))`: a usage error.
fn load(paths: &[PathBuf], list_args: &ListArgs) -> Result<Loaded, Result<RuleErrors, String>> {
    let specs = list_args
        .lists
        .iter()
        .map(|a| parse_list_arg(a, list_args.lenient))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Err)?;
    let mut errors = Vec::new();
    let (rules, mut sources): (Vec<Rule>, Vec<String>) = if paths.is_empty() {
        let names = crate::PRESET.iter().map(|(name, _)| format!("{name} (embedded)")).collect();
        (
            preset_rules().unwrap_or_else(|e| {
                errors.extend(e.0);
                Vec::new()
            }),
            names,
        )
    } else {
        let names = paths.iter().map(|p| p.display().to_string()).collect();
        (
            load_rules(paths).unwrap_or_else(|e| {
                errors.extend(e.0);
                Vec::new()
            }),
            names,
        )
    };
    let mut lists = Vec::new();
    for (spec, path) in &specs {
        sources.push(format!("{} ({} list)", path.display(), spec.verdict));
        match load_list(spec, path) {
            Ok(list) => lists.push(list),
            Err(e) => errors.extend(e.0),
        }
    }
    if errors.is_empty() { Ok(Loaded { rules, lists, sources }) } else { Err(Ok(RuleErrors(errors))) }
}

fn check_command(args: &CheckArgs) -> ExitCode {
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
    let report = crate::check(&loaded.rules, &loaded.lists);
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

fn match_command(args: &MatchArgs) -> ExitCode {
    let loaded = match load(&args.rules, &args.lists) {
        Ok(loaded) => loaded,
        Err(Ok(errors)) => {
            eprintln!("snigate match: invalid rules:\n{errors}");
            return ExitCode::from(EXIT_USAGE);
        }
        Err(Err(usage)) => {
            eprintln!("snigate match: {usage}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let name = match args.name.as_deref().map(|n| Name::parse(n.as_bytes(), args.sni_allow_underscore)) {
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
    let set = RuleSet::new(loaded.rules, loaded.lists, args.default);
    let d = set.decide(name.as_ref(), args.from, args.dst);
    let why = explain(&d, name.as_ref(), args.dst);
    let text = d.rule.map(|r| match r {
        RuleRef::Line { text, .. } => text.to_string(),
        RuleRef::List { name } => format!("list {name}"),
    });
    if args.json {
        let v = json!({
            "name": name.as_ref().map(Name::as_str),
            "verdict": d.verdict.as_str(),
            "reason": d.reason.as_str(),
            "rule": d.rule.map(ToString::to_string),
            "ruleset": d.rule.map(RuleRef::ruleset),
            "rule_text": text,
            "explanation": why,
        });
        println!("{v}");
    } else {
        println!("{} {}", d.verdict, name.as_ref().map_or("(no SNI)", Name::as_str));
        println!("reason: {}", d.reason);
        match (d.rule, text) {
            (Some(r), Some(t)) => println!("rule:   {r}  {t}"),
            _ => println!("rule:   (none)"),
        }
        println!("why:    {why}");
    }
    ExitCode::SUCCESS
}

/// One sentence on why `d` came out as it did.
fn explain(d: &Decision<'_>, name: Option<&Name>, dst: Option<SocketAddr>) -> String {
    let suffix = |labels: u8| {
        let n = name.map_or("", Name::as_str);
        let count = n.split('.').count();
        n.split('.').skip(count.saturating_sub(labels as usize)).collect::<Vec<_>>().join(".")
    };
    match (d.reason, d.matched) {
        (Reason::NoSni, _) => match dst {
            Some(dst) => format!("no SNI, and no `ip` rule matches the destination {}", dst.ip()),
            None => "no SNI and no destination to match `ip` rules against".to_string(),
        },
        (Reason::Default, _) => format!("no rule matches; the default verdict is {}", d.verdict),
        (_, Some(m)) => match m.kind {
            MatchKind::Exact => "an exact rule names it (exact rules win over every other kind)".to_string(),
            MatchKind::Glob => format!("a leftmost-label glob below {} matches; no exact rule", suffix(m.labels)),
            MatchKind::Apex if m.labels as usize == name.map_or(0, |n| n.as_str().split('.').count()) => {
                format!("`.{}` covers the apex itself; no exact or glob rule", suffix(m.labels))
            }
            MatchKind::Apex | MatchKind::Below => {
                format!("the longest matching suffix is {}; no exact, glob or longer-suffix rule", suffix(m.labels))
            }
            MatchKind::Any => "only the catch-all `*` matches".to_string(),
            MatchKind::Ip => match dst {
                Some(dst) => format!("no SNI; the destination {} is in a /{} `ip` rule", dst.ip(), m.labels),
                None => "no SNI; an `ip` rule matches".to_string(),
            },
        },
        (_, None) => String::new(),
    }
}
