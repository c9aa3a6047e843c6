//! The rule-file parser. Every error in every file is collected and reported at once, each
//! naming the file, the line, the column and the reason.
//!
//! Grammar (one rule a line; `#` starts a comment; blank lines are ignored):
//!
//! ```text
//! rule    = action target [ clause [ clause ] ]   (each clause at most once, in either order)
//! action  = "allow" | "deny"
//! target  = "ip" cidr | pattern
//! clause  = "from" cidr { "," cidr } | "port" ports
//! pattern = "*" | "*." name | "." name | pre "*" suf "." name | name
//! cidr    = ADDR "/" LEN | ADDR        (a bare address is a host route)
//! ports   = range { "," range }        (no port twice)
//! range   = PORT | PORT "-" PORT       (1 to 65535; a range's first port is not above its last)
//! ```
//!
//! A clause's list runs to the next clause keyword or the end of the line.
//!
//! A file whose first line is [`ENFORCE_ALWAYS`] is always enforced: its denials stay denials in
//! a report scope.

use std::fmt;
use std::io::BufRead;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ipnet::IpNet;
use thiserror::Error;

use super::pattern::{Pattern, PatternError};
use super::rule::{PortRange, Rule, Target, Verdict};
use super::suffix::{PublicSuffixWildcards, covered_suffix};

/// One problem in a rule file or list, with its position.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleError {
    /// The file (as given) or the list's name.
    pub file: Arc<str>,
    /// 1-based line; 0 when the whole file is concerned (it cannot be read).
    pub line: u32,
    /// 1-based column in characters of the offending token; 0 when not applicable.
    pub column: u32,
    /// What is wrong.
    pub kind: RuleErrorKind,
}

/// Why a rule line is rejected.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum RuleErrorKind {
    /// The line does not start with `allow` or `deny`.
    #[error("unknown keyword `{0}` (expected `allow` or `deny`)")]
    UnknownKeyword(String),
    /// `allow`/`deny` with nothing after it.
    #[error("missing pattern after `{0}`")]
    MissingPattern(&'static str),
    /// The pattern is malformed.
    #[error("bad pattern `{text}`: {error}")]
    Pattern {
        /// The pattern as written.
        text: String,
        /// Why it is rejected.
        error: PatternError,
    },
    /// A CIDR that does not parse, or that has host bits set.
    #[error("bad CIDR `{text}`: {why}")]
    Cidr {
        /// The CIDR as written.
        text: String,
        /// Why it is rejected.
        why: String,
    },
    /// `from` (or `ip`) not followed by a CIDR, or an empty item in a CIDR list.
    #[error("missing CIDR after `{0}`")]
    MissingCidr(&'static str),
    /// `port` not followed by a port, or an empty item in a port list.
    #[error("missing port after `port`")]
    MissingPort,
    /// A port or port range that is not 1 to 65535, not a number, or runs backwards.
    #[error("bad port `{text}`: {why}")]
    Port {
        /// The port or range as written.
        text: String,
        /// Why it is rejected.
        why: &'static str,
    },
    /// A port already in an earlier item of the same list.
    #[error("duplicate port `{text}`: `{first}` already names it")]
    DuplicatePort {
        /// The later port or range, as written.
        text: String,
        /// The earlier item it repeats or overlaps.
        first: String,
    },
    /// `from` or `port` a second time on one line.
    #[error("second `{0}` clause (write one list: `{0} A, B`)")]
    RepeatedClause(&'static str),
    /// Something other than a clause after the pattern.
    #[error("unexpected `{0}` (expected `from`, `port` or end of line)")]
    Unexpected(String),
    /// A list line that is neither a domain, a hosts-file line nor an `||domain^` line.
    #[error("malformed list line: {0}")]
    ListLine(String),
    /// An `allow` wildcard or suffix rule over a whole public suffix: anyone who registers a
    /// name there would be let through.
    #[error(
        "`allow {pattern}` covers the public suffix `{suffix}`: anyone who registers a name there is let through; allow the names below it, or set `[rules] public_suffix_wildcards = \"allow\"`"
    )]
    PublicSuffix {
        /// The pattern as written.
        pattern: String,
        /// The public suffix it covers.
        suffix: String,
    },
    /// The file cannot be read.
    #[error("cannot read: {0}")]
    Io(String),
    /// The rule files and lists hold no rule at all.
    #[error(
        "no rule: every connection would be decided by the default verdict; add rules, or set `[rules] allow_empty = true` if that is meant"
    )]
    Empty,
}

