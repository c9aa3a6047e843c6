//! The naive reference: a plain loop over every rule, keeping the matching rule of greatest
//! [`Precedence`]. Obviously correct and slow; the property test compares the compiled engines
//! with it, and the matcher benchmark uses it as the baseline.

use std::net::{IpAddr, SocketAddr};

use super::decide::{Decision, Matched};
use super::origin::{Origins, text_hash};
use crate::name::Name;
use crate::reason::Reason;
use crate::rules::list::List;
use crate::rules::precedence::{Kind, Precedence};
use crate::rules::rule::{Rule, Target, Verdict};

/// Every rule and list entry, flattened, in load order.
pub struct Reference {
    /// Each rule, list entries as rules without scopes, with its origin index.
    rules: Vec<(Rule, usize)>,
    /// Where each rule was written, indexed like `RuleSet`'s origins: rules, then one per list.
    origins: Origins,
    /// Verdict when nothing matches.
    default: Verdict,
}

impl Reference {
    /// Flattens rules and lists, keeping load order.
    pub fn new(rules: &[Rule], lists: &[List], default: Verdict) -> Reference {
        let mut flat = Vec::new();
        let mut origins = Origins::default();
        for r in rules {
            origins.file(r.file.clone());
            flat.push((r.clone(), origins.push(r.line, text_hash(&r.text), Box::default(), Box::default(), None)));
        }
        for l in lists {
            let origin = origins.list(l.name.clone());
            for p in &l.patterns {
                let entry = Rule {
                    verdict: l.verdict,
                    target: Target::Name(p.clone()),
                    from: Box::default(),
                    ports: Box::default(),
                    file: l.name.clone(),
                    line: 0,
                    text: Box::default(),
                };
                flat.push((entry, origin));
            }
        }
        Reference { rules: flat, origins, default }
    }

    /// Same contract as [`RuleSet::decide`](super::decide::RuleSet::decide).
    pub fn decide(&self, sni: Option<&Name>, src: IpAddr, dst: Option<SocketAddr>, port: u16) -> Decision<'_> {
        let src = src.to_canonical();
        let mut best: Option<(Precedence, usize, Matched)> = None;
        let mut best_ip: Option<(Precedence, usize, Matched)> = None;
        for (rule, origin) in &self.rules {
            if !rule.admits(src) || !rule.admits_port(port) {
                continue;
            }
            let (scoped, ports, deny) = (!rule.from.is_empty(), !rule.ports.is_empty(), rule.verdict == Verdict::Deny);
            match (&rule.target, sni) {
                (Target::Name(p), Some(name)) if p.matches(name) => {
                    let prec = Precedence::new(p.kind(), p.labels(), scoped, ports, deny);
                    if best.as_ref().is_none_or(|(b, _, _)| prec > *b) {
                        best = Some((prec, *origin, Matched { kind: p.kind(), labels: p.labels() }));
                    }
                }
                (Target::Ip(net), None) if dst.is_some_and(|d| net.contains(&d.ip().to_canonical())) => {
                    let prec = Precedence::new(Kind::Ip, net.prefix_len(), scoped, ports, deny);
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
                let verdict = self.rules.iter().find(|r| r.1 == origin).map_or(Verdict::Deny, |r| r.0.verdict);
                Decision { verdict, reason: Reason::Rule, rule: Some(self.origins.rule(origin)), matched: Some(m) }
            }
            None => none,
        }
    }
}
