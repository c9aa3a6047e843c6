//! Per-source limits, and the queue of connections waiting for their hello: one client cannot
//! hold every slot, and a slow one cannot starve a full listener.
//!
//! A source is an IPv4 address or an IPv6 /64 (what one host or one customer usually holds);
//! behind PROXY protocol, the header's source. The table holds an entry only while its source
//! has connections open, so it is never larger than the connections themselves.
//!
//! QUIC flows count apart, in `max_quic_flows_per_source`: a UDP source address is only what
//! a datagram claims, so a flow from a forged one must not take a TCP connection's place
//! (TCP's source has completed a handshake; its limits stay its own).

use std::collections::{BTreeMap, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use prometheus::IntGauge;
use tokio::sync::oneshot;

use crate::config::LimitsConfig;

/// What one source holds.
#[derive(Debug, Default, Clone, Copy)]
struct Held {
    /// Connections open.
    connections: usize,
    /// Connections not decided yet (waiting for a PROXY header, a request head or a hello).
    hellos: usize,
    /// QUIC flows, decided or not: their source address is unproven.
    flows: usize,
}

impl Held {
    fn is_empty(&self) -> bool {
        self.connections == 0 && self.flows == 0
    }
}

/// Which count a [`SourceSlot`] holds its place in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Counted {
    /// A TCP connection; `undecided` while it also counts against `max_hellos_per_source`.
    Connection { undecided: bool },
    /// A QUIC flow, for its whole life.
    Flow,
}

/// Shards of the source table: connections from different sources rarely take the same lock,
/// so workers on many cores do not queue on one mutex per connection.
const SHARDS: usize = 64;

/// One shard of the source table.
type Table = HashMap<IpAddr, Held, Keyed>;

/// The source table's hash: a multiply-rotate over the address's words with a key drawn at
/// start, a few instructions per lookup where SipHash takes over a hundred. Sources are chosen
/// by clients (an IPv6 customer holds 65,536 /64s in a /48), so the key is secret and random,
/// and the addresses that collide cannot be worked out ahead.
#[derive(Debug, Clone, Copy)]
struct Keyed {
    /// The starting state.
    seed: u64,
    /// The multiplier: odd, so that the multiplication is a bijection.
    factor: u64,
}

impl Keyed {
    /// A key from the system's randomness (the address's sequence alone if there is none:
    /// still a working table).
    fn random() -> Keyed {
        use ring::rand::SecureRandom;
        let mut bytes = [0u8; 16];
        let _ = ring::rand::SystemRandom::new().fill(&mut bytes);
        let [seed, factor] = [&bytes[..8], &bytes[8..]].map(|b| u64::from_le_bytes(b.try_into().unwrap_or_default()));
        Keyed { seed, factor: factor | 1 }
    }
}

impl BuildHasher for Keyed {
    type Hasher = KeyedHasher;

    fn build_hasher(&self) -> KeyedHasher {
        KeyedHasher { state: self.seed, factor: self.factor }
    }
}

/// One hashing with a [`Keyed`] key.
struct KeyedHasher {
    state: u64,
    factor: u64,
}

impl KeyedHasher {
    fn mix(&mut self, word: u64) {
        self.state = (self.state ^ word).wrapping_mul(self.factor).rotate_left(29);
    }
}

impl Hasher for KeyedHasher {
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut word = [0u8; 8];
            word[..chunk.len()].copy_from_slice(chunk);
            self.mix(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, i: u8) {
        self.mix(u64::from(i));
    }

    fn write_u32(&mut self, i: u32) {
        self.mix(u64::from(i));
    }

    fn write_u64(&mut self, i: u64) {
        self.mix(i);
    }

    fn write_u128(&mut self, i: u128) {
        self.mix(i as u64);
        self.mix((i >> 64) as u64);
    }

    fn write_usize(&mut self, i: usize) {
        self.mix(i as u64);
    }

    fn write_isize(&mut self, i: isize) {
        self.mix(i as u64);
    }

    fn finish(&self) -> u64 {
        // The table takes its index from the low bits and its tags from the top ones: every
        // bit of the state must reach both. A multiplication carries bits upward only, so the
        // keyed state goes through MurmurHash3's finaliser (fmix64), which mixes both ways: with
        // the multiply-rotate alone, a key with an unlucky multiplier crowded neighbouring
        // addresses into a fifth fewer buckets.
        let mut h = self.state.wrapping_mul(self.factor);
        h ^= h >> 33;
        h = h.wrapping_mul(0xff51_afd7_ed55_8ccd);
        h ^= h >> 33;
        h = h.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
        h ^ (h >> 33)
    }
}

