//! A QUIC listener's flows, owned by its task: each flow stored once under its [`FlowId`], and
//! indexed by what identifies it on the wire, its connection IDs, apart from its address pair
//! (as quinn-proto's `ConnectionIndex` does).

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::flow::{
    Datagrams, Event, FlowId, FlowState, Held, Open, Opening, Pending, Reading, finish, open_upstream, run_open,
};
use super::reply::{Key, Replies};
use crate::config::RejectStyle;
use crate::hello::ClientHello;
use crate::hello::quic::{
    ACCESS_DENIED, Cid, DEFAULT_MAX_DATAGRAMS, Initial, Inspect, Inspector, LongHeader, MIN_INITIAL_DATAGRAM,
    QuicError, QuicLimits, VERSION_NEGOTIATION, Version, close_datagram, is_long_header, long_header,
    version_negotiation,
};
use crate::metrics::registry::Dropped;
use crate::outcome::{Outcome, Seen, Stage};
use crate::proxy::admission::{self, Ask};
use crate::proxy::listener::{Listener, ListenerMode};
use crate::proxy::reject::{Denied, Reply};
use crate::reason::Reason;

/// Most datagrams a flow holds while it is decided.
const MAX_BUFFERED: usize = DEFAULT_MAX_DATAGRAMS * 2;
/// The longest connection ID (RFC 9000 §17.2): a short header's is tried at each length up to it.
const MAX_CID_LEN: usize = 20;
/// Most flows being decided that one client address and port may have at once. A client opens
/// a new connection from the same port now and then (after closing one, or racing two), so one
/// is not enough; without a bound, one port could fill its source's share of the table with
/// Initials that never finish, each under a new connection ID.
const MAX_UNDECIDED_PER_ADDR: usize = 8;
/// Flows, or bytes held by flows being decided, freed since the last trim beyond which a sweep
/// gives the allocator's free memory back to the system: a flood's many small blocks otherwise
/// stay resident after its flows are gone. Low enough that a flood's memory goes within a
/// sweep of its flows, high enough that a trim (a walk of the allocator's free lists) is rare.
const TRIM_FLOWS: usize = 1024;
const TRIM_BYTES: usize = 8 << 20;

/// A flow in the table.
struct Flow {
    /// The address pair it started from.
    key: Key,
    /// What it is indexed by: the client's first Destination Connection ID, then those the
    /// server chose.
    cids: Vec<Cid>,
    state: FlowState,
}

/// Where a client's datagram goes: a flow found by a connection ID first, its address pair
/// second (the newest flow of the pair).
#[derive(Default)]
struct Index {
    /// Flows by address pair, oldest first.
    by_addr: HashMap<Key, Vec<FlowId>>,
    /// Flows by connection ID. Scoped to the address pair: an ID another client chose must not
    /// steer datagrams into someone else's flow.
    by_cid: HashMap<(Key, Cid), FlowId>,
    /// How many indexed IDs have each length: a short header does not say how long its ID is.
    lengths: [u32; MAX_CID_LEN + 1],
}

impl Index {
    /// The flow whose connection ID a client datagram from `key` is addressed to.
    fn by_cid(&self, key: Key, datagram: &[u8]) -> Option<FlowId> {
        let by_cid = |id: &[u8]| self.by_cid.get(&(key, Cid::new(id)?)).copied();
        match datagram.first() {
            Some(&first) if is_long_header(first) => long_header(datagram).ok().and_then(|h| by_cid(h.dcid)),
            Some(_) => (1..=MAX_CID_LEN).filter(|&n| self.lengths[n] > 0).find_map(|n| by_cid(datagram.get(1..1 + n)?)),
            None => None,
        }
    }

    /// The flows of address pair `key`, oldest first.
    fn at(&self, key: Key) -> &[FlowId] {
        self.by_addr.get(&key).map_or(&[], Vec::as_slice)
    }

    /// Adds flow `id`, from `key`.
    fn add_flow(&mut self, id: FlowId, key: Key) {
        self.by_addr.entry(key).or_default().push(id);
    }

    /// Indexes `cid` as flow `id`'s; false when it identifies nothing (empty) or another flow
    /// of the same address pair holds it.
    fn add_cid(&mut self, id: FlowId, key: Key, cid: Cid) -> bool {
        if cid.as_bytes().is_empty() || self.by_cid.contains_key(&(key, cid)) {
            return false;
        }
        self.by_cid.insert((key, cid), id);
        self.lengths[cid.as_bytes().len()] += 1;
        true
    }

