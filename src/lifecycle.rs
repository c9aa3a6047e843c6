//! The process's one lifecycle: starting, ready, reloading, handing over, draining, done.
//!
//! [`run`] owns the phases ([`Phase`]). Signals become [`Event`]s here and nowhere else:
//! SIGHUP reloads, SIGUSR2 hands the listening sockets to a new process, SIGTERM and SIGINT
//! stop. What depends on the phase follows it: readiness (`/readyz`) through the server, the
//! reload task, the handover.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use socket2::Socket;
use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::{Notify, mpsc};

use crate::access_log::AccessLog;
use crate::config::{Config, ConfigError, Keyword};
use crate::handover::{self, Role};
use crate::metrics::endpoint::Endpoint;
use crate::metrics::registry::Metrics;
use crate::phase::{Phase, Phases};
use crate::policy::decide::RuleSet;
use crate::proxy::server::Server;
use crate::reload::{self, ReloadTrigger};

/// What a signal asks of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// SIGHUP: read the configuration, the rules and the credentials again.
    Reload,
    /// SIGUSR2: hand the listening sockets to a new process (this binary, re-executed).
    Upgrade,
    /// SIGTERM or SIGINT: stop accepting and drain.
    Stop,
}

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
}

/// Runs the process until it has drained: binds (or takes over) every socket, serves, reloads
/// on SIGHUP and on file changes, hands over on SIGUSR2 or a handover connection, and drains on
/// SIGTERM, SIGINT or a completed handover. `Err` when it cannot start.
pub fn run(start: Start) -> Result<(), String> {
    let Start { mut config, rules, takeover, reread } = start;
    let threads = config.runtime.worker_threads();
    // The first worker; the server starts the others on their own threads (thread per core).
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let log = Arc::new(AccessLog::open(&config.log).map_err(|e| e.to_string())?);
    // Taking over from a running snigate: only now, with this configuration valid. Nobody
    // serving the handover socket (a first start, as in a rollout) is not an error: the
    // listeners are then bound as usual.
    let (passed, confirm) = match &takeover {
        Some(path) => match handover::take_over(path) {
            Ok((sockets, confirm)) => (sockets, Some(confirm)),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => {
                eprintln!("snigate run: nothing to take over ({e}); binding the listeners");
                (systemd_sockets(), None)
            }
            Err(e) => return Err(e.to_string()),
        },
        None => (systemd_sockets(), None),
    };
    let served = runtime.block_on(async {
        let metrics = Arc::new(Metrics::with_workers(threads));
        let (mut listening, mut handed_metrics) = (Vec::new(), None);
        for (role, socket) in passed {
            match role {
                Role::Listener(name) => listening.push((name, socket)),
                Role::Metrics => handed_metrics = Some(socket),
            }
        }
        // The endpoint is bound first: a taken metrics port fails the start like any other.
        let endpoint = match (config.metrics.address(), handed_metrics) {
            (Some(_), Some(socket)) => Some(Endpoint::adopt(socket, metrics.clone())),
            (Some(addr), None) => Some(Endpoint::bind(addr, metrics.clone()).await),
            (None, _) => None,
        };
        let endpoint = endpoint.transpose().map_err(|e| e.to_string())?;
        // The destination guard refuses the endpoint's address as bound (port 0 resolved).
        if let Some(addr) = endpoint.as_ref().and_then(|e| e.local_addr().ok()) {
            config.metrics.listen = addr;
        }
        let server =
            Server::bind_adopting(&config, rules, metrics.clone(), &log, listening).await.map_err(|e| e.to_string())?;
        let mut sockets: Vec<(Role, Socket)> = server
            .handover_sockets()
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|(name, s)| (Role::Listener(name), s))
            .collect();
        if let Some(endpoint) = endpoint {
            if let Ok(socket) = endpoint.socket() {
                sockets.push((Role::Metrics, socket));
            }
            if let Ok(addr) = endpoint.local_addr() {
                tracing::info!(metrics = %addr, "serving /metrics, /healthz and /readyz");
            }
            tokio::spawn(endpoint.serve());
        }
        for (addr, l) in server.local_addrs().iter().zip(&config.listeners) {
            tracing::info!(listen = %addr, mode = l.get_ref().mode.mode().as_str(), threads, "listening");
        }
        let phases = server.phases();
        let (events, mut event) = mpsc::channel(8);
        spawn_signals(events)?;
        let (reloads, triggers) = mpsc::channel(4);
        let reloading =
            reload::run(config.clone(), server.live(), metrics, phases.clone(), (reloads.clone(), triggers), reread);
        tokio::spawn(reloading);
        let (upgrades, upgrade) = mpsc::channel(1);
        let handed_over = Arc::new(Notify::new());
        let handovers = Handovers { configured: config.runtime.handover_socket.clone(), sockets, phases };
        tokio::spawn(handovers.serve(upgrade, handed_over.clone()));
        if let Some(confirm) = confirm {
            match confirm.accepting() {
                Ok(()) => tracing::info!("took over the listening sockets; the previous process drains"),
                Err(e) => tracing::warn!(error = %e, "could not tell the previous process to stop accepting"),
            }
        }
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
                        Some(Event::Upgrade) => {
                            let _ = upgrades.try_send(());
                        }
                        Some(Event::Stop) | None => {
                            tracing::info!("shutting down");
                            return;
                        }
                    },
                }
            }
        };
        server.run(stop).await;
        Ok::<(), String>(())
    });
    // Connections still open past the drain deadline are cut here; then the last lines go out.
    runtime.shutdown_timeout(Duration::from_secs(1));
    log.finish(Duration::from_secs(2));
    served
}

