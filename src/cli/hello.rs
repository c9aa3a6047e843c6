//! `snigate hello`: what snigate sees in a captured ClientHello.

use std::io::{Read, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use serde_json::json;
use tls_parser::TlsExtensionType;

use super::common::{Configured, EXIT_INVALID, configured_for};
use crate::config::EchPolicy;
use crate::hello::quic::{FIXED_BIT, Inspect, Inspector, QuicLimits, is_long_header};
use crate::hello::{self, Carried, ClientHello, HelloError, HelloLimits, Parse};
use crate::policy::decide::RuleSet;
use crate::reason::Reason;
use crate::rules::rule::Verdict;

/// Arguments of `snigate hello`.
#[derive(Debug, clap::Args)]
pub struct HelloArgs {
    /// The capture: a file of raw bytes or hex text (auto-detected), or `-` for stdin. A QUIC
    /// capture is one raw datagram, or hex with one datagram per line; `#` starts a comment line.
    pub file: PathBuf,
    /// Read the capture as QUIC client Initial datagrams (detected when the first byte is a
    /// QUIC long header).
    #[arg(long)]
    pub quic: bool,
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
    #[arg(long = "rules", value_name = "PATH", conflicts_with = "config")]
    pub rules: Vec<PathBuf>,
    /// The destination port the verdict is for, for rules with `port`. Without it, rules with
    /// `port` do not apply.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub port: Option<u16>,
    /// Also print the verdict this configuration's listener would give the hello: its rules,
    /// default, `no_sni`, lists, `ech`, mode, ports, `upstream_port` and hello limits.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// With `--config`: the listener (its name, or its address when unnamed). Default: the first.
    #[arg(long, value_name = "NAME", requires = "config")]
    pub listener: Option<String>,
}

pub(super) fn hello_command(args: &HelloArgs) -> ExitCode {
    let input = match read_input(&args.file) {
        Ok(bytes) => bytes,
        Err(e) => {
            eprintln!("snigate hello: {}: {e}", args.file.display());
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let configured = match configured_for("hello", args.config.as_deref(), args.listener.as_deref()) {
        Ok(configured) => configured,
        Err(code) => return code,
    };
    let datagrams = match decode_datagrams(&input) {
        Ok(datagrams) => datagrams,
        Err(e) => {
            eprintln!("snigate hello: {}: {e}", args.file.display());
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let limits = match &configured {
        Some(c) => HelloLimits {
            max_hello_bytes: c.config.limits.max_hello_bytes,
            allow_underscore: c.config.rules.sni_allow_underscore,
        },
        None => HelloLimits { max_hello_bytes: args.max_hello_bytes, allow_underscore: args.sni_allow_underscore },
    };
    let first = datagrams.first().and_then(|d| d.first());
    let quic = args.quic || first.is_some_and(|&b| is_long_header(b) && b & FIXED_BIT != 0);
    let result = if quic { read_quic(&datagrams, limits) } else { read_tls(&datagrams.concat(), limits) };
    let rules = if args.rules.is_empty() {
        None
    } else {
        match RuleSet::load(Some(&args.rules), &[], Verdict::Deny) {
            Ok(rules) => Some(rules),
            Err(errors) => {
                eprint!("snigate hello: invalid rules:\n{errors}");
                return ExitCode::from(EXIT_INVALID);
            }
        }
    };
    let mut out = std::io::stdout().lock();
    let printed = match (&result, args.json) {
        (Ok(hello), json) => {
            let any = IpAddr::from([0, 0, 0, 0]);
            let verdict = match &configured {
                Some(c) => Some(configured_verdict(c, hello, args.port)),
                None => rules.as_ref().map(|r| {
                    let d = r.decide(hello.sni.as_ref(), any, None, args.port.unwrap_or(0));
                    (d.verdict.as_str(), d.reason.as_str(), d.rule.map(|r| r.to_string()))
                }),
            };
            if json {
                let mut v = hello_json(hello);
                v["transport"] = json!(if quic { "quic" } else { "tcp" });
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
        (Err((reason, detail)), true) => writeln!(out, "{}", json!({ "error": reason.as_str(), "detail": detail })),
        (Err((reason, detail)), false) => writeln!(out, "invalid: {reason} ({detail})"),
    };
    match (printed, result) {
        (Err(_), _) | (_, Err(_)) => ExitCode::from(EXIT_INVALID),
        (Ok(()), Ok(_)) => ExitCode::SUCCESS,
    }
}

/// The verdict a configured listener gives `hello`: the ECH policy, the listener's ports, then
/// its rules, in the order the listener applies them.
fn configured_verdict(
    c: &Configured,
    hello: &ClientHello,
    port: Option<u16>,
) -> (&'static str, &'static str, Option<String>) {
    let deny = |reason: Reason| (Verdict::Deny.as_str(), reason.as_str(), None);
    if hello.ech && c.config.rules.ech == EchPolicy::Deny {
        return deny(Reason::Ech);
    }
    match c.ask(hello.sni.is_some(), None, port) {
        Ok((dst, port)) => {
            let d = c.rules.decide(hello.sni.as_ref(), IpAddr::from([0, 0, 0, 0]), dst, port);
            (d.verdict.as_str(), d.reason.as_str(), d.rule.map(|r| r.to_string()))
        }
        Err(_) => deny(Reason::DstDenied),
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

/// The hello of a TCP capture.
fn read_tls(bytes: &[u8], limits: HelloLimits) -> Result<ClientHello, (Reason, String)> {
    let e = match hello::parse(bytes, limits) {
        Parse::Complete(hello) => return Ok(hello),
        Parse::Invalid(e) => e,
        Parse::Incomplete { needed } => HelloError::Malformed(if needed > bytes.len() {
            "truncated: the capture ends before the ClientHello does"
        } else {
            "incomplete"
        }),
    };
    Err((e.reason(), e.to_string()))
}

/// The hello of a QUIC capture: its client Initial datagrams, in order.
fn read_quic(datagrams: &[Vec<u8>], limits: HelloLimits) -> Result<ClientHello, (Reason, String)> {
    let mut inspector = Inspector::new(QuicLimits { hello: limits, max_datagrams: datagrams.len().max(1) });
    for d in datagrams {
        match inspector.push(d) {
            Inspect::Complete(hello) => return Ok(hello),
            Inspect::Invalid(e) => return Err((e.reason(), e.to_string())),
            Inspect::Incomplete => {}
        }
    }
    Err((Reason::Malformed, "truncated: the capture ends before the ClientHello does".into()))
}

/// A capture's datagrams (or, for TCP, its pieces): hex text with one per line and `#` comment
/// lines, or raw bytes as one.
fn decode_datagrams(input: &[u8]) -> Result<Vec<Vec<u8>>, hex::FromHexError> {
    let text = std::str::from_utf8(input).ok().filter(|t| {
        let lines = t.lines().filter(|l| !l.trim_start().starts_with('#'));
        let mut hex = lines.flat_map(str::bytes).filter(|b| !b.is_ascii_whitespace()).peekable();
        hex.peek().is_some() && hex.all(|b| b.is_ascii_hexdigit())
    });
    match text {
        Some(text) => text
            .lines()
            .filter(|l| !l.trim_start().starts_with('#') && !l.trim().is_empty())
            .map(|l| decode_capture(l.as_bytes()))
            .collect(),
        None => Ok(vec![input.to_vec()]),
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
        "alpn": h.alpn.escaped(),
        "ech": h.ech,
        "versions": h.offered_versions().iter().map(|&v| hello::version_name(v)).collect::<Vec<_>>(),
        "legacy_version": hello::version_name(h.legacy_version),
        "extensions": &h.extensions[..],
        "records": match h.carried { Carried::Records(n) => Some(n), Carried::CryptoFrames(_) => None },
        "crypto_frames": match h.carried { Carried::CryptoFrames(n) => Some(n), Carried::Records(_) => None },
        "bytes": h.wire_bytes,
        "hello_bytes": h.hello_bytes,
    })
}

fn hello_text(h: &ClientHello) -> String {
    let list = |items: Vec<String>| {
        if items.is_empty() { "-".to_string() } else { items.join(", ") }
    };
    format!(
        "sni:            {}\nalpn:           {}\nversions:       {}\nlegacy_version: {}\nech:            {}\nextensions:     {}\nsize:           {} hello bytes in {}, {} bytes on the wire\n",
        h.sni.as_ref().map_or("(none)", |n| n.as_str()),
        list(h.alpn.escaped()),
        list(h.offered_versions().into_iter().map(hello::version_name).collect()),
        hello::version_name(h.legacy_version),
        if h.ech { "present (encrypted_client_hello)" } else { "absent" },
        list(h.extensions.iter().map(|&t| extension_name(t)).collect()),
        h.hello_bytes,
        match h.carried {
            Carried::Records(n) => format!("{n} record(s)"),
            Carried::CryptoFrames(n) => format!("{n} CRYPTO frame(s)"),
        },
        h.wire_bytes,
    )
}