    /// Gives back spare capacity, after many flows left.
    fn shrink_to_fit(&mut self) {
        self.by_addr.shrink_to_fit();
        self.by_cid.shrink_to_fit();
    }

    /// Forgets flow `id`, which left the table.
    fn remove(&mut self, id: FlowId, key: Key, cids: &[Cid]) {
        if let Some(ids) = self.by_addr.get_mut(&key) {
            ids.retain(|&other| other != id);
            if ids.is_empty() {
                self.by_addr.remove(&key);
            }
        }
        for &cid in cids {
            if self.by_cid.remove(&(key, cid)).is_some() {
                self.lengths[cid.as_bytes().len()] -= 1;
            }
        }
    }
}

/// A listener's flows, owned by its task.
pub(super) struct Table {
    /// Flows being decided and allowed flows: at most `max_flows`.
    flows: HashMap<FlowId, Flow>,
    index: Index,
    next: u64,
    /// Flows being read, in the order they started, for eviction and the hello deadline
    /// (entries of flows since decided or gone are skipped, and pruned by the sweep).
    order: VecDeque<(Instant, FlowId)>,
    /// Denied flows, by address pair and the client's first Destination Connection ID (empty
    /// when it had none that could be one), until their datagrams are no longer dropped: at
    /// most `max_flows`, the oldest forgotten first.
    denied: HashMap<(Key, Cid), Instant>,
    /// `denied` in the order the flows were denied.
    denied_order: VecDeque<(Instant, (Key, Cid))>,
    /// Flows and remembered denials, and bytes buffered by flows being decided, freed since
    /// the last trim.
    freed: (usize, usize),
    /// The listener, shared with the flows' tasks.
    pub listener: Arc<Listener>,
    socket: Arc<UdpSocket>,
    events: mpsc::UnboundedSender<Event>,
}

impl Table {
    /// An empty table for `listener`, answering from `socket`; the flows' tasks report on
    /// `events`.
    pub fn new(listener: Arc<Listener>, socket: Arc<UdpSocket>, events: mpsc::UnboundedSender<Event>) -> Table {
        Table {
            flows: HashMap::new(),
            index: Index::default(),
            next: 0,
            order: VecDeque::new(),
            denied: HashMap::new(),
            denied_order: VecDeque::new(),
            freed: (0, 0),
            listener,
            socket,
            events,
        }
    }

    fn transparent(&self) -> bool {
        matches!(self.listener.mode, ListenerMode::Transparent { .. })
    }

    /// A datagram `client` sent to `to` (the listener's address when not known).
    pub fn datagram(&mut self, datagram: &[u8], client: SocketAddr, to: Option<SocketAddr>) {
        let key = (client, to.unwrap_or(self.listener.listen));
        let header = long_header(datagram).ok();
        if header.is_some_and(|h| self.denied.contains_key(&(key, dcid(&h)))) {
            return self.listener.metrics.quic_dropped(Dropped::Denied);
        }
        let found = match self.index.by_cid(key, datagram) {
            Some(id) => Some(id),
            // A client Initial to an ID no flow knows is a new connection, even from an address
            // pair in use: it is decided on its own hello.
            None if header.is_some_and(|h| h.is_initial()) => None,
            None => self.index.at(key).last().copied(),
        };
        // The hot path: an open flow's datagram is forwarded where the flow lies.
        if let Some(Flow { state: FlowState::Open(open), .. }) = found.and_then(|id| self.flows.get(&id)) {
            return forward(&self.listener, open, datagram);
        }
        // A flow being decided is taken out, moved on by value, and put back unless it left.
        let Some((id, Flow { key, cids, state })) = found.and_then(|id| self.flows.remove_entry(&id)) else {
            return self.start(key, datagram);
        };
        match state {
            FlowState::Reading(reading) if reading.pending.buffered.len() >= MAX_BUFFERED => {
                self.listener.metrics.quic_dropped(Dropped::Buffer);
                self.flows.insert(id, Flow { key, cids, state: FlowState::Reading(reading) });
            }
            FlowState::Reading(mut reading) => {
                reading.pending.buffered.push(datagram);
                let answer = reading.inspector.push(datagram);
                self.inspected(id, key, cids, reading, answer);
            }
            FlowState::Opening(mut opening) => {
                match opening.pending.buffered.len() >= MAX_BUFFERED {
                    true => self.listener.metrics.quic_dropped(Dropped::Buffer),
                    false => opening.pending.buffered.push(datagram),
                }
                self.flows.insert(id, Flow { key, cids, state: FlowState::Opening(opening) });
            }
            FlowState::Open(open) => {
                forward(&self.listener, &open, datagram);
                self.flows.insert(id, Flow { key, cids, state: FlowState::Open(open) });
            }
        }
    }