impl fmt::Display for RuleError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (0, _) => write!(f, "{}: {}", self.file, self.kind),
            (line, 0) => write!(f, "{}:{line}: {}", self.file, self.kind),
            (line, col) => write!(f, "{}:{line}:{col}: {}", self.file, self.kind),
        }
    }
}

impl std::error::Error for RuleError {}

/// Every error found while loading, in file and line order.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct RuleErrors(pub Vec<RuleError>);

impl fmt::Display for RuleErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("\n")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

/// Parses the text of one rule file. `file` names it in rule references and errors. Public
/// suffixes are guarded (see [`PublicSuffixWildcards`]).
pub fn parse_rules(file: &str, text: &str) -> Result<Vec<Rule>, RuleErrors> {
    parse_rules_with(file, text, PublicSuffixWildcards::Deny)
}

/// [`parse_rules`], with the public-suffix guard as `guard` says.
pub fn parse_rules_with(file: &str, text: &str, guard: PublicSuffixWildcards) -> Result<Vec<Rule>, RuleErrors> {
    let file: Arc<str> = file.into();
    let mut rules = Vec::new();
    read_rules(&file, text.as_bytes(), guard, |line, raw, parsed| rules.push(parsed.into_rule(&file, line, raw)))
        .map_err(RuleErrors)?;
    Ok(rules)
}

/// Reads and parses rule files: each path is a file, or a directory whose `*.rules` files
/// are read in name order. All errors of all files are returned together. Public suffixes are
/// guarded (see [`PublicSuffixWildcards`]).
pub fn load_rules(paths: &[PathBuf]) -> Result<Vec<Rule>, RuleErrors> {
    let mut rules = Vec::new();
    for_each_rule(Some(paths), PublicSuffixWildcards::Deny, |file, line, raw, parsed| {
        rules.push(parsed.into_rule(file, line, raw))
    })?;
    Ok(rules)
}

/// Streams rules to `each` as they are read: the rule files at `paths` (see [`load_rules`]),
/// or the embedded [`PRESET`] when `paths` is `None`. `each` gets the file's name (one `Arc`
/// per file), the 1-based line, the line as written and the parsed rule; nothing else is
/// kept, so that a million rules are never held twice. All errors of all files are returned
/// together (`each` may have seen rules of a load that then fails). Public suffixes are
/// guarded as `suffixes` says.
pub(crate) fn for_each_rule(
    paths: Option<&[PathBuf]>,
    suffixes: PublicSuffixWildcards,
    mut each: impl FnMut(&Arc<str>, u32, &str, RuleLine),
) -> Result<(), RuleErrors> {
    let mut errors = Vec::new();
    let Some(paths) = paths else {
        for (name, text) in PRESET {
            let file: Arc<str> = (*name).into();
            if let Err(mut e) =
                read_rules(&file, text.as_bytes(), suffixes, |line, raw, rule| each(&file, line, raw, rule))
            {
                errors.append(&mut e);
            }
        }
        return if errors.is_empty() { Ok(()) } else { Err(RuleErrors(errors)) };
    };
    for path in rule_files(paths, &mut errors) {
        let file: Arc<str> = path.display().to_string().into();
        let read = match std::fs::File::open(&path) {
            Ok(f) => {
                read_rules(&file, std::io::BufReader::with_capacity(READ_BUFFER, f), suffixes, |line, raw, rule| {
                    each(&file, line, raw, rule)
                })
            }
            Err(e) => Err(vec![io_error(&file, &e)]),
        };
        if let Err(mut e) = read {
            errors.append(&mut e);
        }
    }
    if errors.is_empty() { Ok(()) } else { Err(RuleErrors(errors)) }
}

