//! One top-K sketch (Space-Saving) of the subjects of one outcome, on one worker, in one
//! window: at most `cap` subjects, each with its tally. A subject not held takes the place of
//! the least counted one and starts at that count plus one, its `error` saying by how much it
//! may be over: no count is ever under the truth, and a subject seen more than once in `cap`
//! records is always held, whatever a flood of distinct subjects does.
//!
//! The entries are found through an open-addressing table of their indices (linear probing,
//! at most half full) by a keyed hash, and ordered by a min-heap of their indices by count:
//! a record is a hash, a probe, a few stores, and an allocation only when a subject enters
//! with a key longer than the one it replaces.

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::SystemTime;

use crate::policy::decide::Decision;
use crate::policy::origin::RuleRef;
use crate::reason::Reason;

/// Bits of a subject's source bitmap (linear counting).
const SOURCE_BITS: usize = 512;
/// Sources counted exactly, before the bitmap's estimate.
const FEW: usize = 3;
/// An empty slot of the table.
const EMPTY: u32 = u32::MAX;

/// What decided: a rule, or a reason when none did (`default`, `no_sni`, `ech`,
/// `unknown_protocol`).
#[derive(Debug, Clone, Copy)]
pub enum By<'r> {
    /// A rule of a file, or a list.
    Rule(RuleRef<'r>),
    /// No rule.
    Reason(Reason),
}

impl<'r> By<'r> {
    /// What made `decision`.
    pub fn of(decision: &Decision<'r>) -> By<'r> {
        decision.rule.map_or(By::Reason(decision.reason), By::Rule)
    }
}

/// One decision, as a sketch records it.
pub(super) struct Decided<'a> {
    /// `key`'s hash.
    pub hash: u64,
    /// The name, the destination as `address:port`, or empty.
    pub key: &'a str,
    /// The source, as [`Keys::word`] gives it.
    pub source: u64,
    /// When the connection began.
    pub at: SystemTime,
    /// What decided.
    pub by: By<'a>,
    /// The deciding rule's file as the record holds it (`Outcome::ruleset`): a rule held
    /// is recognised by its index and this file's address, with no lookup.
    pub file: Option<&'a Arc<str>>,
}

/// At most `cap` subjects: the entries, a min-heap of them by count, and the table that finds
/// them by key.
pub(super) struct Sketch {
    /// The most entries held.
    pub cap: usize,
    /// The subjects held.
    entries: Vec<Entry>,
    /// Entry indices, least counted first.
    heap: Vec<u32>,
    /// Entry indices by hash; a power of two at least twice `cap` (allocated at the first
    /// record).
    slots: Box<[u32]>,
}

/// One subject held.
struct Entry {
    /// The name, the destination as `address:port`, or empty.
    key: String,
    /// `key`'s hash.
    hash: u64,
    /// Its place in the heap.
    heap: u32,
    /// Its counts.
    tally: Tally,
}

/// What is known of one subject, in one sketch or merged from several.
#[derive(Debug, Clone)]
pub(super) struct Tally {
    /// Decisions counted, the `error` inherited included: never under the truth.
    pub count: u64,
    /// What `count` may be over by.
    pub error: u64,
    /// When the latest connection counted began.
    pub last: SystemTime,
    /// The latest deciding rule or reason.
    pub by: Decider,
    /// Its distinct sources.
    pub sources: Sources,
    /// The latest source's word: the same source again is not hashed again.
    last_source: u64,
}

impl Tally {
    /// Adds `other`'s counts and sources; the later one's rule stands.
    pub fn add(&mut self, other: &Tally) {
        (self.count, self.error) = (self.count + other.count, self.error + other.error);
        if other.last >= self.last {
            (self.last, self.by) = (other.last, other.by.clone());
        }
        self.sources.merge(&other.sources);
    }
}

impl Sketch {
    /// An empty sketch of at most `cap` subjects; it allocates nothing until its first record.
    pub fn new(cap: usize) -> Sketch {
        Sketch { cap, entries: Vec::new(), heap: Vec::new(), slots: Box::new([]) }
    }

