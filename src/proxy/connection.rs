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

use super::client::Client;
use super::explicit;
use super::http::{self, Target};
use super::listener::{Listener, Slot};
use super::proxy_protocol::{self, ProxyError};
use super::reject::{Denied, Reply, Speaks, answer};
use super::route;
use super::sources::SourceSlot;
use super::splice::{End, Moved, splice};
use super::upstream;
use crate::config::{EchPolicy, HTTP_PORT, Mode, VerifyDestination};
use crate::hello::{ClientHello, HelloError, ReadError, read_client_hello, read_client_hello_now};
use crate::metrics::registry::ActiveGuard;
use crate::name::Name;
use crate::outcome::{Outcome, Seen, Stage};
use crate::policy::decide::Decision;
use crate::reason::Reason;
use crate::rules::rule::Verdict;

/// Most bytes a connection's task may hold ([`serve`]'s future, as the test build lays it out):
/// the memory of an idle spliced connection, beside its sockets. It is 2,456 bytes now; the
/// waiting stages are boxed where they start, so that a connection holds them only while it
/// waits.
#[cfg(test)]
pub(super) const TASK_BUDGET: usize = 2560;

/// Most bytes the boxed waiting stages may hold (a connection whose hello is not there at
/// accept holds them beside its task until the hello is read). It is 520 bytes now.
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
        speaks: Speaks::Tls,
        proxied_dst: None,
        source: None,
    };
    let mut client = Client::Fresh(accepted);
    std::mem::size_of_val(&conn.awaited(&mut client))
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
        deadline: start + listener.limits.load().hello_timeout(),
        speaks: Speaks::Tls,
        proxied_dst: None,
        source: None,
    };
    if let Err(denied) = conn.pipeline(&mut client, start).await {
        conn.deny(client, denied).await;
    }
}

/// What a connection asks to reach, once what precedes the splice has been read: what the rules
/// decide on, and where an allowed connection goes.
struct Ask {
    /// The name: the SNI, or the explicit request's host.
    name: Option<Name>,
    /// The destination: the original destination, the fixed upstream, or an address literal.
    dst: Option<SocketAddr>,
    /// The rules still have to decide (`connect` mode decided on the CONNECT target already,
    /// unless the tunnel's hello names a host the address literal did not).
    undecided: bool,
    /// The port `name` is reached on when there is no destination (`upstream_port`, or the
    /// port the request or the CONNECT named); with one, the rules match its port instead.
    port: u16,
    /// `verify_destination`: `dst` must be among `name`'s addresses.
    verify: bool,
    /// The addresses, when an earlier stage found them (`connect` mode, before its `200`).
    resolved: Option<Vec<SocketAddr>>,
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
    /// What a denial is answered in.
    speaks: Speaks,
    /// The destination a PROXY header named: the original destination in transparent mode,
    /// and what a PROXY header sent upstream names.
    proxied_dst: Option<SocketAddr>,
    /// The connection's place in its source's counts, released when it ends.
    source: Option<SourceSlot>,
}

