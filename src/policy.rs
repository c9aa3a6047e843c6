//! The decision: a compiled, immutable rule snapshot and its one hot-path call,
//! [`RuleSet::decide`], which does not allocate.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use ipnet::IpNet;

use crate::name::Name;
use crate::reason::Reason;
use crate::rules::matcher::{
    ANY, APEX, Action, BELOW, EXACT, Found, GLOB, MAX_ORIGINS, Origin, SuffixTable, walk_hashed,
};
use crate::rules::{List, Pattern, Rule, Target};

/// Whether a connection may proceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Splice the connection to its upstream.
    Allow,
    /// Reject it.
    Deny,
}

impl Verdict {
    /// `allow` or `deny`: the metric label and the rule-file keyword.
    pub const fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the rule that decided a connection was written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum RuleRef {
    /// A line of a rule file.
    Line {
        /// The file, as it was named when loaded.
        file: Arc<str>,
        /// 1-based line number.
        line: u32,
        /// The rule as written, comment removed (for `snigate match` and logs).
        text: Arc<str>,
    },
    /// An entry of a large list: lists are reported by name, not by line.
    List {
        /// The list's ruleset name from the configuration.
        name: Arc<str>,
    },
}

impl RuleRef {
    /// The `ruleset` metric label: the file or the list name (never client data).
    pub fn ruleset(&self) -> &str {
        match self {
            RuleRef::Line { file, .. } => file,
            RuleRef::List { name } => name,
        }
    }

    /// [`ruleset`](Self::ruleset), shared rather than copied.
    pub fn ruleset_label(&self) -> Arc<str> {
        match self {
            RuleRef::Line { file, .. } => file.clone(),
            RuleRef::List { name } => name.clone(),
        }
    }
}

impl fmt::Display for RuleRef {
    /// `file:line`, or the list's name.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleRef::Line { file, line, .. } => write!(f, "{file}:{line}"),
            RuleRef::List { name } => f.write_str(name),
        }
    }
}

/// What kind of rule decided, for explanations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum MatchKind {
    /// `name`.
    Exact,
    /// `pre*suf.parent`; `labels` counts the parent.
    Glob,
    /// `.name`.
    Apex,
    /// `*.name`.
    Below,
    /// `*`.
    Any,
    /// `ip CIDR`; `labels` holds the prefix length.
    Ip,
}

/// How the deciding rule matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Matched {
    /// The rule's kind.
    pub kind: MatchKind,
    /// Labels in the rule's key (name, suffix or glob parent); the prefix length for `ip`;
    /// 0 for `*`.
    pub labels: u8,
}

/// The outcome for one connection. Borrowing the rule reference from the snapshot keeps
/// `decide` allocation-free.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'r> {
    /// Allow or deny.
    pub verdict: Verdict,
    /// Why: `rule`, `default` or `no_sni`.
    pub reason: Reason,
    /// The deciding rule; `None` for `default` and `no_sni`.
    pub rule: Option<&'r RuleRef>,
    /// How the deciding rule matched; `None` when no rule decided.
    pub matched: Option<Matched>,
}

/// A destination rule, for connections without SNI.
#[derive(Debug, Clone)]
struct IpRule {
    /// The destination network.
    net: IpNet,
    /// Verdict, scope and origin, packed like name rules.
    action: Action,
}

/// The compiled state both engines read.
pub(crate) struct Compiled {
    /// Exact, glob and suffix rules, by key.
    pub table: SuffixTable,
    /// Rule origins; large lists share one each.
    pub origins: Vec<Origin>,
    /// `*` rules, best first.
    pub any: Vec<Action>,
    /// `ip` rules, best first: longest prefix, then scoped, then deny, then load order.
    ip: Vec<IpRule>,
}

/// A compiled, immutable rule snapshot. Build it off the hot path, share it behind an `Arc`,
/// and call [`decide`](RuleSet::decide) per connection.
pub struct RuleSet {
    /// The compiled rules.
    compiled: Compiled,
    /// The verdict for a name that matches nothing (deny unless configured).
    default: Verdict,
    /// Patterns loaded (rules plus list entries), for the `snigate_rules_loaded` gauge.
    len: usize,
}