/// Listening sockets a service manager passed (systemd socket activation), by name.
fn systemd_sockets() -> Vec<(Role, Socket)> {
    crate::sys::listen_fds().into_iter().map(|(name, s)| (Role::Listener(name), s)).collect()
}

/// Turns the process's signals into events: the only place signals are handled.
fn spawn_signals(events: mpsc::Sender<Event>) -> Result<(), String> {
    let kinds = [
        (SignalKind::hangup(), Event::Reload),
        (SignalKind::user_defined2(), Event::Upgrade),
        (SignalKind::terminate(), Event::Stop),
        (SignalKind::interrupt(), Event::Stop),
    ];
    for (kind, event) in kinds {
        let mut stream = signal(kind).map_err(|e| format!("cannot handle signal {}: {e}", kind.as_raw_value()))?;
        let events = events.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if events.send(event).await.is_err() {
                    return;
                }
            }
        });
    }
    Ok(())
}

/// The sockets a new process takes over, and where it connects to take them.
struct Handovers {
    /// `[runtime] handover_socket`: served for `snigate run --takeover PATH`.
    configured: Option<PathBuf>,
    /// Every listening socket and the metrics endpoint's, with their roles.
    sockets: Vec<(Role, Socket)>,
    /// `HandingOver` while a new process takes over.
    phases: Phases,
}

impl Handovers {
    /// Hands the sockets to a new snigate: one that connects to the configured handover socket,
    /// or, on an upgrade, this binary re-executed with the same arguments and `--takeover`.
    /// Notifies `done` once the new process accepts; until then, and whenever a new process
    /// fails, this one keeps serving.
    async fn serve(self, mut upgrade: mpsc::Receiver<()>, done: Arc<Notify>) {
        let Handovers { configured, sockets, phases } = self;
        let sockets = Arc::new(sockets);
        let listener = configured.as_deref().and_then(|path| match handover_listener(path) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot serve the handover socket; --takeover cannot reach this process");
                None
            }
        });
        loop {
            let connected = tokio::select! {
                accepted = async { listener.as_ref()?.accept().await.ok() }, if listener.is_some() => accepted.map(|(s, _)| s),
                asked = upgrade.recv() => match asked {
                    Some(()) => re_exec(configured.as_deref(), listener.as_ref()).await,
                    None => return,
                },
            };
            let Some(stream) = connected else { continue };
            let before = phases.current();
            phases.set(Phase::HandingOver);
            let sockets = sockets.clone();
            let handed = tokio::task::spawn_blocking(move || {
                let stream = stream.into_std()?;
                stream.set_nonblocking(false)?;
                let fds: Vec<(Role, std::os::fd::BorrowedFd<'_>)> =
                    sockets.iter().map(|(role, s)| (role.clone(), std::os::fd::AsFd::as_fd(s))).collect();
                handover::hand_over(stream, &fds)
            })
            .await;
            match handed {
                Ok(Ok(())) => {
                    done.notify_one();
                    return;
                }
                Ok(Err(e)) => tracing::error!(error = %e, "handover failed; still serving"),
                Err(e) => tracing::error!(error = %e, "handover failed; still serving"),
            }
            phases.set(before);
        }
    }
}

