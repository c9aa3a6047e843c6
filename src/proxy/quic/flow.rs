//! A flow's life as types: `Reading` its hello, `Opening` its upstream once allowed, `Open`
//! (relayed both ways). What a flow holds in each state is only what that state needs, so a
//! state that cannot happen cannot be written.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use socket2::{Domain, SockRef, Socket, Type};
use tokio::net::UdpSocket;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::reply::{Key, Replies};
use crate::hello::quic::{Cid, Follower, Inspector, PacketType, is_long_header, long_header};
use crate::metrics::registry::{ActiveGuard, Dropped};
use crate::outcome::Outcome;
use crate::proxy::admission::{self, Admitted};
use crate::proxy::listener::{Listener, Slot};
use crate::proxy::reject::Denied;
use crate::proxy::sources::SourceSlot;
use crate::reason::Reason;

/// Largest datagram relayed; a larger one is dropped (path MTU discovery then settles below it).
pub(super) const MAX_DATAGRAM: usize = 2048;
/// Most server connection IDs remembered per flow (a server picks one, maybe a few).
const MAX_SERVER_CIDS: usize = 4;
/// How many times what a client sent on a flow the server's datagrams toward it may total until
/// it proves its address (RFC 9000 §8.1's anti-amplification limit). The server itself cannot
/// apply it: it sees snigate's address, never the client's.
pub(super) const AMPLIFICATION: u64 = 3;

/// A flow's handle in its listener's table. Never reused, so that an event about a flow that
/// has gone cannot reach a newer one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(super) struct FlowId(pub u64);

/// Where a flow is in its life.
pub(super) enum FlowState {
    /// Its hello is being read.
    Reading(Box<Reading>),
    /// Allowed; its upstream is being opened.
    Opening(Box<Opening>),
    /// Forwarded both ways.
    Open(Arc<Open>),
}

/// A flow whose hello is not complete yet.
pub(super) struct Reading {
    /// Reads the hello from the flow's datagrams.
    pub inspector: Inspector,
    /// What the flow holds until it opens.
    pub pending: Pending,
}

/// An allowed flow whose upstream is not open yet.
pub(super) struct Opening {
    /// Checks the client's later packets once the upstream is open.
    pub follower: Follower,
    /// What the flow holds until it opens.
    pub pending: Pending,
}

/// Datagrams held while a flow is decided: back to back in one allocation sized to them, so
/// that a flow holds the bytes its client sent and a few words, nothing ahead of them.
#[derive(Default)]
pub(super) struct Datagrams {
    /// The datagrams' bytes, in order.
    bytes: Vec<u8>,
    /// Where each datagram ends in `bytes`.
    ends: Vec<u32>,
}

impl Datagrams {
    /// Held datagrams: `datagram` alone.
    pub fn one(datagram: &[u8]) -> Datagrams {
        let mut held = Datagrams::default();
        held.push(datagram);
        held
    }

    /// Appends `datagram` (at most [`MAX_DATAGRAM`] bytes; a flow holds a few).
    pub fn push(&mut self, datagram: &[u8]) {
        // Exact: a flow holds a few datagrams, and a doubled buffer would hold up to twice them.
        self.bytes.reserve_exact(datagram.len());
        self.bytes.extend_from_slice(datagram);
        self.ends.reserve_exact(1);
        self.ends.push(u32::try_from(self.bytes.len()).unwrap_or(u32::MAX));
    }

    /// How many are held.
    pub fn len(&self) -> usize {
        self.ends.len()
    }

    /// Their bytes in all.
    pub fn bytes(&self) -> usize {
        self.bytes.len()
    }

    /// The datagrams, in the order they came.
    pub fn iter(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts.zip(&self.ends).map(|(start, &end)| &self.bytes[start as usize..end as usize])
    }
}

/// What a flow holds until it is open: its datagrams, for the upstream, and its record.
pub(super) struct Pending {
    /// Every datagram received so far: sent upstream, in order, once open.
    pub buffered: Datagrams,
    /// Its log line and metrics, filled as it goes.
    pub record: Outcome,
    /// When its first datagram came: its duration and hello deadline count from here.
    pub started: Instant,
    /// The client's first Destination Connection ID as sent (empty when it cannot be one):
    /// what a denial is remembered by.
    pub dcid: Cid,
    pub held: Held,
}

/// What a flow holds while it lives: a slot of the listener, the `active` gauge, and its place
/// in its source's counts.
pub(super) struct Held {
    /// A slot of the listener's `max_connections`, given back when dropped.
    pub _slot: Slot,
    /// The `active` gauge's count of it.
    pub _active: ActiveGuard,
    /// Its place in its source's QUIC budget (`max_quic_flows_per_source`), for its life.
    pub _source: SourceSlot,
}

