//! The process's one lifecycle: starting, ready, reloading, handing over, draining, done.
//!
//! [`run`] owns the phases ([`Phase`]). Signals become [`Event`]s here and nowhere else:
//! SIGHUP reloads, SIGUSR1 reopens the access log, SIGUSR2 hands the listening sockets to a new
//! process, SIGTERM and SIGINT stop. What depends on the phase follows it: readiness (`/readyz`) through the server, the
//! reload task, the handover.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use std::os::fd::OwnedFd;

use socket2::Socket;
use tokio::sync::{Notify, mpsc};

use crate::access_log::AccessLog;
use crate::config::{Config, ConfigError, Keyword};
use crate::handover::{self, Role};
use crate::metrics::endpoint::Endpoint;
use crate::metrics::registry::Metrics;

use crate::policy::decide::RuleSet;
use crate::proxy::server::Server;
use crate::reload::{self, ReloadTrigger};

mod handovers;
mod master;
mod notify;
mod ownership;
mod signals;

pub use handovers::own_command;
pub use master::run as run_master;

use crate::phase::Phase;
use handovers::Handovers;
pub use signals::Event;
use signals::spawn_signals;

/// What a start needs: a validated configuration, its compiled rules, and how to read the
/// configuration again.
pub struct Start {
    /// The configuration to run.
    pub config: Config,
    /// Its rules, compiled.
    pub rules: RuleSet,
    /// Take over the sockets of the snigate serving this handover socket.
    pub takeover: Option<PathBuf>,
    /// Reads the configuration again, as it was read at start (a SIGHUP).
    pub reread: Box<dyn Fn() -> Result<Config, Vec<ConfigError>> + Send>,
    /// Started by a master process: serve handovers at this path (in the master's private
    /// directory), and leave upgrades to the master.
    pub worker: Option<PathBuf>,
}

/// Why the process could not start, with the OS error kind behind it where there is one (a
/// taken address, a privileged port), from which the exit code follows.
#[derive(Debug)]
pub struct StartError {
    /// The OS error kind, when an OS call failed.
    pub kind: Option<std::io::ErrorKind>,
    /// What happened, and its fix.
    pub message: String,
}

impl From<String> for StartError {
    fn from(message: String) -> StartError {
        StartError { kind: None, message }
    }
}

