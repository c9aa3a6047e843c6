//! The naive reference: a plain loop over every rule applying the written precedence
//! ([`Precedence`]'s `Ord`). Obviously correct and slow; the property test compares the
//! compiled engines with it, and the matcher benchmark uses it as the baseline.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use crate::name::Name;
use crate::policy::{Decision, MatchKind, Matched, RuleRef, Verdict};
use crate::reason::Reason;
use crate::rules::pattern::{Pattern, Precedence, label_count};
use crate::rules::rule::admits;
use crate::rules::{List, Rule, Target};

/// Every rule and list entry, flattened, in load order.
pub struct Reference {
    /// `(verdict, target, from, origin index)`.
    rules: Vec<(Verdict, Target, Box<[IpNet]>, usize)>,
    /// Rule references, indexed like `RuleSet`'s origins: rules, then one per list.
    origins: Vec<RuleRef>,
    /// Verdict when nothing matches.
    default: Verdict,
}

impl Reference {
    /// Flattens rules and lists, keeping load order.
    pub fn new(rules: &[Rule], lists: &[List], default: Verdict) -> Reference {
        let mut flat = Vec::new();
        let mut origins = Vec::new();
        for r in rules {
            flat.push((r.verdict, r.target.clone(), r.from.clone(), origins.len()));
            origins.push(r.origin.clone());
        }
        for l in lists {
            for p in &l.patterns {
                flat.push((l.verdict, Target::Name(p.clone()), Box::default(), origins.len()));
            }
            origins.push(RuleRef::List { name: l.name.clone() });
        }
        Reference { rules: flat, origins, default }
    }

    /// Same contract as [`RuleSet::decide`](crate::RuleSet::decide).
    pub fn decide(&self, sni: Option<&Name>, src: IpAddr, dst: Option<SocketAddr>) -> Decision<'_> {
        let src = src.to_canonical();
        let mut best: Option<(Precedence, usize, Matched)> = None;
        let mut best_ip: Option<((u8, bool, bool), usize, Matched)> = None;
        for (verdict, target, from, origin) in &self.rules {
            if !admits(from, src) {
                continue;
            }
            let (scoped, deny) = (!from.is_empty(), *verdict == Verdict::Deny);
            match (target, sni) {
                (Target::Name(p), Some(name)) if p.matches(name) => {
                    let prec = Precedence { specificity: p.specificity(), scoped, deny };
                    if best.as_ref().is_none_or(|(b, _, _)| prec > *b) {
                        best = Some((prec, *origin, matched(p)));
                    }
                }
                (Target::Ip(net), None) if dst.is_some_and(|d| net.contains(&d.ip().to_canonical())) => {
                    let prec = (net.prefix_len(), scoped, deny);
                    if best_ip.as_ref().is_none_or(|(b, _, _)| prec > *b) {
                        let m = Matched { kind: MatchKind::Ip, labels: net.prefix_len() };
                        best_ip = Some((prec, *origin, m));
                    }
                }
                _ => {}
            }
        }
        let (none_reason, none_verdict, won) = match sni {
            Some(_) => (Reason::Default, self.default, best.map(|(_, o, m)| (o, m))),
            None => (Reason::NoSni, Verdict::Deny, best_ip.map(|(_, o, m)| (o, m))),
        };
        match won {
            Some((origin, m)) => {
                let verdict = self.rules.iter().find(|r| r.3 == origin).map_or(Verdict::Deny, |r| r.0);
                Decision { verdict, reason: Reason::Rule, rule: Some(&self.origins[origin]), matched: Some(m) }
            }
            None => Decision { verdict: none_verdict, reason: none_reason, rule: None, matched: None },
        }
    }
}

fn matched(p: &Pattern) -> Matched {
    let labels = p.key().map_or(0, |k| label_count(k.as_str()));
    let kind = match p {
        Pattern::Any => MatchKind::Any,
        Pattern::Below(_) => MatchKind::Below,
        Pattern::Apex(_) => MatchKind::Apex,
        Pattern::Glob(_) => MatchKind::Glob,
        Pattern::Exact(_) => MatchKind::Exact,
    };
    Matched { kind, labels }
}