/// What the flows' tasks tell the listener's task.
pub(super) enum Event {
    /// The upstream of an allowed flow is open, or could not be.
    Opened(FlowId, Result<(UdpSocket, SocketAddr), Denied>),
    /// The server chose a connection ID for the flow: the client's later packets may be
    /// addressed to it.
    ServerCid(FlowId, Cid),
    /// An allowed flow ended, its record finished.
    Ended(FlowId),
    /// A client datagram that reached a flow's own socket (TPROXY) but is addressed to another
    /// connection of the same address pair: the kernel delivers by address alone.
    Stray(Key, Vec<u8>),
}

/// An allowed flow, shared by the listener's task (client → upstream) and the flow's relay
/// (upstream → client).
pub(super) struct Open {
    /// The address pair it serves.
    key: Key,
    upstream: UdpSocket,
    /// How the upstream's datagrams reach the client, chosen when the flow opened.
    reply: Replies,
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
    /// Bytes the client's address sent on the flow, forwarded or not: three times them bound
    /// what reaches that address until it is validated.
    from_client: AtomicU64,
    /// Bytes relayed to the client.
    to_client: AtomicU64,
    /// The client has proved its address (see [`Open::proves_address`]): no more bound.
    validated: AtomicBool,
}

impl Open {
    /// An allowed flow, relayed between `upstream` and its client through `reply`.
    pub fn new(key: Key, upstream: UdpSocket, reply: Replies, follower: Follower) -> Open {
        Open {
            key,
            upstream,
            reply,
            follower: Mutex::new(follower),
            server_cids: Mutex::new(Vec::new()),
            born: Instant::now(),
            last: AtomicU64::new(0),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
            from_client: AtomicU64::new(0),
            to_client: AtomicU64::new(0),
            validated: AtomicBool::new(false),
        }
    }

    fn touch(&self) {
        let ms = u64::try_from(self.born.elapsed().as_millis()).unwrap_or(u64::MAX);
        self.last.store(ms, Ordering::Relaxed);
    }

    /// A client datagram of the flow, forwarded unless a long-header packet in it could start
    /// a connection snigate has not decided (see [`Follower`]).
    pub fn client_sent(&self, datagram: &[u8]) -> Result<(), Dropped> {
        self.from_client.fetch_add(datagram.len() as u64, Ordering::Relaxed);
        if datagram.first().is_some_and(|&b| is_long_header(b)) {
            let cids = self.server_cids.lock().unwrap_or_else(|e| e.into_inner());
            let mut follower = self.follower.lock().unwrap_or_else(|e| e.into_inner());
            follower.check(datagram, &cids).map_err(|_| Dropped::OtherHello)?;
        }
        if !self.validated.load(Ordering::Relaxed) && self.proves_address(datagram) {
            self.validated.store(true, Ordering::Relaxed);
        }
        // Sent on the descriptor: tokio's `try_send` refuses until the reactor has seen the new
        // socket writable, and a flow's first datagrams go out right after the socket opens.
        if SockRef::from(&self.upstream).send(datagram).is_ok() {
            self.up.fetch_add(datagram.len() as u64, Ordering::Relaxed);
        }
        self.touch();
        Ok(())
    }

    /// Whether a client datagram proves that the client's address is its own: it came after
    /// the server's first datagram reached that address, and is addressed to a connection ID
    /// the server chose (only a receiver of the server's packets knows it), or is a Handshake
    /// packet of the flow's version to the empty ID the server chose. Handshake packets cannot
    /// be opened here, so one to an ID anyone could name proves nothing.
    fn proves_address(&self, datagram: &[u8]) -> bool {
        if self.to_client.load(Ordering::Relaxed) == 0 {
            return false;
        }
        let cids = self.server_cids.lock().unwrap_or_else(|e| e.into_inner());
        let chosen = |id: &[u8]| cids.iter().any(|c| c.as_bytes() == id);
        match datagram.first() {
            Some(&first) if is_long_header(first) => long_header(datagram).is_ok_and(|h| {
                let version = self.follower.lock().unwrap_or_else(|e| e.into_inner()).initial().version;
                let handshake = h.version == version.wire() && h.packet_type() == Some(PacketType::Handshake);
                chosen(h.dcid) && (!h.dcid.is_empty() || handshake)
            }),
            Some(_) => cids
                .iter()
                .any(|c| !c.as_bytes().is_empty() && datagram.get(1..1 + c.as_bytes().len()) == Some(c.as_bytes())),
            None => false,
        }
    }

    /// Whether a server datagram of `len` bytes may go to the client: always once it has
    /// proved its address, else while the flow's replies stay within [`AMPLIFICATION`] times
    /// what it sent.
    fn may_reply(&self, len: usize) -> bool {
        self.validated.load(Ordering::Relaxed)
            || self.to_client.load(Ordering::Relaxed) + len as u64
                <= AMPLIFICATION * self.from_client.load(Ordering::Relaxed)
    }

