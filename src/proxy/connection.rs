//! One connection through the pipeline: hello, decision, upstream, replay, splice, log.

use std::borrow::Cow;
use std::io;
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::BytesMut;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::Listener;
use super::explicit;
use super::http::Target;
use super::proxy_protocol::{self, ProxyError};
use super::reject::reject;
use super::splice::{End, Moved, splice};
use super::upstream;
use crate::config::{EchPolicy, Mode, VerifyDestination};
use crate::hello::{ClientHello, ReadError, read_client_hello, read_client_hello_now};
use crate::name::Name;
use crate::policy::{RuleRef, Verdict};
use crate::reason::Reason;

/// Where a connection is in its life; named in errors and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Reading the ClientHello.
    Hello,
    /// Asking the rules.
    Decide,
    /// Finding the upstream address.
    Resolve,
    /// Connecting to the upstream.
    Connect,
    /// Moving bytes both ways.
    Splice,
}

impl Stage {
    /// The snake_case name used in logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::Hello => "hello",
            Stage::Decide => "decide",
            Stage::Resolve => "resolve",
            Stage::Connect => "connect",
            Stage::Splice => "splice",
        }
    }
}

/// What happened to one connection: the access-log record.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// When the connection was accepted (RFC 3339 in the log).
    #[serde(serialize_with = "crate::access_log::serialize_time")]
    pub time: SystemTime,
    /// The listener's name.
    pub listener: Arc<str>,
    /// The client's address.
    pub client: SocketAddr,
    /// The original destination (transparent mode).
    pub original_dst: Option<SocketAddr>,
    /// The normalised SNI.
    pub sni: Option<String>,
    /// ALPN protocols offered (escaped).
    pub alpn: Vec<String>,
    /// Highest TLS version offered.
    pub tls_version: Option<String>,
    /// Whether the hello carried encrypted_client_hello.
    pub ech: bool,
    /// allow or deny.
    pub verdict: Verdict,
    /// Why.
    pub reason: Reason,
    /// The deciding rule (`file:line` or a list's name).
    pub rule: Option<String>,
    /// The deciding rule's file or list: the `ruleset` metric label.
    #[serde(skip)]
    pub ruleset: Option<Arc<str>>,
    /// The upstream reached.
    pub upstream: Option<SocketAddr>,
    /// The stage the connection ended in.
    pub stage: Stage,
    /// Client → upstream bytes, the replayed hello included.
    pub bytes_up: u64,
    /// Upstream → client bytes.
    pub bytes_down: u64,
    /// Seconds from accept to close.
    pub duration: f64,
    /// What went wrong, for failures (not for rule denials).
    pub error: Option<String>,
}

/// An accepted client socket. It is registered with the runtime's reactor only once the
/// connection has to wait on it: a hello that is there when the connection is accepted (the
/// listener defers accepts until the client has sent data) is read and decided first, and a
/// denied connection is answered and closed without ever touching epoll.
pub(super) enum Client {
    /// Not registered: reads and writes go straight to the kernel and must not block.
    Fresh(std::net::TcpStream),
    /// Registered, so that the connection can await its readiness.
    Registered(TcpStream),
}

impl Client {
    /// The socket, registered.
    pub(super) fn registered(self) -> io::Result<TcpStream> {
        match self {
            Client::Fresh(stream) => TcpStream::from_std(stream),
            Client::Registered(stream) => Ok(stream),
        }
    }
}

impl AsFd for Client {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Client::Fresh(stream) => stream.as_fd(),
            Client::Registered(stream) => stream.as_fd(),
        }
    }
}