    /// One decision: a subject held is counted here; one that enters takes the slower way.
    #[inline]
    pub fn record(&mut self, d: &Decided<'_>, keys: &Keys) {
        let Some(i) = self.find(d.hash, d.key) else { return self.enter(d, keys) };
        let t = &mut self.entries[i].tally;
        t.count += 1;
        t.last = t.last.max(d.at);
        if t.last_source != d.source {
            t.sources.add(keys.source(d.source));
            t.last_source = d.source;
        }
        if !t.by.is(&d.by, d.file) {
            t.by = Decider::from(&d.by);
        }
        self.sift_down(self.entries[i].heap as usize);
    }

    /// A subject not held enters: in a free entry, else in place of the least counted one,
    /// which gives it its place (and its key's buffer).
    #[cold]
    fn enter(&mut self, d: &Decided<'_>, keys: &Keys) {
        if self.slots.is_empty() {
            self.slots = vec![EMPTY; (2 * self.cap).next_power_of_two()].into();
        }
        let tally = |count, error| Tally {
            count,
            error,
            last: d.at,
            by: Decider::from(&d.by),
            sources: Sources::one(keys.source(d.source)),
            last_source: d.source,
        };
        let i = if self.entries.len() < self.cap {
            let i = self.entries.len();
            if i == self.entries.capacity() {
                let more = i.max(4).min(self.cap - i);
                self.entries.reserve_exact(more);
                self.heap.reserve_exact(more);
            }
            self.entries.push(Entry { key: d.key.to_owned(), hash: d.hash, heap: i as u32, tally: tally(1, 0) });
            self.heap.push(i as u32);
            self.sift_up(i);
            i
        } else {
            let i = self.heap[0] as usize;
            self.unlink(i);
            let e = &mut self.entries[i];
            e.key.clear();
            e.key.reserve_exact(d.key.len());
            e.key.push_str(d.key);
            e.hash = d.hash;
            let floor = e.tally.count;
            e.tally = tally(floor + 1, floor);
            self.sift_down(0);
            i
        };
        let slot = self.free_slot(d.hash);
        self.slots[slot] = i as u32;
    }

    /// The subjects held, with their tallies.
    pub fn tallies(&self) -> impl Iterator<Item = (&str, &Tally)> {
        self.entries.iter().map(|e| (e.key.as_str(), &e.tally))
    }

    /// When full, the least count held: what a subject not held may have had here.
    pub fn floor(&self) -> u64 {
        match self.entries.len() == self.cap {
            true => self.heap.first().map_or(0, |&i| self.entries[i as usize].tally.count),
            false => 0,
        }
    }

    /// Empties it for a new window, keeping its arrays.
    pub fn clear(&mut self) {
        self.entries.clear();
        self.heap.clear();
        self.slots.fill(EMPTY);
    }

    /// The entry holding `key`, if any (none before the table exists).
    #[inline]
    fn find(&self, hash: u64, key: &str) -> Option<usize> {
        let mask = self.slots.len().checked_sub(1)?;
        let mut at = hash as usize & mask;
        // At most half the slots are taken: the probe ends at a free one.
        loop {
            match self.slots[at] {
                EMPTY => return None,
                i if self.entries[i as usize].hash == hash && self.entries[i as usize].key == key => {
                    return Some(i as usize);
                }
                _ => at = (at + 1) & mask,
            }
        }
    }

    /// Where a key of hash `hash`, not held, goes in the table.
    fn free_slot(&self, hash: u64) -> usize {
        let mask = self.slots.len() - 1;
        let mut at = hash as usize & mask;
        while self.slots[at] != EMPTY {
            at = (at + 1) & mask;
        }
        at
    }

    /// Takes entry `i` out of the table, moving back the entries probed past it.
    fn unlink(&mut self, i: usize) {
        let mask = self.slots.len() - 1;
        let mut hole = self.entries[i].hash as usize & mask;
        while self.slots[hole] != i as u32 {
            hole = (hole + 1) & mask;
        }
        let mut next = (hole + 1) & mask;
        while self.slots[next] != EMPTY {
            let home = self.entries[self.slots[next] as usize].hash as usize & mask;
            // It may move into the hole unless its home lies between the hole and it.
            if next.wrapping_sub(home) & mask >= next.wrapping_sub(hole) & mask {
                self.slots[hole] = self.slots[next];
                hole = next;
            }
            next = (next + 1) & mask;
        }
        self.slots[hole] = EMPTY;
    }

