//! The decision: a compiled, immutable rule snapshot and its one hot-path call,
//! [`RuleSet::decide`], which does not allocate.

use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use super::destination::canonical;
use super::origin::{Origins, RuleRef};
use super::table::{Action, Found, SuffixTable, walk_hashed};
use crate::name::Name;
use crate::reason::Reason;
use crate::rules::precedence::Kind;
use crate::rules::rule::Verdict;

/// How the deciding rule matched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Matched {
    /// The rule's kind.
    pub kind: Kind,
    /// Labels in the rule's key (name, suffix or glob parent); the prefix length for `ip`;
    /// 0 for `*`.
    pub labels: u8,
}

/// The outcome for one connection. The rule reference is a handle into the snapshot, which
/// keeps `decide` allocation-free and leaves finding the rule's file and line to those who ask.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision<'r> {
    /// Allow or deny.
    pub verdict: Verdict,
    /// Why: `rule`, `default` or `no_sni`.
    pub reason: Reason,
    /// The deciding rule; `None` for `default` and `no_sni`.
    pub rule: Option<RuleRef<'r>>,
    /// How the deciding rule matched; `None` when no rule decided.
    pub matched: Option<Matched>,
}

impl Decision<'_> {
    /// No rule matched the name: the rule set's default.
    pub(crate) const fn default(verdict: Verdict) -> Decision<'static> {
        Decision { verdict, reason: Reason::Default, rule: None, matched: None }
    }

    /// No SNI, and no `ip` rule matched the destination.
    pub(crate) const NO_SNI: Decision<'static> =
        Decision { verdict: Verdict::Deny, reason: Reason::NoSni, rule: None, matched: None };
}

/// A destination rule, for connections without SNI.
#[derive(Debug, Clone)]
pub(crate) struct IpRule {
    /// The destination network.
    pub net: IpNet,
    /// Verdict, scope and origin, packed like name rules.
    pub action: Action,
}

/// The compiled state both engines read.
pub(crate) struct Compiled {
    /// Exact, glob and suffix rules, by key.
    pub table: SuffixTable,
    /// Where each rule was written, and the scopes and globs of those that have them; large
    /// lists share one origin each.
    pub origins: Origins,
    /// `*` rules, best first.
    pub any: Vec<Action>,
    /// `ip` rules, best first.
    pub ip: Vec<IpRule>,
}

/// A compiled, immutable rule snapshot. Build it off the hot path ([`RuleSet::new`]), share it
/// behind an `Arc`, and call [`decide`](RuleSet::decide) per connection.
pub struct RuleSet {
    /// The compiled rules.
    pub(crate) compiled: Compiled,
    /// The verdict for a name that matches nothing (deny unless configured).
    pub(crate) default: Verdict,
    /// Patterns loaded (rules plus list entries), for the `snigate_rules_loaded` gauge.
    pub(crate) len: usize,
    /// Whether some rule has a `port` clause.
    pub(crate) port_scoped: bool,
    /// `[rules] no_sni = "deny"`: a hello without SNI is denied whatever the `ip` rules say.
    pub(crate) no_sni_denied: bool,
}

