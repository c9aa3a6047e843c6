//! The server: binds every listener of a configuration, accepts until shutdown, then drains.
//!
//! [`Server::bind`] validates nothing (the configuration already is) and binds every listener;
//! [`Server::run`] accepts until the shutdown future resolves, then drains: open connections
//! may finish until `drain_timeout`, and those still open then are cut, each still logged and
//! counted.
//!
//! With `[runtime] threads` N above 1 the server runs N workers, thread per core: each a
//! current-thread runtime on its own thread, with its own listening socket per TCP listener
//! (SO_REUSEPORT, so that the kernel spreads new connections over the workers and each
//! connection lives on the worker that accepted it). The first worker is the calling runtime,
//! which also runs the QUIC listeners, the metrics endpoint and reloads.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::{ArcSwap, Guard};
use socket2::{Domain, Socket, Type};
use tokio::io::Interest;
use tokio::io::unix::AsyncFd;
use tokio::task::JoinSet;

use super::connection;
use super::listener::{DrainDeadline, Listener, ListenerMode, Slots};
use super::live::{Live, SharedLive};
use super::quic;
use super::resolver::Resolver;
use super::sources::{Sources, Waiting};
use super::upstream;
use crate::access_log::AccessLog;
use crate::config::{Config, ListenerConfig, ModeConfig, Protocol, VerifyDestination};
use crate::metrics::registry::Metrics;
use crate::phase::{Phase, Phases};
use crate::policy::decide::RuleSet;
use crate::policy::destination::DestinationGuard;

/// Longest pause of the accept loop after an accept error (EMFILE, ENFILE, ENOBUFS…).
const MAX_ACCEPT_BACKOFF: Duration = Duration::from_secs(1);

/// A listener's bound sockets.
enum Bound {
    /// TCP, listening: at least one socket per worker (see [`stream_sockets`]), not yet registered
    /// with any runtime.
    Stream(Vec<Socket>),
    /// UDP (`protocol = "quic"`).
    Datagram(Socket),
}

impl Bound {
    fn sockets(&self) -> &[Socket] {
        match self {
            Bound::Stream(s) => s,
            Bound::Datagram(s) => std::slice::from_ref(s),
        }
    }
}