/// Runs one accepted connection to its end and returns what happened. `accepted` is
/// non-blocking and not registered with the runtime.
///
/// The future is the connection's task, held for its whole life, so its size is the memory of
/// an idle connection. The modes' and stages' larger futures that most connections never reach
/// (PROXY header, `connect` and `http` modes, DNS) are boxed where they are awaited, so that
/// they do not size every task: the task holds the hello reading and the splice only.
pub async fn handle(listener: &Listener, accepted: std::net::TcpStream, peer: SocketAddr) -> Outcome {
    let start = Instant::now();
    let mut out = Outcome {
        time: SystemTime::now(),
        listener: listener.name.clone(),
        client: peer,
        original_dst: None,
        sni: None,
        alpn: Vec::new(),
        tls_version: None,
        ech: false,
        verdict: Verdict::Deny,
        reason: Reason::ClientClosed,
        rule: None,
        ruleset: None,
        upstream: None,
        stage: Stage::Hello,
        bytes_up: 0,
        bytes_down: 0,
        duration: 0.0,
        error: None,
    };
    let mut buf = BytesMut::new();
    let deadline = start + listener.limits.hello_timeout();
    // A TLS listener's first bytes are the hello: whatever of it is there already is read
    // before the socket is registered.
    let hello_first = listener.config.proxy_protocol_trusted.is_empty()
        && matches!(listener.config.mode, Mode::Sni | Mode::Upstream | Mode::Transparent);
    let early = if hello_first { read_client_hello_now(&accepted, &mut buf, listener.hello_limits) } else { None };
    let (client, hello, tunnel, proxied_dst, reading) = match early {
        Some(hello) => (Client::Fresh(accepted), hello, None, None, start),
        // Boxed: the wait and what may come before the hello would otherwise size every task.
        None => match Box::pin(awaited_hello(listener, accepted, &mut out, &mut buf, deadline)).await {
            Some(w) => (Client::Registered(w.client), w.hello, w.tunnel, w.proxied_dst, w.reading),
            None => return finish(out, start),
        },
    };
    let hello = match hello {
        Ok(hello) => hello,
        Err(e) => {
            out.reason = e.reason();
            if out.reason != Reason::ClientClosed {
                out.error = Some(e.to_string());
            }
            reject(client, listener.config.reject, out.reason, &buf).await;
            return finish(out, start);
        }
    };
    listener.metrics.hello(reading.elapsed().as_secs_f64(), hello.wire_bytes, hello.ech);
    // The hello's details are only for the access log: no strings when it is off.
    if listener.access_log.is_on() {
        record_hello(&mut out, &hello);
    }
    let checked = match &tunnel {
        Some(target) => Box::pin(explicit::tunnel_candidates(listener, &mut out, &hello, target)).await,
        None => candidates(listener, &client, &mut out, &hello, proxied_dst).await,
    };
    // Not held through the splice: the task's size is the memory of an idle connection.
    drop((hello, tunnel));
    let denied = match checked {
        Err(reason) => Some((client, reason)),
        Ok(addrs) => match client.registered() {
            Ok(mut stream) => forward(listener, &mut stream, &mut out, &addrs, &mut buf, proxied_dst)
                .await
                .err()
                .map(|reason| (Client::Registered(stream), reason)),
            Err(e) => {
                out.error = Some(unregistered(&e));
                None
            }
        },
    };
    if let Some((client, reason)) = denied {
        out.verdict = Verdict::Deny;
        out.reason = reason;
        reject(client, listener.config.reject, reason, &buf).await;
    }
    finish(out, start)
}

/// The error of a connection whose socket the runtime could not register (epoll out of memory).
fn unregistered(e: &io::Error) -> String {
    format!("cannot register the client socket: {e}")
}

fn finish(mut out: Outcome, start: Instant) -> Outcome {
    out.duration = start.elapsed().as_secs_f64();
    out
}

/// A hello that had to be waited for, and what came before it.
struct Awaited {
    /// The client, registered.
    client: TcpStream,
    /// The hello, or why there is none.
    hello: Result<ClientHello, ReadError>,
    /// `connect` mode: the CONNECT target.
    tunnel: Option<Target>,
    /// The PROXY header's destination.
    proxied_dst: Option<SocketAddr>,
    /// When reading the hello began.
    reading: Instant,
}

