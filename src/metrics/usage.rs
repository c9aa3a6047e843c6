//! Rule usage: how many connections each rule of the rule files decided, and when it last did,
//! served as `/rules` so that rules nobody uses can be pruned. Never a Prometheus label: rules
//! are too many, and their lines move.
//!
//! Counts are kept per worker (see [`set_worker`](super::worker::set_worker)), in arrays of
//! atomics indexed by the rule's index in its snapshot: a hit is an uncontended add and a store
//! on the worker's own cache lines, with no lock and no hashing. A read sums the workers.
//!
//! The arrays start as zeroed memory from the allocator: a large rule file's rules that never
//! decide anything cost no resident memory. Where a rule was written is read from its snapshot,
//! not copied.
//!
//! Each rule snapshot has its own [`RuleUsage`], made when it goes live and carried beside it
//! in the live settings, so that a decision counts against the snapshot that made it. A
//! reload's usage inherits the counts of the rules that did not change (the same text in the
//! same file, wherever its line moved): the previous usage's inherited counts are frozen into
//! it, and the previous usage stays linked until the next reload, so that decisions still in
//! flight on the previous snapshot are counted too.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwapOption;

use super::worker;
use crate::outcome::rfc3339;
use crate::policy::decide::RuleSet;

/// Marks a rule index with no counterpart in the previous usage.
const NEW: u32 = u32::MAX;

/// Bytes of padding after each counter array: two cache lines (adjacent-line prefetch).
const PAD: usize = 128;

/// The counts of one rule snapshot's rules. Where each rule was written (its file, line and
/// text's hash) is the snapshot's own: read from it when asked, never copied here. Every array
/// starts as zeroed memory, so that a rule nobody hits costs no resident memory.
pub struct RuleUsage {
    /// Per worker: the counters of every rule index.
    workers: Box<[Counters]>,
    /// Per rule index: the hits it inherited from earlier snapshots, frozen when made.
    base_hits: Box<[u64]>,
    /// Per rule index: the Unix seconds of its last inherited hit (0: none).
    base_last: Box<[u32]>,
    /// The usage this one replaced, whose counters its snapshot's last decisions may still
    /// add to; taken (and its counts frozen into the next usage's base) at the next reload,
    /// so that no chain of old snapshots' counters is kept.
    previous: Mutex<Option<Previous>>,
}

/// One worker's counters, by rule index.
struct Counters {
    /// Hits.
    hits: Box<[AtomicU64]>,
    /// Unix seconds of the last hit; 0: none.
    last: Box<[AtomicU32]>,
}

/// Hits and the last hit's Unix seconds (0: none).
#[derive(Clone, Copy, Default, Debug, PartialEq, Eq)]
struct Tally {
    /// Hits.
    hits: u64,
    /// Unix seconds of the last hit; 0: none.
    last: u32,
}

impl Tally {
    fn add(self, other: Tally) -> Tally {
        Tally { hits: self.hits + other.hits, last: self.last.max(other.last) }
    }
}

/// The replaced usage, and for each rule index here its index there ([`NEW`]: none).
struct Previous {
    /// The replaced usage.
    usage: Arc<RuleUsage>,
    /// Rule index here → rule index there.
    map: Box<[u32]>,
}

impl Previous {
    /// The replaced usage's own counts of the rule at `index` here (none for a new rule).
    fn own(&self, index: usize) -> Tally {
        match self.map[index] {
            NEW => Tally::default(),
            j => self.usage.own(j as usize),
        }
    }
}

/// One rule's line in `/rules`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RuleHits {
    /// `file:line`.
    pub rule: String,
    /// Connections it decided, this snapshot and the earlier ones it was carried from.
    pub hits: u64,
    /// When it last decided one (RFC 3339 UTC), or `null`.
    pub last_hit: Option<String>,
}

