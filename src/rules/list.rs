//! Large domain lists (blocklists, allowlists) tied to one action and a ruleset name.
//!
//! The format is recognised line by line, so the common published formats all load:
//!
//! | line | meaning | why |
//! | --- | --- | --- |
//! | `example.com` | `.example.com`: the name and every name below it | what DNS blockers (dnsmasq `server=/…/`, Unbound zones, AdGuard Home domain lists) do with a bare domain |
//! | `*.example.com` | `*.example.com`: strictly below | wildcard lists |
//! | `0.0.0.0 example.com [more…]` | `example.com` exactly, for each name | a hosts file only ever resolves the names it lists |
//! | `||example.com^` | `.example.com` | the adblock meaning of `||…^`: the domain and its subdomains |
//!
//! `#` comments (whole-line or trailing), `!` adblock comments, `[Adblock …]` headers and
//! blank lines are ignored, as are the loopback names hosts files carry (`localhost`, …).
//! Anything else (adblock options `$…`, paths, IP literals as names) is malformed: an error
//! with its line number, or counted and skipped when the list is declared lenient.

use std::io::BufRead;
use std::net::IpAddr;
use std::sync::Arc;

use super::file::{READ_BUFFER, RuleError, RuleErrorKind, RuleErrors, for_each_line, io_error, strip_comment};
use super::pattern::Pattern;
use super::rule::Verdict;
use crate::name::Name;

/// How a list is used, from the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListSpec {
    /// The ruleset name: reported as the deciding rule and used as the `ruleset` metric label.
    pub name: String,
    /// What a match does.
    pub verdict: Verdict,
    /// Skip (and count) malformed lines instead of failing the load: for third-party lists
    /// that the operator does not control.
    pub lenient: bool,
}

/// A loaded list: every entry shares the list's verdict and name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct List {
    /// The ruleset name.
    pub name: Arc<str>,
    /// What a match does.
    pub verdict: Verdict,
    /// The entries, in file order (duplicates kept; the compiler drops them).
    pub patterns: Vec<Pattern>,
    /// Malformed lines skipped because the list is lenient.
    pub skipped: usize,
}

/// Hosts-file names that describe the machine itself, not something to block.
const HOSTS_SELF: &[&str] = &[
    "localhost",
    "localhost.localdomain",
    "local",
    "broadcasthost",
    "ip6-localhost",
    "ip6-loopback",
    "ip6-localnet",
    "ip6-mcastprefix",
    "ip6-allnodes",
    "ip6-allrouters",
    "ip6-allhosts",
];

/// Parses a list's text. A strict list fails with every malformed line; a lenient one skips
/// them and counts them in [`List::skipped`].
pub fn parse_list(spec: &ListSpec, text: &str) -> Result<List, RuleErrors> {
    let mut patterns = Vec::new();
    let skipped = read_list(spec, text.as_bytes(), |p| patterns.push(p))?;
    Ok(List { name: spec.name.as_str().into(), verdict: spec.verdict, patterns, skipped })
}

/// Reads a list file; I/O errors name the list.
pub fn load_list(spec: &ListSpec, path: &std::path::Path) -> Result<List, RuleErrors> {
    let mut patterns = Vec::new();
    let skipped = stream_list(spec, path, |p| patterns.push(p))?;
    Ok(List { name: spec.name.as_str().into(), verdict: spec.verdict, patterns, skipped })
}

/// Streams a list file's entries to `each` as they are read (see [`load_list`]); returns the
/// malformed lines skipped.
pub(crate) fn stream_list(
    spec: &ListSpec,
    path: &std::path::Path,
    each: impl FnMut(Pattern),
) -> Result<usize, RuleErrors> {
    let file = std::fs::File::open(path).map_err(|e| RuleErrors(vec![io_error(&spec.name, &e)]))?;
    read_list(spec, std::io::BufReader::with_capacity(READ_BUFFER, file), each)
}

