//! Salesforce's published `ip-ranges.json` (Hyperforce) as `ip` rules.

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::str::FromStr;

use ipnet::IpNet;
use serde::Deserialize;
use thiserror::Error;

use crate::rules::file::parse_cidr;
use crate::rules::rule::Verdict;

/// The document at `https://ip-ranges.salesforce.com/ip-ranges.json`. Unknown fields (such as
/// `syncToken`) are ignored.
#[derive(Debug, Clone, Deserialize)]
pub struct IpRanges {
    /// When Salesforce generated the file, as written there (stated in the output's header).
    #[serde(rename = "createDate", default)]
    pub create_date: Option<String>,
    /// The IPv4 entries (required).
    pub prefixes: Vec<PrefixEntry>,
    /// The IPv6 entries, present in some versions of the file, with their CIDRs in
    /// `ipv6_prefix` (the AWS-style name) or `ip_prefix`.
    #[serde(default)]
    pub ipv6_prefixes: Vec<PrefixEntry>,
}

/// One entry of `prefixes[]` or `ipv6_prefixes[]`.
#[derive(Debug, Clone, Deserialize)]
pub struct PrefixEntry {
    /// The CIDRs: one string or a list of strings (both forms have been published).
    #[serde(alias = "ipv6_prefix")]
    pub ip_prefix: OneOrMany,
    /// The cloud region (`us-east-1`, `eu-central-1`, …); filtered on with `--region`.
    #[serde(default)]
    pub region: Option<String>,
    /// The cloud provider (`aws`, `gcp`, …); reported, not filtered on.
    #[serde(default)]
    pub provider: Option<String>,
    /// `inbound` (clients reaching Hyperforce) or `outbound` (Hyperforce reaching customers).
    #[serde(default)]
    pub direction: Option<String>,
}

/// A CIDR field written as one string or as a list of strings.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum OneOrMany {
    /// `"13.108.0.0/14"`.
    One(String),
    /// `["13.108.0.0/14", "155.226.128.0/21"]`.
    Many(Vec<String>),
}

impl OneOrMany {
    /// The CIDR strings, in file order.
    pub fn as_slice(&self) -> &[String] {
        match self {
            OneOrMany::One(s) => std::slice::from_ref(s),
            OneOrMany::Many(v) => v,
        }
    }
}

/// The `direction` of an entry: which way connections using these addresses go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Addresses clients connect to: what an egress filter allows.
    Inbound,
    /// Addresses Hyperforce connects from (callouts, outbound messages).
    Outbound,
}

impl Direction {
    /// The spelling in the file and on the command line.
    pub const fn as_str(self) -> &'static str {
        match self {
            Direction::Inbound => "inbound",
            Direction::Outbound => "outbound",
        }
    }
}

impl FromStr for Direction {
    type Err = String;

    fn from_str(s: &str) -> Result<Direction, String> {
        match s {
            "inbound" => Ok(Direction::Inbound),
            "outbound" => Ok(Direction::Outbound),
            _ => Err(format!("`{s}`: expected inbound or outbound")),
        }
    }
}

/// What to keep from the file, and how to write it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOptions {
    /// Keep entries of these regions only (compared ASCII case-insensitively); empty keeps all.
    pub regions: Vec<String>,
    /// Keep entries of this direction only; `None` keeps both.
    pub direction: Option<Direction>,
    /// The action of every generated rule.
    pub action: Verdict,
}

impl Default for ImportOptions {
    fn default() -> ImportOptions {
        ImportOptions { regions: Vec::new(), direction: None, action: Verdict::Allow }
    }
}