    fn count_at(&self, place: usize) -> u64 {
        self.entries[self.heap[place] as usize].tally.count
    }

    fn swap(&mut self, a: usize, b: usize) {
        self.heap.swap(a, b);
        self.entries[self.heap[a] as usize].heap = a as u32;
        self.entries[self.heap[b] as usize].heap = b as u32;
    }

    fn sift_up(&mut self, mut at: usize) {
        while at > 0 && self.count_at((at - 1) / 2) > self.count_at(at) {
            self.swap(at, (at - 1) / 2);
            at = (at - 1) / 2;
        }
    }

    fn sift_down(&mut self, mut at: usize) {
        let n = self.heap.len();
        while 2 * at + 1 < n {
            let (l, r) = (2 * at + 1, 2 * at + 2);
            let child = if r < n && self.count_at(r) < self.count_at(l) { r } else { l };
            if self.count_at(child) >= self.count_at(at) {
                break;
            }
            self.swap(at, child);
            at = child;
        }
    }

    /// Bytes held: itself, its arrays and its keys.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        size_of::<Sketch>()
            + self.entries.capacity() * size_of::<Entry>()
            + self.heap.capacity() * size_of::<u32>()
            + self.slots.len() * size_of::<u32>()
            + self.entries.iter().map(|e| e.key.capacity()).sum::<usize>()
    }

    /// The most bytes a sketch of `cap` subjects may hold: every key as long as a name can be.
    #[cfg(test)]
    pub fn cap_bytes(cap: usize) -> usize {
        size_of::<Sketch>()
            + cap * (size_of::<Entry>() + size_of::<u32>() + crate::name::MAX_NAME_LEN)
            + (2 * cap).next_power_of_two() * size_of::<u32>()
    }
}

/// What decided, kept beyond the rule snapshot: the file (shared with the rules) and line, the
/// list, or the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Decider {
    /// The rule's file or list; `None` when no rule decided. Each load of the rules names its
    /// files anew, and this keeps the name alive: its address tells the load.
    ruleset: Option<Arc<str>>,
    /// The rule's index in its load: with `ruleset`'s address, which rule it is.
    index: u32,
    /// The rule's line; 0 for a list.
    line: u32,
    /// `rule`, or the reason when no rule decided.
    reason: Reason,
}

impl Decider {
    fn from(by: &By<'_>) -> Decider {
        match by {
            By::Rule(rule) => Decider {
                ruleset: Some(rule.ruleset_label()),
                index: rule.index() as u32,
                line: rule.line().unwrap_or(0),
                reason: Reason::Rule,
            },
            By::Reason(reason) => Decider { ruleset: None, index: 0, line: 0, reason: *reason },
        }
    }

    /// Whether it is `by`, whose file is `file`: the same load's file (by address) and the same
    /// rule index in it, or the same reason.
    fn is(&self, by: &By<'_>, file: Option<&Arc<str>>) -> bool {
        match (by, &self.ruleset, file) {
            (By::Rule(rule), Some(ruleset), Some(file)) => {
                rule.index() as u32 == self.index && Arc::ptr_eq(ruleset, file)
            }
            (By::Reason(reason), None, _) => *reason == self.reason,
            _ => false,
        }
    }
}

impl fmt::Display for Decider {
    /// `file:line`, the list's name, or the reason.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.ruleset, self.line) {
            (Some(file), 0) => f.write_str(file),
            (Some(file), line) => write!(f, "{file}:{line}"),
            (None, _) => f.write_str(self.reason.as_str()),
        }
    }
}

/// A subject's distinct sources: the first [`FEW`] exactly (by a 32-bit hash), and every one
/// in a bitmap of [`SOURCE_BITS`] bits, whose share of bits still clear estimates how many
/// there are (linear counting). Both merge by union.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Sources {
    /// Hashes of the first sources, nonzero; 0: free.
    few: [u32; FEW],
    /// More than [`FEW`] sources: the bitmap counts.
    more: bool,
    /// The bit of every source (its hash's top bits).
    bits: [u64; SOURCE_BITS / 64],
}