/// Parses a list from `reader`, calling `each` with every entry; returns the malformed lines
/// skipped (lenient), or every error (strict), or the I/O error alone.
fn read_list(spec: &ListSpec, reader: impl BufRead, mut each: impl FnMut(Pattern)) -> Result<usize, RuleErrors> {
    let name: Arc<str> = spec.name.as_str().into();
    let mut errors = Vec::new();
    let mut skipped = 0;
    let read = for_each_line(reader, |line, raw| {
        if let Err(why) = parse_line(raw, &mut each) {
            if spec.lenient {
                skipped += 1;
            } else {
                errors.push(RuleError { file: name.clone(), line, column: 0, kind: RuleErrorKind::ListLine(why) });
            }
        }
    });
    match read {
        Err(e) => Err(RuleErrors(vec![io_error(&name, &e)])),
        Ok(()) if errors.is_empty() => Ok(skipped),
        Ok(()) => Err(RuleErrors(errors)),
    }
}

fn parse_line(raw: &str, out: &mut impl FnMut(Pattern)) -> Result<(), String> {
    let line = raw.trim();
    if line.is_empty() || line.starts_with('!') || line.starts_with("[Adblock") {
        return Ok(());
    }
    if let Some(rest) = line.strip_prefix("||") {
        let name = rest.strip_suffix('^').ok_or_else(|| format!("`{line}`: adblock rule must be `||domain^`"))?;
        return push_name(name, out, Pattern::Apex);
    }
    let line = strip_comment(line).trim();
    let mut tokens = line.split_whitespace();
    let Some(first) = tokens.next() else { return Ok(()) };
    if first.parse::<IpAddr>().is_ok() {
        let mut any = false;
        for name in tokens {
            any = true;
            if HOSTS_SELF.contains(&name.to_ascii_lowercase().as_str()) || name.parse::<IpAddr>().is_ok() {
                continue;
            }
            push_name(name, out, Pattern::Exact)?;
        }
        return if any { Ok(()) } else { Err(format!("`{line}`: hosts line without a name")) };
    }
    if tokens.next().is_some() {
        return Err(format!("`{line}`: one domain a line expected"));
    }
    if first.starts_with("*.") {
        return match Pattern::parse(first) {
            Ok(p) => {
                out(p);
                Ok(())
            }
            Err(e) => Err(format!("`{first}`: {e}")),
        };
    }
    push_name(first.strip_prefix('.').unwrap_or(first), out, Pattern::Apex)
}

/// Parses a plain name (no `*`), wraps it with `kind`.
fn push_name(text: &str, out: &mut impl FnMut(Pattern), kind: fn(Name) -> Pattern) -> Result<(), String> {
    match Pattern::parse(text) {
        Ok(Pattern::Exact(name)) => {
            out(kind(name));
            Ok(())
        }
        Ok(_) => Err(format!("`{text}`: a list entry is a plain domain")),
        Err(e) => Err(format!("`{text}`: {e}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(lenient: bool) -> ListSpec {
        ListSpec { name: "blocklist".into(), verdict: Verdict::Deny, lenient }
    }

    #[test]
    fn reads_each_format() {
        let text = "# comment\n! adblock comment\n[Adblock Plus 2.0]\n\nplain.example\n*.wild.example\n\
                    0.0.0.0 ads.example tracker.example # two names\n127.0.0.1 localhost\n||adblock.example^\n";
        let list = parse_list(&spec(false), text).unwrap();
        let got: Vec<String> = list.patterns.iter().map(ToString::to_string).collect();
        assert_eq!(got, [".plain.example", "*.wild.example", "ads.example", "tracker.example", ".adblock.example"]);
        assert_eq!(list.skipped, 0);
    }

    #[test]
    fn strict_lists_name_every_bad_line_and_lenient_ones_count_them() {
        let text = "good.example\n||opts.example^$third-party\nbad..example\nok.example\ntwo words\n";
        let err = parse_list(&spec(false), text).unwrap_err();
        let lines: Vec<u32> = err.0.iter().map(|e| e.line).collect();
        assert_eq!(lines, [2, 3, 5]);
        assert!(err.to_string().starts_with("blocklist:2: malformed list line"), "{err}");
        let list = parse_list(&spec(true), text).unwrap();
        assert_eq!(list.patterns.len(), 2);
        assert_eq!(list.skipped, 3);
    }
}