    /// A datagram from a new flow: a client's Initial starts one; an Initial-sized datagram of
    /// a version snigate cannot read gets a Version Negotiation naming the versions it reads
    /// (the flow is denied, and nothing is kept); anything else is dropped.
    fn start(&mut self, key: Key, datagram: &[u8]) {
        let listener = self.listener.clone();
        let Ok(header) = long_header(datagram) else {
            return listener.metrics.quic_dropped(Dropped::NotInitial);
        };
        if header.version != VERSION_NEGOTIATION && Version::from_wire(header.version).is_none() {
            if datagram.len() >= MIN_INITIAL_DATAGRAM {
                let answer = version_negotiation(header.dcid, header.scid);
                if let Err(e) = Replies::new(&self.socket, self.transparent(), key).and_then(|r| r.try_send(&answer)) {
                    tracing::debug!(client = %key.0, error = %e, "cannot send a Version Negotiation");
                }
                let mut record = self.record(key);
                record.stage = Stage::Hello;
                let error = QuicError::Version(header.version);
                finish(&listener, record, Instant::now(), Some(Denied::failed(error.reason(), error)));
            }
            return listener.metrics.quic_dropped(Dropped::NotInitial);
        }
        if !header.is_initial() {
            return listener.metrics.quic_dropped(Dropped::NotInitial);
        }
        // The source first: one over its limits must not make others' flows room for it. Its
        // QUIC budget only: the address is unproven, and must not cost its TCP connections.
        let source = match listener.sources.admit_flow(key.0.ip()) {
            Ok(source) => source,
            Err(e) => {
                let denied = Denied::failed(Reason::SourceLimit, e).answered(Reply::Silent);
                return finish(&listener, self.record(key), Instant::now(), Some(denied));
            }
        };
        let undecided =
            |id| matches!(self.flows.get(id), Some(Flow { state: FlowState::Reading(_) | FlowState::Opening(_), .. }));
        if self.index.at(key).iter().filter(|id| undecided(id)).count() >= MAX_UNDECIDED_PER_ADDR {
            let error = format!("{MAX_UNDECIDED_PER_ADDR} connections from {} are being decided", key.0);
            let denied = Denied::failed(Reason::SourceLimit, error).answered(Reply::Silent);
            return finish(&listener, self.record(key), Instant::now(), Some(denied));
        }
        if self.flows.len() >= listener.live.load().limits.max_flows && !self.evict_oldest() {
            return listener.metrics.quic_dropped(Dropped::Full);
        }
        let Some(slot) = listener.slots.try_take() else {
            return listener.metrics.quic_dropped(Dropped::Full);
        };
        let held = Held { _slot: slot, _active: listener.metrics.accepted(), _source: source };
        let limits = QuicLimits { hello: listener.live.load().hello_limits(), max_datagrams: DEFAULT_MAX_DATAGRAMS };
        let mut inspector = Inspector::new(limits);
        let answer = inspector.push(datagram);
        let started = Instant::now();
        let record = self.record(key);
        let pending = Pending { buffered: Datagrams::one(datagram), record, started, dcid: dcid(&header), held };
        let id = FlowId(self.next);
        self.next += 1;
        self.index.add_flow(id, key);
        let mut cids = Vec::new();
        if let Some(dcid) = Cid::new(header.dcid)
            && self.index.add_cid(id, key, dcid)
        {
            cids.push(dcid);
        }
        self.order.push_back((started, id));
        self.inspected(id, key, cids, Box::new(Reading { inspector, pending }), answer);
    }

    /// The record of a new flow.
    fn record(&self, key: Key) -> Outcome {
        let mut record = Outcome::accepted(self.listener.name.clone(), key.0);
        record.protocol = Seen::Quic;
        if self.transparent() {
            record.original_dst = Some(key.1);
        }
        record
    }

