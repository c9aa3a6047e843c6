//! Where each compiled rule was written, and what only scoped rules and globs need, kept
//! compact: a snapshot of a million rules holds twelve bytes per rule here.
//!
//! - A rule's origin is an index (packed into its actions). Its file is found from the index
//!   (each file or list owns a contiguous range of them), and its line is one `u32`: the text
//!   is not kept; `snigate match` reads the line again, the access log prints `file:line`.
//! - A large list is one origin, shared by all its entries: lists are reported by name.
//! - A rule's text is kept as a 64-bit hash, so that rule usage can follow a rule that did not
//!   change across a reload, whatever line it moved to.
//! - A rule with a `from` or `port` clause, or a glob, also has a [`Rich`] entry (its line
//!   word then holds the entry's index): only such rules pay for their scopes and glob parts.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use crate::rules::pattern::Glob;
use crate::rules::rule::{PortRange, admits, admits_port};

/// The line word's top bit: the rest is an index into [`Origins::rich`], not a line.
const RICH: u32 = 1 << 31;

/// The origins of one snapshot, indexed like the origins packed in its actions.
#[derive(Debug, Default)]
pub(crate) struct Origins {
    /// The rule files and lists, in load order, each with the first origin it owns.
    sources: Vec<Source>,
    /// Per origin: its line (0 for a list), or `RICH | index` into `rich`.
    lines: Vec<u32>,
    /// Rules with a `from` or `port` clause, and globs.
    rich: Vec<Rich>,
    /// Per origin: the hash of the rule's text as written ([`text_hash`]); 0 for a list.
    texts: Vec<u64>,
}

/// The hash a rule's text (as written: comment removed, whitespace collapsed) is kept as. Only
/// compared within one process.
pub(crate) fn text_hash(text: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    text.hash(&mut h);
    h.finish()
}

/// A rule file or a list.
#[derive(Debug)]
struct Source {
    /// The file as named when loaded, or the list's ruleset name: the `ruleset` label.
    name: Arc<str>,
    /// A list: reported by its name alone.
    list: bool,
    /// Its denials stay denials in report scopes (`enforce = "always"`, `#! enforce always`).
    always: bool,
    /// Its first origin; its last is the next source's first, less one.
    first: u32,
}

/// What a scoped rule or a glob needs beyond its line.
#[derive(Debug)]
struct Rich {
    /// 1-based line in its file.
    line: u32,
    /// The `from` networks (empty: every source).
    from: Box<[IpNet]>,
    /// The `port` ranges (empty: every port).
    ports: Box<[PortRange]>,
    /// A glob's fixed parts, checked against the SNI's leftmost label.
    glob: Option<Box<Glob>>,
}

impl Origins {
    /// Starts a rule file: the rules pushed next were written in it.
    pub(crate) fn file(&mut self, name: Arc<str>) {
        let first = self.lines.len() as u32;
        self.sources.push(Source { name, list: false, always: false, first });
    }

    /// A list: one origin for all its entries, returned.
    pub(crate) fn list(&mut self, name: Arc<str>) -> usize {
        let first = self.lines.len() as u32;
        self.sources.push(Source { name, list: true, always: false, first });
        self.lines.push(0);
        self.texts.push(0);
        first as usize
    }

    /// A rule written at `line` of the current file (its text hashed to `text`), returned as
    /// its origin.
    pub(crate) fn push(
        &mut self,
        line: u32,
        text: u64,
        from: Box<[IpNet]>,
        ports: Box<[PortRange]>,
        glob: Option<Box<Glob>>,
    ) -> usize {
        debug_assert!(self.sources.last().is_some_and(|s| !s.list), "a rule outside a file");
        let origin = self.lines.len();
        self.texts.push(text);
        if from.is_empty() && ports.is_empty() && glob.is_none() && line < RICH {
            self.lines.push(line);
        } else {
            self.lines.push(RICH | self.rich.len() as u32);
            self.rich.push(Rich { line, from, ports, glob });
        }
        origin
    }

    /// Marks the files and lists named `names` always enforced.
    pub(crate) fn enforce_always(&mut self, names: &[String]) {
        for s in &mut self.sources {
            s.always |= names.iter().any(|n| **n == *s.name);
        }
    }

    /// Number of origins.
    pub(crate) fn len(&self) -> usize {
        self.lines.len()
    }

    /// Gives back spare capacity, once every origin is in.
    pub(crate) fn shrink_to_fit(&mut self) {
        self.sources.shrink_to_fit();
        self.lines.shrink_to_fit();
        self.rich.shrink_to_fit();
        self.texts.shrink_to_fit();
    }

    fn rich(&self, origin: usize) -> Option<&Rich> {
        let word = self.lines[origin];
        (word & RICH != 0).then(|| &self.rich[(word & !RICH) as usize])
    }

    /// Whether the rule's `from` and `port` clauses admit client `src` (canonical) on
    /// destination port `port`.
    #[inline]
    pub(crate) fn admits(&self, origin: usize, src: IpAddr, port: u16) -> bool {
        self.rich(origin).is_none_or(|r| admits(&r.from, src) && admits_port(&r.ports, port))
    }

    /// The glob parts of a glob rule.
    #[inline]
    pub(crate) fn glob(&self, origin: usize) -> Option<&Glob> {
        self.rich(origin)?.glob.as_deref()
    }

