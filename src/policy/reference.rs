//! The naive reference: a plain loop over every rule, keeping the matching rule of greatest
//! [`Precedence`]. Obviously correct and slow; the property test compares the compiled engines
//! with it, and the matcher benchmark uses it as the baseline.

use std::net::{IpAddr, SocketAddr};

use ipnet::IpNet;

use super::decide::{Decision, Matched};
use crate::name::Name;
use crate::reason::Reason;
use crate::rules::list::List;
use crate::rules::precedence::{Kind, Precedence};
use crate::rules::rule::{Rule, RuleRef, Target, Verdict, admits};

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

    /// Same contract as [`RuleSet::decide`](super::decide::RuleSet::decide).
    pub fn decide(&self, sni: Option<&Name>, src: IpAddr, dst: Option<SocketAddr>) -> Decision<'_> {
        let src = src.to_canonical();
        let mut best: Option<(Precedence, usize, Matched)> = None;
        let mut best_ip: Option<(Precedence, usize, Matched)> = None;
        for (verdict, target, from, origin) in &self.rules {
            if !admits(from, src) {
                continue;
            }
            let (scoped, deny) = (!from.is_empty(), *verdict == Verdict::Deny);
            match (target, sni) {
                (Target::Name(p), Some(name)) if p.matches(name) => {
                    let prec = Precedence::new(p.kind(), p.labels(), scoped, deny);
                    if best.as_ref().is_none_or(|(b, _, _)| prec > *b) {
                        best = Some((prec, *origin, Matched { kind: p.kind(), labels: p.labels() }));
                    }
                }
                (Target::Ip(net), None) if dst.is_some_and(|d| net.contains(&d.ip().to_canonical())) => {
                    let prec = Precedence::new(Kind::Ip, net.prefix_len(), scoped, deny);
                    if best_ip.as_ref().is_none_or(|(b, _, _)| prec > *b) {
                        let m = Matched { kind: Kind::Ip, labels: net.prefix_len() };
                        best_ip = Some((prec, *origin, m));
                    }
                }
                _ => {}
            }
        }
        let (none, won) = match sni {
            Some(_) => (Decision::default(self.default), best.map(|(_, o, m)| (o, m))),
            None => (Decision::NO_SNI, best_ip.map(|(_, o, m)| (o, m))),
        };
        match won {
            Some((origin, m)) => {
                let verdict = self.rules.iter().find(|r| r.3 == origin).map_or(Verdict::Deny, |r| r.0);
                Decision { verdict, reason: Reason::Rule, rule: Some(&self.origins[origin]), matched: Some(m) }
            }
            None => none,
        }
    }
}
