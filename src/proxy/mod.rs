//! The proxy: listeners, the per-connection pipeline, upstreams, splicing and rejecting.
//!
//! [`Server::bind`] validates nothing (the configuration already is) and binds every listener;
//! [`Server::run`] accepts until the shutdown future resolves, then drains.

mod connection;
mod explicit;
mod http;
mod proxy_protocol;
mod reject;
mod resolver;
mod splice;
mod upstream;

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use socket2::{Domain, Socket, Type};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

pub use connection::{Outcome, Stage};
pub use explicit::parse_credentials;
pub use proxy_protocol::{ProxyError, Version as ProxyVersion};
pub use reject::{Alert, RejectStyle};
pub use resolver::Resolver;
pub use splice::{End, Moved, SpliceMode, splice};

use crate::access_log::{AccessLog, ListenerLog};
use crate::config::{Config, EchPolicy, ListenerConfig};
use crate::metrics::{ListenerMetrics, Metrics};
use crate::policy::RuleSet;

/// The rule snapshot every listener reads; a reload swaps it whole.
pub type Rules = Arc<ArcSwap<RuleSet>>;

/// Longest pause of the accept loop after an accept error (EMFILE, ENFILE, ENOBUFS…).
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// One listener's settings, shared by its connections.
pub struct Listener {
    /// The `listener` label.
    pub name: Arc<str>,
    /// The listener's configuration block.
    pub config: ListenerConfig,
    /// Limits and timeouts.
    pub limits: crate::config::Limits,
    /// The parser's limits, derived from `limits` and `[rules]`.
    pub hello_limits: crate::hello::Limits,
    /// ECH handling.
    pub ech: EchPolicy,
    /// `upstream` mode: the resolved upstream address.
    pub upstream: Option<SocketAddr>,
    /// `sni` mode: the port to connect to.
    pub upstream_port: u16,
    /// The shared rule snapshot.
    pub rules: Rules,
    /// Where finished connections are logged (rate-limited for denials, never blocking).
    pub access_log: ListenerLog,
    /// This listener's metric handles, resolved once.
    pub metrics: ListenerMetrics,
    /// Open connections; `max_connections` permits.
    pub slots: Arc<Semaphore>,
    /// `sni` mode: resolves allowed names (one cache shared by all listeners).
    pub resolver: Arc<Resolver>,
    /// `connect` mode: accepted `user:password` pairs; empty: no authentication.
    pub credentials: Vec<Vec<u8>>,
}

/// Bound listeners, ready to run.
pub struct Server {
    /// Each listener's socket and settings.
    listeners: Vec<(AsyncFd<Socket>, Arc<Listener>)>,
    /// The shared rule snapshot (swapped on reload).
    rules: Rules,
    /// How long open connections may take to finish after shutdown.
    drain: Duration,
    /// Readiness is flipped here: ready once every listener accepts, not ready from shutdown.
    metrics: Arc<Metrics>,
}

impl Server {
    /// Binds every listener of `config`, with `rules` as the first snapshot, reporting to
    /// `metrics` and logging finished connections to `log`.
    pub async fn bind(config: &Config, rules: RuleSet, metrics: Arc<Metrics>, log: &AccessLog) -> io::Result<Server> {
        metrics.rules_loaded(&rules);
        let rules: Rules = Arc::new(ArcSwap::from_pointee(rules));
        let resolver = Arc::new(Resolver::from_system());
        let mut listeners = Vec::new();
        for l in &config.listeners {
            let l = l.get_ref();
            let socket = listen(l.listen, l.tproxy).map_err(|e| with_context(e, &format!("bind {}", l.listen)))?;
            let upstream = match &l.upstream {
                Some(u) => Some(resolve_static(u).await?),
                None => None,
            };
            let limits = config.limits.clone();
            let name = l.label();
            let listener = Listener {
                access_log: log.listener(&name),
                metrics: metrics.listener(&name, limits.max_connections),
                name: name.into(),
                config: l.clone(),
                hello_limits: crate::hello::Limits {
                    max_hello_bytes: limits.max_hello_bytes,
                    allow_underscore: config.rules.sni_allow_underscore,
                },
                slots: Arc::new(Semaphore::new(limits.max_connections)),
                limits,
                ech: config.rules.ech,
                upstream,
                upstream_port: l.upstream_port.unwrap_or(l.listen.port()),
                rules: rules.clone(),
                resolver: resolver.clone(),
                credentials: match &l.credentials {
                    Some(path) => std::fs::read_to_string(path)
                        .map_err(|e| with_context(e, &format!("credentials {}", path.display())))
                        .and_then(|t| parse_credentials(&t).map_err(io::Error::other))?,
                    None => Vec::new(),
                },
            };
            listeners.push((socket, Arc::new(listener)));
        }
        Ok(Server { listeners, rules, drain: config.limits.drain_timeout(), metrics })
    }

