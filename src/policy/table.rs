//! The production matcher: a hash table over label-boundary suffixes, walked from the longest
//! suffix (the whole name) to the shortest (the TLD), stopping at the first that decides.
//!
//! Layout, chosen to stay under 64 bytes per pattern at a million patterns:
//! - one byte arena holds every distinct key (a name, a suffix, or a glob's parent) once,
//!   followed by its actions: `[key_len: u8][key bytes][count][action: u32 LE]…`, where
//!   `count` is one byte, or 255 followed by a `u32` for keys with 255 or more actions;
//! - an open-addressing table of 8-byte slots (32 bits of the key's hash beside its arena
//!   offset, linear probing, at most half full) maps a key to its arena offset: a probe
//!   touches one cache line of the table and, only when the hash bits agree, the arena;
//! - an action is a packed `u32` (kind, deny, source scope, port scope, origin index), and the
//!   actions under a key are stored best first, in [`Precedence`] order; what is rare (the
//!   rule's file and line, its `from` networks and ports, a glob's fixed parts) lives in the
//!   origins ([`Origins`]), which large lists share: one origin per list, not per entry. Only
//!   an action with a scope bit set reads its origin to be admitted: unscoped rules stay on the
//!   fast path.
//!
//! The key hash is computed label by label from the right, so one pass over the SNI yields
//! the hash of every suffix; the table is probed once per label at most.
//!
//! [`TableBuilder`] appends each entry to the arena as rules are read, and files the keys
//! once every entry is in, in place: building holds little more than the finished table.

use std::cmp::Reverse;
use std::net::IpAddr;

use super::origin::Origins;
use crate::rules::pattern::label_count;
use crate::rules::precedence::{Kind, Precedence};

/// Most labels a valid name can have (253 bytes: 127 one-byte labels).
pub(crate) const MAX_LABELS: usize = 127;

/// One rule's entry under a key: `kind:3 | deny:1 | by_source:1 | by_port:1 | origin:26`, the
/// kind being [`Kind`]'s packed form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Action(u32);

/// Origins are 26-bit indices.
pub(crate) const MAX_ORIGINS: usize = 1 << 26;

/// The bits of [`Action::by_source`] and [`Action::by_port`].
const SCOPES: u32 = 16 | 32;

impl Action {
    /// `by_source`: the rule has a `from` clause; `by_port`: a `port` clause.
    pub(crate) fn new(kind: Kind, deny: bool, by_source: bool, by_port: bool, origin: usize) -> Action {
        debug_assert!(origin < MAX_ORIGINS);
        Action(
            kind as u32 | (deny as u32) << 3 | (by_source as u32) << 4 | (by_port as u32) << 5 | (origin as u32) << 6,
        )
    }
    pub(crate) fn kind(self) -> Kind {
        Kind::from_bits(self.0)
    }
    pub(crate) fn deny(self) -> bool {
        self.0 & 8 != 0
    }
    pub(crate) fn by_source(self) -> bool {
        self.0 & 16 != 0
    }
    pub(crate) fn by_port(self) -> bool {
        self.0 & 32 != 0
    }
    /// Either scope: the origin decides whether the rule applies.
    #[inline]
    pub(crate) fn scoped(self) -> bool {
        self.0 & SCOPES != 0
    }
    pub(crate) fn origin(self) -> usize {
        (self.0 >> 6) as usize
    }
    /// The rule's precedence, where its key has `labels` labels.
    pub(crate) fn precedence(self, labels: u8) -> Precedence {
        Precedence::new(self.kind(), labels, self.by_source(), self.by_port(), self.deny())
    }
    /// Whether the rule applies to client `src` (canonical) on destination port `port`: only a
    /// scoped action reads its origin.
    #[inline]
    pub(crate) fn admits(self, origins: &Origins, src: IpAddr, port: u16) -> bool {
        !self.scoped() || origins.admits(self.origin(), src, port)
    }
}

