//! One connection, as its stages:
//!
//! ```text
//! accept → (PROXY header) → mode prelude (CONNECT / HTTP head) → hello → decide → resolve
//!        → connect → replay → splice → finish
//! ```
//!
//! Each stage is one method of [`Conn`] with a typed result. A stage that ends the connection
//! returns a [`Denied`]; [`Conn::deny`] is the one exit that answers the client and fills in
//! the record. [`handle`] runs the stages and finishes the record, also when the drain deadline
//! cuts them short.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::pin::pin;
use std::sync::Arc;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::admission::{self, Admitted, Ask, Route};
use super::client::Client;
use super::explicit;
use super::http::forward;
use super::http::{self, Body, Head, Target};
use super::listener::{Listener, ListenerMode, Slot};
use super::proxy_protocol::{self, ProxyError};
use super::reject::{Denied, Reply, answer};
use super::sources::SourceSlot;
use super::splice::{End, Meter, Moved, splice, splice_up};
use super::upstream;
use crate::config::HTTP_PORT;
use crate::hello::{ClientHello, HelloError, ReadError, read_client_hello, read_client_hello_now};
use crate::metrics::registry::ActiveGuard;
use crate::outcome::{Outcome, Seen, Stage};
use crate::reason::Reason;

/// Most bytes a connection's task may hold ([`serve`]'s future, as the test build lays it out):
/// the memory of an idle spliced connection, beside its sockets. The waiting stages are boxed
/// where they start, so that a connection holds them only while it waits.
#[cfg(test)]
pub(super) const TASK_BUDGET: usize = 2560;

/// Most bytes the boxed waiting stages may hold (a connection whose hello is not there at
/// accept holds them beside its task until the hello is read).
#[cfg(test)]
pub(super) const WAITING_BUDGET: usize = 576;

/// The size of the boxed waiting stages' future, for the budget test.
#[cfg(test)]
pub(super) fn waiting_size(listener: &Listener, accepted: std::net::TcpStream, peer: SocketAddr) -> usize {
    let mut record = Outcome::accepted(listener.name.clone(), peer);
    let mut conn = Conn {
        listener,
        record: &mut record,
        buf: BytesMut::new(),
        deadline: Instant::now(),
        proxied_dst: None,
        source: None,
        http: None,
    };
    let mut client = Client::Fresh(accepted);
    std::mem::size_of_val(&conn.wait_queued(&mut client))
}

/// The error of a connection cut at the drain deadline.
const CUT: &str = "cut at the drain deadline";

/// A connection's task: runs it, counts it and logs it, then frees its slot. Its future is
/// held for the connection's whole life, so its size is the memory of an idle connection (see
/// the budget test in `server.rs`).
pub(super) async fn serve(
    listener: Arc<Listener>,
    accepted: std::net::TcpStream,
    peer: SocketAddr,
    slot: (Slot, ActiveGuard),
) {
    let outcome = handle(&listener, accepted, peer).await;
    listener.finished(outcome);
    drop(slot);
}

/// Runs one accepted connection to its end and returns its record. `accepted` is
/// non-blocking and not registered with the runtime.
pub(super) async fn handle(listener: &Listener, accepted: std::net::TcpStream, peer: SocketAddr) -> Outcome {
    let start = Instant::now();
    let mut record = Outcome::accepted(listener.name.clone(), peer);
    let finished = {
        let stages = pin!(stages(listener, Client::Fresh(accepted), &mut record, start));
        tokio::select! {
            biased;
            () = stages => true,
            () = listener.drain.passed() => false,
        }
    };
    // A denial cut while it answers keeps its own error.
    if !finished && record.error.is_none() {
        record.error = Some(CUT.into());
    }
    record.duration = start.elapsed().as_secs_f64();
    record
}

