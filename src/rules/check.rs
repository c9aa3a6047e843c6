//! `snigate check`: what a valid rule set contains and where it says less than it seems to.
//!
//! A rule can only be overruled everywhere by a rule over the same match set or a larger
//! one at the same specificity, so the analysis groups rules by key and precedence group
//! (exact name, one glob, one suffix, `*`, one `ip` network) and compares within a group:
//! - **duplicate**: the same action, pattern, sources and ports as an earlier rule;
//! - **shadowed**: never decides, because a rule in its group matches every name it does,
//!   applies to every source and port it does, and wins (deny over allow; the first of equals);
//! - **conflict**: an `allow` and a `deny` that both decide some names for some sources on
//!   some ports at the same precedence (deny wins there); not repeated when one shadows the
//!   other.
//!
//! A `from` or `port` clause raises a rule's precedence where it applies and removes the rule
//! elsewhere, so a rule is only found to shadow or meet another with the same clauses.
//!
//! Large lists are counted; their entries are not compared (blocklists repeat themselves).

use std::collections::HashMap;
use std::fmt;

use ipnet::IpNet;

use super::list::List;
use super::pattern::Pattern;
use super::precedence::{Kind, Precedence};
use super::rule::{PortRange, Rule, Target, Verdict};
use super::salesforce::{FAMILIES, OPEN_FAMILIES};
use crate::name::Name;

/// Rules by kind.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// `name`.
    pub exact: usize,
    /// `*.name`.
    pub below: usize,
    /// `.name`.
    pub apex: usize,
    /// `pre*suf.name`.
    pub glob: usize,
    /// `*`.
    pub any: usize,
    /// `ip CIDR`.
    pub ip: usize,
    /// Rules with a `from` clause (also counted under their kind).
    pub scoped: usize,
    /// Rules with a `port` clause (also counted under their kind).
    pub ports: usize,
    /// `allow` rules.
    pub allow: usize,
    /// `deny` rules.
    pub deny: usize,
    /// Lists loaded.
    pub lists: usize,
    /// Entries across all lists.
    pub list_entries: usize,
}

/// One observation about a valid rule set, naming the rules it is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finding<'a> {
    /// `rule` repeats `first` exactly.
    Duplicate {
        /// The later rule.
        rule: &'a Rule,
        /// The rule it repeats.
        first: &'a Rule,
    },
    /// `rule` can never decide: `by` always wins where it would match.
    Shadowed {
        /// The rule that never decides.
        rule: &'a Rule,
        /// The rule that wins instead.
        by: &'a Rule,
    },
    /// An allow and a deny that meet at the same specificity; deny wins there.
    Conflict {
        /// The allow rule.
        allow: &'a Rule,
        /// The deny rule.
        deny: &'a Rule,
    },
    /// A restriction of Salesforce orgs by name that connections without SNI get around:
    /// `ip` rules decide those by address alone, and a Salesforce address serves every org.
    NoSniBypass {
        /// The deny rule that restricts orgs by name.
        deny: &'a Rule,
        /// The `allow ip` rule that lets connections without SNI through.
        ip: &'a Rule,
    },
    /// A Salesforce family whose host names carry no org name, allowed beside a restriction of
    /// orgs by name: it stays open to every org, and no rule by name can close it.
    OpenFamily {
        /// The rule that allows the family.
        allow: &'a Rule,
        /// The deny rule that restricts orgs by name.
        deny: &'a Rule,
        /// What the family's host names carry instead of the org.
        why: &'static str,
    },
}

impl<'a> Finding<'a> {
    /// A stable snake_case name of the kind: the `code` of `snigate check --json`, and what an
    /// acknowledgement names.
    pub fn code(&self) -> &'static str {
        match self {
            Finding::Duplicate { .. } => "duplicate",
            Finding::Shadowed { .. } => "shadowed",
            Finding::Conflict { .. } => "conflict",
            Finding::NoSniBypass { .. } => "no_sni_bypass",
            Finding::OpenFamily { .. } => "open_family",
        }
    }

    /// The two rules it is about; it is reported at the first.
    pub fn rules(&self) -> [&'a Rule; 2] {
        match *self {
            Finding::Duplicate { rule, first } => [rule, first],
            Finding::Shadowed { rule, by } => [rule, by],
            Finding::Conflict { allow, deny } => [allow, deny],
            Finding::NoSniBypass { deny, ip } => [ip, deny],
            Finding::OpenFamily { allow, deny, .. } => [allow, deny],
        }
    }
}