/// How a compiled rule matched: its kind and how many labels its key has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Found {
    pub action: Action,
    pub labels: u8,
}

/// Hash of one label: folded multiplies over 8-byte words. Short tails are read as
/// overlapping words (no copy), so the length is mixed in first to keep them distinct.
#[inline]
fn label_hash(label: &[u8]) -> u64 {
    let n = label.len();
    let mut h = fold(n as u64 ^ 0x9e37_79b9_7f4a_7c15, 0xa076_1d64_78bd_642f);
    if n >= 8 {
        let mut chunks = label.chunks_exact(8);
        for c in &mut chunks {
            h = fold(h ^ word(c), 0xe703_7ed1_a0b4_28db);
        }
        if !chunks.remainder().is_empty() {
            h = fold(h ^ word(&label[n - 8..]), 0x8ebc_6af0_9c88_c6e3);
        }
    } else if n >= 4 {
        let w = u64::from(half(&label[..4])) << 32 | u64::from(half(&label[n - 4..]));
        h = fold(h ^ w, 0x8ebc_6af0_9c88_c6e3);
    } else if n > 0 {
        let w = u64::from(label[0]) << 16 | u64::from(label[n / 2]) << 8 | u64::from(label[n - 1]);
        h = fold(h ^ w, 0x8ebc_6af0_9c88_c6e3);
    }
    h
}

#[inline]
fn word(b: &[u8]) -> u64 {
    u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
}

#[inline]
fn half(b: &[u8]) -> u32 {
    u32::from_le_bytes([b[0], b[1], b[2], b[3]])
}

/// The suffix hash after one more label to the left.
fn push_label(h: u64, label: &[u8]) -> u64 {
    fold(h ^ 0x5899_65cc_7537_4cc3, label_hash(label) ^ 0x1d8e_4e27_c47d_124f)
}

fn fold(a: u64, b: u64) -> u64 {
    let p = (a as u128).wrapping_mul(b as u128);
    (p as u64) ^ ((p >> 64) as u64)
}

const SEED: u64 = 0x243f_6a88_85a3_08d3;

/// The hash of a whole key (a normalised name), equal to what [`Suffixes`] computes for
/// the same suffix of a longer name.
pub(crate) fn key_hash(key: &[u8]) -> u64 {
    key.rsplit(|&b| b == b'.').fold(SEED, push_label)
}

/// Suffixes hashed in the one pass; deeper ones (names of more than this many labels are
/// rare) are hashed on demand.
const FAST_LABELS: usize = 32;

/// Every label-boundary suffix of one name, hashed in one right-to-left pass. Index `d - 1`
/// is the suffix of `d` labels. Lives on the stack: the hot path does not allocate.
pub(crate) struct Suffixes {
    hashes: [u64; FAST_LABELS],
    starts: [u8; FAST_LABELS],
    /// Number of labels of the name.
    pub labels: usize,
}

impl Suffixes {
    #[inline]
    pub(crate) fn new(name: &str) -> Suffixes {
        let mut s = Suffixes { hashes: [0; FAST_LABELS], starts: [0; FAST_LABELS], labels: 0 };
        let bytes = name.as_bytes();
        let mut h = SEED;
        let mut end = bytes.len();
        // Counted in a local: a field would go through memory on every label.
        let mut labels = 0;
        loop {
            let start = bytes[..end].iter().rposition(|&b| b == b'.').map_or(0, |dot| dot + 1);
            if labels < FAST_LABELS {
                h = push_label(h, &bytes[start..end]);
                s.hashes[labels] = h;
                s.starts[labels] = start as u8;
            }
            labels += 1;
            if start == 0 {
                break;
            }
            end = start - 1;
        }
        s.labels = labels;
        s
    }