/// Registers the client's socket, handles what comes before the hello on listeners that do not
/// start with it (the PROXY header of a trusted load balancer, the `connect` or `http` mode's
/// request), then awaits the hello. `None`: the connection has ended, and `out` says how.
async fn awaited_hello(
    listener: &Listener,
    accepted: std::net::TcpStream,
    out: &mut Outcome,
    buf: &mut BytesMut,
    deadline: Instant,
) -> Option<Awaited> {
    let mut client = match TcpStream::from_std(accepted) {
        Ok(client) => client,
        Err(e) => {
            out.error = Some(unregistered(&e));
            return None;
        }
    };
    let mut proxied_dst = None;
    if !listener.config.proxy_protocol_trusted.is_empty() {
        match Box::pin(proxy_header(listener, &mut client, buf, deadline)).await {
            Ok(Some(addresses)) => {
                out.client = addresses.source;
                proxied_dst = Some(addresses.destination);
            }
            Ok(None) => {}
            Err(e) => {
                out.reason = Reason::ProxyProtocol;
                out.error = Some(e.to_string());
                reject(Client::Registered(client), listener.config.reject, out.reason, buf).await;
                return None;
            }
        }
    }
    let tunnel = match listener.config.mode {
        Mode::Http => {
            if let Err(reason) = Box::pin(explicit::plain_http(listener, &mut client, out, buf, deadline)).await {
                out.verdict = Verdict::Deny;
                out.reason = reason;
            }
            return None;
        }
        Mode::Connect => match Box::pin(explicit::connect(listener, &mut client, out, buf, deadline)).await {
            Ok(target) => Some(target),
            Err(reason) => {
                out.verdict = Verdict::Deny;
                out.reason = reason;
                return None;
            }
        },
        Mode::Sni | Mode::Upstream | Mode::Transparent => None,
    };
    let reading = Instant::now();
    let remaining = deadline.saturating_duration_since(reading);
    let hello = read_client_hello(&mut client, buf, listener.hello_limits, remaining).await;
    Some(Awaited { client, hello, tunnel, proxied_dst, reading })
}

/// Reads the PROXY header a trusted load balancer sends first, by `deadline`.
async fn proxy_header(
    listener: &Listener,
    client: &mut TcpStream,
    buf: &mut BytesMut,
    deadline: Instant,
) -> Result<Option<proxy_protocol::Addresses>, ProxyError> {
    let peer = client.peer_addr().map_err(|e| ProxyError::Io(e.to_string()))?;
    if !proxy_protocol::trusted(peer.ip(), &listener.config.proxy_protocol_trusted) {
        return Err(ProxyError::Untrusted(peer.ip()));
    }
    let max = listener.limits.max_hello_bytes;
    tokio::time::timeout_at(deadline, proxy_protocol::read_header(client, buf, max))
        .await
        .unwrap_or(Err(ProxyError::Io("timed out".into())))
}

fn record_hello(out: &mut Outcome, hello: &ClientHello) {
    out.sni = hello.sni.as_ref().map(|n| n.as_str().to_string());
    out.alpn = hello.alpn.clone();
    out.ech = hello.ech;
    out.tls_version = Some(hello.highest_version());
}

/// Decides a TLS connection by its hello and finds where it may go: the upstream addresses to
/// try, in order. `Err(reason)`: deny with that reason.
async fn candidates(
    listener: &Listener,
    client: &Client,
    out: &mut Outcome,
    hello: &ClientHello,
    proxied_dst: Option<SocketAddr>,
) -> Result<Vec<SocketAddr>, Reason> {
    out.stage = Stage::Decide;
    if hello.ech && listener.ech == EchPolicy::Deny {
        return Err(Reason::Ech);
    }
    let dst = match listener.config.mode {
        Mode::Transparent => {
            let (tproxy, listen) = (listener.config.tproxy, listener.config.listen);
            out.original_dst =
                proxied_dst.or_else(|| upstream::original_destination(client, tproxy, listen).ok().flatten());
            if out.original_dst.is_none() {
                out.error = Some("no original destination (not redirected, or addressed to snigate itself)".into());
                return Err(Reason::UpstreamError);
            }
            out.original_dst
        }
        Mode::Upstream => listener.upstream,
        Mode::Sni | Mode::Connect | Mode::Http => None,
    };
    decide(listener, out, hello.sni.as_ref(), dst)?;
    out.stage = Stage::Resolve;
    match (dst, &hello.sni) {
        (Some(addr), Some(sni)) if listener.config.verify_destination == Some(VerifyDestination::Dns) => {
            Box::pin(verify_destination(listener, out, sni, addr)).await?;
            Ok(vec![addr])
        }
        (Some(addr), _) => Ok(vec![addr]),
        (None, Some(sni)) => Box::pin(resolve(listener, out, sni, listener.upstream_port)).await,
        (None, None) => Err(Reason::UpstreamError),
    }
}