/// Bytes read from a rule file or list at a time: files are streamed, never read whole.
pub(crate) const READ_BUFFER: usize = 1 << 16;

/// Parses one rule file from `reader`, calling `each` with every rule (line, line as written,
/// rule); returns every error, or only the I/O error when the file cannot be read to its end.
fn read_rules(
    file: &Arc<str>,
    reader: impl BufRead,
    suffixes: PublicSuffixWildcards,
    mut each: impl FnMut(u32, &str, RuleLine),
) -> Result<(), Vec<RuleError>> {
    let mut errors = Vec::new();
    let read = for_each_line(reader, |line, raw| match parse_line(raw, suffixes) {
        Ok(None) => {}
        Ok(Some(rule)) => each(line, raw, rule),
        Err((column, kind)) => errors.push(RuleError { file: file.clone(), line, column, kind }),
    });
    match read {
        Err(e) => Err(vec![io_error(file, &e)]),
        Ok(()) if errors.is_empty() => Ok(()),
        Ok(()) => Err(errors),
    }
}

/// Calls `each` with every line of `reader` (its 1-based number, and its text without the line
/// ending), split as [`str::lines`] splits. Text that is not UTF-8 is an error, as reading the
/// file into a `String` would be.
pub(crate) fn for_each_line(mut reader: impl BufRead, mut each: impl FnMut(u32, &str)) -> std::io::Result<()> {
    let mut buf = Vec::new();
    let mut number: u32 = 0;
    loop {
        buf.clear();
        if reader.read_until(b'\n', &mut buf)? == 0 {
            return Ok(());
        }
        number = number.saturating_add(1);
        let line = match buf.strip_suffix(b"\n") {
            Some(line) => line.strip_suffix(b"\r").unwrap_or(line),
            None => &buf,
        };
        let line = std::str::from_utf8(line)
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidData, "stream did not contain valid UTF-8"))?;
        each(number, line);
    }
}

/// The marker that acknowledges findings in a rule file's comment, on the rule's line or on
/// a comment line right above it: `# snigate: allow(shadowed, duplicate)`.
pub const ACKNOWLEDGE: &str = "snigate: allow(";

/// The finding codes a rule file's line acknowledges in its comment.
pub fn acknowledged(line: &str) -> Vec<&str> {
    let Some((_, comment)) = line.split_once('#') else { return Vec::new() };
    let Some((_, rest)) = comment.split_once(ACKNOWLEDGE) else { return Vec::new() };
    let Some((codes, _)) = rest.split_once(')') else { return Vec::new() };
    codes.split(',').map(str::trim).filter(|c| !c.is_empty()).collect()
}

/// Whether the rule at 1-based `line` of a file whose lines are `lines` acknowledges `code`:
/// on its own line, or on a comment line right above it.
pub fn acknowledges(lines: &[&str], line: u32, code: &str) -> bool {
    let at = line as usize;
    let own = at.checked_sub(1).and_then(|i| lines.get(i));
    let above = at.checked_sub(2).and_then(|i| lines.get(i)).filter(|l| l.trim_start().starts_with('#'));
    own.into_iter().chain(above).any(|l| acknowledged(l).contains(&code))
}

/// The text of the rule at `line` of `file` as written (comment removed, whitespace
/// collapsed), read again: compiled rules keep only their line. `preset`: `file` is one of the
/// embedded [`PRESET`] files, not a path.
pub fn rule_text(file: &str, line: u32, preset: bool) -> Option<String> {
    let nth = |reader: &mut dyn BufRead| {
        let raw = reader.split(b'\n').nth(line.checked_sub(1)? as usize)?.ok()?;
        let raw = String::from_utf8(raw).ok()?;
        Some(written(raw.strip_suffix('\r').unwrap_or(&raw)))
    };
    if preset {
        let (_, text) = PRESET.iter().find(|(name, _)| *name == file)?;
        nth(&mut text.as_bytes())
    } else {
        nth(&mut std::io::BufReader::with_capacity(READ_BUFFER, std::fs::File::open(file).ok()?))
    }
}