impl Conn<'_> {
    /// Every stage in order; `Err` ends the connection before the splice.
    async fn pipeline(&mut self, client: &mut Client, start: Instant) -> Result<(), Denied> {
        // Behind PROXY protocol the source is the header's, counted once it is read.
        if self.listener.config.proxy_protocol_trusted.is_empty() {
            self.count_source()?;
        }
        let ask = match self.at_accept(client) {
            Some(ask) => ask,
            None => match self.hello_now(client, start) {
                Some(ask) => ask?,
                // Boxed at the dispatch point: waiting, the PROXY header, the explicit modes and
                // what is not TLS are rare, and their futures would otherwise size every task.
                None => Box::pin(self.awaited(client)).await?,
            },
        };
        self.decide(&ask)?;
        // Decided: no longer waiting for its hello (a CONNECT tunnel is decided once its hello
        // is read, not at its CONNECT).
        if let Some(source) = &mut self.source {
            source.decided();
        }
        let candidates = self.resolve(ask).await?;
        let upstream = self.connect(client, &candidates).await?;
        // Not boxed: an idle spliced connection is what snigate holds most of, and the splice's
        // state shares the task's room with the stages before it.
        self.splice(client, upstream).await;
        Ok(())
    }

    /// Stage accept, transparent mode: a destination that an `allow ip … port` rule lets
    /// through on its own is decided now, before the client says anything, so that protocols
    /// where the server speaks first (SMTP, databases) work. `None`: the first bytes decide.
    fn at_accept(&mut self, client: &Client) -> Option<Ask> {
        let config = &self.listener.config;
        let Client::Fresh(stream) = client else { return None };
        if config.mode != Mode::Transparent || !config.proxy_protocol_trusted.is_empty() {
            return None;
        }
        let dst = self.original_dst(stream).ok()?;
        let listener = self.listener;
        let rules = listener.rules.load();
        let decision = rules.allows_destination(self.record.client.ip(), dst)?;
        self.record.protocol = Seen::Other;
        self.speaks = Speaks::Other;
        self.record.stage = Stage::Decide;
        self.record_decision(&decision);
        Some(Ask { name: None, dst: Some(dst), undecided: false, port: dst.port(), verify: false, resolved: None })
    }

    /// Stage hello, transparent mode, for a client whose first bytes are not TLS: an HTTP/1
    /// request is decided by its host (its first request only, as in `http` mode), anything
    /// else by the `ip` rules on its destination and port, else denied (`unknown_protocol`).
    async fn not_tls(&mut self, stream: &mut TcpStream) -> Result<Ask, Denied> {
        let dst = self.original_dst(stream)?;
        let verify = self.listener.config.verify_destination == Some(VerifyDestination::Dns);
        let port = dst.port();
        // A verb first: an HTTP/1 request, or another line protocol (its first line tells).
        if http::may_be_request(&self.buf) {
            self.first_line(stream).await?;
        }
        if http::is_request_line(&self.buf) {
            self.record.protocol = Seen::Http;
            self.speaks = Speaks::Http;
            let head = explicit::read_request(stream, &mut self.buf, self.deadline).await?;
            let target = explicit::http_target(&head, port)?;
            self.record.stage = Stage::Decide;
            return Ok(match target {
                Target::Name(name, _) => {
                    self.record.sni = Some(name.as_str().to_string());
                    Ask { name: Some(name), dst: Some(dst), undecided: true, port, verify, resolved: None }
                }
                Target::Addr(_) => {
                    Ask { name: None, dst: Some(dst), undecided: true, port, verify: false, resolved: None }
                }
            });
        }
        self.record.protocol = Seen::Other;
        self.speaks = Speaks::Other;
        self.record.stage = Stage::Decide;
        let listener = self.listener;
        if listener.rules.load().decide(None, self.record.client.ip(), Some(dst), port).reason == Reason::NoSni {
            let first = crate::hello::escape(&self.buf[..self.buf.len().min(16)]);
            let error = format!("neither TLS nor HTTP (first bytes {first}), and no ip rule for {dst}");
            return Err(Denied::failed(Reason::UnknownProtocol, error));
        }
        Ok(Ask { name: None, dst: Some(dst), undecided: true, port, verify: false, resolved: None })
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
        let (tproxy, listen) = (self.listener.config.tproxy, self.listener.config.listen);
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
    fn hello_now(&mut self, client: &Client, start: Instant) -> Option<Result<Ask, Denied>> {
        let config = &self.listener.config;
        let hello_first = config.proxy_protocol_trusted.is_empty()
            && matches!(config.mode, Mode::Sni | Mode::Upstream | Mode::Transparent);
        let Client::Fresh(stream) = client else { return None };
        if !hello_first {
            return None;
        }
        let read = read_client_hello_now(stream, &mut self.buf, self.listener.hello_limits())?;
        // A transparent listener receives every protocol: what is not TLS is read further.
        if config.mode == Mode::Transparent && matches!(&read, Err(ReadError::Invalid(HelloError::NotTls(_)))) {
            return None;
        }
        Some(self.hello(read, start).and_then(|hello| self.ask(stream, hello)))
    }

    /// Registers the client, then the stages that wait: the PROXY header, the mode prelude and
    /// the hello.
    async fn awaited(&mut self, client: &mut Client) -> Result<Ask, Denied> {
        let (_waiting, evicted) = self.listener.waiting.enter();
        tokio::select! {
            ask = self.wait(client) => ask,
            _ = evicted => {
                let error = "evicted: the listener is full and this connection had waited longest for its hello";
                Err(Denied::failed(Reason::HelloTimeout, error).answered(Reply::Silent))
            }
        }
    }

    /// The stages that wait for the client, in order.
    async fn wait(&mut self, client: &mut Client) -> Result<Ask, Denied> {
        let stream = client.register().map_err(|e| unregistered(self.record.reason, e))?;
        if !self.listener.config.proxy_protocol_trusted.is_empty() {
            self.proxy_header(stream).await?;
            self.count_source()?;
        }
        // The explicit modes' preludes are boxed again: a connection waiting for its hello
        // should not hold the room of a CONNECT's resolve.
        match self.listener.config.mode {
            Mode::Http => Box::pin(self.http_prelude(stream)).await,
            Mode::Connect => {
                let (target, candidates) = Box::pin(self.connect_prelude(stream)).await?;
                let hello = self.await_hello(stream).await?;
                self.tunnel(target, hello, candidates)
            }
            Mode::Transparent => {
                // Every protocol comes here: what is not TLS is decided by its HTTP host or by
                // its destination (boxed: the hello is no longer held while that waits).
                match self.await_hello(stream).await {
                    Err(denied) if denied.reason == Reason::NotTls => {}
                    hello => return self.ask(stream, hello?),
                }
                Box::pin(self.not_tls(stream)).await
            }
            Mode::Sni | Mode::Upstream => {
                let hello = self.await_hello(stream).await?;
                self.ask(stream, hello)
            }
        }
    }

    /// Stage PROXY header: a trusted load balancer's, by the deadline. Its source becomes the
    /// client; its destination is kept.
    async fn proxy_header(&mut self, client: &mut TcpStream) -> Result<(), Denied> {
        let denied = |e: ProxyError| Denied::failed(Reason::ProxyProtocol, e);
        let peer = client.peer_addr().map_err(|e| denied(ProxyError::Io(e.to_string())))?;
        if !proxy_protocol::trusted(peer.ip(), &self.listener.config.proxy_protocol_trusted) {
            return Err(denied(ProxyError::Untrusted(peer.ip())));
        }
        let max = self.listener.limits.load().max_hello_bytes;
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
    async fn connect_prelude(&mut self, client: &mut TcpStream) -> Result<(Target, Vec<SocketAddr>), Denied> {
        self.speaks = Speaks::Http;
        let head = explicit::read_request(client, &mut self.buf, self.deadline).await?;
        let credentials = self.listener.credentials.as_ref().map(|c| c.load_full());
        let target = explicit::connect_target(&head, credentials.as_deref(), &mut self.buf)?;
        self.record.stage = Stage::Decide;
        explicit::check_port(&target, &self.listener.ports)?;
        let (name, dst) = target.parts();
        self.rules(name, dst, target.port())?;
        let candidates = self.resolve_to(name, dst, target.port(), false).await?;
        explicit::establish(client).await?;
        self.speaks = Speaks::Tls;
        self.record.stage = Stage::Hello;
        Ok((target, candidates))
    }

    /// Stage mode prelude, `http`: the request's host is what it asks for; the request is
    /// replayed to it unchanged.
    async fn http_prelude(&mut self, client: &mut TcpStream) -> Result<Ask, Denied> {
        self.speaks = Speaks::Http;
        self.record.protocol = Seen::Http;
        let head = explicit::read_request(client, &mut self.buf, self.deadline).await?;
        let target = explicit::http_target(&head, HTTP_PORT)?;
        if let Target::Name(name, _) = &target {
            self.record.sni = Some(name.as_str().to_string());
        }
        self.record.stage = Stage::Decide;
        explicit::check_port(&target, &self.listener.ports)?;
        Ok(match target {
            Target::Name(name, port) => {
                Ask { name: Some(name), dst: None, undecided: true, port, verify: false, resolved: None }
            }
            Target::Addr(addr) => {
                Ask { name: None, dst: Some(addr), undecided: true, port: addr.port(), verify: false, resolved: None }
            }
        })
    }

    /// Stage hello, waited for by the deadline.
    async fn await_hello(&mut self, client: &mut TcpStream) -> Result<ClientHello, Denied> {
        let reading = Instant::now();
        let remaining = self.deadline.saturating_duration_since(reading);
        let read = read_client_hello(client, &mut self.buf, self.listener.hello_limits(), remaining).await;
        self.hello(read, reading)
    }

    /// Stage hello, its end: counts a complete hello and records it (only when it is logged:
    /// no strings otherwise).
    fn hello(&mut self, read: Result<ClientHello, ReadError>, reading: Instant) -> Result<ClientHello, Denied> {
        let hello = read.map_err(|e| match e.reason() {
            Reason::ClientClosed => Denied::by(Reason::ClientClosed),
            reason => Denied::failed(reason, e),
        })?;
        self.listener.metrics.hello(reading.elapsed().as_secs_f64(), hello.wire_bytes, hello.ech);
        if self.listener.access_log.is_on() {
            let record = &mut *self.record;
            record.sni = hello.sni.as_ref().map(|n| n.as_str().to_string());
            record.alpn = hello.alpn.clone();
            record.ech = hello.ech;
            record.tls_version = Some(hello.highest_version());
        }
        Ok(hello)
    }

    /// What a TLS connection asks for: its SNI, and the destination its mode gives it.
    fn ask(&mut self, client: &impl AsFd, hello: ClientHello) -> Result<Ask, Denied> {
        self.record.stage = Stage::Decide;
        self.ech(&hello)?;
        let listener = self.listener;
        let dst = match listener.config.mode {
            Mode::Transparent => Some(self.original_dst(client)?),
            Mode::Upstream => listener.upstream,
            Mode::Sni | Mode::Connect | Mode::Http => None,
        };
        let verify = listener.config.verify_destination == Some(VerifyDestination::Dns);
        Ok(Ask { name: hello.sni, dst, undecided: true, port: listener.upstream_port, verify, resolved: None })
    }

    /// What a CONNECT tunnel asks for: the host the CONNECT named, which its hello must name
    /// too; or the address literal, which the rules decide again when the hello names a host.
    fn tunnel(&mut self, target: Target, hello: ClientHello, candidates: Vec<SocketAddr>) -> Result<Ask, Denied> {
        self.record.stage = Stage::Decide;
        self.ech(&hello)?;
        explicit::check_tunnel(&target, hello.sni.as_ref())?;
        let resolved = Some(candidates);
        Ok(match target {
            Target::Name(_, port) => Ask { name: None, dst: None, undecided: false, port, verify: false, resolved },
            Target::Addr(addr) => {
                let undecided = hello.sni.is_some();
                Ask { name: hello.sni, dst: Some(addr), undecided, port: addr.port(), verify: false, resolved }
            }
        })
    }

    /// `ech = "deny"`: a hello that carries encrypted_client_hello is denied, in every mode.
    fn ech(&self, hello: &ClientHello) -> Result<(), Denied> {
        match hello.ech && self.listener.ech == EchPolicy::Deny {
            true => Err(Denied::by(Reason::Ech)),
            false => Ok(()),
        }
    }

    /// Stage decide, where the rules have not decided yet.
    fn decide(&mut self, ask: &Ask) -> Result<(), Denied> {
        match ask.undecided {
            true => self.rules(ask.name.as_ref(), ask.dst, ask.dst.map_or(ask.port, |dst| dst.port())),
            false => Ok(()),
        }
    }

    /// Counts the connection against its source's limits; beyond them it is refused at once.
    fn count_source(&mut self) -> Result<(), Denied> {
        let slot = self.listener.sources.admit(self.record.client.ip());
        self.source = Some(slot.map_err(|e| Denied::failed(Reason::SourceLimit, e).answered(Reply::Silent))?);
        Ok(())
    }

    /// Asks the rule snapshot and records the decision; a deny is `Err`. `port` is the
    /// destination port the connection asks for.
    fn rules(&mut self, name: Option<&Name>, dst: Option<SocketAddr>, port: u16) -> Result<(), Denied> {
        let rules = self.listener.rules.load();
        let decision = rules.decide(name, self.record.client.ip(), dst, port);
        self.record_decision(&decision);
        match decision.verdict {
            Verdict::Allow => Ok(()),
            Verdict::Deny => Err(Denied::by(decision.reason)),
        }
    }

    /// Records what the rules decided.
    fn record_decision(&mut self, decision: &Decision<'_>) {
        self.listener.decided(self.record, decision);
    }

    /// Stage resolve: the upstream addresses to try, in order, that the destination guard
    /// lets through. A name is resolved on its port; a destination is used as it is, once
    /// verified where `verify_destination` says so.
    async fn resolve(&mut self, ask: Ask) -> Result<Vec<SocketAddr>, Denied> {
        match ask.resolved {
            Some(candidates) => Ok(candidates),
            None => self.resolve_to(ask.name.as_ref(), ask.dst, ask.port, ask.verify).await,
        }
    }

    /// Resolves `name` on `port`, or takes `dst` (verified against `name` with `verify`), and
    /// passes the addresses through the destination guard.
    async fn resolve_to(
        &mut self,
        name: Option<&Name>,
        dst: Option<SocketAddr>,
        port: u16,
        verify: bool,
    ) -> Result<Vec<SocketAddr>, Denied> {
        self.record.stage = Stage::Resolve;
        route::destinations(self.listener, self.record.client.ip(), name, dst, port, verify).await
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
        let first: Cow<'_, [u8]> = match listener.config.proxy_protocol_out {
            Some(version) => {
                let dst = (record.original_dst.or(self.proxied_dst))
                    .or_else(|| stream.local_addr().ok())
                    .unwrap_or(candidates[0]);
                Cow::Owned([&proxy_protocol::encode(version, record.client, dst)[..], &self.buf[..]].concat())
            }
            None => Cow::Borrowed(&self.buf[..]),
        };
        let connecting = Instant::now();
        let timeout = listener.limits.load().connect_timeout();
        // A client that has gone frees its slot at once, whatever the upstream does. Polled in
        // order (`biased`): no random draw per poll, and the upstream's answer comes first.
        let (mut up, sent) = tokio::select! {
            biased;
            connected = upstream::connect_any(candidates, timeout, listener.config.mark, &first) => {
                connected.map_err(|e| Denied::failed(Reason::UpstreamError, e))?
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
        let idle = self.listener.limits.load().idle_timeout();
        let (moved, end) = splice(client, &up, idle, self.listener.config.splice, self.listener.drain.passed()).await;
        let Moved { upstream, downstream } = moved;
        self.record.bytes_up += upstream;
        self.record.bytes_down = downstream;
        self.record.error = match end {
            End::Closed => None,
            End::Idle => Some(format!("idle for {idle:?}")),
            End::Error(e) => Some(e.to_string()),
            End::Stopped => Some(CUT.into()),
        };
    }

    /// The one exit of a connection that ends before the splice: records why, then answers
    /// the client.
    async fn deny(mut self, client: Client, denied: Denied) {
        self.record.verdict = Verdict::Deny;
        self.record.reason = denied.reason;
        if denied.error.is_some() {
            self.record.error = denied.error.clone();
        }
        answer(client, &denied, self.speaks, self.listener.config.reject, &self.buf).await;
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