    /// Sends a server datagram on to the client, unless the client's address is unproven and
    /// its budget is spent.
    fn reply(&self, datagram: &[u8]) -> Result<(), Dropped> {
        if !self.may_reply(datagram.len()) {
            return Err(Dropped::Amplification);
        }
        if self.reply.try_send(datagram).is_ok() {
            self.to_client.fetch_add(datagram.len() as u64, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Whether a client datagram is addressed to this flow's connection: its first ID, or one
    /// the server chose (a short header's, when the server chose any that is not empty).
    fn owns(&self, datagram: &[u8]) -> bool {
        let cids = self.server_cids.lock().unwrap_or_else(|e| e.into_inner());
        let server = |id: &[u8]| cids.iter().any(|c| c.as_bytes() == id);
        match datagram.first() {
            Some(&first) if is_long_header(first) => match long_header(datagram) {
                Ok(h) => {
                    let follower = self.follower.lock().unwrap_or_else(|e| e.into_inner());
                    h.dcid == follower.initial().dcid.as_bytes() || server(h.dcid)
                }
                // Not a packet any connection could read: the follower judges it.
                Err(_) => true,
            },
            Some(_) => {
                cids.iter().all(|c| c.as_bytes().is_empty())
                    || cids.iter().any(|c| datagram.get(1..1 + c.as_bytes().len()) == Some(c.as_bytes()))
            }
            None => true,
        }
    }

    /// A server datagram of the flow: its connection IDs are learned; a new one is returned,
    /// for the table's index.
    fn server_sent(&self, datagram: &[u8]) -> Option<Cid> {
        let mut learned = None;
        if let Ok(header) = long_header(datagram)
            && let Some(cid) = Cid::new(header.scid)
        {
            let mut cids = self.server_cids.lock().unwrap_or_else(|e| e.into_inner());
            if !cids.contains(&cid) && cids.len() < MAX_SERVER_CIDS {
                cids.push(cid);
                learned = Some(cid);
            }
        }
        self.down.fetch_add(datagram.len() as u64, Ordering::Relaxed);
        self.touch();
        learned
    }
}

/// Logs and counts a flow that ended, denied with `denied` or allowed.
pub(super) fn finish(listener: &Listener, mut record: Outcome, started: Instant, denied: Option<Denied>) {
    if let Some(denied) = denied {
        admission::denied(&mut record, &denied);
    }
    record.duration = started.elapsed().as_secs_f64();
    listener.finished(record);
}

/// Routes an allowed flow (its upstream resolved, through the destination guard) and opens a
/// UDP socket connected to the first candidate (with the listener's SO_MARK), within
/// `connect_timeout`.
pub(super) async fn open_upstream(
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

/// Runs an open flow to its end and finishes its record: relays until idle, counts its bytes,
/// logs it, gives back what it held, and tells the table it has gone.
pub(super) async fn run_open(
    listener: Arc<Listener>,
    id: FlowId,
    open: Arc<Open>,
    mut record: Outcome,
    started: Instant,
    held: Held,
    events: mpsc::UnboundedSender<Event>,
) {
    let learned = |cid| drop(events.send(Event::ServerCid(id, cid)));
    let stray = |datagram: &[u8]| drop(events.send(Event::Stray(open.key, datagram.to_vec())));
    if let Err(e) = relay(&listener, &open, learned, stray).await {
        record.error = Some(e);
    }
    record.bytes_up = open.up.load(Ordering::Relaxed);
    record.bytes_down = open.down.load(Ordering::Relaxed);
    finish(&listener, record, started, None);
    drop(held);
    let _ = events.send(Event::Ended(id));
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
async fn relay(listener: &Listener, open: &Open, learned: impl Fn(Cid), stray: impl Fn(&[u8])) -> Result<(), String> {
    let idle = listener.live.load().limits.flow_idle_timeout();
    let own = open.reply.own();
    loop {
        let last = open.born + Duration::from_millis(open.last.load(Ordering::Relaxed));
        tokio::select! {
            ready = std::future::poll_fn(|cx| open.upstream.poll_recv_ready(cx)) => {
                ready.map_err(|e| format!("receiving from the upstream: {e}"))?;
                burst(&open.upstream, |datagram| {
                    // Reported before the datagram goes on: the client's answer to it may be
                    // addressed to the new ID.
                    if let Some(cid) = open.server_sent(datagram) {
                        learned(cid);
                    }
                    if let Err(cause) = open.reply(datagram) {
                        listener.metrics.quic_dropped(cause);
                    }
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
                        if !open.owns(datagram) {
                            return stray(datagram);
                        }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_datagrams_come_back_in_order_and_hold_only_their_bytes() {
        let mut held = Datagrams::one(&[1; 1200]);
        held.push(&[2; 1300]);
        held.push(&[]);
        held.push(&[3; 7]);
        let back: Vec<&[u8]> = held.iter().collect();
        assert_eq!(back, [&[1; 1200][..], &[2; 1300], &[], &[3; 7]]);
        assert_eq!((held.len(), held.bytes()), (4, 2507));
        assert_eq!(held.bytes.capacity(), 2507, "no room held ahead of the bytes");
    }
}