/// The result of [`check`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report<'a> {
    /// Rules by kind.
    pub counts: Counts,
    /// Duplicates, shadowed rules and conflicts, in rule order.
    pub findings: Vec<Finding<'a>>,
}

/// Analyses parsed rules and lists.
pub fn check<'a>(rules: &'a [Rule], lists: &[List]) -> Report<'a> {
    let mut counts = Counts { lists: lists.len(), ..Counts::default() };
    counts.list_entries = lists.iter().map(|l| l.patterns.len()).sum();
    // Each rule's group, numbered in order of first appearance.
    let mut numbers: HashMap<Group<'_>, u32> = HashMap::with_capacity(rules.len());
    let mut group_of = Vec::with_capacity(rules.len());
    for r in rules {
        match &r.target {
            Target::Ip(_) => counts.ip += 1,
            Target::Name(Pattern::Exact(_)) => counts.exact += 1,
            Target::Name(Pattern::Below(_)) => counts.below += 1,
            Target::Name(Pattern::Apex(_)) => counts.apex += 1,
            Target::Name(Pattern::Glob(_)) => counts.glob += 1,
            Target::Name(Pattern::Any) => counts.any += 1,
        }
        counts.scoped += usize::from(!r.from.is_empty());
        counts.ports += usize::from(!r.ports.is_empty());
        match r.verdict {
            Verdict::Allow => counts.allow += 1,
            Verdict::Deny => counts.deny += 1,
        }
        let next = numbers.len() as u32;
        group_of.push(*numbers.entry(Group::of(&r.target)).or_insert(next));
    }
    // Only groups of two rules or more are compared.
    let mut sizes = vec![0u32; numbers.len()];
    drop(numbers);
    for &g in &group_of {
        sizes[g as usize] += 1;
    }
    let mut slot = vec![u32::MAX; sizes.len()];
    let mut groups: Vec<Vec<&Rule>> = Vec::new();
    for (r, &g) in rules.iter().zip(&group_of) {
        if sizes[g as usize] > 1 {
            if slot[g as usize] == u32::MAX {
                slot[g as usize] = groups.len() as u32;
                groups.push(Vec::new());
            }
            groups[slot[g as usize] as usize].push(r);
        }
    }
    let mut findings = Vec::new();
    for group in &groups {
        analyse_group(group, &mut findings);
    }
    findings.sort_by_key(|f| match f {
        Finding::Duplicate { rule, .. } | Finding::Shadowed { rule, .. } => (position(rule), 0),
        Finding::Conflict { allow, deny } => (std::cmp::max(position(allow), position(deny)), 1),
        Finding::NoSniBypass { deny, ip } => (std::cmp::max(position(deny), position(ip)), 2),
        Finding::OpenFamily { allow, .. } => (position(allow), 3),
    });
    findings.extend(no_sni_bypass(rules));
    findings.extend(open_families(rules));
    Report { counts, findings }
}

/// The first Salesforce-org restriction by name and the first `allow ip` rule, when both exist.
fn no_sni_bypass(rules: &[Rule]) -> Option<Finding<'_>> {
    let deny = org_restriction(rules)?;
    let ip = rules.iter().find(|r| r.verdict == Verdict::Allow && matches!(r.target, Target::Ip(_)))?;
    Some(Finding::NoSniBypass { deny, ip })
}

/// Every allow of a family that cannot be restricted by org, when orgs are restricted.
fn open_families(rules: &[Rule]) -> Vec<Finding<'_>> {
    let Some(deny) = org_restriction(rules) else { return Vec::new() };
    let mut found = Vec::new();
    for allow in rules.iter().filter(|r| r.verdict == Verdict::Allow) {
        let Target::Name(p) = &allow.target else { continue };
        let Some(key) = p.key() else { continue };
        if let Some(open) = OPEN_FAMILIES.iter().find(|f| at_or_below(key.as_str(), f.domain)) {
            found.push(Finding::OpenFamily { allow, deny, why: open.why });
        }
    }
    found
}