    /// The bound addresses, in configuration order (useful with port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().filter_map(|(s, _)| s.get_ref().local_addr().ok()?.as_socket()).collect()
    }

    /// The rule snapshot, to swap in a reloaded one.
    pub fn rules(&self) -> Rules {
        self.rules.clone()
    }

    /// Accepts on every listener until `shutdown` resolves, then stops accepting and waits up to
    /// the drain deadline for open connections to finish.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let mut accepting = JoinSet::new();
        let mut slots = Vec::new();
        for (socket, listener) in self.listeners {
            slots.push((listener.slots.clone(), listener.limits.max_connections));
            accepting.spawn(accept_loop(socket, listener));
        }
        self.metrics.set_ready(true);
        shutdown.await;
        self.metrics.set_ready(false);
        accepting.abort_all();
        while accepting.join_next().await.is_some() {}
        tracing::info!(deadline = ?self.drain, "stopped accepting; draining open connections");
        let drained = async {
            for (sem, max) in slots {
                let _ = sem.acquire_many(u32::try_from(max).unwrap_or(u32::MAX)).await;
            }
        };
        if tokio::time::timeout(self.drain, drained).await.is_err() {
            tracing::warn!("drain deadline passed with connections still open; closing them");
        }
    }
}

/// How long the kernel holds a connection whose client has sent nothing, before accepting it
/// anyway (TCP_DEFER_ACCEPT); the hello timeout starts at the accept.
const DEFER_ACCEPT_SECS: u32 = 1;

/// Most connections waiting to be accepted (the kernel caps it at `net.core.somaxconn`).
const BACKLOG: i32 = 1024;

/// A listening socket registered with the runtime: SO_REUSEADDR; TCP_NODELAY, which accepted
/// sockets inherit (no setsockopt per connection); TCP_DEFER_ACCEPT, so that a connection is
/// accepted with its hello already there; IP_TRANSPARENT with `tproxy`, to accept connections
/// addressed to any address that policy routing delivers locally.
fn listen(addr: SocketAddr, tproxy: bool) -> io::Result<AsyncFd<Socket>> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking(), None)?;
    if tproxy && addr.is_ipv4() {
        socket.set_ip_transparent_v4(true)?;
    } else if tproxy {
        socket.set_ip_transparent_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_tcp_nodelay(true)?;
    crate::sys::set_defer_accept(socket.as_fd(), DEFER_ACCEPT_SECS)?;
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    crate::sys::register_listener(socket)
}

/// One pending connection, non-blocking and close-on-exec, or WouldBlock.
fn accept(listener: &Socket) -> io::Result<(Socket, socket2::SockAddr)> {
    listener.accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
}

async fn accept_loop(socket: AsyncFd<Socket>, listener: Arc<Listener>) {
    let mut backoff = Duration::from_millis(5);
    loop {
        let Ok(permit) = listener.slots.clone().acquire_owned().await else { return };
        // Accepted sockets are left unregistered: the connection registers its socket only
        // if it has to wait on it (see `connection::handle`).
        let accepted = socket.async_io(Interest::READABLE, accept).await;
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                let Some(peer) = peer.as_socket() else { continue };
                let listener = listener.clone();
                let active = listener.metrics.accepted();
                tokio::spawn(async move {
                    let outcome = connection::handle(&listener, stream.into(), peer).await;
                    listener.metrics.finished(&outcome);
                    if let Err(cause) = listener.access_log.write(outcome) {
                        listener.metrics.log_suppressed(cause);
                    }
                    drop(active);
                    drop(permit);
                });
            }
            Err(e) => {
                // EMFILE/ENFILE and friends: the condition persists until something closes,
                // so retrying at once would spin. Back off, doubling up to a second.
                listener.metrics.accept_failed();
                tracing::warn!(listener = %listener.name, error = %e, ?backoff, "accept failed; backing off");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MAX_ACCEPT_BACKOFF);
            }
        }
    }
}

async fn resolve_static(upstream: &str) -> io::Result<SocketAddr> {
    if let Ok(addr) = upstream.parse() {
        return Ok(addr);
    }
    let (host, port) = upstream.rsplit_once(':').and_then(|(h, p)| Some((h, p.parse().ok()?))).ok_or_else(|| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("upstream {upstream:?} is not host:port"))
    })?;
    upstream::resolve(host, port).await.map_err(|e| with_context(e, &format!("resolve upstream {upstream}")))
}

fn with_context(e: io::Error, what: &str) -> io::Error {
    io::Error::new(e.kind(), format!("{what}: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    /// Accepted sockets inherit TCP_NODELAY from the listener, and are accepted only once the
    /// client has sent something.
    #[tokio::test]
    async fn accepted_sockets_have_nodelay_and_their_first_bytes() {
        let listener = listen("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let addr = listener.get_ref().local_addr().unwrap().as_socket().unwrap();
        let mut client = std::net::TcpStream::connect(addr).unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(accept(listener.get_ref()).unwrap_err().kind(), io::ErrorKind::WouldBlock, "no data, no accept");
        client.write_all(b"x").unwrap();
        let (accepted, _) = tokio::time::timeout(Duration::from_secs(2), listener.async_io(Interest::READABLE, accept))
            .await
            .unwrap()
            .unwrap();
        assert!(accepted.tcp_nodelay().unwrap());
        let mut first = [std::mem::MaybeUninit::new(0u8); 1];
        assert_eq!(accepted.recv(&mut first).unwrap(), 1, "the first byte is there at accept");
    }
}