/// A rule line as reported: comment removed, whitespace collapsed.
pub(crate) fn written(raw: &str) -> String {
    let rule = strip_comment(raw).trim();
    let collapsed =
        rule.is_ascii() && !rule.contains("  ") && rule.bytes().all(|b| b == b' ' || !(b as char).is_whitespace());
    match collapsed {
        true => rule.to_string(),
        false => rule.split_whitespace().collect::<Vec<_>>().join(" "),
    }
}

/// Expands directories to their `*.rules` files (sorted); files are kept as given.
pub(crate) fn rule_files(paths: &[PathBuf], errors: &mut Vec<RuleError>) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for path in paths {
        if !path.is_dir() {
            files.push(path.clone());
            continue;
        }
        match std::fs::read_dir(path) {
            Ok(entries) => {
                let mut found: Vec<PathBuf> = entries
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .filter(|p| p.extension().is_some_and(|x| x == "rules") && p.is_file())
                    .collect();
                found.sort();
                files.extend(found);
            }
            Err(e) => errors.push(io_error(&path.display().to_string(), &e)),
        }
    }
    files
}

/// The directive, on a rule file's first line, that keeps its denials in report scopes.
pub const ENFORCE_ALWAYS: &str = "#! enforce always";

/// The rule files at `paths` (files, or directories of `*.rules`) whose first line is
/// [`ENFORCE_ALWAYS`], named as rule references name them. Only first lines are read; a file
/// that cannot be read is left to the load, which reports it.
pub fn enforced_always(paths: &[PathBuf]) -> Vec<String> {
    let first_line = |path: &PathBuf| -> Option<String> {
        let mut line = String::new();
        std::io::BufReader::new(std::fs::File::open(path).ok()?).read_line(&mut line).ok()?;
        Some(line)
    };
    rule_files(paths, &mut Vec::new())
        .into_iter()
        .filter(|p| first_line(p).is_some_and(|l| l.trim_end() == ENFORCE_ALWAYS))
        .map(|p| p.display().to_string())
        .collect()
}

pub(crate) fn io_error(file: &str, e: &std::io::Error) -> RuleError {
    RuleError { file: file.into(), line: 0, column: 0, kind: RuleErrorKind::Io(e.to_string()) }
}

/// Everything before the first `#`.
pub(crate) fn strip_comment(line: &str) -> &str {
    line.split_once('#').map_or(line, |(rule, _)| rule)
}

/// One parsed rule line, before its origin is attached: the fields of [`Rule`] the line gives.
pub(crate) struct RuleLine {
    /// `allow` or `deny`.
    pub verdict: Verdict,
    /// The pattern or `ip` CIDR.
    pub target: Target,
    /// The `from` clause; empty without one.
    pub from: Box<[IpNet]>,
    /// The `port` clause, sorted; empty without one.
    pub ports: Box<[PortRange]>,
}

impl RuleLine {
    /// The rule, written at `line` of `file` as `raw`.
    fn into_rule(self, file: &Arc<str>, line: u32, raw: &str) -> Rule {
        let RuleLine { verdict, target, from, ports } = self;
        Rule { verdict, target, from, ports, file: file.clone(), line, text: written(raw).into() }
    }
}

/// The keywords that start a clause, and so end the list of the clause before.
const CLAUSES: [&str; 2] = ["from", "port"];

