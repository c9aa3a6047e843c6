//! The alternative engine: one anchored Aho-Corasick automaton over reversed keys.
//!
//! Each key `my.salesforce.com` becomes the pattern `moc.ecrofselas.ym.`; the SNI
//! `acme.my.salesforce.com` is searched as `moc.ecrofselas.ym.emca.` from its start. Every
//! match is then a label-boundary suffix of the name (the trailing `.` sits on a boundary),
//! found in one pass over the name. The precedence walk is shared with the production engine,
//! so the two differ only in how suffixes are found. It is slower to build and much larger
//! at a million patterns (see the matcher benchmark), so it serves as a test oracle.

use std::net::{IpAddr, SocketAddr};

use aho_corasick::automaton::OverlappingState;
use aho_corasick::{AhoCorasick, AhoCorasickKind, Anchored, Input, MatchKind, StartKind};

use super::decide::{Decision, RuleSet};
use super::table::{MAX_LABELS, walk};
use crate::name::{MAX_NAME_LEN, Name};
use crate::rules::pattern::label_count;

/// An Aho-Corasick index over the keys of one [`RuleSet`], deciding exactly like it.
pub struct AcMatcher {
    /// Reversed keys, each followed by `.`, anchored at the start of the reversed name.
    automaton: AhoCorasick,
    /// Pattern id → (node in the rule set's table, labels of the key).
    nodes: Vec<(u32, u8)>,
}

impl AcMatcher {
    /// Builds the automaton over the keys of `rules`.
    pub fn new(rules: &RuleSet) -> Result<AcMatcher, aho_corasick::BuildError> {
        let table = &rules.compiled.table;
        let mut nodes = Vec::with_capacity(table.len());
        let mut patterns = Vec::with_capacity(table.len());
        for node in table.nodes() {
            let key = table.key(node);
            let mut pattern: Vec<u8> = key.iter().rev().copied().collect();
            pattern.push(b'.');
            patterns.push(pattern);
            nodes.push((node, label_count(key)));
        }
        let automaton = AhoCorasick::builder()
            .kind(Some(AhoCorasickKind::ContiguousNFA))
            .match_kind(MatchKind::Standard)
            .start_kind(StartKind::Anchored)
            .build(&patterns)?;
        Ok(AcMatcher { automaton, nodes })
    }

    /// Same contract as [`RuleSet::decide`], with suffixes found by the automaton.
    pub fn decide<'r>(
        &self,
        rules: &'r RuleSet,
        sni: Option<&Name>,
        src: IpAddr,
        dst: Option<SocketAddr>,
        port: u16,
    ) -> Decision<'r> {
        rules.decide_with(sni, src, dst, port, |compiled, name, scope| {
            let mut found = [None; MAX_LABELS];
            let mut buf = [0u8; MAX_NAME_LEN + 1];
            let len = name.len();
            for (i, &b) in name.as_bytes().iter().rev().enumerate() {
                buf[i] = b;
            }
            buf[len] = b'.';
            let input = Input::new(&buf[..=len]).anchored(Anchored::Yes);
            let mut state = OverlappingState::start();
            loop {
                if self.automaton.try_find_overlapping(input.clone(), &mut state).is_err() {
                    break;
                }
                let Some(m) = state.get_match() else { break };
                let (node, labels) = self.nodes[m.pattern().as_usize()];
                found[labels as usize - 1] = Some(node);
            }
            let labels = label_count(name) as usize;
            walk(&compiled.table, &compiled.origins, name, labels, scope, |depth| found[depth - 1])
        })
    }

    /// Heap bytes of the automaton and the node map.
    pub fn heap_bytes(&self) -> usize {
        self.automaton.memory_usage() + self.nodes.capacity() * std::mem::size_of::<(u32, u8)>()
    }
}
