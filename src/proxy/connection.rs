//! One connection through the pipeline: hello, decision, upstream, replay, splice, log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use serde::Serialize;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::Listener;
use super::reject::reject;
use super::splice::{End, Moved, splice};
use super::upstream;
use crate::config::{EchPolicy, Mode};
use crate::hello::{ClientHello, read_client_hello};
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

/// What happened to one connection: the access-log record.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
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

/// Runs one accepted connection to its end and returns what happened.
pub async fn handle(listener: &Listener, mut client: TcpStream, peer: SocketAddr) -> Outcome {
    let start = Instant::now();
    let mut out = Outcome {
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
        upstream: None,
        stage: Stage::Hello,
        bytes_up: 0,
        bytes_down: 0,
        duration: 0.0,
        error: None,
    };
    let _ = client.set_nodelay(true);
    let mut buf = BytesMut::new();
    let limits = &listener.limits;
    match read_client_hello(&mut client, &mut buf, listener.hello_limits, limits.hello_timeout()).await {
        Ok(hello) => {
            record_hello(&mut out, &hello);
            if let Err(reason) = pass(listener, &mut client, &mut out, &hello, &mut buf).await {
                out.verdict = Verdict::Deny;
                out.reason = reason;
                reject(client, listener.config.reject, reason, &buf).await;
            }
        }
        Err(e) => {
            out.reason = e.reason();
            if out.reason != Reason::ClientClosed {
                out.error = Some(e.to_string());
            }
            reject(client, listener.config.reject, out.reason, &buf).await;
        }
    }
    out.duration = start.elapsed().as_secs_f64();
    out
}

fn record_hello(out: &mut Outcome, hello: &ClientHello) {
    out.sni = hello.sni.as_ref().map(|n| n.as_str().to_string());
    out.alpn = hello.alpn.clone();
    out.ech = hello.ech;
    let offered = hello.supported_versions.iter().copied().filter(|v| v & 0x0f0f != 0x0a0a).max();
    out.tls_version = Some(crate::cli::version_name(offered.unwrap_or(hello.legacy_version)));
}

/// Decides, connects, replays and splices. `Err(reason)`: deny with that reason.
async fn pass(
    listener: &Listener,
    client: &mut TcpStream,
    out: &mut Outcome,
    hello: &ClientHello,
    buf: &mut BytesMut,
) -> Result<(), Reason> {
    out.stage = Stage::Decide;
    if hello.ech && listener.ech == EchPolicy::Deny {
        return Err(Reason::Ech);
    }
    let dst = match listener.config.mode {
        Mode::Transparent => {
            out.original_dst = upstream::original_destination(client).ok().flatten();
            if out.original_dst.is_none() {
                out.error = Some("no original destination (not redirected, or addressed to snigate itself)".into());
                return Err(Reason::UpstreamError);
            }
            out.original_dst
        }
        Mode::Upstream => listener.upstream,
        Mode::Sni => None,
    };
    {
        let rules = listener.rules.load();
        let decision = rules.decide(hello.sni.as_ref(), out.client.ip(), dst);
        out.verdict = decision.verdict;
        out.reason = decision.reason;
        out.rule = decision.rule.map(RuleRef::to_string);
    }
    if out.verdict == Verdict::Deny {
        return Err(out.reason);
    }
    out.stage = Stage::Resolve;
    let addr = match (dst, &hello.sni) {
        (Some(addr), _) => addr,
        (None, Some(sni)) => upstream::resolve(sni.as_str(), listener.upstream_port).await.map_err(|e| {
            out.error = Some(e.to_string());
            Reason::UpstreamError
        })?,
        (None, None) => return Err(Reason::UpstreamError),
    };
    out.upstream = Some(addr);
    out.stage = Stage::Connect;
    let limits = &listener.limits;
    let mut up = upstream::connect(addr, limits.connect_timeout(), listener.config.mark).await.map_err(|e| {
        out.error = Some(e.to_string());
        Reason::UpstreamError
    })?;
    out.stage = Stage::Splice;
    if let Err(e) = up.write_all(buf).await {
        out.error = Some(e.to_string());
        return Ok(());
    }
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