/// One line: `Ok(None)` for blank or comment lines; errors carry a 1-based column.
fn parse_line(raw: &str, suffixes: PublicSuffixWildcards) -> Result<Option<RuleLine>, (u32, RuleErrorKind)> {
    let body = strip_comment(raw);
    let mut tokens = Tokens { line: body, pos: 0 };
    let Some((col, word)) = tokens.next() else { return Ok(None) };
    let (verdict, action) = match word {
        "allow" => (Verdict::Allow, "allow"),
        "deny" => (Verdict::Deny, "deny"),
        other => return Err((col, RuleErrorKind::UnknownKeyword(other.to_string()))),
    };
    let Some((col, word)) = tokens.next() else {
        return Err((column_of(body, body.trim_end().len()), RuleErrorKind::MissingPattern(action)));
    };
    let target = if word == "ip" {
        let Some((col, cidr)) = tokens.next() else {
            return Err((column_of(body, body.trim_end().len()), RuleErrorKind::MissingCidr("ip")));
        };
        Target::Ip(parse_cidr(cidr).map_err(|why| (col, why))?)
    } else {
        let pattern =
            Pattern::parse(word).map_err(|error| (col, RuleErrorKind::Pattern { text: word.into(), error }))?;
        if verdict == Verdict::Allow
            && suffixes == PublicSuffixWildcards::Deny
            && let Some(suffix) = covered_suffix(&pattern)
        {
            return Err((col, RuleErrorKind::PublicSuffix { pattern: word.into(), suffix: suffix.to_string() }));
        }
        Target::Name(pattern)
    };
    let (mut from, mut ports) = (None, None);
    while let Some((col, word)) = tokens.next() {
        let (start, end) = (tokens.pos, clause_end(body, tokens.pos));
        match word {
            "from" if from.is_none() => from = Some(parse_cidr_list(body, start, end)?),
            "port" if ports.is_none() => ports = Some(parse_port_list(body, start, end)?),
            "from" => return Err((col, RuleErrorKind::RepeatedClause("from"))),
            "port" => return Err((col, RuleErrorKind::RepeatedClause("port"))),
            other => return Err((col, RuleErrorKind::Unexpected(other.to_string()))),
        }
        tokens.pos = end;
    }
    Ok(Some(RuleLine { verdict, target, from: from.unwrap_or_default(), ports: ports.unwrap_or_default() }))
}

/// Where the clause whose list starts at byte `start` ends: at the next clause keyword, or at
/// the end of the line.
fn clause_end(body: &str, start: usize) -> usize {
    let mut tokens = Tokens { line: body, pos: start };
    while let Some((_, word)) = tokens.next() {
        if CLAUSES.contains(&word) {
            return tokens.pos - word.len();
        }
    }
    body.len()
}

/// The items of a comma-separated list in `body[start..end]`, trimmed, each with its column.
fn list_items(body: &str, start: usize, end: usize) -> impl Iterator<Item = (u32, &str)> {
    let mut offset = start;
    body[start..end].split(',').map(move |item| {
        let lead = item.len() - item.trim_start().len();
        let col = column_of(body, offset + lead);
        offset += item.len() + 1;
        (col, item.trim())
    })
}

/// `CIDR[, CIDR…]` in `body[start..end]`.
fn parse_cidr_list(body: &str, start: usize, end: usize) -> Result<Box<[IpNet]>, (u32, RuleErrorKind)> {
    let mut nets = Vec::new();
    for (col, item) in list_items(body, start, end) {
        if item.is_empty() {
            return Err((col, RuleErrorKind::MissingCidr("from")));
        }
        nets.push(parse_cidr(item).map_err(|why| (col, why))?);
    }
    Ok(nets.into())
}

/// `PORT[-PORT][, …]` in `body[start..end]`: sorted, and no port named twice.
fn parse_port_list(body: &str, start: usize, end: usize) -> Result<Box<[PortRange]>, (u32, RuleErrorKind)> {
    let mut ranges: Vec<(PortRange, &str)> = Vec::new();
    for (col, item) in list_items(body, start, end) {
        if item.is_empty() {
            return Err((col, RuleErrorKind::MissingPort));
        }
        let range = parse_port_range(item).map_err(|why| (col, RuleErrorKind::Port { text: item.into(), why }))?;
        if let Some((_, first)) = ranges.iter().find(|(r, _)| r.overlaps(range)) {
            return Err((col, RuleErrorKind::DuplicatePort { text: item.into(), first: (*first).into() }));
        }
        ranges.push((range, item));
    }
    let mut ranges: Vec<PortRange> = ranges.into_iter().map(|(r, _)| r).collect();
    ranges.sort_unstable();
    Ok(ranges.into())
}