/// Why an ip-ranges file cannot be converted.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ImportError {
    /// Not JSON, or not the documented shape (a missing `prefixes`, a wrong type).
    #[error("{file}:{line}:{column}: {message}")]
    Json {
        /// The file, as named by the caller.
        file: String,
        /// 1-based line of the problem (serde_json's position).
        line: usize,
        /// 1-based column of the problem.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A prefix that is not a CIDR, or has host bits set.
    #[error("{file}:{location}{field}: bad CIDR `{text}`: {why}")]
    Cidr {
        /// The file, as named by the caller.
        file: String,
        /// `LINE:COLUMN: ` where the string was found in the text, or empty.
        location: String,
        /// The JSON path of the value, e.g. `prefixes[3].ip_prefix[1]`.
        field: String,
        /// The value as written.
        text: String,
        /// Why it is rejected.
        why: String,
    },
    /// A `--region` that no entry of the file has: probably a typo, and an empty rule file
    /// would silently allow nothing.
    #[error("{file}: no entry has region `{region}` (the file's regions: {known})")]
    UnknownRegion {
        /// The file, as named by the caller.
        file: String,
        /// The region asked for.
        region: String,
        /// The regions the file has, comma-separated.
        known: String,
    },
}

impl ImportError {
    /// Whether the error is in the file (exit 1) rather than in the arguments (exit 64).
    pub fn is_invalid_input(&self) -> bool {
        !matches!(self, ImportError::UnknownRegion { .. })
    }
}

/// The result of [`import_ip_ranges`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Imported {
    /// The rule file: a header comment, then one `ACTION ip CIDR` line per merged prefix.
    pub text: String,
    /// Entries kept by the filters, of all entries in the file.
    pub entries: (usize, usize),
    /// IPv4 and IPv6 prefixes in the kept entries, before merging.
    pub prefixes: (usize, usize),
    /// Rules written (prefixes after merging).
    pub rules: usize,
}

/// One entry of either list, as the filters see it.
struct Entry<'a> {
    /// `prefixes` or `ipv6_prefixes`, for error paths.
    list: &'static str,
    /// The CIDR field's canonical name, for error paths.
    field: &'static str,
    /// Position in its list, for error paths.
    index: usize,
    /// The CIDRs as written.
    cidrs: &'a OneOrMany,
    /// Matched against `--region`.
    region: Option<&'a str>,
    /// Matched against `--direction`.
    direction: Option<&'a str>,
}