impl RuleUsage {
    /// The usage of `rules` for `workers` workers, inheriting the counts of the rules of
    /// `previous` (its snapshot and usage) that are still there (same file, same text; repeated
    /// texts matched in order).
    pub fn new(rules: &RuleSet, workers: usize, previous: Option<(&RuleSet, Arc<RuleUsage>)>) -> RuleUsage {
        let n = rules.rules().len();
        // Each array ends in a cache line pair of its own, so that the next allocation (maybe
        // another worker's) never shares a line with its last rules.
        let counters = || Counters {
            hits: crate::sys::zeroed_counters(n + PAD / 8),
            last: crate::sys::zeroed_counters(n + PAD / 4),
        };
        let mut usage = RuleUsage {
            workers: (0..workers.max(1)).map(|_| counters()).collect(),
            base_hits: vec![0; n].into(),
            base_last: vec![0; n].into(),
            previous: Mutex::new(None),
        };
        if let Some((before, previous)) = previous {
            usage.inherit(rules, before, previous);
        }
        usage
    }

    /// Links `previous` (the usage of `before`) and freezes what it had inherited into this
    /// usage's base.
    fn inherit(&mut self, rules: &RuleSet, before: &RuleSet, previous: Arc<RuleUsage>) {
        let mut by_identity: HashMap<(&str, u64), VecDeque<u32>> = HashMap::new();
        for r in before.rules() {
            if let Some(text) = r.text_hash() {
                by_identity.entry((r.ruleset(), text)).or_default().push_back(r.index() as u32);
            }
        }
        let map: Box<[u32]> = rules
            .rules()
            .map(|r| r.text_hash().and_then(|t| by_identity.get_mut(&(r.ruleset(), t))?.pop_front()).unwrap_or(NEW))
            .collect();
        drop(by_identity);
        // What `previous` inherited stops counting now (its own previous is let go).
        let older = lock(&previous.previous).take();
        for (i, &j) in map.iter().enumerate() {
            if j != NEW {
                let older = older.as_ref().map_or(Tally::default(), |o| o.own(j as usize));
                let t = previous.base(j as usize).add(older);
                // Written only where there is something: untouched pages stay free.
                if t != Tally::default() {
                    (self.base_hits[i], self.base_last[i]) = (t.hits, t.last);
                }
            }
        }
        *lock(&self.previous) = Some(Previous { usage: previous, map });
    }

    /// What the rule at `index` inherited.
    fn base(&self, index: usize) -> Tally {
        Tally { hits: self.base_hits[index], last: self.base_last[index] }
    }

    /// Counts a decision by the rule at `index` (its [`RuleRef::index`](crate::policy::origin::RuleRef::index)
    /// in this usage's snapshot), on the calling worker's counters, `at` the time the connection
    /// or flow began (a time it already has: no clock read per decision; seconds are all
    /// `last_hit` keeps).
    #[inline]
    pub fn hit(&self, index: usize, at: SystemTime) {
        let counters = &self.workers[worker::current().min(self.workers.len() - 1)];
        if let (Some(hits), Some(last)) = (counters.hits.get(index), counters.last.get(index)) {
            // Threads that are not workers share worker 0's counters: an add, not a store.
            hits.fetch_add(1, Ordering::Relaxed);
            let secs = at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
            last.fetch_max(u32::try_from(secs).unwrap_or(u32::MAX), Ordering::Relaxed);
        }
    }

    /// This usage's own counts of rule `index`, summed over the workers.
    fn own(&self, index: usize) -> Tally {
        self.workers.iter().fold(Tally::default(), |t, c| {
            t.add(Tally { hits: c.hits[index].load(Ordering::Relaxed), last: c.last[index].load(Ordering::Relaxed) })
        })
    }

    /// Every rule of the rule files of `rules` (this usage's snapshot), in load order, with its
    /// counts.
    pub fn report(&self, rules: &RuleSet) -> Vec<RuleHits> {
        let previous = lock(&self.previous);
        let mut out = Vec::new();
        for r in rules.rules() {
            if r.line().is_none() {
                continue;
            }
            let i = r.index();
            let earlier = previous.as_ref().map_or(Tally::default(), |p| p.own(i));
            let t = self.base(i).add(self.own(i)).add(earlier);
            let last_hit = (t.last > 0).then(|| rfc3339(UNIX_EPOCH + Duration::from_secs(u64::from(t.last))));
            out.push(RuleHits { rule: r.to_string(), hits: t.hits, last_hit });
        }
        out
    }
}