/// `PORT` or `FIRST-LAST`.
fn parse_port_range(text: &str) -> Result<PortRange, &'static str> {
    let (first, last) = text.split_once('-').unwrap_or((text, text));
    let (first, last) = (parse_port(first)?, parse_port(last)?);
    if first > last {
        return Err("the range ends before it starts");
    }
    Ok(PortRange { first, last })
}

/// A decimal port, 1 to 65535.
fn parse_port(text: &str) -> Result<u16, &'static str> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return Err("not a port number or a range FIRST-LAST");
    }
    match text.parse::<u16>() {
        Ok(port) if port > 0 => Ok(port),
        _ => Err("ports are 1 to 65535"),
    }
}

/// `ADDR/LEN` with no host bits set, or a bare address (a host route).
pub(crate) fn parse_cidr(text: &str) -> Result<IpNet, RuleErrorKind> {
    let bad = |why: String| RuleErrorKind::Cidr { text: text.to_string(), why };
    let net = match text.parse::<IpNet>() {
        Ok(net) => net,
        Err(e) => match text.parse::<IpAddr>() {
            Ok(ip) => IpNet::from(ip),
            Err(_) => return Err(bad(e.to_string())),
        },
    };
    if net.trunc() != net {
        return Err(bad(format!("host bits set (did you mean {}?)", net.trunc())));
    }
    Ok(net)
}

/// 1-based character column of byte offset `at` in `line`.
fn column_of(line: &str, at: usize) -> u32 {
    u32::try_from(line[..at].chars().count() + 1).unwrap_or(u32::MAX)
}

/// Whitespace-separated tokens with their columns.
struct Tokens<'a> {
    /// The line, comment removed.
    line: &'a str,
    /// Byte offset where the next search starts.
    pos: usize,
}

impl<'a> Iterator for Tokens<'a> {
    type Item = (u32, &'a str);

    fn next(&mut self) -> Option<(u32, &'a str)> {
        let rest = &self.line[self.pos..];
        let start = self.pos + (rest.len() - rest.trim_start().len());
        let tail = &self.line[start..];
        if tail.is_empty() {
            return None;
        }
        let len = tail.find(char::is_whitespace).unwrap_or(tail.len());
        self.pos = start + len;
        Some((column_of(self.line, start), &tail[..len]))
    }
}

/// The rule files shipped in the binary: used when no `--rules` is given.
pub const PRESET: &[(&str, &str)] = &[("rules/salesforce.rules", include_str!("../../rules/salesforce.rules"))];

/// Parses the embedded preset, public suffixes guarded.
pub fn preset_rules() -> Result<Vec<Rule>, RuleErrors> {
    let mut rules = Vec::new();
    for_each_rule(None, PublicSuffixWildcards::Deny, |file, line, raw, parsed| {
        rules.push(parsed.into_rule(file, line, raw))
    })?;
    Ok(rules)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn acknowledgements_on_the_line_or_right_above() {
        let file = [
            "allow a.com # why; snigate: allow(duplicate, shadowed)",
            "# snigate: allow(conflict)",
            "deny b.com",
            "allow c.com",
        ];
        assert!(acknowledges(&file, 1, "duplicate") && acknowledges(&file, 1, "shadowed"));
        assert!(!acknowledges(&file, 1, "conflict"));
        assert!(acknowledges(&file, 3, "conflict"), "a comment line right above");
        assert!(!acknowledges(&file, 4, "conflict"), "not two lines above");
        assert!(!acknowledges(&["allow snigate: allow(shadowed)"], 1, "shadowed"), "only in a comment");
    }
}