/// One worker beyond the first, until its thread takes its runtime: a runtime dropped unused
/// (the thread could not start) is shut down in the background.
struct Worker {
    /// The worker's current-thread runtime.
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for Worker {
    fn drop(&mut self) {
        // A runtime may not be dropped where blocking is not allowed (in async code).
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// A worker's listening sockets, each with its listener.
type Share = Vec<(Socket, Arc<Listener>)>;

/// What the workers beyond the first are told.
#[derive(Clone, Copy, PartialEq, Eq)]
enum WorkerPhase {
    /// Accept.
    Accepting,
    /// Stop accepting; open connections run on.
    Draining,
    /// The drain is over (connections still open were cut): stop.
    Done,
}

/// Bound listeners, ready to run.
pub struct Server {
    /// Each listener's sockets and settings.
    listeners: Vec<(Bound, Arc<Listener>)>,
    /// How many workers accept: the runtime that calls [`run`](Self::run), and one thread
    /// each for the others.
    workers: usize,
    /// The live settings every listener reads (swapped on reload).
    live: LiveSettings,
    /// The process's phase: `Ready` once every listener accepts, `Draining` from shutdown,
    /// `Done` once drained. Readiness follows it.
    phases: Phases,
    /// Passed when the drain deadline is: connections still open are cut.
    drain_deadline: Arc<DrainDeadline>,
}

/// The live settings of a running server: the one swap, and the listeners whose own state
/// follows it (their slot counts, their access log's denial rate, the per-source table).
#[derive(Clone)]
pub struct LiveSettings {
    /// The swap.
    current: SharedLive,
    /// Every listener, to apply what is not read through the swap.
    listeners: Vec<Arc<Listener>>,
}

impl LiveSettings {
    fn new(current: SharedLive, listeners: Vec<Arc<Listener>>) -> LiveSettings {
        LiveSettings { current, listeners }
    }

    /// The current snapshot.
    pub fn load(&self) -> Guard<Arc<Live>> {
        self.current.load()
    }

    /// Swaps in `live`, for every connection that reads a setting from now on; connections
    /// already decided keep the rules they were decided with.
    pub fn store(&self, live: Live) {
        let limits = &live.limits;
        for l in &self.listeners {
            l.slots.set_max(limits.max_connections);
            l.access_log.set_deny_lines_per_second(live.deny_lines_per_second);
        }
        if let Some(l) = self.listeners.first() {
            l.sources.set_limits(limits.into());
        }
        self.current.store(Arc::new(live));
    }

    /// A copy of the current snapshot with `change` applied, swapped in.
    pub fn update(&self, change: impl FnOnce(&Live) -> Live) {
        let next = change(&self.load());
        self.store(next);
    }
}

/// How long connections cut at the drain deadline have to write their log lines.
const CUT_GRACE: Duration = Duration::from_secs(1);

impl Server {
    /// Binds every listener of `config`, with `rules` as the first snapshot, reporting to
    /// `metrics` and logging finished connections to `log`. Listening sockets a service
    /// manager passed (systemd socket activation) are adopted instead of bound.
    pub async fn bind(config: &Config, rules: RuleSet, metrics: Arc<Metrics>, log: &AccessLog) -> io::Result<Server> {
        Server::bind_adopting(config, rules, metrics, log, crate::sys::listen_fds(false)).await
    }

    /// [`bind`](Self::bind), adopting `passed` listening sockets (each with a listener name)
    /// by name or address: those a running snigate handed over, or a service manager passed.
    pub async fn bind_adopting(
        config: &Config,
        rules: RuleSet,
        metrics: Arc<Metrics>,
        log: &AccessLog,
        mut passed: Vec<(String, Socket)>,
    ) -> io::Result<Server> {
        metrics.rules_loaded(&rules);
        let rules = Arc::new(rules);
        let usage = metrics.rule_usage(&rules);
        let fingerprint = Arc::new(config.fingerprint());
        metrics.rules_identity(&fingerprint.sha256);
        metrics.report_scopes(config);
        let live = Arc::new(ArcSwap::from_pointee(Live::new(config, rules, usage, fingerprint)));
        let resolver = Arc::new(Resolver::from_system());
        let drain_deadline = Arc::new(DrainDeadline::default());
        let workers = config.runtime.worker_threads().max(1);
        // Passed sockets are adopted by name or address; the rest are bound.
        let mut sockets = Vec::new();
        for l in &config.listeners {
            let l = l.get_ref();
            let context = |e| crate::sys::bind_error(&format!("listener {:?}", l.label()), l.listen, e);
            // A TCP and a QUIC listener may share an address: the socket's type tells them apart.
            let kind = match l.protocol {
                Protocol::Tcp => Type::STREAM,
                Protocol::Quic => Type::DGRAM,
            };
            let ours = |(name, s): &(String, Socket)| {
                (*name == l.label() || s.local_addr().ok().and_then(|a| a.as_socket()) == Some(l.listen))
                    && s.r#type().ok() == Some(kind)
            };
            let (adopted, rest): (Vec<_>, Vec<_>) = passed.into_iter().partition(ours);
            passed = rest;
            let adopted: Vec<Socket> = adopted.into_iter().map(|(_, s)| s).collect();
            let socket = match l.protocol {
                Protocol::Tcp => Bound::Stream(stream_sockets(l, adopted, workers).map_err(context)?),
                Protocol::Quic => {
                    let mut adopted = adopted.into_iter();
                    let socket = match adopted.next() {
                        Some(socket) => quic::adopt(socket),
                        None => quic::bind(l.listen, l.mode.tproxy()),
                    };
                    // Handed-over duplicates of the same socket: one is enough.
                    drop(adopted);
                    Bound::Datagram(socket.map_err(context)?)
                }
            };
            sockets.push(socket);
        }
        for (name, socket) in passed {
            let addr = socket.local_addr().ok().and_then(|a| a.as_socket());
            tracing::warn!(%name, ?addr, "a passed socket matches no listener; closing it");
        }
        // snigate's own addresses, as bound (port 0 resolved), are never a destination.
        let mut own: Vec<SocketAddr> =
            sockets.iter().filter_map(|s| s.sockets().first()?.local_addr().ok()?.as_socket()).collect();
        own.extend(config.metrics.address());
        let destinations = &config.destinations;
        // This machine's addresses, refused as destinations on every port; later ones are found
        // by the route lookup of `upstream::is_local`.
        let machine = crate::sys::interface_addresses().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot list this machine's addresses; only route lookups will find them");
            Vec::new()
        });
        let guard = Arc::new(DestinationGuard::new(
            destinations.allow.clone(),
            destinations.deny.clone(),
            own.clone(),
            machine,
        ));
        let limits = &config.limits;
        let sources = Arc::new(Sources::new(limits.into(), metrics.sources_tracked()));
        let mut listeners = Vec::new();
        for (index, (l, socket)) in config.listeners.iter().zip(sockets).enumerate() {
            let l = l.get_ref();
            let mode = resolve_mode(config, l, &guard).await?;
            if let Some(credentials) = l.mode.credentials().filter(|c| c.exposed()) {
                let path = credentials.path.display();
                tracing::warn!(listener = %l.label(), %path, "the credentials file is readable by group or others");
            }
            let max_connections = config.limits.max_connections;
            let name = l.label();
            let listener = Listener {
                access_log: log.listener(&name),
                metrics: metrics.listener(&name, max_connections),
                decisions: metrics.decisions().clone(),
                name: name.into(),
                index,
                listen: l.listen,
                mode,
                reject: l.reject,
                mark: l.mark,
                proxy_in: l.proxy_protocol_trusted.clone(),
                proxy_out: l.proxy_protocol_out,
                splice: l.splice,
                live: live.clone(),
                slots: Slots::new(max_connections),
                resolver: resolver.clone(),
                guard: guard.clone(),
                sources: sources.clone(),
                waiting: Waiting::default(),
                drain: drain_deadline.clone(),
            };
            listeners.push((socket, Arc::new(listener)));
        }
        let live = LiveSettings::new(live, listeners.iter().map(|(_, l)| l.clone()).collect());
        let phases = Phases::default();
        tokio::spawn(follow_readiness(phases.subscribe(), metrics));
        Ok(Server { listeners, workers, live, phases, drain_deadline })
    }

    /// The bound addresses, in configuration order (useful with port 0).
    pub fn local_addrs(&self) -> Vec<SocketAddr> {
        self.listeners.iter().filter_map(|(s, _)| s.sockets().first()?.local_addr().ok()?.as_socket()).collect()
    }

    /// The process's phases, which this server moves on as it accepts and drains.
    pub fn phases(&self) -> Phases {
        self.phases.clone()
    }

    /// The live settings, to swap in reloaded ones.
    pub fn live(&self) -> LiveSettings {
        self.live.clone()
    }

    /// Every listening socket with its listener name, duplicated: what a new process takes
    /// over (the duplicates keep the sockets open until handed over). A TCP listener has one
    /// per worker: all are handed over, since closing one of them would reset the
    /// connections waiting in its accept queue.
    pub fn handover_sockets(&self) -> io::Result<Vec<(String, Socket)>> {
        let mut out = Vec::new();
        for (bound, l) in &self.listeners {
            for s in bound.sockets() {
                out.push((l.name.to_string(), s.try_clone()?));
            }
        }
        Ok(out)
    }

    /// Accepts on every listener until `shutdown` resolves, then stops accepting and waits up to
    /// the drain deadline for open connections to finish. Those still open then are cut, and
    /// write their log lines and count in the metrics before this returns.
    ///
    /// A listening socket that cannot be registered with its worker's runtime (the kernel is out
    /// of memory for epoll) is logged and left unserved; its worker serves its other sockets.
    pub async fn run(self, shutdown: impl std::future::Future<Output = ()>) {
        let (phase, _) = tokio::sync::watch::channel(WorkerPhase::Accepting);
        let mut accepting = JoinSet::new();
        let mut slots = Vec::new();
        let mut shares: Vec<Share> = (0..self.workers).map(|_| Vec::new()).collect();
        for (bound, listener) in self.listeners {
            slots.push(listener.slots.clone());
            match bound {
                Bound::Stream(sockets) => {
                    for (i, socket) in sockets.into_iter().enumerate() {
                        shares[i % self.workers].push((socket, listener.clone()));
                    }
                }
                Bound::Datagram(socket) => {
                    accepting.spawn(quic::serve(socket, listener));
                }
            }
        }
        let (stopped_tx, mut stopped) = tokio::sync::mpsc::channel(self.workers);
        let mut shares = shares.into_iter();
        serve_here(&mut accepting, shares.next().unwrap_or_default());
        let mut threads = Vec::new();
        // A worker with no TCP socket to serve (QUIC listeners only) is not started.
        for (k, share) in shares.enumerate().filter(|(_, share)| !share.is_empty()) {
            match Worker::start(k + 1, share, phase.subscribe(), stopped_tx.clone()) {
                Ok(thread) => threads.push(thread),
                Err((e, share)) => {
                    tracing::error!(worker = k + 1, error = %e, "cannot start a worker; the first serves its sockets");
                    serve_here(&mut accepting, share);
                }
            }
        }
        drop(stopped_tx);
        self.phases.set(Phase::Ready);
        shutdown.await;
        self.phases.set(Phase::Draining);
        let _ = phase.send(WorkerPhase::Draining);
        accepting.abort_all();
        while accepting.join_next().await.is_some() {}
        // Every worker has stopped accepting (each says so, then drops its sender) before the
        // drain waits for the open connections.
        while stopped.recv().await.is_some() {}
        let drain = self.live.load().timeouts.drain;
        tracing::info!(deadline = ?drain, "stopped accepting; draining open connections");
        let drained = || async {
            for s in &slots {
                s.all_free().await;
            }
        };
        if tokio::time::timeout(drain, drained()).await.is_err() {
            tracing::warn!("drain deadline passed with connections still open; cutting them");
            self.drain_deadline.pass();
            let _ = tokio::time::timeout(CUT_GRACE, drained()).await;
        }
        let _ = phase.send(WorkerPhase::Done);
        let joined = tokio::task::spawn_blocking(move || {
            for thread in threads {
                let _ = thread.join();
            }
        });
        let _ = joined.await;
        self.phases.set(Phase::Done);
    }
}

/// Readiness (`/readyz`) follows the phase: ready while new connections are accepted.
async fn follow_readiness(mut phase: tokio::sync::watch::Receiver<Phase>, metrics: Arc<Metrics>) {
    loop {
        metrics.set_ready(phase.borrow_and_update().serving());
        if phase.changed().await.is_err() {
            return;
        }
    }
}

/// Serves `share` on the calling runtime: a socket that cannot be registered is logged and left.
fn serve_here(accepting: &mut JoinSet<()>, share: Share) {
    for (socket, listener) in share {
        match crate::sys::register_listener(socket) {
            Ok(socket) => {
                accepting.spawn(accept_loop(socket, listener));
            }
            Err(e) => tracing::error!(listener = %listener.name, error = %e, "cannot serve a listening socket"),
        }
    }
}

impl Worker {
    /// Starts worker `k` on its own thread, with its own current-thread runtime: it accepts on
    /// `share` until told to drain, says on `stopped` that it no longer accepts, then runs its
    /// open connections until told it is done. When it cannot start, `share` comes back.
    fn start(
        k: usize,
        share: Share,
        mut phase: tokio::sync::watch::Receiver<WorkerPhase>,
        stopped: tokio::sync::mpsc::Sender<()>,
    ) -> Result<std::thread::JoinHandle<()>, (io::Error, Share)> {
        let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
            Ok(runtime) => runtime,
            Err(e) => return Err((e, share)),
        };
        let worker = Worker { runtime: Some(runtime) };
        // Taken by the thread; still here if the thread cannot be started.
        let share = Arc::new(std::sync::Mutex::new(share));
        let theirs = share.clone();
        let spawned = std::thread::Builder::new().name(format!("snigate-worker-{k}")).spawn(move || {
            crate::metrics::worker::set_worker(k);
            let mut worker = worker;
            let runtime = worker.runtime.take().expect("set above");
            let share = std::mem::take(&mut *theirs.lock().unwrap_or_else(|e| e.into_inner()));
            runtime.block_on(async {
                let mut accepting = JoinSet::new();
                serve_here(&mut accepting, share);
                let _ = phase.wait_for(|p| *p != WorkerPhase::Accepting).await;
                accepting.abort_all();
                while accepting.join_next().await.is_some() {}
                let _ = stopped.send(()).await;
                drop(stopped);
                let _ = phase.wait_for(|p| *p == WorkerPhase::Done).await;
            });
            // What is still open was cut at the drain deadline and has logged.
            runtime.shutdown_background();
        });
        spawned.map_err(|e| (e, std::mem::take(&mut *share.lock().unwrap_or_else(|e| e.into_inner()))))
    }
}