/// A private Unix socket at `path` for new processes to take over from ([`handover::listen`]).
fn handover_listener(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    let listener = handover::listen(path)?;
    listener.set_nonblocking(true)?;
    tokio::net::UnixListener::from_std(listener)
}

/// An upgrade: starts this binary again with the same arguments and `--takeover`, and returns
/// its connection once it takes over; `None` when it fails first (its configuration is invalid).
async fn re_exec(
    configured: Option<&Path>,
    listener: Option<&tokio::net::UnixListener>,
) -> Option<tokio::net::UnixStream> {
    let own;
    let mut temporary = None;
    let (path, listener) = match (configured, listener) {
        (Some(path), Some(listener)) => (path.to_path_buf(), listener),
        _ => {
            let made = handover::upgrade_socket().and_then(|path| Ok((handover_listener(&path)?, path)));
            let (made, path) = match made {
                Ok(made) => made,
                Err(e) => {
                    tracing::error!(error = %e, "cannot create the handover socket for the upgrade; still serving");
                    return None;
                }
            };
            own = made;
            temporary = Some(path.clone());
            (path, &own)
        }
    };
    let (program, rest) = own_command(std::env::args_os())?;
    tracing::info!(?program, "SIGUSR2: starting a new process to hand the listening sockets to");
    let mut child = match tokio::process::Command::new(&program).args(&rest).arg("--takeover").arg(&path).spawn() {
        Ok(child) => child,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the new process; still serving");
            return None;
        }
    };
    let connected = tokio::select! {
        accepted = tokio::time::timeout(handover::HANDOVER_TIMEOUT, listener.accept()) => accepted.ok().and_then(Result::ok).map(|(s, _)| s),
        status = child.wait() => {
            tracing::error!(?status, "the new process exited before taking over; still serving");
            None
        }
    };
    if let Some(path) = &temporary {
        let _ = std::fs::remove_file(path);
        // The private directory made for it, if this process made one.
        if std::env::var_os("RUNTIME_DIRECTORY").is_none()
            && let Some(dir) = path.parent()
        {
            let _ = std::fs::remove_dir(dir);
        }
    }
    if connected.is_some() {
        tracing::info!(pid = child.id(), "the new process is taking over");
        // It runs on; reaping it is its new parent's business once this process exits.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
    }
    connected
}

/// The program and arguments of `args` (this process's), without a `--takeover PATH` or
/// `--takeover=PATH` it was started with.
fn own_command(
    mut args: impl Iterator<Item = std::ffi::OsString>,
) -> Option<(std::ffi::OsString, Vec<std::ffi::OsString>)> {
    let program = args.next()?;
    let mut rest = Vec::new();
    while let Some(arg) = args.next() {
        if arg == "--takeover" {
            args.next();
        } else if !arg.as_encoded_bytes().starts_with(b"--takeover=") {
            rest.push(arg);
        }
    }
    Some((program, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_takeover_flag_is_not_passed_on_in_either_form() {
        let args =
            ["snigate", "run", "--takeover", "/a.sock", "--config", "c.toml", "--takeover=/b.sock", "--log", "off"];
        let (program, rest) = own_command(args.iter().map(Into::into)).unwrap();
        assert_eq!(program, "snigate");
        assert_eq!(rest, ["run", "--config", "c.toml", "--log", "off"]);
    }
}
