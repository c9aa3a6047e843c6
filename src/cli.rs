//! The command line: argument definitions and one function per subcommand.
//!
//! Exit codes (stable): 0 success, 1 invalid input, 64 usage or configuration error.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use serde_json::json;
use tls_parser::TlsExtensionType;

use crate::hello::{self, ClientHello, HelloError, Limits, Parse};

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
    /// Parse a captured ClientHello (raw bytes or hex text) and print what snigate sees in it.
    Hello(HelloArgs),
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
}

/// Runs a parsed command line and returns the process exit code.
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Hello(args) => hello_command(&args),
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
    let mut out = std::io::stdout().lock();
    let printed = match (&result, args.json) {
        (Ok(hello), true) => writeln!(out, "{}", hello_json(hello)),
        (Ok(hello), false) => write!(out, "{}", hello_text(hello)),
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

/// `0x0304` → `TLS1.3`; GREASE values (RFC 8701) → `grease`.
pub fn version_name(v: u16) -> String {
    match v {
        0x0300 => "SSL3.0".to_string(),
        0x0301..=0x0304 => format!("TLS1.{}", (v & 0xff) - 1),
        v if v & 0x0f0f == 0x0a0a => "grease".to_string(),
        v => format!("0x{v:04x}"),
    }
}

/// `0` → `ServerName(0)` via tls-parser's names; GREASE and unnamed types by number.
fn extension_name(ty: u16) -> String {
    if ty & 0x0f0f == 0x0a0a {
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
        "versions": offered_versions(h).iter().map(|&v| version_name(v)).collect::<Vec<_>>(),
        "legacy_version": version_name(h.legacy_version),
        "extensions": h.extensions,
        "records": h.records,
        "bytes": h.wire_bytes,
        "hello_bytes": h.hello_bytes,
    })
}

/// The versions the client offers: supported_versions without GREASE, or the legacy version.
fn offered_versions(h: &ClientHello) -> Vec<u16> {
    let listed: Vec<u16> = h.supported_versions.iter().copied().filter(|v| v & 0x0f0f != 0x0a0a).collect();
    if listed.is_empty() { vec![h.legacy_version] } else { listed }
}

fn hello_text(h: &ClientHello) -> String {
    let list = |items: Vec<String>| {
        if items.is_empty() { "-".to_string() } else { items.join(", ") }
    };
    format!(
        "sni:            {}\nalpn:           {}\nversions:       {}\nlegacy_version: {}\nech:            {}\nextensions:     {}\nsize:           {} hello bytes in {} record(s), {} bytes on the wire\n",
        h.sni.as_ref().map_or("(none)", |n| n.as_str()),
        list(h.alpn.clone()),
        list(offered_versions(h).into_iter().map(version_name).collect()),
        version_name(h.legacy_version),
        if h.ech { "present (encrypted_client_hello)" } else { "absent" },
        list(h.extensions.iter().map(|&t| extension_name(t)).collect()),
        h.hello_bytes,
        h.records,
        h.wire_bytes,
    )
}