    /// Hash and text of the suffix with `depth` labels (1 ..= labels).
    #[inline]
    pub(crate) fn get<'n>(&self, name: &'n str, depth: usize) -> (u64, &'n [u8]) {
        if depth <= FAST_LABELS {
            return (self.hashes[depth - 1], &name.as_bytes()[self.starts[depth - 1] as usize..]);
        }
        // Skip the labels to the left of this suffix.
        let skip = self.labels - depth;
        let start = match skip {
            0 => 0,
            _ => name.match_indices('.').nth(skip - 1).map_or(0, |(dot, _)| dot + 1),
        };
        let key = &name.as_bytes()[start..];
        (key_hash(key), key)
    }
}

/// An empty slot of the table.
const EMPTY: u64 = u64::MAX;

/// The hash bits a slot keeps beside the arena offset.
const TAG: u64 = 0xffff_ffff_0000_0000;

/// The compiled index: keys and their actions in one arena, a hash table over offsets.
pub(crate) struct SuffixTable {
    /// `[key_len][key][count][actions…]` per key.
    arena: Vec<u8>,
    /// `hash >> 32` in the high half, arena offset in the low half; `EMPTY` when free.
    slots: Vec<u64>,
    /// `slots.len() - 1` (a power of two minus one).
    mask: usize,
    /// Distinct keys.
    keys: usize,
}

/// Builds a [`SuffixTable`] one `(key, action)` at a time, as rules are read. Each entry is
/// appended to the arena in its final form as it comes; [`finish`](Self::finish) then sizes
/// the slots once, for the entries it has, and files the keys, dropping repeated ones by
/// moving the rest down in place. Nothing else is held per entry, and nothing is held twice.
pub(crate) struct TableBuilder {
    /// `[key_len][key][1][action]` per entry, in load order: keys repeat until `finish`.
    arena: Vec<u8>,
    /// Entries appended.
    entries: usize,
}

impl TableBuilder {
    pub(crate) fn new() -> TableBuilder {
        TableBuilder { arena: Vec::new(), entries: 0 }
    }

    /// Files `action` under `key` (a normalised name).
    pub(crate) fn insert(&mut self, key: &str, action: Action) {
        push_node(&mut self.arena, key.as_bytes(), &[action]);
        self.entries += 1;
    }

    /// The finished table: each key once, its actions together, best first, and no action
    /// twice.
    pub(crate) fn finish(self) -> SuffixTable {
        let TableBuilder { mut arena, entries } = self;
        let mut slots = vec![EMPTY; slot_count(entries)];
        let mask = slots.len() - 1;
        // Further actions of keys already filed: (node, action).
        let mut more: Vec<(u32, Action)> = Vec::new();
        let (mut read, mut write, mut keys) = (0, 0, 0);
        while read < arena.len() {
            let len = arena[read] as usize;
            let end = read + 1 + len + 1 + 4;
            let hash = key_hash(&arena[read + 1..read + 1 + len]);
            let mut i = hash as usize & mask;
            loop {
                let slot = slots[i];
                if slot == EMPTY {
                    arena.copy_within(read..end, write);
                    slots[i] = (hash & TAG) | write as u64;
                    write += end - read;
                    keys += 1;
                    break;
                }
                let node = slot as u32;
                if slot & TAG == hash & TAG && node_key(&arena, node) == &arena[read + 1..read + 1 + len] {
                    let action = node_actions(&arena, read as u32).next().expect("an entry has its action");
                    if node_actions(&arena, node).next() != Some(action) {
                        more.push((node, action));
                    }
                    break;
                }
                i = (i + 1) & mask;
            }
            read = end;
        }
        arena.truncate(write);
        // Repeated keys: the slots were sized for every entry; size them for the keys.
        if slot_count(keys) < slots.len() {
            slots = vec![EMPTY; slot_count(keys)];
            file_all(&mut slots, &arena);
        }
        if !more.is_empty() {
            merge(&mut arena, &mut slots, more);
        }
        arena.shrink_to_fit();
        crate::sys::huge_pages(&slots);
        crate::sys::huge_pages(&arena);
        let mask = slots.len() - 1;
        SuffixTable { arena, slots, mask, keys }
    }
}