/// The stages, and the one exit for a connection that does not reach the splice.
async fn stages(listener: &Listener, mut client: Client, record: &mut Outcome, start: Instant) {
    let mut conn = Conn {
        listener,
        record,
        buf: BytesMut::new(),
        deadline: start + listener.live.load().timeouts.hello,
        proxied_dst: None,
        source: None,
        http: None,
    };
    if let Err(denied) = conn.pipeline(&mut client, start).await {
        conn.deny(client, denied).await;
    }
}

/// One connection while its stages run.
struct Conn<'a> {
    /// The listener it was accepted on.
    listener: &'a Listener,
    /// The record being filled in.
    record: &'a mut Outcome,
    /// Every byte read from the client so far (what is left of it after a PROXY header or a
    /// CONNECT head): replayed to the upstream unchanged.
    buf: BytesMut,
    /// When the hello, and whatever comes before it, must be complete.
    deadline: Instant,
    /// The destination a PROXY header named: the original destination in transparent mode,
    /// and what a PROXY header sent upstream names.
    proxied_dst: Option<SocketAddr>,
    /// The connection's place in its source's counts, released when it ends.
    source: Option<SourceSlot>,
    /// A plain-HTTP connection's first request, decided: its later requests are decided as
    /// they pass. Boxed: most connections are TLS.
    http: Option<Box<FirstRequest>>,
}

/// A plain-HTTP connection's first request, once decided.
struct FirstRequest {
    /// Its head: how its body is framed, whether the connection persists after it.
    head: Head,
    /// Where it goes: every later request on the connection must name it too.
    target: Target,
    /// What the client sent after its head, forwarded request by request.
    rest: BytesMut,
}