/// Every source's connections, shared by all listeners.
#[derive(Debug)]
pub struct Sources {
    /// Sources with connections open, in [`SHARDS`] shards by source.
    shards: Box<[Mutex<Table>]>,
    /// `[limits] max_connections_per_source` (a SIGHUP may change it).
    max_connections: AtomicUsize,
    /// `[limits] max_hellos_per_source` (a SIGHUP may change it).
    max_hellos: AtomicUsize,
    /// `[limits] max_quic_flows_per_source` (a SIGHUP may change it).
    max_flows: AtomicUsize,
    /// `snigate_sources_tracked`.
    tracked: IntGauge,
}

/// One connection's place in its source's counts; dropping it gives the place back.
#[derive(Debug)]
pub struct SourceSlot {
    /// The table.
    sources: Arc<Sources>,
    /// The source.
    key: IpAddr,
    /// What it counts as.
    counted: Counted,
}

/// The per-source limits, as `[limits]` states them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceLimits {
    /// `max_connections_per_source`: TCP connections.
    pub connections: usize,
    /// `max_hellos_per_source`: TCP connections not decided yet.
    pub hellos: usize,
    /// `max_quic_flows_per_source`: QUIC flows.
    pub quic_flows: usize,
}

impl From<&LimitsConfig> for SourceLimits {
    fn from(limits: &LimitsConfig) -> SourceLimits {
        SourceLimits {
            connections: limits.max_connections_per_source,
            hellos: limits.max_hellos_per_source,
            quic_flows: limits.max_quic_flows_per_source,
        }
    }
}

impl Sources {
    /// A table enforcing these limits, counting its sources in `tracked`.
    pub fn new(limits: SourceLimits, tracked: IntGauge) -> Sources {
        let keyed = Keyed::random();
        let shards = (0..SHARDS).map(|_| Mutex::new(HashMap::with_hasher(keyed))).collect();
        Sources {
            shards,
            max_connections: AtomicUsize::new(limits.connections),
            max_hellos: AtomicUsize::new(limits.hellos),
            max_flows: AtomicUsize::new(limits.quic_flows),
            tracked,
        }
    }

    /// New limits, for the connections and flows admitted from now on.
    pub fn set_limits(&self, limits: SourceLimits) {
        self.max_connections.store(limits.connections, Ordering::Relaxed);
        self.max_hellos.store(limits.hellos, Ordering::Relaxed);
        self.max_flows.store(limits.quic_flows, Ordering::Relaxed);
    }

    /// Counts a new, undecided connection from `ip`, or says which limit it would pass.
    pub fn admit(self: &Arc<Self>, ip: IpAddr) -> Result<SourceSlot, String> {
        let key = source_of(ip);
        let mut table = self.lock(key);
        let before = table.len();
        let held = table.entry(key).or_default();
        if held.connections >= self.max_connections.load(Ordering::Relaxed) {
            let n = held.connections;
            drop_if_empty(&mut table, key);
            return Err(format!("source {key} holds {n} connections (max_connections_per_source)"));
        }
        if held.hellos >= self.max_hellos.load(Ordering::Relaxed) {
            let n = held.hellos;
            drop_if_empty(&mut table, key);
            return Err(format!("source {key} has {n} connections waiting for their hello (max_hellos_per_source)"));
        }
        held.connections += 1;
        held.hellos += 1;
        if table.len() > before {
            self.tracked.inc();
        }
        Ok(SourceSlot { sources: self.clone(), key, counted: Counted::Connection { undecided: true } })
    }

    /// Counts a new QUIC flow from `ip` in the source's QUIC budget alone, or says that it is
    /// spent: whoever forged `ip` cannot lock its TCP connections out.
    pub fn admit_flow(self: &Arc<Self>, ip: IpAddr) -> Result<SourceSlot, String> {
        let key = source_of(ip);
        let mut table = self.lock(key);
        let before = table.len();
        let held = table.entry(key).or_default();
        if held.flows >= self.max_flows.load(Ordering::Relaxed) {
            let n = held.flows;
            drop_if_empty(&mut table, key);
            return Err(format!("source {key} holds {n} QUIC flows (max_quic_flows_per_source)"));
        }
        held.flows += 1;
        if table.len() > before {
            self.tracked.inc();
        }
        Ok(SourceSlot { sources: self.clone(), key, counted: Counted::Flow })
    }

