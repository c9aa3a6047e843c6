//! Decisions: the names the policy decided most often in the last hour, by outcome (`deny`,
//! `would_deny`, `allow`), each with its count, distinct sources, last time seen and deciding
//! rule, served as `/decisions` and shown by the page at `/`. Never a Prometheus label: names
//! are client data.
//!
//! Each outcome is a top-K sketch ([`sketch`], Space-Saving) of at most [`NAMES`] names in all:
//! counts never under-estimate, and a name seen more than once in K decisions is held
//! whatever a flood of distinct names does. A connection without a name counts under its
//! destination. The hour is [`WINDOWS`] windows of [`WINDOW_SECS`]; a read merges the current
//! window and the ones before it, so that nothing older than an hour shows.
//!
//! Sketches are kept per worker (see [`set_worker`](super::worker::set_worker)), each behind a
//! lock that only its worker and a read take; a read merges the workers. Recording is a keyed
//! hash of the name (borrowed, not copied), a probe, a few stores, and an allocation only when
//! a name enters a sketch.

mod sketch;

use std::collections::HashMap;
use std::fmt::{self, Write as _};
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::Serialize;

use super::worker;
use crate::name::Name;
use crate::outcome::{Outcome, rfc3339};
use crate::rules::rule::Verdict;
pub use sketch::By;
use sketch::{Decided, Keys, Sketch, Tally};

/// Names held per outcome, over every worker and window: the memory cap's unit.
pub const NAMES: usize = 4096;
/// The fewest names one worker's sketch of one window and outcome holds, however many workers
/// share [`NAMES`] (more than 21 workers hold more than [`NAMES`] in all).
pub const MIN_NAMES: usize = 32;
/// Windows the hour is cut into.
pub const WINDOWS: usize = 6;
/// One window's length.
pub const WINDOW_SECS: u64 = 600;
/// The most names `/decisions` lists per outcome.
pub const SHOWN: usize = 500;

/// What a decision came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Denied.
    Deny,
    /// Let through by a report scope, which the policy would deny (reason `report`).
    WouldDeny,
    /// Allowed by the policy.
    Allow,
}

impl Kind {
    /// The verdict of the rule line that would reverse it.
    const fn reversed_by(self) -> Verdict {
        match self {
            Kind::Deny | Kind::WouldDeny => Verdict::Allow,
            Kind::Allow => Verdict::Deny,
        }
    }
}

/// What a decision was about: the name asked for, else the destination, else nothing known.
#[derive(Debug, Clone, Copy)]
pub enum Subject<'a> {
    /// A validated, normalised name: nothing else a client sends reaches a sketch.
    Name(&'a Name),
    /// A connection without a name, to this destination.
    Destination(SocketAddr),
    /// Neither.
    Unknown,
}

/// The decisions of the last hour, per worker.
pub struct Decisions {
    /// The hash keys, drawn at start and shared by the workers so that their sketches merge.
    keys: Keys,
    /// Each worker's windows.
    workers: Box<[PerWorker]>,
}

/// One worker's windows, on cache lines of their own.
#[repr(align(128))]
struct PerWorker(Mutex<Ring>);

impl Decisions {
    /// Sketches for `workers` workers (at least one), sharing [`NAMES`] per outcome.
    pub fn new(workers: usize) -> Decisions {
        Decisions::with_keys(workers, Keys::random())
    }

    fn with_keys(workers: usize, keys: Keys) -> Decisions {
        let workers = workers.max(1);
        let per = (NAMES / (workers * WINDOWS)).max(MIN_NAMES);
        Decisions { keys, workers: (0..workers).map(|_| PerWorker(Mutex::new(Ring::new(per)))).collect() }
    }