/// The first deny of an org-specific Salesforce family: a restriction of orgs by name.
fn org_restriction(rules: &[Rule]) -> Option<&Rule> {
    rules.iter().filter(|r| r.verdict == Verdict::Deny).find(|r| match &r.target {
        Target::Name(p) => p.key().is_some_and(|k| FAMILIES.iter().any(|f| at_or_below(k.as_str(), f.domain))),
        Target::Ip(_) => false,
    })
}

/// Whether `name` is `domain` or a name below it.
fn at_or_below(name: &str, domain: &str) -> bool {
    name.strip_suffix(domain).is_some_and(|above| above.is_empty() || above.ends_with('.'))
}

fn analyse_group<'a>(group: &[&'a Rule], out: &mut Vec<Finding<'a>>) {
    let mut silenced = vec![false; group.len()];
    for (j, &b) in group.iter().enumerate() {
        for (i, &a) in group.iter().enumerate() {
            if i == j {
                continue;
            }
            if i < j
                && a.verdict == b.verdict
                && a.target == b.target
                && same_nets(&a.from, &b.from)
                && a.ports == b.ports
            {
                out.push(Finding::Duplicate { rule: b, first: a });
                silenced[j] = true;
                break;
            }
            if overrules(a, b, i < j) {
                out.push(Finding::Shadowed { rule: b, by: a });
                silenced[j] = true;
                break;
            }
        }
    }
    for (i, &a) in group.iter().enumerate() {
        for (j, &b) in group.iter().enumerate().skip(i + 1) {
            if a.verdict == b.verdict || silenced[i] || silenced[j] || !same_reach(a, b) {
                continue;
            }
            let (allow, deny) = if a.verdict == Verdict::Allow { (a, b) } else { (b, a) };
            out.push(Finding::Conflict { allow, deny });
        }
    }
}

/// `a` decides everywhere `b` would: `a` matches a superset of `b`'s names, applies to a
/// superset of its sources and of its ports at the same scoped-ness, and wins the tie.
fn overrules(a: &Rule, b: &Rule, a_first: bool) -> bool {
    let covers_names = match (&a.target, &b.target) {
        (Target::Name(Pattern::Apex(x)), Target::Name(Pattern::Below(y))) => x == y,
        (ta, tb) => ta == tb,
    };
    let covers_sources = match (a.from.is_empty(), b.from.is_empty()) {
        (true, true) => true,
        (false, false) => b.from.iter().all(|nb| a.from.iter().any(|na| na.contains(nb))),
        // A scoped rule outranks an unscoped one for its sources and is absent elsewhere.
        _ => false,
    };
    let covers_ports = match (a.ports.is_empty(), b.ports.is_empty()) {
        (true, true) => true,
        (false, false) => b.ports.iter().all(|&pb| covered(&a.ports, pb)),
        // Likewise for ports.
        _ => false,
    };
    let (pa, pb) = (precedence(a), precedence(b));
    let wins = pa > pb || (pa == pb && a_first);
    covers_names && covers_sources && covers_ports && wins
}

/// Every port of `range` is in one of `ranges` (sorted and disjoint, as parsed).
fn covered(ranges: &[PortRange], range: PortRange) -> bool {
    let mut next = u32::from(range.first);
    for r in ranges {
        if u32::from(r.first) <= next && next <= u32::from(r.last) {
            next = u32::from(r.last) + 1;
        }
    }
    next > u32::from(range.last)
}

/// Both rules decide some name for some source on some port at the same precedence level.
fn same_reach(a: &Rule, b: &Rule) -> bool {
    let names = match (&a.target, &b.target) {
        (Target::Name(Pattern::Apex(x) | Pattern::Below(x)), Target::Name(Pattern::Apex(y) | Pattern::Below(y))) => {
            x == y
        }
        (ta, tb) => ta == tb,
    };
    let sources = match (a.from.is_empty(), b.from.is_empty()) {
        (true, true) => true,
        (false, false) => a.from.iter().any(|na| b.from.iter().any(|nb| na.contains(nb) || nb.contains(na))),
        _ => false,
    };
    let ports = match (a.ports.is_empty(), b.ports.is_empty()) {
        (true, true) => true,
        (false, false) => a.ports.iter().any(|pa| b.ports.iter().any(|&pb| pa.overlaps(pb))),
        _ => false,
    };
    names && sources && ports
}