/// A TCP listener's sockets for `workers` workers: those passed (`adopted`, handed over or from
/// the service manager), else one bound with SO_REUSEPORT per worker. Fewer passed than
/// workers: more are bound beside them when the passed ones have SO_REUSEPORT, else the workers
/// share them (each registers its own duplicate; the kernel wakes each for a new connection and
/// one accepts it).
fn stream_sockets(l: &ListenerConfig, adopted: Vec<Socket>, workers: usize) -> io::Result<Vec<Socket>> {
    let reuse = workers > 1;
    let mut sockets = Vec::with_capacity(workers);
    for socket in adopted {
        sockets.push(adopt(socket, defers(l))?);
    }
    if sockets.is_empty() {
        sockets.push(listen(l.listen, l.mode.tproxy(), defers(l), reuse)?);
    }
    let bound = sockets[0].local_addr()?.as_socket().unwrap_or(l.listen);
    let extensible = reuse && sockets[0].reuse_port()?;
    while sockets.len() < workers {
        let more =
            if extensible { listen(bound, l.mode.tproxy(), defers(l), true)? } else { sockets[0].try_clone()? };
        sockets.push(more);
    }
    Ok(sockets)
}

/// How long the kernel holds a connection whose client has sent nothing, before accepting it
/// anyway (TCP_DEFER_ACCEPT); the hello timeout starts at the accept.
const DEFER_ACCEPT_SECS: u32 = 1;