/// Slots for `keys` keys: a power of two, at most half full.
fn slot_count(keys: usize) -> usize {
    (keys * 2).next_power_of_two().max(8)
}

/// Files every node of `arena` in `slots` (empty).
fn file_all(slots: &mut [u64], arena: &[u8]) {
    let mut node = 0;
    while node < arena.len() {
        file_node(slots, arena, node as u32);
        node = node_end(arena, node as u32);
    }
}

/// Moves the further actions of keys (`more`: node, action) in beside their first, sorted
/// best first ([`Precedence`], then load order: each kind's actions are then contiguous, as
/// `pick` needs) and without repeats. The arena is rewritten in place, from its end, so that
/// no second arena is ever held; the slots are then pointed at the moved nodes.
fn merge(arena: &mut Vec<u8>, slots: &mut [u64], mut more: Vec<(u32, Action)>) {
    more.sort_unstable_by_key(|&(node, _)| node);
    // Each node with further actions: (node, its merged actions' span in `merged`).
    let mut spans: Vec<(u32, usize, usize)> = Vec::new();
    let mut merged: Vec<Action> = Vec::with_capacity(more.len() * 2);
    for group in more.chunk_by(|a, b| a.0 == b.0) {
        let node = group[0].0;
        let start = merged.len();
        merged.extend(node_actions(arena, node));
        merged.extend(group.iter().map(|&(_, a)| a));
        let labels = label_count(node_key(arena, node));
        let actions = &mut merged[start..];
        actions.sort_unstable_by_key(|a| (Reverse(a.precedence(labels)), a.origin()));
        let n = dedup_in_place(actions);
        merged.truncate(start + n);
        spans.push((node, start, n));
    }
    drop(more);
    // Each node grows by its further actions (and a longer count past 254 actions).
    let growth = |n: usize| 4 * (n - 1) + if n < 255 { 0 } else { 4 };
    let total: usize = spans.iter().map(|&(_, _, n)| growth(n)).sum();
    let mut end = arena.len();
    arena.resize(end + total, 0);
    let mut shift = total;
    let (mut key, mut node_bytes) = ([0u8; 256], Vec::new());
    for &(node, start, n) in spans.iter().rev() {
        let at = node as usize;
        let old_end = node_end(arena, node);
        arena.copy_within(old_end..end, old_end + shift);
        shift -= growth(n);
        let len = arena[at] as usize;
        key[..len].copy_from_slice(&arena[at + 1..at + 1 + len]);
        node_bytes.clear();
        push_node(&mut node_bytes, &key[..len], &merged[start..start + n]);
        arena[at + shift..at + shift + node_bytes.len()].copy_from_slice(&node_bytes);
        end = at;
    }
    // A node moved by the growth of the nodes before it.
    let mut moved = Vec::with_capacity(spans.len());
    let mut sum = 0;
    for &(node, _, n) in &spans {
        sum += growth(n) as u32;
        moved.push((node, sum));
    }
    for slot in slots.iter_mut().filter(|s| **s != EMPTY) {
        let node = *slot as u32;
        let before = moved.partition_point(|&(n, _)| n < node);
        let shift = if before == 0 { 0 } else { moved[before - 1].1 };
        *slot = (*slot & TAG) | u64::from(node + shift);
    }
}

/// Appends a node `[key_len][key][count][actions…]` to `arena`; returns its offset. `count`
/// is one byte, or 255 followed by a `u32` for 255 actions or more.
fn push_node(arena: &mut Vec<u8>, key: &[u8], actions: &[Action]) -> u32 {
    let node = u32::try_from(arena.len()).expect("the arena stays under 4 GiB");
    arena.push(key.len() as u8);
    arena.extend_from_slice(key);
    match u8::try_from(actions.len()) {
        Ok(n) if n < 255 => arena.push(n),
        _ => {
            arena.push(255);
            arena.extend_from_slice(&(actions.len() as u32).to_le_bytes());
        }
    }
    for a in actions {
        arena.extend_from_slice(&a.0.to_le_bytes());
    }
    node
}

