//! Compiling rules and lists into a [`RuleSet`]: the one step from the rule language to the
//! decision's packed form.
//!
//! Rules are compiled one at a time as their files are read ([`RuleSet::load`]): neither the
//! files' text nor the parsed rules are ever held whole, so loading a million rules takes
//! little more memory than the snapshot it builds.

use std::cmp::Reverse;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use ipnet::IpNet;

use super::decide::{Compiled, IpRule, RuleSet};
use super::origin::{Origins, text_hash};
use super::table::{Action, MAX_ORIGINS, TableBuilder};
use crate::rules::file::{RuleErrors, RuleLine, for_each_rule, written};
use crate::rules::list::{List, ListSpec, stream_list};
use crate::rules::pattern::{Glob, Pattern};
use crate::rules::precedence::Kind;
use crate::rules::rule::{PortRange, Rule, Target, Verdict};
use crate::rules::suffix::PublicSuffixWildcards;

/// A snapshot being built, fed rule by rule and entry by entry in load order.
struct Compiler {
    /// Exact, glob and suffix rules, filed by key as they come.
    table: TableBuilder,
    /// Where each rule was written.
    origins: Origins,
    /// `*` rules.
    any: Vec<Action>,
    /// `ip` rules.
    ip: Vec<IpRule>,
    /// Patterns loaded: rules plus list entries.
    len: usize,
    /// Whether some rule has a `port` clause.
    port_scoped: bool,
    /// The file the last rule came from, to start a new source when it changes.
    file: Option<Arc<str>>,
}

impl Compiler {
    fn new() -> Compiler {
        Compiler {
            table: TableBuilder::new(),
            origins: Origins::default(),
            any: Vec::new(),
            ip: Vec::new(),
            len: 0,
            port_scoped: false,
            file: None,
        }
    }

    /// One rule, written at `line` of `file` as `text` (comment removed, whitespace collapsed).
    fn rule(&mut self, file: &Arc<str>, line: u32, text: &str, rule: RuleLine) {
        if self.file.as_ref().is_none_or(|f| !Arc::ptr_eq(f, file)) {
            self.origins.file(file.clone());
            self.file = Some(file.clone());
        }
        let RuleLine { verdict, target, from, ports } = rule;
        let deny = verdict == Verdict::Deny;
        let (by_source, by_port) = (!from.is_empty(), !ports.is_empty());
        self.port_scoped |= by_port;
        let text = text_hash(text);
        let (key, kind, glob) = match target {
            Target::Ip(net) => {
                let i = self.push(line, text, from, ports, None);
                self.ip.push(IpRule { net, action: Action::new(Kind::Ip, deny, by_source, by_port, i) });
                return;
            }
            Target::Name(Pattern::Any) => {
                let i = self.push(line, text, from, ports, None);
                self.any.push(Action::new(Kind::Any, deny, by_source, by_port, i));
                return;
            }
            Target::Name(Pattern::Glob(g)) => (g.parent.clone(), Kind::Glob, Some(g)),
            Target::Name(Pattern::Exact(x)) => (x, Kind::Exact, None),
            Target::Name(Pattern::Apex(x)) => (x, Kind::Apex, None),
            Target::Name(Pattern::Below(x)) => (x, Kind::Below, None),
        };
        let i = self.push(line, text, from, ports, glob);
        self.table.insert(key.as_str(), Action::new(kind, deny, by_source, by_port, i));
    }

    /// A rule's origin.
    fn push(
        &mut self,
        line: u32,
        text: u64,
        from: Box<[IpNet]>,
        ports: Box<[PortRange]>,
        glob: Option<Box<Glob>>,
    ) -> usize {
        assert!(self.origins.len() < MAX_ORIGINS, "too many rules");
        self.len += 1;
        self.origins.push(line, text, from, ports, glob)
    }

    /// Starts a list: its entries share one origin. Returns what [`entry`](Self::entry) needs.
    fn list(&mut self, name: Arc<str>, verdict: Verdict) -> (usize, bool) {
        assert!(self.origins.len() < MAX_ORIGINS, "too many rules");
        self.file = None;
        (self.origins.list(name), verdict == Verdict::Deny)
    }

    /// One entry of the list started last.
    fn entry(&mut self, (origin, deny): (usize, bool), p: &Pattern) {
        self.len += 1;
        match p.key() {
            Some(key) => self.table.insert(key.as_str(), Action::new(p.kind(), deny, false, false, origin)),
            None => self.any.push(Action::new(Kind::Any, deny, false, false, origin)),
        }
    }

    fn finish(self, default: Verdict) -> RuleSet {
        let Compiler { table, mut origins, mut any, mut ip, len, port_scoped, .. } = self;
        let table = table.finish();
        origins.shrink_to_fit();
        // Best first: the greatest precedence, then load order.
        any.sort_by_key(|a| (Reverse(a.precedence(0)), a.origin()));
        ip.sort_by_key(|r| (Reverse(r.action.precedence(r.net.prefix_len())), r.action.origin()));
        RuleSet { compiled: Compiled { table, origins, any, ip }, default, len, port_scoped, no_sni_denied: false }
    }
}

impl RuleSet {
    /// Compiles rules (in load order) and lists. Load order only breaks ties between rules
    /// of equal precedence, and then only changes which rule is reported.
    ///
    /// # Panics
    ///
    /// With more than 2^26 rules and lists (the origin index is 26 bits).
    pub fn new(rules: Vec<Rule>, lists: Vec<List>, default: Verdict) -> RuleSet {
        let mut c = Compiler::new();
        for Rule { verdict, target, from, ports, file, line, text } in rules {
            c.rule(&file, line, &text, RuleLine { verdict, target, from, ports });
        }
        for list in lists {
            let origin = c.list(list.name, list.verdict);
            for p in &list.patterns {
                c.entry(origin, p);
            }
        }
        c.finish(default)
    }

    /// Reads and compiles the rule files at `files` (files, or directories of `*.rules`; `None`:
    /// the embedded preset) and the `lists` (each with the file it is read from), streaming:
    /// each rule is compiled as it is read. Every error of every file and list is returned.
    /// Public suffixes are guarded (see [`load_with`](Self::load_with)).
    pub fn load(
        files: Option<&[PathBuf]>,
        lists: &[(ListSpec, &Path)],
        default: Verdict,
    ) -> Result<RuleSet, RuleErrors> {
        RuleSet::load_with(files, lists, default, PublicSuffixWildcards::Deny)
    }

    /// [`load`](Self::load), with the public-suffix guard as `suffixes` says: an `allow` rule
    /// over a whole public suffix is an error unless it is `Allow`.
    pub fn load_with(
        files: Option<&[PathBuf]>,
        lists: &[(ListSpec, &Path)],
        default: Verdict,
        suffixes: PublicSuffixWildcards,
    ) -> Result<RuleSet, RuleErrors> {
        let mut c = Compiler::new();
        let mut errors = Vec::new();
        if let Err(e) = for_each_rule(files, suffixes, |file, line, raw, rule| c.rule(file, line, &written(raw), rule))
        {
            errors.extend(e.0);
        }
        for (spec, path) in lists {
            let origin = c.list(spec.name.as_str().into(), spec.verdict);
            if let Err(e) = stream_list(spec, path, |p| c.entry(origin, &p)) {
                errors.extend(e.0);
            }
        }
        if errors.is_empty() { Ok(c.finish(default)) } else { Err(RuleErrors(errors)) }
    }
}
