//! Compiling parsed rules and lists into a [`RuleSet`]: the one step from the rule language
//! to the decision's packed form.

use std::cmp::Reverse;

use super::decide::{Compiled, IpRule, RuleSet};
use super::table::{Action, MAX_ORIGINS, Origin, SuffixTable};
use crate::rules::list::List;
use crate::rules::pattern::Pattern;
use crate::rules::precedence::Kind;
use crate::rules::rule::{Rule, RuleRef, Target, Verdict};

impl RuleSet {
    /// Compiles rules (in load order) and lists. Load order only breaks ties between rules
    /// of equal precedence, and then only changes which rule is reported.
    ///
    /// # Panics
    ///
    /// With more than 2^26 rules and lists (the origin index is 26 bits).
    pub fn new(rules: Vec<Rule>, lists: Vec<List>, default: Verdict) -> RuleSet {
        assert!(rules.len() + lists.len() < MAX_ORIGINS, "too many rules");
        let mut len = 0;
        let mut origins = Vec::with_capacity(rules.len() + lists.len());
        let mut entries: Vec<(&str, Action)> = Vec::new();
        let mut any = Vec::new();
        let mut ip = Vec::new();
        for (i, rule) in rules.iter().enumerate() {
            let deny = rule.verdict == Verdict::Deny;
            let (by_source, by_port) = (!rule.from.is_empty(), !rule.ports.is_empty());
            let action = |kind| Action::new(kind, deny, by_source, by_port, i);
            let mut glob = None;
            match &rule.target {
                Target::Ip(net) => ip.push(IpRule { net: *net, action: action(Kind::Ip) }),
                Target::Name(Pattern::Any) => any.push(action(Kind::Any)),
                Target::Name(p) => {
                    if let Pattern::Glob(g) = p {
                        glob = Some(g.clone());
                    }
                    let key = p.key().map(|k| k.as_str()).unwrap_or_default();
                    entries.push((key, action(p.kind())));
                }
            }
            len += 1;
            origins.push(Origin {
                rule: rule.origin.clone(),
                verdict: rule.verdict,
                from: rule.from.clone(),
                ports: rule.ports.clone(),
                glob,
            });
        }
        for list in &lists {
            let i = origins.len();
            let deny = list.verdict == Verdict::Deny;
            origins.push(Origin {
                rule: RuleRef::List { name: list.name.clone() },
                verdict: list.verdict,
                from: Box::default(),
                ports: Box::default(),
                glob: None,
            });
            for p in &list.patterns {
                match p.key() {
                    Some(key) => entries.push((key.as_str(), Action::new(p.kind(), deny, false, false, i))),
                    None => any.push(Action::new(Kind::Any, deny, false, false, i)),
                }
                len += 1;
            }
        }
        let table = SuffixTable::build(entries.into_iter());
        // Best first: the greatest precedence, then load order.
        any.sort_by_key(|a| (Reverse(a.precedence(0)), a.origin()));
        ip.sort_by_key(|r| (Reverse(r.action.precedence(r.net.prefix_len())), r.action.origin()));
        RuleSet { compiled: Compiled { table, origins, any, ip }, default, len, no_sni_denied: false }
    }
}