    /// Counts a decision of `record`'s connection as `kind`, on the calling worker's sketch, at
    /// the time the connection began (no clock read). A connection counts once for a subject
    /// and kind however often it is decided (a CONNECT, then the hello in its tunnel; a
    /// kept-alive HTTP connection's requests). When a rule decided, `record.ruleset` is its
    /// file, as admission records it first.
    pub fn note(&self, record: &mut Outcome, kind: Kind, subject: Subject<'_>, by: By<'_>) {
        let mut buf;
        let key = match subject {
            Subject::Name(name) => name.as_str(),
            Subject::Destination(dst) => {
                buf = KeyBuf::default();
                buf.show(dst)
            }
            Subject::Unknown => "",
        };
        let hash = self.keys.bytes(key.as_bytes());
        let memo = (hash as u32).wrapping_add(kind as u32 + 1).max(1);
        if record.noted == memo {
            return;
        }
        record.noted = memo;
        let file = record.ruleset.as_ref();
        debug_assert!(!matches!(by, By::Rule(r) if file.is_none_or(|f| !std::ptr::eq(&**f, r.ruleset()))));
        let source = Keys::word(record.client.ip());
        self.record(kind, &Decided { hash, key, source, at: record.time, by, file });
    }

    /// Records one decision on the calling worker's sketch.
    fn record(&self, kind: Kind, d: &Decided<'_>) {
        let here = &self.workers[worker::current().min(self.workers.len() - 1)];
        lock(&here.0).record(kind, d, &self.keys);
    }

    /// What `/decisions` shows at `now`: per kind, the most counted subjects of the windows
    /// that are not past, merged over the workers.
    pub fn report(&self, now: SystemTime) -> Report {
        let now_epoch = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / WINDOW_SECS;
        let oldest = now_epoch.saturating_sub(WINDOWS as u64 - 1);
        let mut merged: [Merge; 3] = Default::default();
        for w in &self.workers {
            let ring = lock(&w.0);
            for window in ring.windows.iter().filter(|w| w.epoch != u64::MAX && w.epoch >= oldest) {
                for (merge, sketch) in merged.iter_mut().zip(&window.sketches) {
                    merge.add(sketch);
                }
            }
        }
        let [deny, would_deny, allow] = merged;
        Report {
            window_seconds: WINDOWS as u64 * WINDOW_SECS,
            since: rfc3339(UNIX_EPOCH + Duration::from_secs(oldest * WINDOW_SECS)),
            deny: deny.rows(Kind::Deny.reversed_by()),
            would_deny: would_deny.rows(Kind::WouldDeny.reversed_by()),
            allow: allow.rows(Kind::Allow.reversed_by()),
        }
    }

    /// The most bytes [`bytes`](Self::bytes) may come to, every sketch full of the longest names.
    #[cfg(test)]
    fn cap_bytes(&self) -> usize {
        let per = lock(&self.workers[0].0).windows[0].sketches[0].cap;
        size_of::<Decisions>() + self.workers.len() * (size_of::<PerWorker>() + WINDOWS * 3 * Sketch::cap_bytes(per))
    }

    /// `/decisions`, as JSON.
    pub fn json(&self) -> String {
        serde_json::to_string(&self.report(SystemTime::now())).unwrap_or_else(|_| "{}".into())
    }