impl Sources {
    fn one(source: u64) -> Sources {
        let mut s = Sources::default();
        s.add(source);
        s
    }

    fn add(&mut self, source: u64) {
        let bit = (source >> (64 - SOURCE_BITS.ilog2())) as usize;
        self.bits[bit / 64] |= 1 << (bit % 64);
        self.add_few(source as u32 | 1);
    }

    fn add_few(&mut self, tag: u32) {
        if self.more {
            return;
        }
        match self.few.iter_mut().find(|t| **t == tag || **t == 0) {
            Some(free) => *free = tag,
            None => self.more = true,
        }
    }

    fn merge(&mut self, other: &Sources) {
        self.bits.iter_mut().zip(other.bits).for_each(|(a, b)| *a |= b);
        self.more |= other.more;
        other.few.iter().filter(|t| **t != 0).for_each(|&t| self.add_few(t));
    }

    /// How many: exact up to [`FEW`]; beyond, `-m ln(clear / m)` (at most `m ln m`: 3,194).
    pub fn count(&self) -> u64 {
        if !self.more {
            return self.few.iter().filter(|t| **t != 0).count() as u64;
        }
        let m = SOURCE_BITS as f64;
        let clear = SOURCE_BITS as u32 - self.bits.iter().map(|b| b.count_ones()).sum::<u32>();
        let estimate = if clear == 0 { m * m.ln() } else { -m * (f64::from(clear) / m).ln() };
        (estimate.round() as u64).max(FEW as u64 + 1)
    }
}

/// Keyed hashes: folded multiplications with keys drawn at start, a few instructions a word
/// where SipHash takes over a hundred. Names are chosen by clients, so the keys are secret
/// and random, and the names that collide cannot be worked out ahead.
#[derive(Debug, Clone, Copy)]
pub(super) struct Keys([u64; 4]);

impl Keys {
    /// Keys from the system's randomness (fixed ones if there is none: still a working table).
    pub fn random() -> Keys {
        use ring::rand::SecureRandom;
        let mut bytes = [0x5a; 32];
        let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
        Keys(std::array::from_fn(|i| u64::from_le_bytes(bytes[i * 8..i * 8 + 8].try_into().unwrap_or_default())))
    }

    /// Fixed keys, for tests whose estimates must not vary from run to run.
    #[cfg(test)]
    pub fn fixed() -> Keys {
        Keys([0x243f_6a88_85a3_08d3, 0x1319_8a2e_0370_7344, 0xa409_3822_299f_31d0, 0x082e_fa98_ec4e_6c89])
    }

    /// A key's hash.
    pub fn bytes(&self, bytes: &[u8]) -> u64 {
        let [k0, k1, k2, k3] = self.0;
        let mut h = k0 ^ bytes.len() as u64;
        let mut words = bytes.chunks_exact(8);
        for w in &mut words {
            h = fold(h ^ u64::from_le_bytes(w.try_into().unwrap_or_default()), k1);
        }
        let rest = words.remainder();
        if !rest.is_empty() {
            // The last eight bytes, overlapping the words before (the length is mixed in
            // already); a key shorter than a word is padded.
            let last = match bytes.len().checked_sub(8) {
                Some(from) => bytes[from..].try_into().unwrap_or_default(),
                None => {
                    let mut w = [0u8; 8];
                    w[..rest.len()].copy_from_slice(rest);
                    w
                }
            };
            h = fold(h ^ u64::from_le_bytes(last), k2);
        }
        fold(h ^ k0, k3)
    }

    /// A source as one word: an IPv4 address (IPv4-mapped included), or an IPv6 address's
    /// /64, as the per-source limits count sources (an IPv6 /64 below `0:0:0:0::` + 2^32 would
    /// read as an IPv4 address: no such source is routed).
    pub fn word(ip: IpAddr) -> u64 {
        match ip.to_canonical() {
            IpAddr::V4(v4) => u64::from(u32::from(v4)),
            IpAddr::V6(v6) => (u128::from(v6) >> 64) as u64,
        }
    }