impl Conn<'_> {
    /// Every stage in order; `Err` ends the connection before the splice.
    async fn pipeline(&mut self, client: &mut Client, start: Instant) -> Result<(), Denied> {
        // Behind PROXY protocol the source is the header's, counted once it is read.
        if self.listener.proxy_in.is_empty() {
            self.count_source()?;
        }
        let admitted = match self.at_accept(client) {
            Some(admitted) => admitted,
            None => match self.hello_now(client, start) {
                Some(admitted) => admitted?,
                // Boxed at the dispatch point: waiting, the PROXY header, the explicit modes and
                // what is not TLS are rare, and their futures would otherwise size every task.
                None => Box::pin(self.wait_queued(client)).await?,
            },
        };
        // Decided: no longer waiting for its hello (a CONNECT tunnel is decided once its hello
        // is read, not at its CONNECT).
        if let Some(source) = &mut self.source {
            source.decided();
        }
        self.record.stage = Stage::Resolve;
        let route = admitted.route(self.listener, self.record).await?;
        // Plain HTTP: the first head is replayed, and what follows it passes request by request.
        if let Some(first) = &mut self.http {
            first.rest = self.buf.split_off(first.head.len);
        }
        let upstream = self.connect(client, route.addrs()).await?;
        if let Some(first) = self.http.take() {
            return Box::pin(self.http_requests(client, upstream, *first)).await;
        }
        // Not boxed: an idle spliced connection is what snigate holds most of, and the splice's
        // state shares the task's room with the stages before it.
        self.splice(client, upstream).await;
        Ok(())
    }

    /// Stage accept, transparent mode: a destination that an `allow ip … port` rule lets
    /// through on its own is decided now, before the client says anything, so that protocols
    /// where the server speaks first (SMTP, databases) work. `None`: the first bytes decide.
    fn at_accept(&mut self, client: &Client) -> Option<Admitted> {
        let listener = self.listener;
        let Client::Fresh(stream) = client else { return None };
        if !matches!(listener.mode, ListenerMode::Transparent { .. }) || !listener.proxy_in.is_empty() {
            return None;
        }
        let dst = self.original_dst(stream).ok()?;
        let admitted = admission::admit_at_accept(listener, dst, self.record)?;
        self.record.protocol = Seen::Other;
        self.record.stage = Stage::Decide;
        Some(admitted)
    }

    /// Stage hello, transparent mode, for a client whose first bytes are not TLS: an HTTP/1
    /// request is decided by its host (and each later one by its own, as in `http` mode),
    /// anything else by the `ip` rules on its destination and port, else denied
    /// (`unknown_protocol`).
    async fn not_tls(&mut self, stream: &mut TcpStream) -> Result<Admitted, Denied> {
        let dst = self.original_dst(stream)?;
        let verify = matches!(self.listener.mode, ListenerMode::Transparent { verify: true, .. });
        let port = dst.port();
        // A verb first: an HTTP/1 request, or another line protocol (its first line tells).
        if http::may_be_request(&self.buf) {
            self.first_line(stream).await?;
        }
        if http::is_request_line(&self.buf) {
            self.record.protocol = Seen::Http;
            let head = explicit::read_request(stream, &mut self.buf, self.deadline).await?;
            let target = explicit::http_request(&head, port, None)?;
            self.asked(&target);
            self.record.stage = Stage::Decide;
            let admitted = admission::admit(self.listener, Ask::request(&target, Some(dst), verify), self.record)?;
            self.http = Some(Box::new(FirstRequest { head, target, rest: BytesMut::new() }));
            return Ok(admitted);
        }
        self.record.protocol = Seen::Other;
        self.record.stage = Stage::Decide;
        let first = || crate::hello::escape(&self.buf[..self.buf.len().min(16)]);
        admission::admit_unknown(self.listener, dst, self.record, || {
            format!("neither TLS nor HTTP (first bytes {}), and no ip rule for {dst}", first())
        })
    }

    /// Reads until the client's first line is complete (or [`http::MAX_LINE`] bytes), by the
    /// deadline. Scans only the new bytes.
    async fn first_line(&mut self, stream: &mut TcpStream) -> Result<(), Denied> {
        use tokio::io::AsyncReadExt;
        let mut scanned = 0;
        while !self.buf[scanned..].contains(&b'\n') && self.buf.len() < http::MAX_LINE {
            scanned = self.buf.len();
            match tokio::time::timeout_at(self.deadline, stream.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) => return Err(Denied::by(Reason::ClientClosed).answered(Reply::Silent)),
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(Denied::failed(Reason::ClientClosed, e).answered(Reply::Silent)),
                Err(_) => return Err(Denied::by(Reason::HelloTimeout).answered(Reply::Silent)),
            }
        }
        Ok(())
    }

    /// The original destination of a transparent connection (from its PROXY header, SO_ORIGINAL_DST
    /// or, with TPROXY, its own address), recorded.
    fn original_dst(&mut self, client: &impl AsFd) -> Result<SocketAddr, Denied> {
        let (tproxy, listen) = (self.listener.tproxy(), self.listener.listen);
        let dst = self.proxied_dst.or_else(|| upstream::original_destination(client, tproxy, listen).ok().flatten());
        let Some(dst) = dst else {
            let error = "no original destination (not redirected, or addressed to snigate itself)";
            return Err(Denied::failed(Reason::UpstreamError, error));
        };
        self.record.original_dst = Some(dst);
        Ok(dst)
    }

    /// Stage accept → hello, at once: a TLS listener's first bytes are the hello, and the
    /// listener defers accepts until they are there, so most hellos are read before the socket
    /// is registered. `None`: it has to be waited for.
    fn hello_now(&mut self, client: &Client, start: Instant) -> Option<Result<Admitted, Denied>> {
        let listener = self.listener;
        let hello_first = listener.proxy_in.is_empty()
            && matches!(
                listener.mode,
                ListenerMode::Sni { .. } | ListenerMode::Upstream { .. } | ListenerMode::Transparent { .. }
            );
        let Client::Fresh(stream) = client else { return None };
        if !hello_first {
            return None;
        }
        let read = read_client_hello_now(stream, &mut self.buf, listener.live.load().hello_limits())?;
        // A transparent listener receives every protocol: what is not TLS is read further.
        if matches!(listener.mode, ListenerMode::Transparent { .. })
            && matches!(&read, Err(ReadError::Invalid(HelloError::NotTls(_))))
        {
            return None;
        }
        Some(self.hello(read, start).and_then(|hello| self.admit_hello(stream, hello)))
    }

    /// The stages that wait for the client ([`read_waiting`](Self::read_waiting)), in the
    /// listener's queue of connections waiting for their hello: a full listener evicts the one
    /// that has waited longest.
    async fn wait_queued(&mut self, client: &mut Client) -> Result<Admitted, Denied> {
        let (_waiting, evicted) = self.listener.waiting.enter();
        tokio::select! {
            admitted = self.read_waiting(client) => admitted,
            _ = evicted => {
                let error = "evicted: the listener is full and this connection had waited longest for its hello";
                Err(Denied::failed(Reason::HelloTimeout, error).answered(Reply::Silent))
            }
        }
    }

    /// The stages that wait for the client, in order: the PROXY header, the mode prelude and
    /// the hello, once the client is registered.
    async fn read_waiting(&mut self, client: &mut Client) -> Result<Admitted, Denied> {
        let stream = client.register().map_err(|e| unregistered(self.record.reason, e))?;
        if !self.listener.proxy_in.is_empty() {
            self.proxy_header(stream).await?;
            self.count_source()?;
        }
        // The explicit modes' preludes are boxed again: a connection waiting for its hello
        // should not hold the room of a CONNECT's resolve.
        match self.listener.mode {
            ListenerMode::Http { .. } => Box::pin(self.http_prelude(stream)).await,
            ListenerMode::Connect { .. } => {
                let (target, route) = Box::pin(self.connect_prelude(stream)).await?;
                let hello = self.await_hello(stream).await?;
                self.tunnel(&target, hello, route)
            }
            ListenerMode::Transparent { .. } => {
                // Every protocol comes here: what is not TLS is decided by its HTTP host or by
                // its destination (boxed: the hello is no longer held while that waits).
                match self.await_hello(stream).await {
                    Err(denied) if denied.reason == Reason::NotTls => {}
                    hello => return self.admit_hello(stream, hello?),
                }
                Box::pin(self.not_tls(stream)).await
            }
            ListenerMode::Sni { .. } | ListenerMode::Upstream { .. } => {
                let hello = self.await_hello(stream).await?;
                self.admit_hello(stream, hello)
            }
        }
    }

    /// Stage PROXY header: a trusted load balancer's, by the deadline. Its source becomes the
    /// client; its destination is kept.
    async fn proxy_header(&mut self, client: &mut TcpStream) -> Result<(), Denied> {
        let denied = |e: ProxyError| Denied::failed(Reason::ProxyProtocol, e);
        let peer = client.peer_addr().map_err(|e| denied(ProxyError::Io(e.to_string())))?;
        if !proxy_protocol::trusted(peer.ip(), &self.listener.proxy_in) {
            return Err(denied(ProxyError::Untrusted(peer.ip())));
        }
        let max = self.listener.live.load().limits.max_hello_bytes;
        let read = tokio::time::timeout_at(self.deadline, proxy_protocol::read_header(client, &mut self.buf, max));
        if let Some(addresses) = read.await.unwrap_or(Err(ProxyError::Io("timed out".into()))).map_err(denied)? {
            self.record.client = addresses.source;
            self.proxied_dst = Some(addresses.destination);
        }
        Ok(())
    }

    /// Stage mode prelude, `connect`: the CONNECT request, its credentials, the rules' decision
    /// on its target and where it resolves to, then the `200` that opens the tunnel: a CONNECT
    /// that cannot go anywhere is answered in HTTP.
    async fn connect_prelude(&mut self, client: &mut TcpStream) -> Result<(Target, Route), Denied> {
        let listener = self.listener;
        self.record.protocol = Seen::Http;
        let head = explicit::read_request(client, &mut self.buf, self.deadline).await?;
        let credentials = listener.live.load().credentials.get(listener.index).cloned().flatten();
        let target = explicit::connect_target(&head, credentials.as_deref(), &mut self.buf)?;
        self.asked(&target);
        self.record.stage = Stage::Decide;
        explicit::check_port(&target, listener.mode.ports())?;
        let admitted = admission::admit(listener, Ask::request(&target, None, false), self.record)?;
        self.record.stage = Stage::Resolve;
        let route = admitted.route(listener, self.record).await?;
        explicit::establish(client).await?;
        self.record.protocol = Seen::Tls;
        self.record.stage = Stage::Hello;
        Ok((target, route))
    }

    /// Stage mode prelude, `http`: the first request's host is where the connection goes; the
    /// request is replayed to it unchanged, and each later one is decided as it passes
    /// ([`http_requests`](Self::http_requests)).
    async fn http_prelude(&mut self, client: &mut TcpStream) -> Result<Admitted, Denied> {
        self.record.protocol = Seen::Http;
        let head = explicit::read_request(client, &mut self.buf, self.deadline).await?;
        let target = explicit::http_request(&head, HTTP_PORT, Some(self.listener.mode.ports()))?;
        self.asked(&target);
        self.record.stage = Stage::Decide;
        let admitted = admission::admit(self.listener, Ask::request(&target, None, false), self.record)?;
        self.http = Some(Box::new(FirstRequest { head, target, rest: BytesMut::new() }));
        Ok(admitted)
    }

    /// Records what an explicit request names (its `host`), only when it is logged: no string
    /// otherwise.
    fn asked(&mut self, target: &Target) {
        if self.listener.access_log.is_on() {
            self.record.host = Some(target.to_string());
        }
    }

    /// Stage hello, waited for by the deadline.
    async fn await_hello(&mut self, client: &mut TcpStream) -> Result<ClientHello, Denied> {
        let reading = Instant::now();
        let remaining = self.deadline.saturating_duration_since(reading);
        let limits = self.listener.live.load().hello_limits();
        let read = read_client_hello(client, &mut self.buf, limits, remaining).await;
        self.hello(read, reading)
    }

    /// Stage hello, its end: a complete hello is counted and recorded.
    fn hello(&mut self, read: Result<ClientHello, ReadError>, reading: Instant) -> Result<ClientHello, Denied> {
        let hello = read.map_err(|e| match e.reason() {
            Reason::ClientClosed => Denied::by(Reason::ClientClosed),
            reason => Denied::failed(reason, e),
        })?;
        admission::hello_read(self.listener, self.record, &hello, reading.elapsed().as_secs_f64());
        Ok(hello)
    }

    /// Stage decide, for a TLS connection: its SNI, and the destination its mode gives it.
    fn admit_hello(&mut self, client: &impl AsFd, hello: ClientHello) -> Result<Admitted, Denied> {
        self.record.stage = Stage::Decide;
        let listener = self.listener;
        let ask = Ask::hello(listener, hello, || self.original_dst(client))?;
        admission::admit(listener, ask, self.record)
    }

    /// Stage decide, for the hello in a CONNECT tunnel: it must name the host the CONNECT
    /// named, and goes where the CONNECT was resolved to.
    fn tunnel(&mut self, target: &Target, hello: ClientHello, route: Route) -> Result<Admitted, Denied> {
        self.record.stage = Stage::Decide;
        explicit::check_tunnel(target, hello.sni.as_ref())?;
        Ok(admission::admit(self.listener, Ask::tunnel(target, hello), self.record)?.routed(route))
    }

    /// Counts the connection against its source's limits; beyond them it is refused at once.
    fn count_source(&mut self) -> Result<(), Denied> {
        let slot = self.listener.sources.admit(self.record.client.ip());
        self.source = Some(slot.map_err(|e| Denied::failed(Reason::SourceLimit, e).answered(Reply::Silent))?);
        Ok(())
    }

    /// Stages connect and replay: the first candidate that answers gets the PROXY header, when
    /// configured, and every byte read from the client so far, sent with the connect where it
    /// fits. A replay that fails after the connect ends the connection as it stands, allowed,
    /// with the error recorded: `None`.
    async fn connect(&mut self, client: &mut Client, candidates: &[SocketAddr]) -> Result<Option<TcpStream>, Denied> {
        self.record.stage = Stage::Connect;
        let reason = self.record.reason;
        let stream = client.register().map_err(|e| unregistered(reason, e))?;
        let (listener, record) = (self.listener, &mut *self.record);
        // What the upstream gets first: the PROXY header when configured, then every byte read.
        let first: Cow<'_, [u8]> = match listener.proxy_out {
            Some(version) => {
                let dst = (record.original_dst.or(self.proxied_dst))
                    .or_else(|| stream.local_addr().ok())
                    .unwrap_or(candidates[0]);
                Cow::Owned([&proxy_protocol::encode(version, record.client, dst)[..], &self.buf[..]].concat())
            }
            None => Cow::Borrowed(&self.buf[..]),
        };
        let connecting = Instant::now();
        let timeout = listener.live.load().timeouts.connect;
        // A client that has gone frees its slot at once, whatever the upstream does. Polled in
        // order (`biased`): no random draw per poll, and the upstream's answer comes first.
        let (mut up, sent) = tokio::select! {
            biased;
            connected = upstream::connect_any(candidates, timeout, listener.mark, &first) => {
                connected.map_err(|failed| {
                    record.upstream = failed.tried;
                    Denied::failed(Reason::UpstreamError, failed.error)
                })?
            }
            () = client_gone(stream) => {
                record.error = Some("the client reset the connection while the upstream was being connected".into());
                return Ok(None);
            }
        };
        listener.metrics.connected(connecting.elapsed().as_secs_f64());
        // One candidate (upstream and transparent modes) is the address connected to: no getpeername.
        record.upstream = Some(match candidates {
            [only] => *only,
            _ => up.peer_addr().unwrap_or(candidates[0]),
        });
        record.stage = Stage::Splice;
        // An upstream that does not read must not hold the connection: the replay has the
        // connect's deadline.
        let replay = tokio::time::timeout(timeout, up.write_all(&first[sent..]));
        let replayed = tokio::select! {
            biased;
            replayed = replay => replayed.unwrap_or_else(|_| Err(std::io::ErrorKind::TimedOut.into())),
            () = client_gone(stream) => Err(std::io::Error::other("the client reset the connection")),
        };
        if let Err(e) = replayed {
            record.error = Some(format!("replaying the first bytes to the upstream: {e}"));
            return Ok(None);
        }
        record.bytes_up = self.buf.len() as u64;
        Ok(Some(up))
    }

    /// Stage splice: both ways until the connection ends. The buffer is freed first: an idle
    /// connection holds nothing but its sockets.
    async fn splice(&mut self, client: &mut Client, upstream: Option<TcpStream>) {
        self.buf = BytesMut::new();
        let (Some(up), Client::Registered(client)) = (upstream, client) else { return };
        let idle = self.listener.live.load().timeouts.idle;
        let (moved, end) = splice(client, &up, idle, self.listener.splice, self.listener.drain.passed()).await;
        self.record.error = self.moved(moved, end, idle);
    }

    /// Stage splice, for plain HTTP: the upstream's answers are spliced to the client, and the
    /// client's requests pass one by one ([`forward::requests`]), each decided by its own host
    /// through admission, and refused when it names another host than the connection goes to.
    /// The first refused request is answered once the upstream has finished the answers
    /// before it. A WebSocket handshake that opens the connection and is answered `101` turns
    /// it into a splice.
    async fn http_requests(
        &mut self,
        client: &mut Client,
        upstream: Option<TcpStream>,
        first: FirstRequest,
    ) -> Result<(), Denied> {
        self.buf = BytesMut::new();
        self.record.requests = 1;
        let (Some(mut up), Client::Registered(stream)) = (upstream, &mut *client) else { return Ok(()) };
        let listener = self.listener;
        let idle = listener.live.load().timeouts.idle;
        let FirstRequest { head, target, rest } = first;
        if head.websocket && head.body == Body::None {
            match forward::switched(&mut up, stream, Instant::now() + idle).await {
                Ok((switched, n)) => {
                    self.record.bytes_down += n;
                    if switched {
                        // What followed the handshake is the new protocol's.
                        if let Err(e) = up.write_all(&rest).await {
                            self.record.error = Some(format!("after the WebSocket handshake: {e}"));
                            return Ok(());
                        }
                        self.record.bytes_up += rest.len() as u64;
                        self.splice(client, Some(up)).await;
                        return Ok(());
                    }
                }
                Err(e) => {
                    self.record.error = Some(format!("reading the answer to a WebSocket handshake: {e}"));
                    return Ok(());
                }
            }
        }
        let original = self.record.original_dst;
        let (default_port, ports) = match original {
            Some(dst) => (dst.port(), None),
            None => (HTTP_PORT, Some(listener.mode.ports())),
        };
        let record = &mut *self.record;
        let decide = |head: &Head| {
            record.requests += 1;
            let asked = explicit::http_request(head, default_port, ports)?;
            if asked != target && listener.access_log.is_on() {
                record.host = Some(asked.to_string());
            }
            admission::admit(listener, Ask::request(&asked, original, false), record)?;
            if asked != target {
                let error = format!("a request for {asked} on a connection to {target}");
                return Err(Denied::failed(Reason::HostMismatch, error));
            }
            Ok(())
        };
        let (stream, up) = (&*stream, &up);
        let forward = async move |meter: &Meter<'_>| {
            forward::requests(stream, up, rest, &head, meter, decide, explicit::refusal).await
        };
        let (moved, end, refused) =
            splice_up(stream, up, idle, listener.splice, listener.drain.passed(), forward).await;
        let answered = matches!(end, End::Closed);
        self.record.error = self.moved(moved, end, idle);
        match refused {
            // The upstream did not finish the answers before it: a refusal now would be read as
            // part of them.
            Some(denied) if !answered => Err(denied.answered(Reply::Silent)),
            Some(denied) => Err(denied),
            None => Ok(()),
        }
    }

    /// Records what a splice moved, and returns how it ended, as the record's error.
    fn moved(&mut self, moved: Moved, end: End, idle: std::time::Duration) -> Option<String> {
        let Moved { upstream, downstream } = moved;
        self.record.bytes_up += upstream;
        self.record.bytes_down += downstream;
        match end {
            End::Closed => None,
            End::Idle => Some(format!("idle for {idle:?}")),
            End::Error(e) => Some(e.to_string()),
            End::Stopped => Some(CUT.into()),
        }
    }

    /// The one exit of a connection that ends before the splice: records why, then answers
    /// the client.
    async fn deny(mut self, client: Client, denied: Denied) {
        admission::denied(self.record, &denied);
        answer(client, &denied, self.record.protocol, self.listener.reject, &self.buf).await;
        self.buf = BytesMut::new();
    }
}

/// Resolves once the client has gone while the upstream is connected and sent its first
/// bytes: it reset the connection. A FIN is not "gone": a client may close its sending side and
/// still wait for the answer (a half-close, which the splice passes on), and a full close looks
/// the same on the wire, so that waits for the connect's deadline. Bytes from the client stop
/// the watch: the splice takes them.
async fn client_gone(stream: &TcpStream) {
    let mut byte = [0u8; 1];
    if stream.peek(&mut byte).await.is_ok() {
        std::future::pending().await
    }
}

/// The runtime could not register the client's socket (epoll out of memory): the connection
/// ends as it stands, with nothing sent.
fn unregistered(reason: Reason, e: std::io::Error) -> Denied {
    Denied::failed(reason, format!("cannot register the client socket: {e}")).answered(Reply::Silent)
}