/// Most connections waiting to be accepted (the kernel caps it at `net.core.somaxconn`).
const BACKLOG: i32 = 1024;

/// Whether a listener defers accepts until the client has sent something: every mode but
/// `transparent`, which receives every protocol, some of them server-speaks-first, and must
/// accept those at once.
fn defers(l: &ListenerConfig) -> bool {
    !matches!(l.mode, ModeConfig::Transparent { .. })
}

/// A listening socket: SO_REUSEADDR; SO_REUSEPORT with `reuse_port` (one socket per worker);
/// IPV6_V6ONLY for an IPv6 address (an IPv4 listener on the same port is a separate socket);
/// TCP_NODELAY, which accepted sockets inherit (no setsockopt per connection); with `defer`,
/// TCP_DEFER_ACCEPT, so that a connection is accepted with its hello already there;
/// IP_TRANSPARENT with `tproxy`, to accept connections addressed to any address that policy
/// routing delivers locally.
fn listen(addr: SocketAddr, tproxy: bool, defer: bool, reuse_port: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking(), None)?;
    if tproxy && addr.is_ipv4() {
        socket.set_ip_transparent_v4(true)?;
    } else if tproxy {
        socket.set_ip_transparent_v6(true)?;
    }
    if addr.is_ipv6() {
        socket.set_only_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    if reuse_port {
        socket.set_reuse_port(true)?;
    }
    socket.set_tcp_nodelay(true)?;
    if defer {
        crate::sys::set_defer_accept(socket.as_fd(), DEFER_ACCEPT_SECS)?;
    }
    socket.bind(&addr.into())?;
    socket.listen(BACKLOG)?;
    Ok(socket)
}