    /// Sources with connections open.
    #[cfg(test)]
    pub fn tracked(&self) -> usize {
        self.shards.iter().map(|s| s.lock().unwrap_or_else(|e| e.into_inner()).len()).sum()
    }

    /// The shard that holds `key`.
    fn lock(&self, key: IpAddr) -> MutexGuard<'_, Table> {
        let bits = match key {
            IpAddr::V4(v4) => u64::from(v4.to_bits()),
            IpAddr::V6(v6) => (v6.to_bits() >> 64) as u64,
        };
        // Fibonacci hashing: the top bits of the product spread neighbouring addresses.
        let shard = (bits.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize % SHARDS;
        self.shards[shard].lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn drop_if_empty(table: &mut Table, key: IpAddr) {
    if table.get(&key).is_some_and(Held::is_empty) {
        table.remove(&key);
    }
}

impl SourceSlot {
    /// The connection has been decided: it no longer counts against `max_hellos_per_source`.
    pub fn decided(&mut self) {
        if self.counted == (Counted::Connection { undecided: true }) {
            self.counted = Counted::Connection { undecided: false };
            if let Some(held) = self.sources.lock(self.key).get_mut(&self.key) {
                held.hellos -= 1;
            }
        }
    }
}

impl Drop for SourceSlot {
    fn drop(&mut self) {
        let mut table = self.sources.lock(self.key);
        if let Some(held) = table.get_mut(&self.key) {
            match self.counted {
                Counted::Connection { undecided } => {
                    held.connections -= 1;
                    held.hellos -= usize::from(undecided);
                }
                Counted::Flow => held.flows -= 1,
            }
            if held.is_empty() {
                table.remove(&self.key);
                self.sources.tracked.dec();
            }
        }
    }
}

/// The source an address belongs to: IPv4 (IPv4-mapped included) as it is, IPv6 by its /64.
fn source_of(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let [a, b, c, d, ..] = v6.segments();
            IpAddr::V6(Ipv6Addr::new(a, b, c, d, 0, 0, 0, 0))
        }
        v4 => v4,
    }
}

/// A listener's connections that are waiting for their hello, oldest first: when every slot is
/// taken, the oldest of them is closed to make room, so that slow or silent clients cannot
/// keep the listener from accepting.
#[derive(Debug, Default)]
pub struct Waiting {
    /// By arrival number; the sender's message (or drop) closes the connection.
    open: Mutex<BTreeMap<u64, oneshot::Sender<()>>>,
    /// Numbers arrivals.
    next: AtomicU64,
}

/// A connection's place in [`Waiting`]; dropping it leaves the queue.
#[derive(Debug)]
pub struct WaitingSlot<'a> {
    /// The queue.
    waiting: &'a Waiting,
    /// The connection's arrival number.
    id: u64,
}