/// A rule's precedence where it matches (its sources and port admitted).
fn precedence(r: &Rule) -> Precedence {
    let (scoped, ports) = (!r.from.is_empty(), !r.ports.is_empty());
    let deny = r.verdict == Verdict::Deny;
    match &r.target {
        Target::Name(p) => Precedence::new(p.kind(), p.labels(), scoped, ports, deny),
        Target::Ip(net) => Precedence::new(Kind::Ip, net.prefix_len(), scoped, ports, deny),
    }
}

fn same_nets(a: &[IpNet], b: &[IpNet]) -> bool {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort();
    a.dedup();
    b.sort();
    b.dedup();
    a == b
}

/// Rules that can overrule each other share a group: the key plus the precedence group.
#[derive(PartialEq, Eq, Hash)]
enum Group<'a> {
    /// `ip` rules on one network.
    Ip(IpNet),
    /// `.x` and `*.x`: the suffix rules on one name.
    Suffix(&'a Name),
    /// One exact name, one glob, or `*`.
    Pattern(&'a Pattern),
}

impl<'a> Group<'a> {
    fn of(target: &'a Target) -> Group<'a> {
        match target {
            Target::Ip(net) => Group::Ip(*net),
            Target::Name(Pattern::Apex(x) | Pattern::Below(x)) => Group::Suffix(x),
            Target::Name(p) => Group::Pattern(p),
        }
    }
}

/// Where a rule is, for ordering findings.
fn position(r: &Rule) -> (&str, u32) {
    (&r.file, r.line)
}

impl fmt::Display for Finding<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let at = Rule::location;
        match self {
            Finding::Duplicate { rule, first } => {
                write!(f, "duplicate: {} `{}` repeats {}", at(rule), rule.text, at(first))
            }
            Finding::Shadowed { rule, by } => {
                write!(f, "shadowed: {} `{}` never decides: {} `{}` always wins", at(rule), rule.text, at(by), by.text)
            }
            Finding::Conflict { allow, deny } => {
                write!(f, "conflict: {} `{}` and {} `{}` meet; deny wins", at(allow), allow.text, at(deny), deny.text)
            }
            Finding::NoSniBypass { deny, ip } => write!(
                f,
                "warning: {} `{}` restricts Salesforce orgs by name, but {} `{}` lets connections without \
                 SNI through by address, and a Salesforce address serves every org: a hello without SNI \
                 reaches any org. Set [rules] no_sni = \"deny\" unless a client needs to connect without SNI",
                at(deny),
                deny.text,
                at(ip),
                ip.text
            ),
            Finding::OpenFamily { allow, deny, why } => write!(
                f,
                "open: {} `{}` stays open to every Salesforce org while {} `{}` restricts orgs by name: {why}",
                at(allow),
                allow.text,
                at(deny),
                deny.text
            ),
        }
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} rules: {} exact, {} *.suffix, {} .suffix, {} glob, {} catch-all, {} ip; {} from-scoped, {} port-scoped; {} allow, {} deny",
            self.exact + self.below + self.apex + self.glob + self.any + self.ip,
            self.exact,
            self.below,
            self.apex,
            self.glob,
            self.any,
            self.ip,
            self.scoped,
            self.ports,
            self.allow,
            self.deny,
        )?;
        if self.lists > 0 {
            write!(f, "; {} list entries in {} list(s)", self.list_entries, self.lists)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::file::parse_rules;

    fn findings(text: &str) -> Vec<String> {
        let rules = parse_rules("t.rules", text).unwrap();
        check(&rules, &[]).findings.iter().map(ToString::to_string).collect()
    }

    #[test]
    fn reports_duplicates_shadowed_and_conflicts() {
        let got = findings(
            "allow a.com\nallow a.com\n\
             allow *.b.com\ndeny .b.com\n\
             allow .c.com\ndeny *.c.com\n\
             allow *.d.com from 10.0.0.0/8\nallow *.d.com from 10.0.0.0/16\n\
             allow *.e.com from 10.0.0.0/8\ndeny *.e.com\n",
        );
        assert_eq!(
            got,
            [
                "duplicate: t.rules:2 `allow a.com` repeats t.rules:1",
                "shadowed: t.rules:3 `allow *.b.com` never decides: t.rules:4 `deny .b.com` always wins",
                "conflict: t.rules:5 `allow .c.com` and t.rules:6 `deny *.c.com` meet; deny wins",
                "shadowed: t.rules:8 `allow *.d.com from 10.0.0.0/16` never decides: t.rules:7 `allow *.d.com from 10.0.0.0/8` always wins",
            ]
        );
    }

    #[test]
    fn port_scopes_are_compared_with_port_scopes() {
        let got = findings(
            "allow *.p.com port 443
allow *.p.com port 443, 8443
             allow *.q.com port 443, 8000-8999
allow *.q.com port 8443
             allow *.r.com port 443
deny *.r.com port 8443
             allow *.s.com port 8000-8999
deny .s.com port 8443
             allow *.t.com
deny *.t.com port 443
             allow u.com port 443, 80
allow u.com port 80,443
             allow v.com port 443, 444
allow v.com port 443-444
             deny ip 10.0.0.0/8 port 25
allow ip 10.0.0.0/8 from 10.1.0.0/16 port 25
",
        );
        assert_eq!(
            got,
            [
                "shadowed: t.rules:4 `allow *.q.com port 8443` never decides: t.rules:3 `allow *.q.com port 443, 8000-8999` always wins",
                "conflict: t.rules:7 `allow *.s.com port 8000-8999` and t.rules:8 `deny .s.com port 8443` meet; deny wins",
                "duplicate: t.rules:12 `allow u.com port 80,443` repeats t.rules:11",
                "shadowed: t.rules:14 `allow v.com port 443-444` never decides: t.rules:13 `allow v.com port 443, 444` always wins",
            ]
        );
    }

    #[test]
    fn warns_when_connections_without_sni_bypass_an_org_restriction() {
        let restricted = "allow acme.my.salesforce.com\ndeny *.my.salesforce.com\n";
        assert!(findings(restricted).is_empty());
        assert!(findings("allow *.my.salesforce.com\nallow ip 13.108.0.0/14\n").is_empty(), "no restriction");
        let got = findings(&format!("{restricted}allow ip 13.108.0.0/14\n"));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with("warning: t.rules:2 `deny *.my.salesforce.com` restricts Salesforce orgs"),
            "{got:?}"
        );
        assert!(got[0].contains("t.rules:3 `allow ip 13.108.0.0/14`") && got[0].contains("no_sni = \"deny\""));
    }

    #[test]
    fn names_the_families_an_org_restriction_leaves_open() {
        let restricted = "allow acme.my.salesforce.com\ndeny *.my.salesforce.com\n";
        let got = findings(&format!("{restricted}allow *.salesforceliveagent.com\nallow *.sfdcstatic.com\n"));
        assert_eq!(got.len(), 1, "{got:?}");
        assert!(
            got[0].starts_with(
                "open: t.rules:3 `allow *.salesforceliveagent.com` stays open to every Salesforce org while \
                 t.rules:2 `deny *.my.salesforce.com` restricts orgs by name: "
            ),
            "{got:?}"
        );
        assert!(findings("allow *.my.salesforce.com\nallow *.salesforceliveagent.com\n").is_empty(), "no restriction");
        assert!(findings(restricted).is_empty(), "nothing open allowed");
    }

    #[test]
    fn counts_by_kind() {
        let rules = parse_rules(
            "t.rules",
            "allow a.com port 443\ndeny *.b.com\nallow .c.com\nallow x*.d.com\nallow *\nallow ip 10.0.0.0/8 from 10.1.0.0/16\n",
        )
        .unwrap();
        let c = check(&rules, &[]).counts;
        assert_eq!(
            (c.exact, c.below, c.apex, c.glob, c.any, c.ip, c.scoped, c.ports, c.allow, c.deny),
            (1, 1, 1, 1, 1, 1, 1, 1, 5, 1)
        );
    }
}