    /// Acts on the inspector's answer for flow `id`, taken out of the table: it goes back while
    /// its hello is incomplete, on as `Opening` once allowed, and out, recorded, when denied.
    fn inspected(&mut self, id: FlowId, key: Key, cids: Vec<Cid>, reading: Box<Reading>, answer: Inspect) {
        match answer {
            Inspect::Incomplete => drop(self.flows.insert(id, Flow { key, cids, state: FlowState::Reading(reading) })),
            Inspect::Invalid(e) => {
                self.index.remove(id, key, &cids);
                let Reading { inspector, pending } = *reading;
                self.deny(key, inspector.initial(), pending, Denied::failed(e.reason(), e));
            }
            Inspect::Complete(hello) => self.decide(id, key, cids, *reading, hello),
        }
    }

    /// Flow `id`'s hello is complete: admission decides; an allowed flow's upstream is opened
    /// in a task of its own, and the flow waits for it as `Opening`.
    fn decide(&mut self, id: FlowId, key: Key, cids: Vec<Cid>, reading: Reading, hello: ClientHello) {
        let Reading { inspector, mut pending } = reading;
        let initial = inspector.initial();
        // The inspector's state goes; what checks the client's later packets stays.
        let Some(follower) = inspector.into_follower() else {
            self.index.remove(id, key, &cids);
            let error = "the complete hello's bytes could not be kept to check the flow's later packets";
            return self.deny(key, initial, pending, Denied::failed(Reason::Malformed, error));
        };
        let listener = &self.listener;
        let record = &mut pending.record;
        admission::hello_read(listener, record, &hello, pending.started.elapsed().as_secs_f64());
        record.stage = Stage::Decide;
        let admitted =
            Ask::hello(listener, hello, || Ok(key.1)).and_then(|ask| admission::admit(listener, ask, record));
        let admitted = match admitted {
            Ok(admitted) => admitted,
            Err(denied) => {
                self.index.remove(id, key, &cids);
                return self.deny(key, Some(follower.initial()), pending, denied);
            }
        };
        record.stage = Stage::Resolve;
        let (listener, events) = (listener.clone(), self.events.clone());
        tokio::spawn(async move {
            let opened = open_upstream(&listener, key.0.ip(), admitted).await;
            let _ = events.send(Event::Opened(id, opened));
        });
        let state = FlowState::Opening(Box::new(Opening { follower, pending }));
        self.flows.insert(id, Flow { key, cids, state });
    }

    /// What a flow's task reports.
    pub fn event(&mut self, event: Event) {
        match event {
            Event::Ended(id) => {
                // Its record is finished: the relay did it before it reported.
                if let Some(Flow { key, cids, .. }) = self.flows.remove(&id) {
                    self.index.remove(id, key, &cids);
                    self.freed.0 += 1;
                }
            }
            Event::ServerCid(id, cid) => {
                if let Some(flow) = self.flows.get_mut(&id)
                    && self.index.add_cid(id, flow.key, cid)
                {
                    flow.cids.push(cid);
                }
            }
            Event::Opened(id, opened) => self.opened(id, opened),
            Event::Stray((client, to), datagram) => self.datagram(&datagram, client, Some(to)),
        }
    }

    /// Flow `id`'s upstream is open, or could not be: the flow opens, relayed by a task of its
    /// own, or is denied.
    fn opened(&mut self, id: FlowId, opened: Result<(UdpSocket, SocketAddr), Denied>) {
        // A flow leaves `Opening` only here, so it is still in the table: the other paths
        // (eviction, the hello deadline) take only flows being read.
        let Some((id, Flow { key, cids, state })) = self.flows.remove_entry(&id) else {
            return tracing::warn!(listener = %self.listener.name, "an upstream opened for a flow no longer known");
        };
        let opening = match state {
            FlowState::Opening(opening) => opening,
            state => {
                tracing::warn!(listener = %self.listener.name, "an upstream opened for a flow not opening one");
                return drop(self.flows.insert(id, Flow { key, cids, state }));
            }
        };
        let Opening { follower, pending } = *opening;
        let (upstream, addr) = match opened {
            Ok(opened) => opened,
            Err(denied) => {
                self.index.remove(id, key, &cids);
                return self.deny(key, Some(follower.initial()), pending, denied);
            }
        };
        let Pending { buffered, mut record, started, held, .. } = pending;
        self.listener.metrics.connected(started.elapsed().as_secs_f64());
        record.upstream = Some(addr);
        // Where the upstream's datagrams go back: set up before anything is forwarded.
        let reply = match Replies::new(&self.socket, self.transparent(), key) {
            Ok(reply) => reply,
            Err(e) => {
                self.index.remove(id, key, &cids);
                let error = format!("cannot answer from {}: {e}", key.1);
                return finish(&self.listener, record, started, Some(Denied::failed(Reason::UpstreamError, error)));
            }
        };
        record.stage = Stage::Splice;
        let open = Arc::new(Open::new(key, upstream, reply, follower));
        for datagram in buffered.iter() {
            forward(&self.listener, &open, datagram);
        }
        self.flows.insert(id, Flow { key, cids, state: FlowState::Open(open.clone()) });
        let (listener, events) = (self.listener.clone(), self.events.clone());
        tokio::spawn(run_open(listener, id, open, record, started, held, events));
    }