/// Converts the text of an ip-ranges file into `ip` rules. `file` names it in errors; `source`
/// is what the header calls it (a file name, not a path, so the output does not depend on where
/// the command ran).
pub fn import_ip_ranges(file: &str, source: &str, text: &str, opts: &ImportOptions) -> Result<Imported, ImportError> {
    // serde accepts a struct written as an array of its fields; the file is an object.
    let start = text.len() - text.trim_start().len();
    if text[start..].starts_with('[') {
        let (line, column) = position_of(text, start);
        let message = "expected a JSON object at the top level, found an array".to_string();
        return Err(ImportError::Json { file: file.to_string(), line, column, message });
    }
    let doc: IpRanges = serde_json::from_str(text).map_err(|e| json_error(file, &e))?;
    let entries: Vec<Entry<'_>> =
        [("prefixes", "ip_prefix", &doc.prefixes), ("ipv6_prefixes", "ipv6_prefix", &doc.ipv6_prefixes)]
            .into_iter()
            .flat_map(|(list, field, entries)| {
                entries.iter().enumerate().map(move |(index, p)| Entry {
                    list,
                    field,
                    index,
                    cidrs: &p.ip_prefix,
                    region: p.region.as_deref(),
                    direction: p.direction.as_deref(),
                })
            })
            .collect();

    // Every CIDR of the file is checked, kept or not: a broken file is broken whatever the filter.
    let mut parsed = Vec::with_capacity(entries.len());
    for e in &entries {
        let mut nets = Vec::new();
        for (i, cidr) in e.cidrs.as_slice().iter().enumerate() {
            let net = parse_cidr(cidr.trim()).map_err(|kind| {
                let why = match kind {
                    crate::rules::file::RuleErrorKind::Cidr { why, .. } => why,
                    other => other.to_string(),
                };
                let field = match e.cidrs {
                    OneOrMany::One(_) => format!("{}[{}].{}", e.list, e.index, e.field),
                    OneOrMany::Many(_) => format!("{}[{}].{}[{i}]", e.list, e.index, e.field),
                };
                let location = position_of_string(text, cidr).map(|(l, c)| format!("{l}:{c}: ")).unwrap_or_default();
                ImportError::Cidr { file: file.to_string(), location, field, text: cidr.clone(), why }
            })?;
            nets.push(net);
        }
        parsed.push(nets);
    }

    let known: BTreeSet<String> = entries.iter().filter_map(|e| e.region.map(str::to_ascii_lowercase)).collect();
    let mut wanted: Vec<String> = Vec::new();
    for r in &opts.regions {
        let r = r.to_ascii_lowercase();
        if !wanted.contains(&r) {
            wanted.push(r);
        }
    }
    if let Some(missing) = wanted.iter().find(|r| !known.contains(*r)) {
        return Err(ImportError::UnknownRegion {
            file: file.to_string(),
            region: missing.clone(),
            known: if known.is_empty() { "none".to_string() } else { known.into_iter().collect::<Vec<_>>().join(", ") },
        });
    }

    let keep = |e: &Entry<'_>| {
        let region_ok = wanted.is_empty() || e.region.is_some_and(|r| wanted.contains(&r.to_ascii_lowercase()));
        let direction_ok =
            opts.direction.is_none_or(|d| e.direction.is_some_and(|x| x.eq_ignore_ascii_case(d.as_str())));
        region_ok && direction_ok
    };
    let mut nets = Vec::new();
    let mut kept = 0;
    for (e, n) in entries.iter().zip(&parsed) {
        if keep(e) {
            kept += 1;
            nets.extend_from_slice(n);
        }
    }
    let v4 = nets.iter().filter(|n| matches!(n, IpNet::V4(_))).count();
    let v6 = nets.len() - v4;
    let mut merged = IpNet::aggregate(&nets);
    merged.sort();

    let mut out = String::new();
    let _ = writeln!(
        out,
        "# Salesforce Hyperforce IP ranges as `ip` rules: `{}` connections without SNI to these",
        opts.action
    );
    let _ =
        writeln!(out, "# destinations. Generated by `snigate import salesforce-ip-ranges`; do not edit, re-import.");
    let _ = writeln!(out, "# source:     {source} (createDate {})", doc.create_date.as_deref().unwrap_or("absent"));
    let regions = if wanted.is_empty() { "all".to_string() } else { wanted.join(", ") };
    let direction = opts.direction.map_or("all", Direction::as_str);
    let _ = writeln!(out, "# filters:    region {regions}; direction {direction}");
    let _ = writeln!(
        out,
        "# counts:     {kept} of {} entries; {v4} IPv4 and {v6} IPv6 prefixes; {} rules after merging adjacent and contained prefixes",
        entries.len(),
        merged.len()
    );
    for net in &merged {
        let _ = writeln!(out, "{} ip {net}", opts.action);
    }
    Ok(Imported { text: out, entries: (kept, entries.len()), prefixes: (v4, v6), rules: merged.len() })
}

/// serde_json's message and position, in the `file:line:column: message` form of rule errors.
fn json_error(file: &str, e: &serde_json::Error) -> ImportError {
    let full = e.to_string();
    let position = format!(" at line {} column {}", e.line(), e.column());
    let message = full.strip_suffix(&position).unwrap_or(&full);
    // The untagged string-or-list field is the only untagged enum: say what it accepts.
    let message = if message.starts_with("data did not match any variant of untagged enum OneOrMany") {
        "`ip_prefix`/`ipv6_prefix` must be a CIDR string or a list of CIDR strings".to_string()
    } else {
        message.to_string()
    };
    ImportError::Json { file: file.to_string(), line: e.line(), column: e.column(), message }
}

/// 1-based line and column (in characters) of the first JSON string literal equal to `value`.
fn position_of_string(text: &str, value: &str) -> Option<(usize, usize)> {
    text.find(&format!("\"{value}\"")).map(|at| position_of(text, at))
}

/// 1-based line and column (in characters) of byte offset `at`.
fn position_of(text: &str, at: usize) -> (usize, usize) {
    let before = &text[..at];
    let line = before.matches('\n').count() + 1;
    let column = before.rsplit('\n').next().unwrap_or(before).chars().count() + 1;
    (line, column)
}