/// Asks the rule snapshot, records the decision in `out`, and turns a deny into `Err`.
pub(super) fn decide(
    listener: &Listener,
    out: &mut Outcome,
    name: Option<&Name>,
    dst: Option<SocketAddr>,
) -> Result<(), Reason> {
    let rules = listener.rules.load();
    let decision = rules.decide(name, out.client.ip(), dst);
    out.verdict = decision.verdict;
    out.reason = decision.reason;
    out.ruleset = decision.rule.map(|r| r.ruleset_label());
    if listener.access_log.is_on() {
        out.rule = decision.rule.map(RuleRef::to_string);
    }
    match decision.verdict {
        Verdict::Allow => Ok(()),
        Verdict::Deny => Err(decision.reason),
    }
}

/// The addresses of `name` on `port`; a failure is `upstream_error`.
pub(super) async fn resolve(
    listener: &Listener,
    out: &mut Outcome,
    name: &Name,
    port: u16,
) -> Result<Vec<SocketAddr>, Reason> {
    listener.resolver.lookup(name.as_str(), port).await.map_err(|e| {
        out.error = Some(e.to_string());
        Reason::UpstreamError
    })
}

/// `verify_destination = "dns"`: the original destination must be one of the SNI's addresses,
/// or the SNI is a lie (spoofing, domain fronting to another address). A lookup that fails
/// cannot vouch for the destination, so it denies too.
async fn verify_destination(listener: &Listener, out: &mut Outcome, sni: &Name, dst: SocketAddr) -> Result<(), Reason> {
    match listener.resolver.lookup(sni.as_str(), dst.port()).await {
        Ok(addrs) if addrs.iter().any(|a| a.ip() == dst.ip()) => Ok(()),
        Ok(addrs) => {
            let shown: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
            out.error = Some(format!("{} is not among {sni}'s addresses ({})", dst.ip(), shown.join(", ")));
            Err(Reason::DstMismatch)
        }
        Err(e) => {
            out.error = Some(format!("cannot verify {}: {e}", dst.ip()));
            Err(Reason::DstMismatch)
        }
    }
}

/// Connects to the first of `candidates` that answers, sends the PROXY header when configured,
/// replays `buf` (every byte read so far) and splices until the connection ends.
/// `Err(reason)` only for failures before the client has been connected.
pub(super) async fn forward(
    listener: &Listener,
    client: &mut TcpStream,
    out: &mut Outcome,
    candidates: &[SocketAddr],
    buf: &mut BytesMut,
    proxied_dst: Option<SocketAddr>,
) -> Result<(), Reason> {
    out.stage = Stage::Connect;
    let limits = &listener.limits;
    // What the upstream gets first: the PROXY header when configured, then every byte read.
    let first: Cow<'_, [u8]> = match listener.config.proxy_protocol_out {
        Some(version) => {
            let local = client.local_addr().unwrap_or(candidates[0]);
            let header = proxy_protocol::encode(version, out.client, out.original_dst.or(proxied_dst).unwrap_or(local));
            Cow::Owned([&header[..], &buf[..]].concat())
        }
        None => Cow::Borrowed(&buf[..]),
    };
    let connecting = Instant::now();
    let (mut up, sent) = upstream::connect_any(candidates, limits.connect_timeout(), listener.config.mark, &first)
        .await
        .map_err(|e| {
            out.error = Some(e.to_string());
            Reason::UpstreamError
        })?;
    listener.metrics.connected(connecting.elapsed().as_secs_f64());
    // One candidate (upstream and transparent modes) is the address connected to: no getpeername.
    let addr = match candidates {
        [only] => *only,
        _ => up.peer_addr().unwrap_or(candidates[0]),
    };
    out.upstream = Some(addr);
    out.stage = Stage::Splice;
    if let Err(e) = up.write_all(&first[sent..]).await {
        out.error = Some(e.to_string());
        return Ok(());
    }
    drop(first);
    out.bytes_up = buf.len() as u64;
    *buf = BytesMut::new();
    let (moved, end) = splice(client, &up, limits.idle_timeout(), listener.config.splice).await;
    let Moved { upstream, downstream } = moved;
    out.bytes_up += upstream;
    out.bytes_down = downstream;
    match end {
        End::Closed => {}
        End::Idle => out.error = Some(format!("idle for {:?}", Duration::from_secs_f64(limits.idle_timeout))),
        End::Error(e) => out.error = Some(e.to_string()),
    }
    Ok(())
}