    /// A reference to the rule at `origin`.
    pub(crate) fn rule(&self, origin: usize) -> RuleRef<'_> {
        RuleRef { origins: self, origin: origin as u32 }
    }

    /// The file or list `origin` belongs to.
    fn source(&self, origin: u32) -> &Source {
        &self.sources[self.sources.partition_point(|s| s.first <= origin) - 1]
    }

    /// The `ruleset` labels: every file and list that holds a rule.
    pub(crate) fn rulesets(&self) -> impl Iterator<Item = &str> {
        let ends = self.sources.iter().skip(1).map(|s| s.first).chain([self.lines.len() as u32]);
        self.sources.iter().zip(ends).filter(|(s, end)| s.first < *end).map(|(s, _)| &*s.name)
    }

    /// Heap bytes held.
    pub(crate) fn heap_bytes(&self) -> usize {
        self.sources.capacity() * size_of::<Source>()
            + self.lines.capacity() * size_of::<u32>()
            + self.rich.capacity() * size_of::<Rich>()
            + self.texts.capacity() * size_of::<u64>()
            + self
                .rich
                .iter()
                .map(|r| r.from.len() * size_of::<IpNet>() + r.ports.len() * size_of::<PortRange>())
                .sum::<usize>()
    }
}

/// Where the rule that decided a connection was written: a line of a rule file, or a list
/// (reported by name). A handle into the snapshot, resolved only when asked, so that
/// deciding does not touch it: the access log and `snigate match` ask.
#[derive(Clone, Copy)]
pub struct RuleRef<'r> {
    /// The snapshot's origins.
    origins: &'r Origins,
    /// The rule's origin.
    origin: u32,
}

impl<'r> RuleRef<'r> {
    /// The `ruleset` metric label: the file or the list name (never client data).
    pub fn ruleset(&self) -> &'r str {
        &self.origins.source(self.origin).name
    }

    /// [`ruleset`](Self::ruleset), shared rather than copied.
    pub fn ruleset_label(&self) -> Arc<str> {
        self.origins.source(self.origin).name.clone()
    }

    /// Whether its file or list is always enforced: its denials stay denials in report scopes.
    /// Asked only of denials, and then a binary search over the files and lists.
    pub fn always_enforced(&self) -> bool {
        self.origins.source(self.origin).always
    }

    /// The rule's index in its snapshot (the origin packed in its actions): what per-rule
    /// counters are indexed by. Indices are dense, from 0 to the snapshot's rule count.
    pub fn index(&self) -> usize {
        self.origin as usize
    }

    /// The hash of the rule's text as written, to recognise the same rule in another snapshot
    /// (with its file); `None` for a list.
    pub fn text_hash(&self) -> Option<u64> {
        (!self.origins.source(self.origin).list).then(|| self.origins.texts[self.origin as usize])
    }

    /// The rule's 1-based line in its file; `None` for a list entry.
    pub fn line(&self) -> Option<u32> {
        if self.origins.source(self.origin).list {
            return None;
        }
        let word = self.origins.lines[self.origin as usize];
        Some(if word & RICH == 0 { word } else { self.origins.rich[(word & !RICH) as usize].line })
    }
}

impl fmt::Display for RuleRef<'_> {
    /// `file:line`, or the list's name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line() {
            Some(line) => write!(f, "{}:{line}", self.ruleset()),
            None => f.write_str(self.ruleset()),
        }
    }
}

impl fmt::Debug for RuleRef<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RuleRef({self})")
    }
}

impl PartialEq for RuleRef<'_> {
    /// The same place: file and line, or list; whichever snapshot holds it.
    fn eq(&self, other: &Self) -> bool {
        (self.ruleset(), self.line()) == (other.ruleset(), other.line())
    }
}

impl Eq for RuleRef<'_> {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_name_their_file_line_or_list() {
        let mut o = Origins::default();
        o.file("a.rules".into());
        let plain = o.push(3, text_hash("allow a"), Box::default(), Box::default(), None);
        let scoped = o.push(7, 7, Box::new(["10.0.0.0/8".parse().unwrap()]), Box::default(), None);
        o.file("empty.rules".into());
        let list = o.list("blocklist".into());
        o.file("b.rules".into());
        let late = o.push(RICH + 1, 9, Box::default(), Box::default(), None);
        let shown: Vec<String> = [plain, scoped, list, late].iter().map(|&i| o.rule(i).to_string()).collect();
        assert_eq!(shown, ["a.rules:3", "a.rules:7", "blocklist", format!("b.rules:{}", RICH + 1).as_str()]);
        assert_eq!(o.rulesets().collect::<Vec<_>>(), ["a.rules", "blocklist", "b.rules"]);
        let ten: IpAddr = "10.1.1.1".parse().unwrap();
        let other: IpAddr = "192.0.2.1".parse().unwrap();
        assert!(o.admits(scoped, ten, 443) && !o.admits(scoped, other, 443) && o.admits(plain, other, 443));
        assert_eq!(o.rule(list).line(), None);
        let hashes: Vec<Option<u64>> = [plain, scoped, list, late].iter().map(|&i| o.rule(i).text_hash()).collect();
        assert_eq!(hashes, [Some(text_hash("allow a")), Some(7), None, Some(9)]);
        assert_eq!(o.rule(late).index(), late);
    }
}