/// The key of the node at `node`.
fn node_key(arena: &[u8], node: u32) -> &[u8] {
    let at = node as usize;
    &arena[at + 1..at + 1 + arena[at] as usize]
}

/// Where the actions of the node at `node` start, and how many there are.
fn node_span(arena: &[u8], node: u32) -> (usize, usize) {
    let at = node as usize;
    let p = at + 1 + arena[at] as usize;
    match arena[p] {
        255 => (p + 5, u32::from_le_bytes([arena[p + 1], arena[p + 2], arena[p + 3], arena[p + 4]]) as usize),
        n => (p + 1, n as usize),
    }
}

/// The actions of the node at `node`, in stored order.
fn node_actions(arena: &[u8], node: u32) -> impl Iterator<Item = Action> + '_ {
    let (p, n) = node_span(arena, node);
    arena[p..p + 4 * n].chunks_exact(4).map(|c| Action(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
}

/// The offset just past the node at `node`: the next node's.
fn node_end(arena: &[u8], node: u32) -> usize {
    let (p, n) = node_span(arena, node);
    p + 4 * n
}

/// Files the node at `node` in `slots` (which do not hold its key yet).
fn file_node(slots: &mut [u64], arena: &[u8], node: u32) {
    let hash = key_hash(node_key(arena, node));
    let mask = slots.len() - 1;
    let mut i = hash as usize & mask;
    while slots[i] != EMPTY {
        i = (i + 1) & mask;
    }
    slots[i] = (hash & TAG) | u64::from(node);
}

impl SuffixTable {
    /// Builds the table from `(key, action)` pairs in any order. Identical actions under the
    /// same key are merged.
    #[cfg(test)]
    pub(crate) fn build<'a>(entries: impl Iterator<Item = (&'a str, Action)>) -> SuffixTable {
        let mut b = TableBuilder::new();
        for (key, action) in entries {
            b.insert(key, action);
        }
        b.finish()
    }

    /// The node (arena offset) of `key`, if any rule is filed under it.
    #[inline]
    pub(crate) fn get(&self, hash: u64, key: &[u8]) -> Option<u32> {
        self.get_from(hash, key, self.first_slot(hash))
    }

    /// The slot a probe for `hash` starts at. Loading it early for every suffix lets the
    /// CPU overlap the cache misses instead of taking them one after another.
    #[inline]
    pub(crate) fn first_slot(&self, hash: u64) -> u64 {
        self.slots[hash as usize & self.mask]
    }

    /// `get`, given the value of the first slot already loaded.
    #[inline]
    pub(crate) fn get_from(&self, hash: u64, key: &[u8], first: u64) -> Option<u32> {
        let tag = hash & TAG;
        let mut i = hash as usize & self.mask;
        let mut slot = first;
        loop {
            if slot == EMPTY {
                return None;
            }
            if slot & TAG == tag && self.key(slot as u32) == key {
                return Some(slot as u32);
            }
            i = (i + 1) & self.mask;
            slot = self.slots[i];
        }
    }

    pub(crate) fn key(&self, node: u32) -> &[u8] {
        node_key(&self.arena, node)
    }

    /// The actions filed under a node, best first within each precedence group.
    pub(crate) fn actions(&self, node: u32) -> impl Iterator<Item = Action> + '_ {
        node_actions(&self.arena, node)
    }

    /// Every node, for building the alternative engine over the same keys.
    pub(crate) fn nodes(&self) -> impl Iterator<Item = u32> + '_ {
        self.slots.iter().filter(|&&s| s != EMPTY).map(|&s| s as u32)
    }

    /// Number of distinct keys.
    pub(crate) fn len(&self) -> usize {
        self.keys
    }

    /// Heap bytes held (arena plus slots).
    pub(crate) fn heap_bytes(&self) -> usize {
        self.arena.capacity() + self.slots.capacity() * std::mem::size_of::<u64>()
    }
}