    /// Bytes the sketches hold (the rule files' names aside: they are the rules').
    #[cfg(test)]
    fn bytes(&self) -> usize {
        let held =
            |w: &PerWorker| lock(&w.0).windows.iter().flat_map(|w| &w.sketches).map(Sketch::bytes).sum::<usize>();
        size_of::<Decisions>() + self.workers.iter().map(|w| size_of::<PerWorker>() + held(w)).sum::<usize>()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// `/decisions`: what the last hour's windows hold, per kind.
#[derive(Debug, Serialize)]
pub struct Report {
    /// How far back the windows reach at most.
    pub window_seconds: u64,
    /// When the oldest window shown began (RFC 3339).
    pub since: String,
    /// Denied.
    pub deny: Vec<Row>,
    /// Let through by a report scope, which the policy would deny.
    pub would_deny: Vec<Row>,
    /// Allowed.
    pub allow: Vec<Row>,
}

/// One subject of one kind in `/decisions`.
#[derive(Debug, Serialize)]
pub struct Row {
    /// The name asked for; `null` for a connection without one.
    pub name: Option<String>,
    /// Without a name: the destination (`address:port`), or `null` when there was none.
    pub destination: Option<String>,
    /// Decisions (connections, QUIC flows), at most this many.
    pub count: u64,
    /// By how much `count` may be over; 0: exact.
    pub error: u64,
    /// Distinct sources (IPv4 addresses, IPv6 /64s): exact up to 3, then estimated.
    pub sources: u64,
    /// When the last connection it counts began (RFC 3339).
    pub last_seen: String,
    /// The deciding rule (`file:line`, a list's name), or the reason when none decided.
    pub rule: String,
    /// The rule line that reverses the decision, to paste into a rule file; `null` when
    /// there is nothing to name.
    pub rule_line: Option<String>,
}

/// One worker's windows, each at `epoch % WINDOWS`.
struct Ring {
    /// The windows.
    windows: [Window; WINDOWS],
    /// When the latest window recorded in ends: a decision before then counts in it, with no
    /// more arithmetic on its time. A late one (an HTTP request on a connection that began long
    /// ago) counts there too, and never clears a newer window.
    ends: SystemTime,
    /// The latest window's place in `windows`.
    current: usize,
}

/// One window: a sketch per kind.
struct Window {
    /// Its number (Unix seconds / [`WINDOW_SECS`]); `u64::MAX`: never used.
    epoch: u64,
    /// By [`Kind`].
    sketches: [Sketch; 3],
}

impl Ring {
    fn new(per: usize) -> Ring {
        let window = |_| Window { epoch: u64::MAX, sketches: std::array::from_fn(|_| Sketch::new(per)) };
        Ring { windows: std::array::from_fn(window), ends: UNIX_EPOCH, current: 0 }
    }

    fn record(&mut self, kind: Kind, d: &Decided<'_>, keys: &Keys) {
        if d.at >= self.ends {
            let epoch = d.at.duration_since(UNIX_EPOCH).unwrap_or_default().as_secs() / WINDOW_SECS;
            self.ends = UNIX_EPOCH + Duration::from_secs((epoch + 1) * WINDOW_SECS);
            self.current = (epoch % WINDOWS as u64) as usize;
            let window = &mut self.windows[self.current];
            if window.epoch != epoch {
                window.epoch = epoch;
                window.sketches.iter_mut().for_each(Sketch::clear);
            }
        }
        self.windows[self.current].sketches[kind as usize].record(d, keys);
    }
}

/// One kind's sketches of every worker and window, merged.
#[derive(Default)]
struct Merge {
    /// By key: the tally, and the sum of the floors of the full sketches that held it.
    subjects: HashMap<String, (Tally, u64)>,
    /// The sum of the full sketches' floors.
    floors: u64,
}

impl Merge {
    fn add(&mut self, sketch: &Sketch) {
        let floor = sketch.floor();
        self.floors += floor;
        for (key, tally) in sketch.tallies() {
            match self.subjects.get_mut(key) {
                Some((merged, floors)) => {
                    merged.add(tally);
                    *floors += floor;
                }
                None => {
                    self.subjects.insert(key.to_owned(), (tally.clone(), floor));
                }
            }
        }
    }

    /// The most counted subjects, at most [`SHOWN`], each with the rule line that gives it
    /// `verdict`. A full sketch that does not hold a subject may have dropped up to its floor
    /// of it: that is added, so that no count is under.
    fn rows(self, verdict: Verdict) -> Vec<Row> {
        let mut merged: Vec<(String, Tally)> = self
            .subjects
            .into_iter()
            .map(|(key, (mut t, floors))| {
                let missed = self.floors - floors;
                (t.count, t.error) = (t.count + missed, t.error + missed);
                (key, t)
            })
            .collect();
        merged.sort_by(|(a, x), (b, y)| y.count.cmp(&x.count).then(y.last.cmp(&x.last)).then(a.cmp(b)));
        merged.truncate(SHOWN);
        merged.into_iter().map(|(key, t)| row(key, t, verdict)).collect()
    }
}

/// A subject's row, with the rule line that gives it `verdict`. The key says what it is: a
/// destination parses as one, an empty key is neither, and anything else is a name.
fn row(key: String, t: Tally, verdict: Verdict) -> Row {
    let (name, destination, rule_line) = match key.parse::<SocketAddr>() {
        Ok(dst) => {
            let line = format!("{verdict} ip {} port {}", dst.ip().to_canonical(), dst.port());
            (None, Some(key), Some(line))
        }
        Err(_) if key.is_empty() => (None, None, None),
        Err(_) => (Some(key.clone()), None, Some(format!("{verdict} {key}"))),
    };
    Row {
        name,
        destination,
        count: t.count,
        error: t.error,
        sources: t.sources.count(),
        last_seen: rfc3339(t.last),
        rule: t.by.to_string(),
        rule_line,
    }
}

/// A destination written out on the stack: `[v6%scope]:port` is at most 58 bytes.
struct KeyBuf {
    bytes: [u8; 64],
    len: usize,
}

impl Default for KeyBuf {
    fn default() -> KeyBuf {
        KeyBuf { bytes: [0; 64], len: 0 }
    }
}

impl KeyBuf {
    fn show(&mut self, dst: SocketAddr) -> &str {
        let _ = write!(self, "{dst}");
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or_default()
    }
}

impl fmt::Write for KeyBuf {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let end = self.len + s.len();
        self.bytes.get_mut(self.len..end).ok_or(fmt::Error)?.copy_from_slice(s.as_bytes());
        self.len = end;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::policy::decide::{Decision, RuleSet};
    use crate::reason::Reason;
    use crate::rules::file::parse_rules;

    /// What `docs/metrics.md` states the sketches hold at most, up to 21 workers.
    const CAP_BYTES: usize = 6 << 20;
    /// The start of a window (Unix milliseconds).
    const T0: u64 = 1_780_000_200_000;
    const MINUTE: u64 = 60_000;

    fn time(ms: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_millis(ms)
    }

    fn record(client: &str, at: u64) -> Outcome {
        let mut o = Outcome::accepted("test".into(), format!("{client}:40000").parse().unwrap());
        o.time = time(at);
        o
    }

    fn name(n: &str) -> Name {
        Name::parse(n.as_bytes(), false).unwrap()
    }

    /// One connection from `client` at `at`, decided `kind` for `n` by the default.
    fn note(d: &Decisions, kind: Kind, n: &str, client: &str, at: u64) {
        d.note(&mut record(client, at), kind, Subject::Name(&name(n)), By::Reason(Reason::Default));
    }

    fn rows(d: &Decisions, kind: Kind, now: u64) -> Vec<Row> {
        let r = d.report(time(now));
        match kind {
            Kind::Deny => r.deny,
            Kind::WouldDeny => r.would_deny,
            Kind::Allow => r.allow,
        }
    }

    fn counts(rows: &[Row]) -> Vec<(String, u64, u64)> {
        rows.iter().map(|r| (r.name.clone().unwrap_or_default(), r.count, r.error)).collect()
    }

    /// While a sketch has room, counts are exact, each outcome apart, most counted first.
    #[test]
    fn counts_are_exact_while_a_sketch_has_room() {
        let d = Decisions::new(1);
        for i in 0..300u64 {
            for _ in 0..=i % 7 {
                note(&d, Kind::Deny, &format!("n{i}.example.com"), "10.0.0.1", T0 + i);
            }
        }
        note(&d, Kind::Allow, "n1.example.com", "10.0.0.1", T0);
        let deny = rows(&d, Kind::Deny, T0 + MINUTE);
        assert_eq!(deny.len(), 300);
        let truth =
            |row: &Row| row.name.as_deref().unwrap()[1..].split('.').next().unwrap().parse::<u64>().unwrap() % 7 + 1;
        assert!(deny.iter().all(|r| r.count == truth(r) && r.error == 0), "{:?}", counts(&deny));
        assert!(deny.windows(2).all(|w| w[0].count >= w[1].count), "most counted first");
        assert_eq!(counts(&rows(&d, Kind::Allow, T0 + MINUTE)), [("n1.example.com".into(), 1, 0)]);
        assert!(rows(&d, Kind::WouldDeny, T0 + MINUTE).is_empty());
    }

    /// Workers count apart and a read merges them: a heavy name seen by every worker under a
    /// flood on each is shown, and no count shown is under the truth.
    #[test]
    fn workers_count_apart_and_a_merge_never_counts_under() {
        let d = std::sync::Arc::new(Decisions::with_keys(3, Keys::fixed()));
        let threads: Vec<_> = (0..3)
            .map(|k| {
                let d = d.clone();
                std::thread::spawn(move || {
                    worker::set_worker(k);
                    let mut truth: HashMap<String, u64> = HashMap::new();
                    for i in 0..30_000u64 {
                        let n = match i % 10 {
                            0 => "heavy.example.com".to_string(),
                            1 if k == 0 => "only-zero.example.com".to_string(),
                            _ => format!("w{k}-{i}.example.com"),
                        };
                        note(&d, Kind::Deny, &n, &format!("10.0.{k}.{}", (i / 10) % 5), T0 + i);
                        *truth.entry(n).or_default() += 1;
                    }
                    truth
                })
            })
            .collect();
        let mut truth: HashMap<String, u64> = HashMap::new();
        for t in threads {
            t.join().unwrap().into_iter().for_each(|(n, c)| *truth.entry(n).or_default() += c);
        }
        let apart: Vec<usize> = d
            .workers
            .iter()
            .map(|w| lock(&w.0).windows.iter().map(|w| w.sketches[0].tallies().count()).sum())
            .collect();
        assert!(apart.iter().all(|&n| n > 0), "every worker holds its own: {apart:?}");
        let deny = rows(&d, Kind::Deny, T0 + MINUTE);
        assert_eq!(deny.len(), SHOWN);
        for r in &deny {
            let t = truth[r.name.as_ref().unwrap()];
            assert!(r.count >= t && r.count - r.error <= t, "{r:?}: truth {t}");
        }
        assert_eq!(deny[0].name.as_deref(), Some("heavy.example.com"));
        assert_eq!(deny[0].sources, 15, "five sources on each of three workers");
        assert!(deny.iter().any(|r| r.name.as_deref() == Some("only-zero.example.com")));
    }

    /// What was decided at `t` shows at `t` + 49 minutes and never at `t` + 60; a window's place
    /// taken by a later one starts empty; a late decision (a connection that began long ago)
    /// counts in the latest window and clears nothing.
    #[test]
    fn nothing_older_than_an_hour_shows() {
        for start in [T0, T0 + 5 * MINUTE + 123, T0 + 10 * MINUTE - 1] {
            let d = Decisions::new(1);
            note(&d, Kind::Deny, "old.example.com", "10.0.0.1", start);
            assert_eq!(rows(&d, Kind::Deny, start + 49 * MINUTE).len(), 1, "shown 49 minutes on");
            assert!(rows(&d, Kind::Deny, start + 60 * MINUTE).is_empty(), "gone after an hour");
            note(&d, Kind::Deny, "new.example.com", "10.0.0.1", start + 60 * MINUTE);
            note(&d, Kind::Deny, "late.example.com", "10.0.0.1", start);
            let now = rows(&d, Kind::Deny, start + 61 * MINUTE);
            let names: Vec<_> = now.iter().map(|r| r.name.clone().unwrap()).collect();
            assert_eq!(names.len(), 2, "{names:?}");
            assert!(names.contains(&"new.example.com".into()) && names.contains(&"late.example.com".into()));
            let ring = lock(&d.workers[0].0);
            assert!(ring.windows.iter().all(|w| w.sketches[0].tallies().all(|(key, _)| key != "old.example.com")));
        }
    }

    /// A million distinct names of every length, over every window and outcome: the sketches
    /// fill up and stay within their cap, which is within what the documentation states.
    #[test]
    fn a_million_distinct_names_stay_within_the_cap() {
        let d = Decisions::new(1);
        let by = By::Reason(Reason::Default);
        let mut key = String::new();
        for i in 0..1_000_000u64 {
            // Every length from 20 to 253 bytes, the longest a name can be.
            let len = 20 + (i as usize * 7919) % 234;
            key.clear();
            let _ = write!(key, "{i:x}.");
            while key.len() < len {
                key.push_str("abcdefghij.");
            }
            key.truncate(len);
            let kind = [Kind::Deny, Kind::WouldDeny, Kind::Allow][i as usize % 3];
            let at = T0 + (i / 166_667) * 10 * MINUTE;
            let source = Keys::word(std::net::IpAddr::from([10, 0, 0, i as u8]));
            let hash = d.keys.bytes(key.as_bytes());
            d.record(kind, &Decided { hash, key: &key, source, at: time(at), by, file: None });
        }
        let per = (NAMES / WINDOWS).max(MIN_NAMES);
        let ring = lock(&d.workers[0].0);
        assert!(ring.windows.iter().flat_map(|w| &w.sketches).all(|s| s.tallies().count() == per));
        drop(ring);
        let (held, cap) = (d.bytes(), d.cap_bytes());
        println!("held {held} bytes of a cap of {cap} ({CAP_BYTES} documented)");
        assert!(held <= cap && held > cap / 3, "held {held}, cap {cap}");
        for workers in [1, 2, 4, 8, 16, 21] {
            let d = Decisions::new(workers);
            assert!(d.cap_bytes() <= CAP_BYTES, "{workers} workers: {}", d.cap_bytes());
            let per = lock(&d.workers[0].0).windows[0].sketches[0].cap;
            assert!(per * workers * WINDOWS <= NAMES && per >= MIN_NAMES, "{workers} workers hold {per} each");
        }
        let docs = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/metrics.md")).unwrap();
        assert!(
            docs.contains(&format!("{} MiB", CAP_BYTES >> 20))
                && docs.contains("4,096 names")
                && docs.contains(&format!("at most {SHOWN} each")),
            "the cap, documented"
        );
        assert_eq!(NAMES, 4096);
    }

    /// A connection counts once for a name and outcome, however often it is decided.
    #[test]
    fn a_connection_counts_once_per_name_and_outcome() {
        let d = Decisions::new(1);
        let (a, b) = (name("a.example.com"), name("b.example.com"));
        let mut r = record("10.0.0.1", T0);
        let by = By::Reason(Reason::Default);
        for (kind, n) in [(Kind::Allow, &a), (Kind::Allow, &a), (Kind::Deny, &a), (Kind::Allow, &b), (Kind::Allow, &b)]
        {
            d.note(&mut r, kind, Subject::Name(n), by);
        }
        d.note(&mut record("10.0.0.2", T0), Kind::Allow, Subject::Name(&a), by);
        let allow = rows(&d, Kind::Allow, T0);
        assert_eq!(counts(&allow), [("a.example.com".into(), 2, 0), ("b.example.com".into(), 1, 0)]);
        assert_eq!(allow[0].sources, 2);
        assert_eq!(counts(&rows(&d, Kind::Deny, T0)), [("a.example.com".into(), 1, 0)]);
    }

    /// Each row names what decided it (the latest decision's rule, `file:line`, or its
    /// reason) and the rule line that reverses it; a connection without a name is shown by its
    /// destination, and one without either as neither.
    #[test]
    fn rows_name_the_deciding_rule_and_the_line_that_reverses_it() {
        let rules = RuleSet::new(
            parse_rules("a.rules", "allow a.example.com\ndeny b.example.com\n").unwrap(),
            Vec::new(),
            Verdict::Deny,
        );
        let d = Decisions::new(1);
        let decide = |n: &Name| rules.decide(Some(n), "10.0.0.1".parse().unwrap(), None, 443);
        let (a, b, c) = (name("a.example.com"), name("b.example.com"), name("c.example.com"));
        let ruled = |client: &str, at: u64, kind: Kind, n: &Name, decision: &Decision<'_>| {
            let mut r = record(client, at);
            r.ruleset = decision.rule.map(|rule| rule.ruleset_label()); // as admission records it
            d.note(&mut r, kind, Subject::Name(n), By::of(decision));
        };
        ruled("10.0.0.1", T0, Kind::Allow, &a, &decide(&a));
        ruled("10.0.0.1", T0, Kind::Deny, &b, &decide(&b));
        d.note(&mut record("10.0.0.1", T0 + 1), Kind::WouldDeny, Subject::Name(&c), By::Reason(Reason::Default));
        ruled("10.0.0.2", T0 + 2, Kind::WouldDeny, &c, &decide(&b));
        for (dst, at) in [("192.0.2.7:443", T0), ("[2001:db8::1]:8443", T0 + 1)] {
            d.note(
                &mut record("10.0.0.1", at),
                Kind::Deny,
                Subject::Destination(dst.parse().unwrap()),
                By::Reason(Reason::NoSni),
            );
        }
        d.note(&mut record("10.0.0.1", T0), Kind::Deny, Subject::Unknown, By::Reason(Reason::Ech));
        let r = d.report(time(T0 + MINUTE));
        let line = |rows: &[Row], i: usize| {
            (rows[i].name.clone(), rows[i].destination.clone(), rows[i].rule.clone(), rows[i].rule_line.clone())
        };
        let s = |v: &str| Some(v.to_string());
        assert_eq!(line(&r.allow, 0), (s("a.example.com"), None, "a.rules:1".into(), s("deny a.example.com")));
        assert_eq!(line(&r.would_deny, 0), (s("c.example.com"), None, "a.rules:2".into(), s("allow c.example.com")));
        assert_eq!(r.would_deny[0].last_seen, "2026-05-28T20:30:00.002Z");
        let deny: Vec<_> = (0..r.deny.len()).map(|i| line(&r.deny, i)).collect();
        assert!(deny.contains(&(s("b.example.com"), None, "a.rules:2".into(), s("allow b.example.com"))), "{deny:?}");
        assert!(
            deny.contains(&(None, s("192.0.2.7:443"), "no_sni".into(), s("allow ip 192.0.2.7 port 443"))),
            "{deny:?}"
        );
        assert!(deny.contains(&(None, s("[2001:db8::1]:8443"), "no_sni".into(), s("allow ip 2001:db8::1 port 8443"))));
        assert!(deny.contains(&(None, None, "ech".into(), None)), "{deny:?}");
        let json: serde_json::Value = serde_json::from_str(&d.json()).unwrap();
        assert_eq!(json["window_seconds"], 3600);
        assert!(json["deny"].is_array() && json["would_deny"].is_array() && json["allow"].is_array());
        // A reload that moves the rule to another line, at the same index: the row follows.
        let moved =
            RuleSet::new(parse_rules("a.rules", "\n\nallow a.example.com\n").unwrap(), Vec::new(), Verdict::Deny);
        let decision = moved.decide(Some(&a), "10.0.0.1".parse().unwrap(), None, 443);
        ruled("10.0.0.1", T0 + 3, Kind::Allow, &a, &decision);
        assert_eq!(d.report(time(T0 + MINUTE)).allow[0].rule, "a.rules:3");
    }

    /// Markup is not a name: it is refused before any decision, so it never reaches a sketch
    /// (which takes only validated names).
    #[test]
    fn markup_cannot_be_a_name() {
        for hostile in [&b"<img src=x onerror=alert(1)>"[..], b"a.example.com\"><script>", b"x&lt;.example.com"] {
            assert!(Name::parse(hostile, false).is_err() && Name::parse(hostile, true).is_err());
        }
    }
}