/// A listening socket a service manager passed: set up like one snigate binds itself (the
/// manager's unit chose the address, the backlog and, for TPROXY, `Transparent=`).
fn adopt(socket: Socket, defer: bool) -> io::Result<Socket> {
    if !socket.is_listener()? {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "the passed socket is not listening"));
    }
    socket.set_nonblocking(true)?;
    socket.set_tcp_nodelay(true)?;
    crate::sys::set_defer_accept(socket.as_fd(), if defer { DEFER_ACCEPT_SECS } else { 0 })?;
    Ok(socket)
}

/// One pending connection, non-blocking and close-on-exec, or WouldBlock.
fn accept(listener: &Socket) -> io::Result<(Socket, socket2::SockAddr)> {
    listener.accept4(libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC)
}

async fn accept_loop(socket: AsyncFd<Socket>, listener: Arc<Listener>) {
    let mut backoff = Duration::from_millis(5);
    loop {
        // Accepted sockets are left unregistered: the connection registers its socket only
        // if it has to wait on it (see `connection::handle`).
        let accepted = socket.async_io(Interest::READABLE, accept).await;
        match accepted {
            Ok((stream, peer)) => {
                backoff = Duration::from_millis(5);
                // A slot is taken once a connection is there, not before (an idle worker would
                // hold one). Full: the connection that has waited longest for its hello makes
                // room for this one. When none is waiting for a hello, this one waits for a slot
                // (and the next ones in this socket's accept queue).
                let slot = match listener.slots.try_take() {
                    Some(slot) => slot,
                    None => {
                        listener.waiting.evict_oldest();
                        listener.slots.take().await
                    }
                };
                let Some(peer) = peer.as_socket() else { continue };
                let active = listener.metrics.accepted();
                // Boxed: tokio would otherwise move the 2.5 KB future several times on its way
                // into the task, and allocate the task with a slower aligned allocation
                // (callgrind: 1.7k fewer instructions per connection).
                tokio::spawn(Box::pin(connection::serve(listener.clone(), stream.into(), peer, (slot, active))));
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

/// A listener's mode as its connections use it: the fixed upstream resolved (and refused when
/// it is snigate itself), the explicit modes' ports, the port names are reached on.
async fn resolve_mode(config: &Config, l: &ListenerConfig, guard: &DestinationGuard) -> io::Result<ListenerMode> {
    Ok(match &l.mode {
        ModeConfig::Sni { upstream_port } => ListenerMode::Sni { port: upstream_port.unwrap_or(l.listen.port()) },
        ModeConfig::Upstream { upstream } => {
            let addr = resolve_static(upstream).await?;
            if let Some(listen) = guard.own_listener(addr, upstream::is_local) {
                let why = format!("upstream {addr} is snigate's own address {listen}: it would loop");
                return Err(io::Error::new(io::ErrorKind::InvalidInput, why));
            }
            ListenerMode::Upstream { addr }
        }
        ModeConfig::Transparent { tproxy, verify_destination } => {
            ListenerMode::Transparent { tproxy: *tproxy, verify: *verify_destination == Some(VerifyDestination::Dns) }
        }
        ModeConfig::Connect { .. } => ListenerMode::Connect { ports: config.destination_ports(l) },
        ModeConfig::Http { .. } => ListenerMode::Http { ports: config.destination_ports(l) },
    })
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
        let listener =
            crate::sys::register_listener(listen("127.0.0.1:0".parse().unwrap(), false, true, false).unwrap()).unwrap();
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

    /// A connection's task is held for its whole life, so its size is the memory of an idle
    /// connection: it must not grow past its budget unnoticed.
    #[tokio::test]
    async fn the_connection_task_stays_within_its_budget() {
        let text = "[[listener]]\nlisten = \"127.0.0.1:0\"\nmode = \"sni\"\n[log]\nformat = \"off\"\n";
        let config = Config::parse("test", text).unwrap();
        let log = AccessLog::open(&config.log).unwrap();
        let metrics = Arc::new(Metrics::new());
        let server = Server::bind(&config, config.compile_rules().unwrap(), metrics, &log).await.unwrap();
        let listener = server.listeners[0].1.clone();
        let backend = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let _client = std::net::TcpStream::connect(backend.local_addr().unwrap()).unwrap();
        let (accepted, peer) = backend.accept().unwrap();
        let slot = (listener.slots.try_take().unwrap(), listener.metrics.accepted());
        let waiting = connection::waiting_size(&listener, accepted.try_clone().unwrap(), peer);
        let task = connection::serve(listener.clone(), accepted, peer, slot);
        let size = std::mem::size_of_val(&task);
        println!("connection task: {size} bytes (budget {})", connection::TASK_BUDGET);
        assert!(size <= connection::TASK_BUDGET, "the connection task grew to {size} bytes");
        println!("waiting for a hello, boxed: {waiting} bytes (budget {})", connection::WAITING_BUDGET);
        assert!(waiting <= connection::WAITING_BUDGET, "the waiting stages grew to {waiting} bytes");
    }
}