/// Drops repeated actions from a sorted slice; returns the new length.
fn dedup_in_place(actions: &mut [Action]) -> usize {
    let mut w = 1;
    for r in 1..actions.len() {
        if actions[r] != actions[w - 1] {
            actions[w] = actions[r];
            w += 1;
        }
    }
    w
}

/// The precedence walk, shared by both engines: it visits the candidates in descending
/// [`Precedence`] (exact, glob, then suffixes longest first; `*` is the caller's) and stops at
/// the first admitted one (for client `src` on destination port `port`). `node_at(d)` returns
/// the node of the suffix with `d` labels, if any. Returns the deciding action and its key's
/// label count.
pub(crate) fn walk(
    table: &SuffixTable,
    origins: &Origins,
    name: &str,
    labels: usize,
    (src, port): (IpAddr, u16),
    mut node_at: impl FnMut(usize) -> Option<u32>,
) -> Option<Found> {
    let scope = (src, port);
    let all = |_: Action| true;
    let found = |action: Action, labels: usize| Some(Found { action, labels: labels as u8 });
    let full = node_at(labels);
    if let Some(node) = full
        && let Some(a) = pick(table, origins, scope, node, |k| k == Kind::Exact, all)
    {
        return found(a, labels);
    }
    let parent = if labels > 1 { node_at(labels - 1) } else { None };
    if let Some(node) = parent {
        let first = name.split('.').next().unwrap_or_default();
        let glob_matches = |a: Action| origins.glob(a.origin()).is_some_and(|g| g.matches_label(first));
        if let Some(a) = pick(table, origins, scope, node, |k| k == Kind::Glob, glob_matches) {
            return found(a, labels - 1);
        }
    }
    if let Some(node) = full
        && let Some(a) = pick(table, origins, scope, node, Kind::is_suffix, |a| a.kind() == Kind::Apex)
    {
        return found(a, labels);
    }
    if let Some(node) = parent
        && let Some(a) = pick(table, origins, scope, node, Kind::is_suffix, all)
    {
        return found(a, labels - 1);
    }
    for depth in (1..labels.saturating_sub(1)).rev() {
        if let Some(node) = node_at(depth)
            && let Some(a) = pick(table, origins, scope, node, Kind::is_suffix, all)
        {
            return found(a, depth);
        }
    }
    None
}

/// The best admitted action of the kinds `want` under `node` that also passes `extra`.
/// Actions are stored best first, so the first that passes wins.
#[inline]
fn pick(
    table: &SuffixTable,
    origins: &Origins,
    (src, port): (IpAddr, u16),
    node: u32,
    want: impl Fn(Kind) -> bool,
    extra: impl Fn(Action) -> bool,
) -> Option<Action> {
    table
        .actions(node)
        .skip_while(|a| !want(a.kind()))
        .take_while(|a| want(a.kind()))
        .find(|&a| extra(a) && a.admits(origins, src, port))
}

