//! QUIC listeners (`protocol = "quic"`): UDP flows decided by the ClientHello in their Initial
//! packets, then forwarded both ways as opaque datagrams.
//!
//! A flow is a client address and the address it sent to (the original destination, with
//! TPROXY). One task per listener owns the flow table: it inspects the datagrams of flows being
//! decided (buffering them, bounded), decides with the same rules, destination guard, limits,
//! metrics and log as TCP, and forwards the client's datagrams of allowed flows. Each allowed
//! flow has a task that relays the upstream's datagrams back, until the flow is idle for
//! `flow_idle_timeout`. Denied flows get a CONNECTION_CLOSE with `reject = "alert"` (so that
//! clients fall back to TCP at once), and their later datagrams are dropped until forgotten.

use std::collections::{HashMap, VecDeque};
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socket2::{Domain, SockRef, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::admission::{self, Admitted, Ask};
use super::listener::{Listener, ListenerMode, Slot};
use super::reject::{Denied, Reply};
use super::sources::SourceSlot;
use crate::config::RejectStyle;
use crate::hello::quic::{
    ACCESS_DENIED, Cid, DEFAULT_MAX_DATAGRAMS, Follower, Initial, Inspect, Inspector, MIN_INITIAL_DATAGRAM, QuicError,
    QuicLimits, VERSION_NEGOTIATION, Version, close_datagram, is_long_header, long_header, version_negotiation,
};
use crate::metrics::registry::{ActiveGuard, Dropped};
use crate::outcome::{Outcome, Seen, Stage};
use crate::reason::Reason;

/// Largest datagram relayed; a larger one is dropped (path MTU discovery then settles below it).
pub(super) const MAX_DATAGRAM: usize = 2048;
/// Most datagrams a flow holds while it is decided.
const MAX_BUFFERED: usize = DEFAULT_MAX_DATAGRAMS * 2;
/// How often flows past their deadlines are looked for.
const SWEEP: Duration = Duration::from_millis(250);
/// Most server connection IDs remembered per flow (a server picks one, maybe a few).
const MAX_SERVER_CIDS: usize = 4;

/// A flow: the client, and the address it sent to.
type Key = (SocketAddr, SocketAddr);

/// What the listener's task knows of a flow it has not denied.
enum Flow {
    /// Its hello is being read, or its upstream opened.
    Deciding(Box<Deciding>),
    /// Allowed: forwarded both ways.
    Open(Arc<Open>),
}

/// A flow not decided yet.
struct Deciding {
    /// Reads the hello; `None` once it is complete.
    inspector: Option<Inspector>,
    /// Watches the client's later packets once the hello is complete.
    follower: Option<Follower>,
    /// Every datagram received so far: sent upstream, in order, once allowed.
    buffered: Vec<Vec<u8>>,
    record: Outcome,
    started: Instant,
    /// The upstream is being opened (the rules allowed the flow).
    opening: bool,
    held: Held,
}

impl Deciding {
    /// The flow's first Initial packet's version and connection IDs, once read.
    fn initial(&self) -> Option<Initial> {
        self.follower.as_ref().map(Follower::initial).or_else(|| self.inspector.as_ref()?.initial())
    }
}

/// What a flow holds while it lives: a slot of the listener, the `active` gauge, and its place
/// in its source's counts.
struct Held {
    _slot: Slot,
    _active: ActiveGuard,
    source: SourceSlot,
}

/// An allowed flow, shared by the listener's task (client → upstream) and the flow's relay
/// (upstream → client).
struct Open {
    upstream: UdpSocket,
    /// Checks the client's long-header packets: no second hello reaches the server unread.
    follower: Mutex<Follower>,
    /// The Source Connection IDs of the server's long-header packets: the client's later
    /// Initials are addressed to one of them.
    server_cids: Mutex<Vec<Cid>>,
    born: Instant,
    /// Milliseconds from `born` to the last datagram either way.
    last: AtomicU64,
    up: AtomicU64,
    down: AtomicU64,
}

impl Open {
    fn touch(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    /// A client datagram of the flow, forwarded unless a long-header packet in it could start
    /// a connection snigate has not decided (see [`Follower`]).
    fn client_sent(&self, datagram: &[u8]) -> Result<(), Dropped> {
        if datagram.first().is_some_and(|&b| is_long_header(b)) {
            let cids = self.server_cids.lock().unwrap_or_else(|e| e.into_inner());
            let mut follower = self.follower.lock().unwrap_or_else(|e| e.into_inner());
            follower.check(datagram, &cids).map_err(|_| Dropped::OtherHello)?;
        }
        // Sent on the descriptor: tokio's `try_send` refuses until the reactor has seen the new
        // socket writable, and a flow's first datagrams go out right after the socket opens.
        if SockRef::from(&self.upstream).send(datagram).is_ok() {
            self.up.fetch_add(datagram.len() as u64, Ordering::Relaxed);
        }
        self.touch();
        Ok(())
    }

    /// A server datagram of the flow: its connection IDs are learned.
    fn server_sent(&self, datagram: &[u8]) {
        if let Ok(header) = long_header(datagram)
            && let Some(cid) = Cid::new(header.scid)
        {
            let mut cids = self.server_cids.lock().unwrap_or_else(|e| e.into_inner());
            if !cids.contains(&cid) && cids.len() < MAX_SERVER_CIDS {
                cids.push(cid);
            }
        }
        self.down.fetch_add(datagram.len() as u64, Ordering::Relaxed);
        self.touch();
    }
}

/// What the flows' tasks tell the listener's task.
enum Event {
    /// The upstream of an allowed flow is open, or could not be.
    Opened(Key, Result<(UdpSocket, SocketAddr), Denied>),
    /// An allowed flow ended.
    Ended(Key),
}

/// A QUIC listener's socket: bound (IP_TRANSPARENT with `tproxy`), reporting each datagram's
/// original destination.
pub(super) fn bind(addr: SocketAddr, tproxy: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM.nonblocking(), None)?;
    prepare(&socket, addr.is_ipv6(), tproxy)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// A passed UDP socket (a handover), set up like one snigate binds.
pub(super) fn adopt(socket: Socket) -> io::Result<Socket> {
    if socket.r#type()? != Type::DGRAM {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "the passed socket is not a UDP socket"));
    }
    let ipv6 = socket.local_addr()?.is_ipv6();
    socket.set_nonblocking(true)?;
    crate::sys::set_recv_original_dst(socket.as_fd(), ipv6)?;
    Ok(socket)
}

/// The receive and send buffers asked for a QUIC listener's socket (the kernel caps them at
/// `net.core.rmem_max` / `wmem_max`): the default 208 KiB overflows at about 120 datagrams in
/// flight (`benches/quic.rs`).
const SOCKET_BUFFER: usize = 4 << 20;

fn prepare(socket: &Socket, ipv6: bool, tproxy: bool) -> io::Result<()> {
    if ipv6 {
        socket.set_only_v6(true)?;
    }
    // Best effort: a smaller buffer only means earlier drops under load.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    if tproxy && !ipv6 {
        socket.set_ip_transparent_v4(true)?;
    } else if tproxy {
        socket.set_ip_transparent_v6(true)?;
    }
    crate::sys::set_recv_original_dst(socket.as_fd(), ipv6)
}