impl RuleSet {
    /// Decides one connection: by the SNI when there is one, else by the `ip` rules against
    /// the destination. `src` is the client address (for `from` scopes); `port` is the
    /// destination port the connection asks for (for `port` scopes: the original destination's,
    /// the CONNECT or request port, the fixed upstream's, or `upstream_port`), 0 when unknown,
    /// which only rules without `port` admit. Never allocates.
    #[inline]
    pub fn decide(&self, sni: Option<&Name>, src: IpAddr, dst: Option<SocketAddr>, port: u16) -> Decision<'_> {
        self.decide_with(sni, src, dst, port, |c, name, scope| walk_hashed(&c.table, &c.origins, name, scope))
    }

    /// `decide` with the suffix lookup supplied by an engine.
    #[inline]
    pub(crate) fn decide_with(
        &self,
        sni: Option<&Name>,
        src: IpAddr,
        dst: Option<SocketAddr>,
        port: u16,
        lookup: impl FnOnce(&Compiled, &str, (IpAddr, u16)) -> Option<Found>,
    ) -> Decision<'_> {
        let src = src.to_canonical();
        let c = &self.compiled;
        let Some(name) = sni else { return self.decide_ip(src, dst, port) };
        if let Some(found) = lookup(c, name.as_str(), (src, port)) {
            return self.by_rule(found.action, found.labels);
        }
        match c.any.iter().find(|a| a.admits(&c.origins, src, port)) {
            Some(&a) => self.by_rule(a, 0),
            None => Decision::default(self.default),
        }
    }

    fn decide_ip(&self, src: IpAddr, dst: Option<SocketAddr>, port: u16) -> Decision<'_> {
        let Some(dst) = dst.filter(|_| !self.no_sni_denied) else { return Decision::NO_SNI };
        match self.ip_rule(src, dst.ip(), port) {
            Some(r) => self.by_rule(r.action, r.net.prefix_len()),
            None => Decision::NO_SNI,
        }
    }

    /// The `ip` rule that decides destination `ip` on `port` for source `src` (canonical), if
    /// any.
    fn ip_rule(&self, src: IpAddr, ip: IpAddr, port: u16) -> Option<&IpRule> {
        let ip = ip.to_canonical();
        let c = &self.compiled;
        c.ip.iter().find(|r| r.net.contains(&ip) && r.action.admits(&c.origins, src, port))
    }

    /// The `deny ip` rule that refuses destination `dst` (address and port) to client `src`,
    /// if one does: `ip` rules decide connections without SNI, and a `deny ip` rule also bars
    /// every connection to the destinations it decides, whatever name led there; a `deny ip …
    /// port` rule bars them on its ports only. NAT64 addresses are judged as the IPv4 address
    /// they stand for.
    pub fn denies_destination(&self, src: IpAddr, dst: SocketAddr) -> Option<RuleRef<'_>> {
        let rule = self.ip_rule(src.to_canonical(), canonical(dst.ip()), dst.port())?;
        rule.action.deny().then(|| self.compiled.origins.rule(rule.action.origin()))
    }

    /// The decision of the `allow ip … port` rule that lets destination `dst` (address and
    /// port) through on its own for client `src`, if one does. A transparent connection to such
    /// a destination is spliced at accept, before its client says anything, so that protocols
    /// where the server speaks first work. Only a port-scoped rule does this: an `ip` rule
    /// without `port` decides connections without SNI, not every connection to its addresses.
    pub fn allows_destination(&self, src: IpAddr, dst: SocketAddr) -> Option<Decision<'_>> {
        if self.no_sni_denied {
            return None;
        }
        let rule = self.ip_rule(src.to_canonical(), canonical(dst.ip()), dst.port())?;
        let alone = !rule.action.deny() && rule.action.by_port();
        alone.then(|| self.by_rule(rule.action, rule.net.prefix_len()))
    }

    /// This snapshot with the rule files and lists named `names` always enforced: their
    /// denials stay denials in report scopes ([`RuleRef::always_enforced`]).
    pub fn enforce_always(mut self, names: &[String]) -> RuleSet {
        self.compiled.origins.enforce_always(names);
        self
    }

    /// This snapshot with hellos without SNI denied whatever the `ip` rules say
    /// (`[rules] no_sni = "deny"`).
    pub fn deny_no_sni(mut self) -> RuleSet {
        self.no_sni_denied = true;
        self
    }

    fn by_rule(&self, a: Action, labels: u8) -> Decision<'_> {
        Decision {
            verdict: if a.deny() { Verdict::Deny } else { Verdict::Allow },
            reason: Reason::Rule,
            rule: Some(self.compiled.origins.rule(a.origin())),
            matched: Some(Matched { kind: a.kind(), labels }),
        }
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

    /// Every rule of the snapshot, by [`RuleRef::index`]: rule-file rules and one per list.
    pub fn rules(&self) -> impl ExactSizeIterator<Item = RuleRef<'_>> {
        (0..self.compiled.origins.len()).map(|i| self.compiled.origins.rule(i))
    }

    /// The `ruleset` labels this snapshot can report: its rule files and list names.
    pub fn rulesets(&self) -> BTreeSet<&str> {
        self.compiled.origins.rulesets().collect()
    }

    /// Whether some rule has a `port` clause (and so does not apply where the port is unknown).
    pub fn has_port_rules(&self) -> bool {
        self.port_scoped
    }

    /// The verdict for names that match nothing.
    pub fn default_verdict(&self) -> Verdict {
        self.default
    }

    /// Approximate heap bytes held by the name index and the origins (the bulk of a large
    /// snapshot).
    pub fn heap_bytes(&self) -> usize {
        self.compiled.table.heap_bytes() + self.compiled.origins.heap_bytes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::file::parse_rules;

    /// A `deny ip` rule bars its destinations in every form: plain, IPv4-mapped and NAT64.
    #[test]
    fn deny_ip_rules_bar_every_form_of_their_destinations() {
        let rules = parse_rules("t.rules", "deny ip 203.0.113.0/24\nallow ip 198.51.100.0/24\n").unwrap();
        let set = RuleSet::new(rules, Vec::new(), Verdict::Deny);
        let src: IpAddr = "10.0.0.1".parse().unwrap();
        for dst in ["203.0.113.1:443", "[::ffff:203.0.113.1]:443", "[64:ff9b::cb00:7101]:443"] {
            assert!(set.denies_destination(src, dst.parse().unwrap()).is_some(), "{dst}");
        }
        assert!(set.denies_destination(src, "198.51.100.1:443".parse().unwrap()).is_none(), "an allow ip rule");
        assert!(set.denies_destination(src, "192.0.2.1:443".parse().unwrap()).is_none(), "no rule");
    }

    /// Only an `allow ip … port` rule lets a destination through on its own.
    #[test]
    fn only_port_scoped_allow_ip_rules_decide_at_accept() {
        let text = "allow ip 192.0.2.0/24 port 25\nallow ip 198.51.100.0/24\ndeny ip 203.0.113.0/24 port 22\n";
        let set = RuleSet::new(parse_rules("t.rules", text).unwrap(), Vec::new(), Verdict::Deny);
        let src: IpAddr = "10.0.0.1".parse().unwrap();
        let at = |dst: &str| set.allows_destination(src, dst.parse().unwrap()).map(|d| d.verdict);
        assert_eq!(at("192.0.2.7:25"), Some(Verdict::Allow));
        assert_eq!(at("192.0.2.7:26"), None, "another port");
        assert_eq!(at("198.51.100.1:25"), None, "no port clause: decides connections without SNI only");
        assert_eq!(at("203.0.113.1:22"), None, "a deny rule");
    }

    /// A `deny ip … port` rule bars its destinations on its ports only, and a port-scoped
    /// `allow ip` opens a port of a denied network.
    #[test]
    fn deny_ip_rules_with_ports_bar_those_ports_only() {
        let text = "deny ip 203.0.113.0/24 port 25, 6000-6999
deny ip 198.51.100.0/24
                    allow ip 198.51.100.7 port 443
";
        let set = RuleSet::new(parse_rules("t.rules", text).unwrap(), Vec::new(), Verdict::Deny);
        let src: IpAddr = "10.0.0.1".parse().unwrap();
        let barred = |dst: &str| set.denies_destination(src, dst.parse().unwrap()).map(|r| r.to_string());
        assert_eq!(barred("203.0.113.1:25").as_deref(), Some("t.rules:1"));
        assert_eq!(barred("203.0.113.1:6500").as_deref(), Some("t.rules:1"));
        assert_eq!(barred("203.0.113.1:443"), None, "another port");
        assert_eq!(barred("198.51.100.7:443"), None, "the port-scoped allow");
        assert_eq!(barred("198.51.100.7:80").as_deref(), Some("t.rules:2"));
    }
}