impl Waiting {
    /// Queues a connection that starts waiting; the receiver resolves when it is evicted.
    pub fn enter(&self) -> (WaitingSlot<'_>, oneshot::Receiver<()>) {
        let (tx, rx) = oneshot::channel();
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, tx);
        (WaitingSlot { waiting: self, id }, rx)
    }

    /// Closes the connection that has waited longest; `false` when none is waiting.
    pub fn evict_oldest(&self) -> bool {
        let oldest = self.lock().pop_first();
        oldest.is_some_and(|(_, tx)| tx.send(()).is_ok())
    }

    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, oneshot::Sender<()>>> {
        self.open.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for WaitingSlot<'_> {
    fn drop(&mut self) {
        self.waiting.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod hash_tests {
    use super::*;

    /// Neighbouring sources spread over the table, and two keys disagree: for many keys, so
    /// that no unlucky key passes unseen.
    #[test]
    fn the_keyed_hash_spreads_sources_and_depends_on_its_key() {
        for _ in 0..200 {
            spreads(Keyed::random(), Keyed::random());
        }
        // Keys with few bits set in their multiplier.
        for factor in [1, 3, 1 << 40 | 1, u64::MAX] {
            spreads(Keyed { seed: 0, factor }, Keyed { seed: 1, factor: 5 });
        }
    }

    fn spreads(a: Keyed, b: Keyed) {
        let hash = |k: &Keyed, ip: IpAddr| k.hash_one(ip);
        let ips: Vec<IpAddr> = (0..4096u32).map(|i| IpAddr::V4(std::net::Ipv4Addr::from(0x0a00_0000 + i))).collect();
        let buckets: std::collections::BTreeSet<u64> = ips.iter().map(|&ip| hash(&a, ip) % 1024).collect();
        assert!(buckets.len() > 900, "4,096 neighbouring addresses fill {} of 1,024 buckets", buckets.len());
        let tags: std::collections::BTreeSet<u64> = ips.iter().map(|&ip| hash(&a, ip) >> 57).collect();
        assert!(tags.len() > 100, "the top bits vary too: {}", tags.len());
        assert!(ips.iter().filter(|&&ip| hash(&a, ip) == hash(&b, ip)).count() < 4, "the key changes every hash");
        let v6 = |p: u64| IpAddr::V6(Ipv6Addr::from(u128::from(p) << 64));
        assert_ne!(hash(&a, v6(1)), hash(&a, v6(2)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn limits_hold_per_source_and_entries_go_with_their_last_connection() {
        let gauge = IntGauge::new("t", "t").unwrap();
        let s = Arc::new(Sources::new(SourceLimits { connections: 3, hellos: 2, quic_flows: 2 }, gauge.clone()));
        let ip = |t: &str| t.parse::<IpAddr>().unwrap();
        let mut a = s.admit(ip("10.0.0.1")).unwrap();
        let _b = s.admit(ip("::ffff:10.0.0.1")).unwrap();
        assert!(s.admit(ip("10.0.0.1")).unwrap_err().contains("max_hellos_per_source"));
        a.decided();
        let _c = s.admit(ip("10.0.0.1")).unwrap();
        assert!(s.admit(ip("10.0.0.1")).unwrap_err().contains("max_connections_per_source"));
        let _other = s.admit(ip("10.0.0.2")).unwrap();
        assert_eq!(s.tracked(), 2);
        assert_eq!(gauge.get(), 2, "the gauge follows the shards");
        let _v6 = s.admit(ip("2001:db8::1")).unwrap();
        let _v6b = s.admit(ip("2001:db8::ffff:2")).unwrap();
        assert!(s.admit(ip("2001:db8::3")).is_err(), "one /64 is one source");
        assert!(s.admit(ip("2001:db8:0:1::1")).is_ok(), "another /64");
        drop((a, _b, _c, _other, _v6, _v6b));
        assert_eq!(s.tracked(), 0, "no entry outlives its connections");
        assert_eq!(gauge.get(), 0);
    }

    #[test]
    fn quic_flows_count_apart_from_tcp_connections() {
        let gauge = IntGauge::new("t", "t").unwrap();
        let s = Arc::new(Sources::new(SourceLimits { connections: 1, hellos: 1, quic_flows: 2 }, gauge.clone()));
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let flows = [s.admit_flow(ip).unwrap(), s.admit_flow(ip).unwrap()];
        assert!(s.admit_flow(ip).unwrap_err().contains("max_quic_flows_per_source"));
        // The QUIC budget is spent, and the source's TCP limits are untouched.
        let mut tcp = s.admit(ip).expect("a TCP connection beside a full QUIC budget");
        tcp.decided();
        assert!(s.admit(ip).unwrap_err().contains("max_connections_per_source"));
        drop(flows);
        assert_eq!(s.tracked(), 1, "the entry stays with the TCP connection");
        assert!(s.admit_flow(ip).is_ok(), "a flow's place is given back");
        drop(tcp);
        assert_eq!(s.tracked(), 0);
        assert_eq!(gauge.get(), 0);
    }

    #[test]
    fn the_oldest_waiting_connection_is_evicted_first() {
        let w = Waiting::default();
        let (first, mut first_rx) = w.enter();
        let (_second, mut second_rx) = w.enter();
        assert!(w.evict_oldest());
        assert!(first_rx.try_recv().is_ok());
        assert!(second_rx.try_recv().is_err());
        drop(first);
        drop(_second);
        assert!(!w.evict_oldest(), "none left");
    }
}