/// Serves one QUIC listener until the task is stopped.
pub(super) async fn serve(socket: Socket, listener: Arc<Listener>) {
    let socket = match UdpSocket::from_std(std::net::UdpSocket::from(socket)) {
        Ok(s) => Arc::new(s),
        Err(e) => return tracing::error!(listener = %listener.name, error = %e, "cannot register the QUIC socket"),
    };
    let (events, mut incoming) = mpsc::unbounded_channel();
    let mut table = Table {
        flows: HashMap::new(),
        order: VecDeque::new(),
        denied: HashMap::new(),
        denied_order: VecDeque::new(),
        listener,
        socket: socket.clone(),
        events,
    };
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut sweep = tokio::time::interval(SWEEP);
    loop {
        tokio::select! {
            received = socket.async_io(Interest::READABLE, || crate::sys::recv_from_to(socket.as_fd(), &mut buf)) => {
                match received {
                    Ok((n, _, _)) if n > MAX_DATAGRAM => table.listener.metrics.quic_dropped(Dropped::Buffer),
                    Ok((n, client, to)) => table.datagram(&buf[..n], client, to),
                    Err(e) => {
                        table.listener.metrics.accept_failed();
                        tracing::warn!(listener = %table.listener.name, error = %e, "receiving a datagram failed");
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            }
            Some(event) = incoming.recv() => table.event(event),
            _ = sweep.tick() => table.sweep(),
        }
    }
}

/// A listener's flows, owned by its task.
struct Table {
    /// Flows being decided and allowed flows: at most `max_flows`.
    flows: HashMap<Key, Flow>,
    /// Flows in the order they started, for eviction (entries of flows since decided or gone
    /// are skipped, and pruned by the sweep).
    order: VecDeque<(Instant, Key)>,
    /// Denied flows, until their datagrams are no longer dropped: at most `max_flows`, the
    /// oldest forgotten first.
    denied: HashMap<Key, Instant>,
    /// `denied` in the order the flows were denied.
    denied_order: VecDeque<(Instant, Key)>,
    listener: Arc<Listener>,
    socket: Arc<UdpSocket>,
    events: mpsc::UnboundedSender<Event>,
}

impl Table {
    fn datagram(&mut self, datagram: &[u8], client: SocketAddr, to: Option<SocketAddr>) {
        let key = (client, to.unwrap_or(self.listener.listen));
        let metrics = &self.listener.metrics;
        if self.denied.contains_key(&key) {
            return metrics.quic_dropped(Dropped::Denied);
        }
        match self.flows.get_mut(&key) {
            None => self.start(key, datagram),
            Some(Flow::Open(open)) => {
                if let Err(cause) = open.client_sent(datagram) {
                    metrics.quic_dropped(cause);
                }
            }
            Some(Flow::Deciding(flow)) if flow.buffered.len() >= MAX_BUFFERED => metrics.quic_dropped(Dropped::Buffer),
            Some(Flow::Deciding(flow)) => {
                flow.buffered.push(datagram.to_vec());
                if let Some(inspector) = &mut flow.inspector {
                    let answer = inspector.push(datagram);
                    self.inspected(key, answer);
                }
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
                let _ = Replies::answer(&self.socket, &listener, key, &answer);
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
        // The source first: one over its limits must not make others' flows room for it.
        let source = match listener.sources.admit(key.0.ip()) {
            Ok(source) => source,
            Err(e) => {
                let denied = Denied::failed(Reason::SourceLimit, e).answered(Reply::Silent);
                return finish(&listener, self.record(key), Instant::now(), Some(denied));
            }
        };
        if self.flows.len() >= listener.live.load().limits.max_flows && !self.evict_oldest() {
            return listener.metrics.quic_dropped(Dropped::Full);
        }
        let Some(slot) = listener.slots.try_take() else {
            return listener.metrics.quic_dropped(Dropped::Full);
        };
        let held = Held { _slot: slot, _active: listener.metrics.accepted(), source };
        let limits = QuicLimits { hello: listener.live.load().hello_limits(), max_datagrams: DEFAULT_MAX_DATAGRAMS };
        let mut inspector = Inspector::new(limits);
        let answer = inspector.push(datagram);
        let started = Instant::now();
        let flow = Deciding {
            inspector: Some(inspector),
            follower: None,
            buffered: vec![datagram.to_vec()],
            record: self.record(key),
            started,
            opening: false,
            held,
        };
        self.flows.insert(key, Flow::Deciding(Box::new(flow)));
        self.order.push_back((started, key));
        self.inspected(key, answer);
    }

    /// The record of a new flow.
    fn record(&self, key: Key) -> Outcome {
        let mut record = Outcome::accepted(self.listener.name.clone(), key.0);
        record.protocol = Seen::Quic;
        if matches!(self.listener.mode, ListenerMode::Transparent { .. }) {
            record.original_dst = Some(key.1);
        }
        record
    }

    /// Acts on the inspector's answer for flow `key`.
    fn inspected(&mut self, key: Key, answer: Inspect) {
        match answer {
            Inspect::Incomplete => {}
            Inspect::Invalid(e) => self.deny(key, Denied::failed(e.reason(), e)),
            Inspect::Complete(hello) => {
                let Some(Flow::Deciding(flow)) = self.flows.get_mut(&key) else { return };
                // The inspector's state goes; what checks the client's later packets stays.
                flow.follower = flow.inspector.take().and_then(Inspector::into_follower);
                let listener = &self.listener;
                let record = &mut flow.record;
                admission::hello_read(listener, record, &hello, flow.started.elapsed().as_secs_f64());
                record.stage = Stage::Decide;
                let admitted =
                    Ask::hello(listener, hello, || Ok(key.1)).and_then(|ask| admission::admit(listener, ask, record));
                let admitted = match admitted {
                    Ok(admitted) => admitted,
                    Err(denied) => return self.deny(key, denied),
                };
                flow.held.source.decided();
                flow.opening = true;
                record.stage = Stage::Resolve;
                let (listener, events) = (listener.clone(), self.events.clone());
                tokio::spawn(async move {
                    let opened = open_upstream(&listener, key.0.ip(), admitted).await;
                    let _ = events.send(Event::Opened(key, opened));
                });
            }
        }
    }

    fn event(&mut self, event: Event) {
        match event {
            Event::Ended(key) => {
                self.flows.remove(&key);
            }
            Event::Opened(key, Err(denied)) => self.deny(key, denied),
            Event::Opened(key, Ok((upstream, addr))) => {
                if !matches!(self.flows.get(&key), Some(Flow::Deciding(_))) {
                    return;
                }
                let Some(Flow::Deciding(flow)) = self.flows.remove(&key) else { return };
                let Deciding { follower, buffered, mut record, started, held, .. } = *flow;
                let Some(follower) = follower else { return };
                self.listener.metrics.connected(started.elapsed().as_secs_f64());
                record.upstream = Some(addr);
                // Where the upstream's datagrams go back: set up before anything is forwarded.
                let reply = match self.listener.mode {
                    ListenerMode::Transparent { .. } => match Replies::transparent(key) {
                        Ok(r) => r,
                        Err(e) => {
                            let error = format!("cannot answer from {}: {e}", key.1);
                            return finish(
                                &self.listener,
                                record,
                                started,
                                Some(Denied::failed(Reason::UpstreamError, error)),
                            );
                        }
                    },
                    _ => Replies::Shared(self.socket.clone(), key.0),
                };
                record.stage = Stage::Splice;
                let open = Arc::new(Open {
                    upstream,
                    follower: Mutex::new(follower),
                    server_cids: Mutex::new(Vec::new()),
                    born: Instant::now(),
                    last: AtomicU64::new(0),
                    up: AtomicU64::new(0),
                    down: AtomicU64::new(0),
                });
                for datagram in &buffered {
                    if let Err(cause) = open.client_sent(datagram) {
                        self.listener.metrics.quic_dropped(cause);
                    }
                }
                self.flows.insert(key, Flow::Open(open.clone()));
                let (listener, events) = (self.listener.clone(), self.events.clone());
                tokio::spawn(async move {
                    relay(&listener, &open, &reply).await.map_or_else(|e| record.error = Some(e), |()| ());
                    record.bytes_up = open.up.load(Ordering::Relaxed);
                    record.bytes_down = open.down.load(Ordering::Relaxed);
                    finish(&listener, record, started, None);
                    drop(held);
                    let _ = events.send(Event::Ended(key));
                });
            }
        }
    }

    /// Ends flow `key`, while it is being decided, as denied: answers the client as configured,
    /// logs and counts the flow, and drops its later datagrams until it is forgotten.
    fn deny(&mut self, key: Key, denied: Denied) {
        if !matches!(self.flows.get(&key), Some(Flow::Deciding(_))) {
            return;
        }
        let Some(Flow::Deciding(flow)) = self.flows.remove(&key) else { return };
        let listener = self.listener.clone();
        let live = listener.live.load();
        let limits = &live.limits;
        let until = Instant::now() + limits.flow_idle_timeout();
        while self.denied.len() >= limits.max_flows {
            let Some((at, old)) = self.denied_order.pop_front() else { break };
            if self.denied.get(&old) == Some(&at) {
                self.denied.remove(&old);
            }
        }
        self.denied.insert(key, until);
        self.denied_order.push_back((until, key));
        if denied.reply == Reply::Usual
            && listener.reject == RejectStyle::Alert
            && let Some(initial) = flow.initial()
        {
            let (dcid, scid) = (initial.dcid.as_bytes(), initial.scid.as_bytes());
            let close = close_datagram(initial.version, dcid, scid, ACCESS_DENIED, denied.reason.as_str());
            if let Err(e) = Replies::answer(&self.socket, &listener, key, &close) {
                tracing::debug!(client = %key.0, error = %e, "cannot send the QUIC denial");
            }
        }
        let Deciding { record, started, .. } = *flow;
        finish(&listener, record, started, Some(denied));
    }

    /// Makes room in a full table: the flow that has waited longest for its hello goes, as on
    /// TCP. False when no flow is waiting for its hello.
    fn evict_oldest(&mut self) -> bool {
        while let Some((started, key)) = self.order.pop_front() {
            if matches!(self.flows.get(&key), Some(Flow::Deciding(d)) if !d.opening && d.started == started) {
                let error = "evicted: the flow table is full and this flow had waited longest for its hello";
                self.deny(key, Denied::failed(Reason::HelloTimeout, error).answered(Reply::Silent));
                return true;
            }
        }
        false
    }

    /// Flows past their hello deadline are denied; denied flows past their time are forgotten.
    fn sweep(&mut self) {
        let now = Instant::now();
        let hello_timeout = self.listener.live.load().limits.hello_timeout();
        while let Some(&(until, key)) = self.denied_order.front() {
            if until > now {
                break;
            }
            self.denied_order.pop_front();
            if self.denied.get(&key) == Some(&until) {
                self.denied.remove(&key);
            }
        }
        let flows = &self.flows;
        let waiting = |&(started, key): &(Instant, Key)| matches!(flows.get(&key), Some(Flow::Deciding(d)) if !d.opening && d.started == started);
        self.order.retain(waiting);
        let late: Vec<Key> = self
            .order
            .iter()
            .take_while(|(started, _)| now.duration_since(*started) >= hello_timeout)
            .map(|&(_, key)| key)
            .collect();
        for key in late {
            let error = format!("no complete ClientHello within {hello_timeout:?}");
            self.deny(key, Denied::failed(Reason::HelloTimeout, error).answered(Reply::Silent));
        }
    }
}

/// Logs and counts a flow that ended, denied with `denied` or allowed.
fn finish(listener: &Listener, mut record: Outcome, started: Instant, denied: Option<Denied>) {
    if let Some(denied) = denied {
        admission::denied(&mut record, &denied);
    }
    record.duration = started.elapsed().as_secs_f64();
    listener.finished(record);
}

/// Routes an allowed flow (its upstream resolved, through the destination guard) and opens a
/// UDP socket connected to the first candidate (with the listener's SO_MARK), within
/// `connect_timeout`.
async fn open_upstream(
    listener: &Listener,
    client: IpAddr,
    admitted: Admitted,
) -> Result<(UdpSocket, SocketAddr), Denied> {
    let timeout = listener.live.load().limits.connect_timeout();
    let route = admitted.route_within(listener, client, timeout).await?;
    let mut errors = Vec::new();
    for &addr in route.addrs() {
        match upstream_socket(addr, listener.mark) {
            Ok(socket) => return Ok((socket, addr)),
            Err(e) => errors.push(format!("{addr}: {e}")),
        }
    }
    Err(Denied::failed(Reason::UpstreamError, errors.join("; ")))
}

fn upstream_socket(addr: SocketAddr, mark: Option<u32>) -> io::Result<UdpSocket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM.nonblocking(), None)?;
    if let Some(mark) = mark {
        socket.set_mark(mark)?;
    }
    socket.connect(&addr.into())?;
    UdpSocket::from_std(socket.into())
}

/// How a flow's datagrams reach its client.
enum Replies {
    /// From the listener's own socket (its address is what the client sent to).
    Shared(Arc<UdpSocket>, SocketAddr),
    /// From a socket bound to the original destination (TPROXY: the client must see the
    /// server's address) and connected to the client. The kernel then delivers the client's
    /// later datagrams of the flow to it too.
    Own(UdpSocket),
}

impl Replies {
    /// Sends `datagram` to the client of flow `key` from the address it sent to: the
    /// listener's own socket, or (transparent mode) a socket bound to the original destination.
    fn answer(socket: &Arc<UdpSocket>, listener: &Listener, key: Key, datagram: &[u8]) -> io::Result<()> {
        match listener.mode {
            ListenerMode::Transparent { .. } => Replies::transparent(key)?.try_send(datagram),
            _ => Replies::Shared(socket.clone(), key.0).try_send(datagram),
        }
    }

    /// A socket that answers as `key`'s destination: IP_TRANSPARENT, bound to it, connected
    /// to the client.
    fn transparent((client, dst): Key) -> io::Result<Replies> {
        let socket = Socket::new(Domain::for_address(dst), Type::DGRAM.nonblocking(), None)?;
        if dst.is_ipv4() {
            socket.set_ip_transparent_v4(true)?;
        } else {
            socket.set_ip_transparent_v6(true)?;
        }
        socket.set_reuse_address(true)?;
        socket.bind(&dst.into())?;
        socket.connect(&client.into())?;
        Ok(Replies::Own(UdpSocket::from_std(socket.into())?))
    }

    fn try_send(&self, datagram: &[u8]) -> io::Result<()> {
        match self {
            Replies::Shared(socket, client) => SockRef::from(&**socket).send_to(datagram, &(*client).into()).map(drop),
            Replies::Own(socket) => SockRef::from(socket).send(datagram).map(drop),
        }
    }

    /// The flow's own socket (TPROXY), where the kernel also delivers the client's later
    /// datagrams.
    fn own(&self) -> Option<&UdpSocket> {
        match self {
            Replies::Shared(..) => None,
            Replies::Own(socket) => Some(socket),
        }
    }
}

/// Most datagrams relayed in one go before the relay lets other tasks run.
const BURST: usize = 64;

thread_local! {
    /// Where relayed datagrams land: one buffer per runtime thread, so that a flow holds none
    /// of its own. It is never held across an await.
    static DATAGRAM: std::cell::RefCell<Box<[u8]>> = std::cell::RefCell::new(vec![0; MAX_DATAGRAM].into_boxed_slice());
}

/// Relays an allowed flow until it is idle for `flow_idle_timeout` (no datagram either way) or
/// the drain deadline passes: the upstream's datagrams to the client, and (TPROXY) the client's
/// datagrams that reach the flow's own socket to the upstream. UDP all the way: a datagram the
/// other side's socket cannot take now is dropped, as the network would.
async fn relay(listener: &Listener, open: &Open, reply: &Replies) -> Result<(), String> {
    let idle = listener.live.load().limits.flow_idle_timeout();
    let own = reply.own();
    loop {
        let last = open.born + Duration::from_millis(open.last.load(Ordering::Relaxed));
        tokio::select! {
            ready = std::future::poll_fn(|cx| open.upstream.poll_recv_ready(cx)) => {
                ready.map_err(|e| format!("receiving from the upstream: {e}"))?;
                burst(&open.upstream, |datagram| {
                    open.server_sent(datagram);
                    let _ = reply.try_send(datagram);
                })
                .map_err(|e| format!("receiving from the upstream: {e}"))?;
            }
            ready = async {
                match own {
                    Some(socket) => std::future::poll_fn(|cx| socket.poll_recv_ready(cx)).await,
                    None => std::future::pending().await,
                }
            } => {
                ready.map_err(|e| format!("receiving from the client: {e}"))?;
                if let Some(socket) = own {
                    burst(socket, |datagram| {
                        if let Err(cause) = open.client_sent(datagram) {
                            listener.metrics.quic_dropped(cause);
                        }
                    })
                    .map_err(|e| format!("receiving from the client: {e}"))?;
                }
            }
            () = tokio::time::sleep_until(last + idle) => {
                // QUIC has no close that snigate can read: a flow ends by going quiet.
                if open.born + Duration::from_millis(open.last.load(Ordering::Relaxed)) + idle <= Instant::now() {
                    return Ok(());
                }
            }
            () = listener.drain.passed() => return Err("cut at the drain deadline".into()),
        }
        tokio::task::yield_now().await;
    }
}

/// Takes up to [`BURST`] datagrams waiting on `socket`, through the thread's buffer. An ICMP
/// error (port unreachable) is the peer's answer, not the flow's end.
fn burst(socket: &UdpSocket, mut each: impl FnMut(&[u8])) -> io::Result<()> {
    DATAGRAM.with_borrow_mut(|buf| {
        for _ in 0..BURST {
            match socket.try_recv(buf) {
                Ok(n) => each(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(()),
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    })
}
