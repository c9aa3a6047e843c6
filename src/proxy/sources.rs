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

/// Every source's connections, shared by all listeners.
#[derive(Debug)]
pub struct Sources {
    /// Sources with connections open, in [`SHARDS`] shards by source.
    shards: Box<[Mutex<HashMap<IpAddr, Held>>]>,
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
        let shards = (0..SHARDS).map(|_| Mutex::new(HashMap::new())).collect();
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
    fn lock(&self, key: IpAddr) -> MutexGuard<'_, HashMap<IpAddr, Held>> {
        let bits = match key {
            IpAddr::V4(v4) => u64::from(v4.to_bits()),
            IpAddr::V6(v6) => (v6.to_bits() >> 64) as u64,
        };
        // Fibonacci hashing: the top bits of the product spread neighbouring addresses.
        let shard = (bits.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 58) as usize % SHARDS;
        self.shards[shard].lock().unwrap_or_else(|e| e.into_inner())
    }
}

fn drop_if_empty(table: &mut HashMap<IpAddr, Held>, key: IpAddr) {
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
