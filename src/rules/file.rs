//! The rule-file parser. Every error in every file is collected and reported at once, each
//! naming the file, the line, the column and the reason.
//!
//! Grammar (one rule a line; `#` starts a comment; blank lines are ignored):
//!
//! ```text
//! rule    = action target [ "from" cidr { "," cidr } ]
//! action  = "allow" | "deny"
//! target  = "ip" cidr | pattern
//! pattern = "*" | "*." name | "." name | pre "*" suf "." name | name
//! cidr    = ADDR "/" LEN | ADDR        (a bare address is a host route)
//! ```

use std::fmt;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;

use ipnet::IpNet;
use thiserror::Error;

use super::pattern::{Pattern, PatternError};
use super::rule::{Rule, RuleRef, Target, Verdict};

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
    /// Something other than `from` after the pattern.
    #[error("unexpected `{0}` (expected `from` or end of line)")]
    Unexpected(String),
    /// A list line that is neither a domain, a hosts-file line nor an `||domain^` line.
    #[error("malformed list line: {0}")]
    ListLine(String),
    /// The file cannot be read.
    #[error("cannot read: {0}")]
    Io(String),
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

/// Parses the text of one rule file. `file` names it in rule references and errors.
pub fn parse_rules(file: &str, text: &str) -> Result<Vec<Rule>, RuleErrors> {
    let file: Arc<str> = file.into();
    let mut rules = Vec::new();
    let mut errors = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let line = u32::try_from(i + 1).unwrap_or(u32::MAX);
        match parse_line(raw) {
            Ok(None) => {}
            Ok(Some((verdict, target, from))) => rules.push(Rule {
                verdict,
                target,
                from,
                origin: RuleRef::Line {
                    file: file.clone(),
                    line,
                    text: strip_comment(raw).split_whitespace().collect::<Vec<_>>().join(" ").into(),
                },
            }),
            Err((column, kind)) => errors.push(RuleError { file: file.clone(), line, column, kind }),
        }
    }
    if errors.is_empty() { Ok(rules) } else { Err(RuleErrors(errors)) }
}

/// Reads and parses rule files: each path is a file, or a directory whose `*.rules` files
/// are read in name order. All errors of all files are returned together.
pub fn load_rules(paths: &[PathBuf]) -> Result<Vec<Rule>, RuleErrors> {
    let mut rules = Vec::new();
    let mut errors = Vec::new();
    for file in rule_files(paths, &mut errors) {
        let shown = file.display().to_string();
        match std::fs::read_to_string(&file) {
            Ok(text) => match parse_rules(&shown, &text) {
                Ok(mut r) => rules.append(&mut r),
                Err(RuleErrors(mut e)) => errors.append(&mut e),
            },
            Err(e) => errors.push(io_error(&shown, &e)),
        }
    }
    if errors.is_empty() { Ok(rules) } else { Err(RuleErrors(errors)) }
}

/// Expands directories to their `*.rules` files (sorted); files are kept as given.
fn rule_files(paths: &[PathBuf], errors: &mut Vec<RuleError>) -> Vec<PathBuf> {
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

pub(crate) fn io_error(file: &str, e: &std::io::Error) -> RuleError {
    RuleError { file: file.into(), line: 0, column: 0, kind: RuleErrorKind::Io(e.to_string()) }
}

/// Everything before the first `#`.
pub(crate) fn strip_comment(line: &str) -> &str {
    line.split_once('#').map_or(line, |(rule, _)| rule)
}

type Parsed = (Verdict, Target, Box<[IpNet]>);

/// One line: `Ok(None)` for blank or comment lines; errors carry a 1-based column.
fn parse_line(raw: &str) -> Result<Option<Parsed>, (u32, RuleErrorKind)> {
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
        Target::Name(Pattern::parse(word).map_err(|error| (col, RuleErrorKind::Pattern { text: word.into(), error }))?)
    };
    let from = match tokens.next() {
        None => Box::default(),
        Some((_, "from")) => parse_cidr_list(body, tokens.pos)?,
        Some((col, other)) => return Err((col, RuleErrorKind::Unexpected(other.to_string()))),
    };
    Ok(Some((verdict, target, from)))
}

/// `CIDR[, CIDR…]` from byte offset `start` to the end of the line.
fn parse_cidr_list(body: &str, start: usize) -> Result<Box<[IpNet]>, (u32, RuleErrorKind)> {
    let mut nets = Vec::new();
    let mut offset = start;
    for item in body[start..].split(',') {
        let trimmed = item.trim();
        let lead = item.len() - item.trim_start().len();
        let col = column_of(body, offset + lead);
        if trimmed.is_empty() {
            return Err((col, RuleErrorKind::MissingCidr("from")));
        }
        nets.push(parse_cidr(trimmed).map_err(|why| (col, why))?);
        offset += item.len() + 1;
    }
    Ok(nets.into())
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

/// Parses the embedded preset.
pub fn preset_rules() -> Result<Vec<Rule>, RuleErrors> {
    let mut rules = Vec::new();
    for (name, text) in PRESET {
        rules.append(&mut parse_rules(name, text)?);
    }
    Ok(rules)
}