/// The production lookup: probe the table for each suffix, longest first, lazily.
pub(crate) fn walk_hashed(table: &SuffixTable, origins: &Origins, name: &str, scope: (IpAddr, u16)) -> Option<Found> {
    let suffixes = Suffixes::new(name);
    let fast = suffixes.labels.min(FAST_LABELS);
    let mut first = [EMPTY; FAST_LABELS];
    for (slot, &hash) in first.iter_mut().zip(&suffixes.hashes[..fast]) {
        *slot = table.first_slot(hash);
    }
    walk(table, origins, name, suffixes.labels, scope, |depth| {
        let (hash, key) = suffixes.get(name, depth);
        match first.get(depth - 1) {
            Some(&slot) if depth <= fast => table.get_from(hash, key, slot),
            _ => table.get(hash, key),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suffix_hashes_equal_key_hashes() {
        let name = "a.bb.ccc-long-label-over-8.example.com";
        let s = Suffixes::new(name);
        assert_eq!(s.labels, 5);
        for depth in 1..=5 {
            let (h, key) = s.get(name, depth);
            assert_eq!(h, key_hash(key), "depth {depth}");
        }
        assert_ne!(key_hash(b"ab.c"), key_hash(b"a.bc"));
    }

    #[test]
    fn deep_names_hash_like_shallow_ones() {
        let name: String = (0..40).map(|i| format!("l{i}.")).collect::<String>() + "com";
        let s = Suffixes::new(&name);
        assert_eq!(s.labels, 41);
        for depth in 1..=41 {
            let (h, key) = s.get(&name, depth);
            assert_eq!(key.split(|&b| b == b'.').count(), depth);
            assert_eq!(h, key_hash(key), "depth {depth}");
        }
    }

    #[test]
    fn actions_round_trip_their_packed_fields() {
        for bits in 0..16 {
            let (deny, by_source, by_port) = (bits & 1 != 0, bits & 2 != 0, bits & 4 != 0);
            let origin = if bits & 8 != 0 { MAX_ORIGINS - 1 } else { 0 };
            let a = Action::new(Kind::Glob, deny, by_source, by_port, origin);
            assert_eq!((a.kind(), a.deny(), a.by_source(), a.by_port()), (Kind::Glob, deny, by_source, by_port));
            assert_eq!((a.origin(), a.scoped()), (origin, by_source || by_port));
        }
    }

    #[test]
    fn arena_round_trips_many_actions() {
        let entries: Vec<(&str, Action)> = (0..300)
            .map(|i| ("x.com", Action::new(Kind::Exact, i % 2 == 0, false, false, i)))
            .chain([("com", Action::new(Kind::Below, true, false, false, 7))])
            .collect();
        let t = SuffixTable::build(entries.into_iter());
        assert_eq!(t.len(), 2);
        let node = t.get(key_hash(b"x.com"), b"x.com").unwrap();
        let acts: Vec<Action> = t.actions(node).collect();
        assert_eq!(acts.len(), 300);
        assert!(acts[0].deny() && acts[0].origin() == 0);
        assert!(t.get(key_hash(b"y.com"), b"y.com").is_none());
    }

    /// The packed order under a key is [`Precedence`]'s, and each kind's actions are contiguous.
    #[test]
    fn actions_under_a_key_are_stored_in_precedence_order() {
        let mut entries = Vec::new();
        let mut origin = 0;
        for kind in [Kind::Below, Kind::Exact, Kind::Apex, Kind::Glob] {
            for scope in 0..8 {
                let (deny, by_source, by_port) = (scope & 1 != 0, scope & 2 != 0, scope & 4 != 0);
                entries.push(("a.example", Action::new(kind, deny, by_source, by_port, origin)));
                origin += 1;
            }
        }
        let t = SuffixTable::build(entries.into_iter());
        let node = t.get(key_hash(b"a.example"), b"a.example").unwrap();
        let stored: Vec<Action> = t.actions(node).collect();
        let ranks: Vec<Precedence> = stored.iter().map(|a| a.precedence(2)).collect();
        assert!(ranks.windows(2).all(|w| w[0] >= w[1]), "{stored:?}");
        let kinds: Vec<Kind> = stored.iter().map(|a| a.kind()).collect();
        assert_eq!(&kinds[..16], [Kind::Exact; 8].iter().chain(&[Kind::Glob; 8]).copied().collect::<Vec<_>>());
        assert!(kinds[16..].iter().all(|k| k.is_suffix()));
    }
}