    /// A source word's hash. Two rounds: one leaves neighbouring addresses evenly spread
    /// rather than at random, which linear counting would over-count.
    pub fn source(&self, word: u64) -> u64 {
        let [k0, k1, k2, k3] = self.0;
        fold(fold(word ^ k2, k1) ^ k0, k3 ^ k1)
    }
}

/// The 128-bit product of `a` and `b`, its halves folded.
#[inline]
fn fold(a: u64, b: u64) -> u64 {
    let p = u128::from(a) * u128::from(b);
    (p as u64) ^ ((p >> 64) as u64)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    /// Space-Saving on one sketch: a name seen more often than once in `cap` decisions is held
    /// under a flood of distinct names, and every count held is at least the truth and at most
    /// `error` above it.
    #[test]
    fn a_sketch_keeps_heavy_names_and_never_counts_under() {
        let (keys, cap, n) = (Keys::random(), 64, 100_000u64);
        let mut sketch = Sketch::new(cap);
        let mut truth: HashMap<String, u64> = HashMap::new();
        let by = By::Reason(Reason::Default);
        for i in 0..n {
            let key = match i % 40 {
                0 | 1 => "heavy.example.com".to_string(),
                2 => format!("medium{}.example.com", i % 7),
                _ => format!("flood{i}.example.com"),
            };
            let source = Keys::word("10.0.0.1".parse().unwrap());
            let (hash, at) = (keys.bytes(key.as_bytes()), std::time::UNIX_EPOCH);
            sketch.record(&Decided { hash, key: &key, source, at, by, file: None }, &keys);
            *truth.entry(key).or_default() += 1;
        }
        assert_eq!(sketch.entries.len(), cap);
        for e in &sketch.entries {
            let t = truth[&e.key];
            let (count, error) = (e.tally.count, e.tally.error);
            assert!(count >= t && count - error <= t, "{}: {count} (error {error}) for {t}", e.key);
        }
        let held = |k: &str| sketch.entries.iter().any(|e| e.key == k);
        for (k, t) in &truth {
            if *t > n / cap as u64 {
                assert!(held(k), "{k}, seen {t} times, was dropped");
            }
        }
        assert!(held("heavy.example.com"));
        for i in 0..cap {
            assert_eq!(sketch.entries[sketch.heap[i] as usize].heap as usize, i, "the heap's places are right");
            let child = |c: usize| sketch.heap.get(c).map(|&j| sketch.entries[j as usize].tally.count);
            let count = sketch.entries[sketch.heap[i] as usize].tally.count;
            assert!(child(2 * i + 1).is_none_or(|c| c >= count) && child(2 * i + 2).is_none_or(|c| c >= count));
        }
    }

    /// Sources are exact up to three (an IPv6 /64 is one), then estimated within 10% (for
    /// neighbouring addresses too).
    #[test]
    fn sources_are_exact_to_three_then_estimated() {
        let keys = Keys::fixed();
        let mut s = Sources::default();
        for ip in ["10.0.0.1", "10.0.0.1", "::ffff:10.0.0.1", "2001:db8::1", "2001:db8::2", "10.0.0.2"] {
            s.add(keys.source(Keys::word(ip.parse().unwrap())));
        }
        assert_eq!(s.count(), 3);
        for n in [10u32, 100, 500, 1000, 2000] {
            let mut s = Sources::default();
            (0..n).for_each(|i| s.add(keys.source(Keys::word(IpAddr::from((0x0a00_0000 + i).to_be_bytes())))));
            let (got, want) = (s.count() as f64, f64::from(n));
            assert!((got - want).abs() <= want / 10.0, "{n} sources counted {got}");
        }
        let (mut a, mut b) = (Sources::default(), Sources::default());
        a.add(keys.source(Keys::word("10.0.0.1".parse().unwrap())));
        b.add(keys.source(Keys::word("10.0.0.2".parse().unwrap())));
        b.add(keys.source(Keys::word("10.0.0.1".parse().unwrap())));
        a.merge(&b);
        assert_eq!(a.count(), 2);
    }
}