    /// Ends a flow being decided, already out of the table and its index, as denied: answers
    /// the client as configured, logs and counts the flow, and drops its later long-header
    /// datagrams (those to its first connection ID) until it is forgotten.
    fn deny(&mut self, key: Key, initial: Option<Initial>, pending: Pending, denied: Denied) {
        let listener = self.listener.clone();
        let live = listener.live.load();
        let limits = &live.limits;
        self.freed = (self.freed.0 + 1, self.freed.1 + pending.buffered.bytes());
        let until = Instant::now() + limits.flow_idle_timeout();
        while self.denied.len() >= limits.max_flows {
            let Some((at, old)) = self.denied_order.pop_front() else { break };
            if self.denied.get(&old) == Some(&at) {
                self.denied.remove(&old);
            }
        }
        let remembered = (key, pending.dcid);
        self.denied.insert(remembered, until);
        self.denied_order.push_back((until, remembered));
        if denied.reply == Reply::Usual
            && listener.reject == RejectStyle::Alert
            && let Some(initial) = initial
        {
            let (dcid, scid) = (initial.dcid.as_bytes(), initial.scid.as_bytes());
            let close = close_datagram(initial.version, dcid, scid, ACCESS_DENIED, denied.reason.as_str());
            if let Err(e) = Replies::new(&self.socket, self.transparent(), key).and_then(|r| r.try_send(&close)) {
                tracing::debug!(client = %key.0, error = %e, "cannot send the QUIC denial");
            }
        }
        finish(&listener, pending.record, pending.started, Some(denied));
    }

    /// Takes flow `id` out of the table and its index if its hello is being read; leaves it
    /// otherwise.
    fn take_reading(&mut self, id: FlowId) -> Option<(Key, Box<Reading>)> {
        let (id, Flow { key, cids, state }) = self.flows.remove_entry(&id)?;
        match state {
            FlowState::Reading(reading) => {
                self.index.remove(id, key, &cids);
                Some((key, reading))
            }
            state => {
                self.flows.insert(id, Flow { key, cids, state });
                None
            }
        }
    }

    /// Denies flow `id` if its hello is still being read, silently (a flow that sent no complete
    /// hello gets no answer); false when it is not being read.
    fn give_up(&mut self, id: FlowId, error: String) -> bool {
        let Some((key, reading)) = self.take_reading(id) else { return false };
        let Reading { inspector, pending } = *reading;
        let denied = Denied::failed(Reason::HelloTimeout, error).answered(Reply::Silent);
        self.deny(key, inspector.initial(), pending, denied);
        true
    }

    /// Makes room in a full table: the flow that has waited longest for its hello goes, as on
    /// TCP. False when no flow is waiting for its hello.
    fn evict_oldest(&mut self) -> bool {
        while let Some((_, id)) = self.order.pop_front() {
            let error = "evicted: the flow table is full and this flow had waited longest for its hello";
            if self.give_up(id, error.into()) {
                return true;
            }
        }
        false
    }