impl RuleSet {
    /// Compiles rules (in load order) and lists. Load order only breaks ties between rules
    /// of equal precedence, and then only changes which rule is reported.
    ///
    /// # Panics
    ///
    /// With more than 2^27 rules and lists (the origin index is 27 bits).
    pub fn new(rules: Vec<Rule>, lists: Vec<List>, default: Verdict) -> RuleSet {
        assert!(rules.len() + lists.len() < MAX_ORIGINS, "too many rules");
        let mut len = 0;
        let mut origins = Vec::with_capacity(rules.len() + lists.len());
        let mut entries: Vec<(&str, Action)> = Vec::new();
        let mut any = Vec::new();
        let mut ip = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let deny = rule.verdict == Verdict::Deny;
            let scoped = !rule.from.is_empty();
            let mut glob = None;
            match &rule.target {
                Target::Ip(net) => ip.push(IpRule { net: *net, action: Action::new(ANY, deny, scoped, i) }),
                Target::Name(Pattern::Any) => any.push(Action::new(ANY, deny, scoped, i)),
                Target::Name(p) => {
                    if let Pattern::Glob(g) = p {
                        glob = Some(g.clone());
                    }
                    let key = p.key().map(Name::as_str).unwrap_or_default();
                    entries.push((key, Action::new(kind_of(p), deny, scoped, i)));
                }
            }
            len += 1;
            origins.push(Origin { rule: rule.origin.clone(), verdict: rule.verdict, from: rule.from.clone(), glob });
        }
        for list in &lists {
            let i = origins.len();
            let deny = list.verdict == Verdict::Deny;
            origins.push(Origin {
                rule: RuleRef::List { name: list.name.clone() },
                verdict: list.verdict,
                from: Box::default(),
                glob: None,
            });
            for p in &list.patterns {
                if let Some(key) = p.key() {
                    entries.push((key.as_str(), Action::new(kind_of(p), deny, false, i)));
                } else {
                    any.push(Action::new(ANY, deny, false, i));
                }
                len += 1;
            }
        }
        let table = SuffixTable::build(entries.into_iter());
        any.sort_by_key(|a| (!a.scoped(), !a.deny(), a.origin()));
        ip.sort_by_key(|r| {
            (std::cmp::Reverse(r.net.prefix_len()), !r.action.scoped(), !r.action.deny(), r.action.origin())
        });
        RuleSet { compiled: Compiled { table, origins, any, ip }, default, len }
    }

    /// Decides one connection: by the SNI when there is one, else by the `ip` rules against
    /// the destination. `src` is the client address (for `from` scopes). Never allocates.
    #[inline]
    pub fn decide(&self, sni: Option<&Name>, src: IpAddr, dst: Option<SocketAddr>) -> Decision<'_> {
        self.decide_with(sni, src, dst, |c, name, src| walk_hashed(&c.table, &c.origins, name, src))
    }

    /// `decide` with the suffix lookup supplied by an engine.
    #[inline]
    pub(crate) fn decide_with(
        &self,
        sni: Option<&Name>,
        src: IpAddr,
        dst: Option<SocketAddr>,
        lookup: impl FnOnce(&Compiled, &str, IpAddr) -> Option<Found>,
    ) -> Decision<'_> {
        let src = src.to_canonical();
        let c = &self.compiled;
        let Some(name) = sni else { return self.decide_ip(src, dst) };
        if let Some(found) = lookup(c, name.as_str(), src) {
            return self.by_rule(found.action, found.labels);
        }
        match c.any.iter().find(|a| self.admits(**a, src)) {
            Some(&a) => self.by_rule(a, 0),
            None => Decision { verdict: self.default, reason: Reason::Default, rule: None, matched: None },
        }
    }

    fn decide_ip(&self, src: IpAddr, dst: Option<SocketAddr>) -> Decision<'_> {
        let no_sni = Decision { verdict: Verdict::Deny, reason: Reason::NoSni, rule: None, matched: None };
        let Some(dst) = dst else { return no_sni };
        let ip = dst.ip().to_canonical();
        match self.compiled.ip.iter().find(|r| r.net.contains(&ip) && self.admits(r.action, src)) {
            Some(r) => Decision {
                matched: Some(Matched { kind: MatchKind::Ip, labels: r.net.prefix_len() }),
                ..self.by_rule(r.action, 0)
            },
            None => no_sni,
        }
    }

    fn admits(&self, a: Action, src: IpAddr) -> bool {
        !a.scoped() || crate::rules::rule::admits(&self.compiled.origins[a.origin()].from, src)
    }

    fn by_rule(&self, a: Action, labels: u8) -> Decision<'_> {
        let origin = &self.compiled.origins[a.origin()];
        let kind = match a.kind() {
            EXACT => MatchKind::Exact,
            GLOB => MatchKind::Glob,
            APEX => MatchKind::Apex,
            BELOW => MatchKind::Below,
            _ => MatchKind::Any,
        };
        Decision {
            verdict: origin.verdict,
            reason: Reason::Rule,
            rule: Some(&origin.rule),
            matched: Some(Matched { kind, labels }),
        }
    }

    pub(crate) fn compiled(&self) -> &Compiled {
        &self.compiled
    }

    /// Patterns loaded: rules plus list entries.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing is loaded (every name gets the default, every no-SNI connection is
    /// denied).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The `ruleset` labels this snapshot can report: its rule files and list names.
    pub fn rulesets(&self) -> std::collections::BTreeSet<&str> {
        self.compiled.origins.iter().map(|o| o.rule.ruleset()).collect()
    }

    /// The verdict for names that match nothing.
    pub fn default_verdict(&self) -> Verdict {
        self.default
    }

    /// Approximate heap bytes held by the name index (the bulk of a large snapshot).
    pub fn heap_bytes(&self) -> usize {
        self.compiled.table.heap_bytes() + self.compiled.origins.capacity() * std::mem::size_of::<Origin>()
    }
}

fn kind_of(p: &Pattern) -> u32 {
    match p {
        Pattern::Exact(_) => EXACT,
        Pattern::Glob(_) => GLOB,
        Pattern::Apex(_) => APEX,
        Pattern::Below(_) => BELOW,
        Pattern::Any => ANY,
    }
}