impl From<std::io::Error> for StartError {
    fn from(e: std::io::Error) -> StartError {
        StartError { kind: Some(e.kind()), message: e.to_string() }
    }
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// Runs the process until it has drained: binds (or takes over) every socket, serves, reloads
/// on SIGHUP and on file changes, hands over on SIGUSR2 or a handover connection, and drains on
/// SIGTERM, SIGINT or a completed handover. `Err` when it cannot start.
pub fn run(start: Start) -> Result<(), StartError> {
    let Start { mut config, rules, takeover, reread, worker } = start;
    let handover_path = worker.clone().or_else(|| config.runtime.handover_socket.clone());
    let worker = worker.is_some();
    let threads = config.runtime.worker_threads();
    // The first worker; the server starts the others on their own threads (thread per core).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    open_files(&config);
    let log = Arc::new(AccessLog::open(&config.log).map_err(|e| e.to_string())?);
    // Taking over from a running snigate: only now, with this configuration valid. Nobody
    // serving the handover socket (a first start, as in a rollout) is not an error: the
    // listeners are then bound as usual.
    let (passed, confirm) = match &takeover {
        Some(path) => match handover::take_over(path) {
            Ok((sockets, confirm)) => (sockets, Some(confirm)),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => {
                eprintln!("snigate run: nothing to take over ({e}); binding the listeners");
                (systemd_sockets(worker), None)
            }
            Err(e) => return Err(e.to_string().into()),
        },
        None => (systemd_sockets(worker), None),
    };
    let served = runtime.block_on(async {
        let metrics = Arc::new(Metrics::with_workers(threads));
        let (mut listening, mut handed_metrics, mut locks) = (Vec::new(), None, Vec::new());
        for (role, fd) in passed {
            match role {
                Role::Listener(name) => listening.push((name, Socket::from(fd))),
                Role::Metrics => handed_metrics = Some(Socket::from(fd)),
                Role::Lock(name) => locks.push((name, std::fs::File::from(fd))),
            }
        }
        // Before anything is bound: a second snigate on these addresses stops here.
        // A second snigate on an address is "unavailable", as a taken port is.
        let claims = ownership::claim(&config, locks)
            .map_err(|message| StartError { kind: Some(std::io::ErrorKind::AddrInUse), message })?;
        // The endpoint is bound first: a taken metrics port fails the start like any other.
        let endpoint = match (config.metrics.address(), handed_metrics) {
            (Some(_), Some(socket)) => Some(Endpoint::adopt(socket, metrics.clone())),
            (Some(addr), None) => Some(Endpoint::bind(addr, metrics.clone()).await),
            (None, _) => None,
        };
        let endpoint = endpoint.transpose()?;
        // The destination guard refuses the endpoint's address as bound (port 0 resolved).
        if let Some(addr) = endpoint.as_ref().and_then(|e| e.local_addr().ok()) {
            config.metrics.listen = addr;
        }
        let server = Server::bind_adopting(&config, rules, metrics.clone(), &log, listening).await?;
        let mut sockets: Vec<(Role, OwnedFd)> = server
            .handover_sockets()
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|(name, s)| (Role::Listener(name), OwnedFd::from(s)))
            .collect();
        for (name, file) in &claims.0 {
            if let Ok(copy) = file.try_clone() {
                sockets.push((Role::Lock(name.clone()), OwnedFd::from(copy)));
            }
        }
        if let Some(endpoint) = endpoint {
            if let Ok(socket) = endpoint.socket() {
                sockets.push((Role::Metrics, OwnedFd::from(socket)));
            }
            if let Ok(addr) = endpoint.local_addr() {
                tracing::info!(metrics = %addr, "serving /metrics, /healthz and /readyz");
            }
            tokio::spawn(endpoint.serve());
        }
        let phases = server.phases();
        let (events, mut event) = mpsc::channel(8);
        spawn_signals(events, false)?;
        let (reloads, triggers) = mpsc::channel(4);
        // Watching before the start is announced: a file changed right after it is seen.
        let watcher = reload::watch_rules(&config, reloads.clone()).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot watch the rule files; reload with SIGHUP");
            None
        });
        let live = server.live();
        let reloading = reload::run(config.clone(), live, metrics, phases.clone(), (watcher, triggers), reread);
        tokio::spawn(reloading);
        for (addr, l) in server.local_addrs().iter().zip(&config.listeners) {
            tracing::info!(listen = %addr, mode = l.get_ref().mode.mode().as_str(), threads, "listening");
        }
        let (upgrades, upgrade) = mpsc::channel(1);
        let handed_over = Arc::new(Notify::new());
        let handovers = Handovers { configured: handover_path, sockets, phases: phases.clone() };
        // Holds the duplicates of the listening sockets kept for a handover: stopping it
        // closes them, so that a stopped process refuses new clients at once.
        let handing_over = tokio::spawn(handovers.serve(upgrade, handed_over.clone()));
        if let Some(notifier) = notify::Notifier::from_env() {
            // A worker's master stays the main process; a process that took over becomes it.
            tokio::spawn(notify::follow(notifier, phases.subscribe(), confirm.is_some() && !worker));
        }
        if let Some(confirm) = confirm {
            match confirm.accepting() {
                Ok(()) => tracing::info!("took over the listening sockets; the previous process drains"),
                Err(e) => tracing::warn!(error = %e, "could not tell the previous process to stop accepting"),
            }
        }
        let shutdown_delay = config.runtime.shutdown_delay();
        let stop = async {
            loop {
                tokio::select! {
                    () = handed_over.notified() => {
                        tracing::info!("handed over; draining open connections");
                        return;
                    }
                    e = event.recv() => match e {
                        Some(Event::Reload) => {
                            let _ = reloads.try_send(ReloadTrigger::Signal);
                        }
                        Some(Event::Reopen) => log.reopen(),
                        Some(Event::Upgrade) if worker => {
                            tracing::warn!("SIGUSR2 goes to the master process, which upgrades its workers");
                        }
                        Some(Event::Upgrade) => {
                            let _ = upgrades.try_send(());
                        }
                        Some(Event::Stop) | None => break,
                        // Not asked for: only a master reaps its children.
                        Some(Event::Child) => {}
                    },
                }
            }
            // Not ready from now on; still accepting until the load balancer has noticed.
            phases.set(Phase::Stopping);
            if !shutdown_delay.is_zero() {
                tracing::info!(delay = ?shutdown_delay, "stopping: not ready, still accepting for the shutdown delay");
                tokio::select! {
                    () = tokio::time::sleep(shutdown_delay) => {}
                    // A second stop does not wait.
                    _ = async { while !matches!(event.recv().await, Some(Event::Stop) | None) {} } => {}
                }
            }
            tracing::info!("shutting down");
            handing_over.abort();
            let _ = (&mut { handing_over }).await;
        };
        server.run(stop).await;
        // The addresses are this process's until it has drained.
        drop(claims);
        Ok::<(), StartError>(())
    });
    // Connections still open past the drain deadline are cut here; then the last lines go out.
    runtime.shutdown_timeout(Duration::from_secs(1));
    log.finish(Duration::from_secs(2));
    served
}

/// Raises the limit on open files as far as the hard limit allows, and says so when it is still
/// below what `max_connections` needs: each connection holds two descriptors (the client's and
/// the upstream's), and a process out of them refuses connections with EMFILE.
fn open_files(config: &Config) {
    let listeners = config.listeners.len() as u64;
    let needed = (config.limits.max_connections as u64).saturating_mul(2).saturating_mul(listeners) + 64;
    match crate::sys::raise_open_files() {
        Ok(limit) if limit < needed => tracing::warn!(
            limit,
            needed,
            "the limit on open files is below what max_connections needs ({} listener(s) x {} connections x 2 \
             descriptors): raise it (LimitNOFILE=, ulimit -n) or lower max_connections",
            listeners,
            config.limits.max_connections
        ),
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot read the limit on open files"),
    }
}

/// Listening sockets a service manager passed (systemd socket activation), by name; to a
/// master's worker, through the master.
fn systemd_sockets(worker: bool) -> Vec<(Role, OwnedFd)> {
    crate::sys::listen_fds(worker).into_iter().map(|(name, s)| (Role::Listener(name), OwnedFd::from(s))).collect()
}