/// The running snapshot and its usage, for `/rules`, and what the next snapshot inherits from.
#[derive(Default)]
pub(crate) struct UsageSlot(ArcSwapOption<(Arc<RuleSet>, Arc<RuleUsage>)>);

impl UsageSlot {
    /// The usage for `rules`, going live: it inherits from the current one and becomes current.
    pub(crate) fn next(&self, rules: &Arc<RuleSet>, workers: usize) -> Arc<RuleUsage> {
        let current = self.0.load_full();
        let previous = current.as_ref().map(|c| (&*c.0, c.1.clone()));
        let usage = Arc::new(RuleUsage::new(rules, workers, previous));
        self.0.store(Some(Arc::new((rules.clone(), usage.clone()))));
        usage
    }

    /// `/rules`: a JSON array, one object per rule of the rule files (`[]` before any load).
    pub(crate) fn json(&self) -> String {
        let report = self.0.load().as_ref().map(|c| c.1.report(&c.0)).unwrap_or_default();
        serde_json::to_string(&report).unwrap_or_else(|_| "[]".into())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::file::parse_rules;
    use crate::rules::rule::Verdict;

    fn set(text: &str) -> RuleSet {
        RuleSet::new(parse_rules("a.rules", text).unwrap(), Vec::new(), Verdict::Deny)
    }

    fn hits(u: &RuleUsage, rules: &RuleSet) -> Vec<(String, u64)> {
        u.report(rules).into_iter().map(|r| (r.rule, r.hits)).collect()
    }

    /// Each worker adds to its own counters (no cache line shared between workers); a read sums
    /// them, and a thread that is no worker counts as the first.
    #[test]
    fn workers_count_apart_and_a_read_sums_them() {
        let rules = set("allow a.com\nallow b.com\n");
        let usage = Arc::new(RuleUsage::new(&rules, 2, None));
        let threads: Vec<_> = (0..3)
            .map(|k| {
                let usage = usage.clone();
                std::thread::spawn(move || {
                    if k < 2 {
                        worker::set_worker(k);
                    }
                    for _ in 0..1000 {
                        usage.hit(1, SystemTime::now());
                    }
                })
            })
            .collect();
        threads.into_iter().for_each(|t| t.join().unwrap());
        let apart: Vec<u64> = usage.workers.iter().map(|c| c.hits[1].load(Ordering::Relaxed)).collect();
        assert_eq!(apart, [2000, 1000]);
        assert_eq!(hits(&usage, &rules), [("a.rules:1".to_string(), 0), ("a.rules:2".to_string(), 3000)]);
        assert_eq!(usage.report(&rules)[0].last_hit, None);
    }

    /// Unchanged rules keep their counts wherever they move, a changed rule starts again, and
    /// hits made on the replaced snapshot after the reload still count, until the next one.
    #[test]
    fn a_reload_carries_unchanged_rules_counts() {
        let slot = UsageSlot::default();
        let first = slot.next(&Arc::new(set("allow a.com\nallow b.com\nallow a.com\n")), 2);
        for i in [0, 0, 1, 2] {
            first.hit(i, SystemTime::now());
        }
        let second_rules = Arc::new(set("# moved\nallow c.com\nallow a.com\nallow a.com\nallow b.com\n"));
        let second = slot.next(&second_rules, 2);
        first.hit(1, SystemTime::now());
        let want = [("a.rules:2", 0), ("a.rules:3", 2), ("a.rules:4", 1), ("a.rules:5", 2)];
        assert_eq!(hits(&second, &second_rules), want.map(|(r, n)| (r.to_string(), n)));
        second.hit(3, SystemTime::now());
        let third_rules = Arc::new(set("allow b.com\n"));
        let third = slot.next(&third_rules, 2);
        first.hit(1, SystemTime::now()); // two reloads late: not counted
        assert_eq!(hits(&third, &third_rules), [("a.rules:1".to_string(), 3)]);
        assert!(third.report(&third_rules)[0].last_hit.as_deref().is_some_and(|t| t.ends_with(".000Z")));
        assert!(slot.json().starts_with(r#"[{"rule":"a.rules:1","hits":3,"last_hit":""#), "{}", slot.json());
    }
}