    /// Flows past their hello deadline are denied; denied flows past their time are forgotten.
    pub fn sweep(&mut self) {
        let now = Instant::now();
        let hello_timeout = self.listener.live.load().limits.hello_timeout();
        while let Some(&(until, key)) = self.denied_order.front() {
            if until > now {
                break;
            }
            self.denied_order.pop_front();
            if self.denied.get(&key) == Some(&until) {
                self.denied.remove(&key);
                self.freed.0 += 1;
            }
        }
        let flows = &self.flows;
        self.order.retain(|(_, id)| matches!(flows.get(id), Some(Flow { state: FlowState::Reading(_), .. })));
        while let Some(&(started, id)) = self.order.front() {
            if now.duration_since(started) < hello_timeout {
                break;
            }
            self.order.pop_front();
            self.give_up(id, format!("no complete ClientHello within {hello_timeout:?}"));
        }
        if self.freed.0 >= TRIM_FLOWS || self.freed.1 >= TRIM_BYTES {
            self.trim();
        }
    }

    /// Gives back what many freed flows held: the table's own spare capacity, then the
    /// allocator's free memory, to the system.
    fn trim(&mut self) {
        self.freed = (0, 0);
        self.flows.shrink_to_fit();
        self.order.shrink_to_fit();
        self.denied.shrink_to_fit();
        self.denied_order.shrink_to_fit();
        self.index.shrink_to_fit();
        crate::sys::trim_heap();
    }
}

/// The Destination Connection ID of a client's long header, as the flow it starts is
/// remembered by: empty when it cannot be one.
fn dcid(header: &LongHeader<'_>) -> Cid {
    Cid::new(header.dcid).unwrap_or_default()
}

/// A client datagram of an open flow, to the upstream (or dropped, and counted).
fn forward(listener: &Listener, open: &Open, datagram: &[u8]) {
    if let Err(cause) = open.client_sent(datagram) {
        listener.metrics.quic_dropped(cause);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(port: u16) -> Key {
        (SocketAddr::from(([192, 0, 2, 1], port)), SocketAddr::from(([198, 51, 100, 1], 443)))
    }

    fn cid(bytes: &[u8]) -> Cid {
        Cid::new(bytes).unwrap()
    }

    /// A long header's first bytes addressed to `dcid`: enough for the index to read it.
    fn long_to(dcid: &[u8]) -> Vec<u8> {
        let mut d = vec![0xc0, 0, 0, 0, 1, dcid.len() as u8];
        d.extend_from_slice(dcid);
        d.extend_from_slice(&[0, 0, 1, 0]);
        d
    }

    #[test]
    fn connection_ids_find_their_flow_within_their_address_pair() {
        let mut index = Index::default();
        let (old, new) = (FlowId(1), FlowId(2));
        index.add_flow(old, key(1));
        assert!(index.add_cid(old, key(1), cid(&[1; 8])));
        index.add_flow(new, key(1));
        assert!(index.add_cid(new, key(1), cid(&[2; 8])));
        assert!(index.add_cid(old, key(1), cid(&[9; 5])), "a server's ID");
        assert!(!index.add_cid(new, key(1), cid(&[9; 5])), "taken by the other flow");
        assert!(!index.add_cid(new, key(1), cid(&[])), "an empty ID identifies nothing");
        assert_eq!(index.by_cid(key(1), &long_to(&[1; 8])), Some(old));
        assert_eq!(index.by_cid(key(1), &long_to(&[2; 8])), Some(new));
        // A short header, to the server's ID, whatever follows it.
        assert_eq!(index.by_cid(key(1), &[&[0x40][..], &[9; 5], &[7; 30]].concat()), Some(old));
        assert_eq!(index.by_cid(key(1), &long_to(&[3; 8])), None);
        assert_eq!(index.by_cid(key(1), &[0x40, 3, 3, 3, 3, 3, 3]), None);
        assert_eq!(index.at(key(1)), [old, new], "oldest first");
        // IDs belong to their address pair: another client's datagram is not steered by them.
        assert_eq!(index.by_cid(key(2), &long_to(&[1; 8])), None);
        index.remove(new, key(1), &[cid(&[2; 8])]);
        assert_eq!(index.by_cid(key(1), &long_to(&[2; 8])), None);
        assert_eq!(index.at(key(1)), [old]);
        index.remove(old, key(1), &[cid(&[1; 8]), cid(&[9; 5])]);
        assert_eq!(index.by_cid(key(1), &long_to(&[1; 8])), None);
        assert!(index.by_addr.is_empty() && index.by_cid.is_empty());
        assert_eq!(index.lengths, [0; MAX_CID_LEN + 1]);
    }
}
