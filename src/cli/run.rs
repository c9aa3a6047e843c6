//! `snigate run`: configuration (file or embedded, then flags), rules, listeners, signals.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use tokio::signal::unix::{SignalKind, signal};

use super::common::{EXIT_INVALID, EXIT_USAGE, parse_verdict};
use crate::access_log::AccessLog;
use crate::config::{Config, ConfigError, EMBEDDED_NAME, Keyword, LogFormat, Mode, RejectStyle};
use crate::handover;
use crate::metrics::endpoint::Endpoint;
use crate::metrics::registry::Metrics;
use crate::proxy::server::Server;
use crate::rules::rule::Verdict;

/// Arguments of `snigate run`. Flags override the configuration file; with neither, the
/// embedded default applies. Listener flags apply to the configuration's only listener.
#[derive(Debug, Default, Clone, clap::Args)]
pub struct RunArgs {
    /// The TOML configuration file.
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Listen address.
    #[arg(long, value_name = "ADDR:PORT")]
    pub listen: Option<SocketAddr>,
    /// How the upstream is chosen.
    #[arg(long, value_enum)]
    pub mode: Option<Mode>,
    /// The fixed upstream (`upstream` mode).
    #[arg(long, value_name = "ADDR:PORT")]
    pub upstream: Option<String>,
    /// The port allowed names are reached on (`sni` mode).
    #[arg(long, value_name = "N")]
    pub upstream_port: Option<u16>,
    /// A rule file, or a directory of `*.rules` (repeatable); replaces the configured rules.
    #[arg(long = "rules", value_name = "PATH")]
    pub rules: Vec<PathBuf>,
    /// The verdict for names no rule matches.
    #[arg(long, value_name = "allow|deny", value_parser = parse_verdict)]
    pub default: Option<Verdict>,
    /// How denied connections end.
    #[arg(long, value_enum)]
    pub reject: Option<RejectStyle>,
    /// The access-log format.
    #[arg(long, value_enum)]
    pub log: Option<LogFormat>,
    /// Serve `/metrics`, `/healthz` and `/readyz` here (`off`: not at all).
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_metrics)]
    pub metrics: Option<MetricsFlag>,
    /// Take over the listening sockets of the snigate serving this handover socket (its
    /// `[runtime] handover_socket`); it stops accepting once this process accepts.
    #[arg(long, value_name = "PATH")]
    pub takeover: Option<PathBuf>,
}

/// The value of `--metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricsFlag {
    /// Serve on this address.
    Listen(SocketAddr),
    /// No endpoint.
    Off,
}

fn parse_metrics(s: &str) -> Result<MetricsFlag, String> {
    if s == "off" {
        return Ok(MetricsFlag::Off);
    }
    s.parse().map(MetricsFlag::Listen).map_err(|_| format!("expected ADDR:PORT or off, found {s:?}"))
}

/// The configuration `args` describe, validated.
pub fn configuration(args: &RunArgs) -> Result<Config, Vec<ConfigError>> {
    let mut config = match &args.config {
        Some(path) => Config::load(path).map_err(|e| e.0)?,
        None => Config::embedded(),
    };
    let listener_flags = args.listen.is_some()
        || args.mode.is_some()
        || args.upstream.is_some()
        || args.upstream_port.is_some()
        || args.reject.is_some();
    if listener_flags && config.listeners.len() != 1 {
        let file = args.config.as_ref().map_or(EMBEDDED_NAME.to_string(), |p| p.display().to_string());
        return Err(vec![ConfigError {
            file,
            line: None,
            reason: format!(
                "--listen, --mode, --upstream, --upstream-port and --reject need exactly one [[listener]], found {}",
                config.listeners.len()
            ),
        }]);
    }
    if let Some(l) = config.listeners.first_mut() {
        let l = l.get_mut();
        if let Some(listen) = args.listen {
            l.listen = listen;
        }
        if let Some(mode) = args.mode {
            l.mode = mode;
            if mode != Mode::Sni {
                l.upstream_port = None;
            }
        }
        if args.upstream.is_some() {
            l.upstream = args.upstream.clone();
        }
        if args.upstream_port.is_some() {
            l.upstream_port = args.upstream_port;
        }
        if let Some(reject) = args.reject {
            l.reject = reject;
        }
    }
    if !args.rules.is_empty() {
        config.rules.files = Some(args.rules.clone());
    }
    if let Some(default) = args.default {
        config.rules.default = default;
    }
    if let Some(log) = args.log {
        config.log.format = log;
    }
    match args.metrics {
        Some(MetricsFlag::Listen(addr)) => {
            config.metrics.enabled = true;
            config.metrics.listen = addr;
        }
        Some(MetricsFlag::Off) => config.metrics.enabled = false,
        None => {}
    }
    config.validate("command line", None).map_err(|e| e.0)?;
    Ok(config)
}

/// Runs the proxy until SIGTERM or SIGINT, reloading the rules on SIGHUP.
pub fn run_command(args: &RunArgs) -> ExitCode {
    crate::sys::map_large_allocations();
    let mut config = match configuration(args) {
        Ok(config) => config,
        Err(errors) => {
            for e in errors {
                eprintln!("snigate run: {e}");
            }
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let rules = match config.compile_rules() {
        Ok(rules) => rules,
        Err(errors) => {
            eprint!("snigate run: invalid rules:\n{errors}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_target(false)
        .init();
    let threads = config.runtime.worker_threads();
    // The first worker; the server starts the others on their own threads (thread per core).
    let runtime = match tokio::runtime::Builder::new_current_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("snigate run: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let log = match AccessLog::open(&config.log) {
        Ok(log) => Arc::new(log),
        Err(e) => {
            eprintln!("snigate run: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    // Taking over from a running snigate: only now, with this configuration valid.
    // Nobody serving the handover socket (a first start, as in a rollout) is not an error:
    // the listeners are then bound as usual.
    let (mut passed, confirm) = match &args.takeover {
        Some(path) => match handover::take_over(path) {
            Ok((sockets, confirm)) => (sockets, Some(confirm)),
            Err(e) if matches!(e.kind(), std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused) => {
                eprintln!("snigate run: nothing to take over ({e}); binding the listeners");
                (crate::sys::listen_fds(), None)
            }
            Err(e) => {
                eprintln!("snigate run: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        },
        None => (crate::sys::listen_fds(), None),
    };
    let code = runtime.block_on(async {
        let metrics = Arc::new(Metrics::with_workers(threads));
        // The endpoint is bound first: a taken metrics port fails the start like any other.
        let handed_metrics =
            passed.iter().position(|(name, _)| name == METRICS_SOCKET).map(|i| passed.swap_remove(i).1);
        let endpoint = match (config.metrics.address(), handed_metrics) {
            (Some(_), Some(socket)) => Endpoint::adopt(socket, metrics.clone()),
            (Some(addr), None) => Endpoint::bind(addr, metrics.clone()).await,
            (None, _) => Err(std::io::ErrorKind::NotFound.into()),
        };
        let endpoint = match (config.metrics.address(), endpoint) {
            (None, _) => None,
            (Some(_), Ok(endpoint)) => Some(endpoint),
            (Some(_), Err(e)) => {
                eprintln!("snigate run: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        };
        // The destination guard refuses the endpoint's address as bound (port 0 resolved).
        if let Some(addr) = endpoint.as_ref().and_then(|e| e.local_addr().ok()) {
            config.metrics.listen = addr;
        }
        let server = match Server::bind_adopting(&config, rules, metrics.clone(), &log, passed).await {
            Ok(server) => server,
            Err(e) => {
                eprintln!("snigate run: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        };
        let endpoint_socket = endpoint.as_ref().and_then(|e| e.socket().ok());
        if let Some(endpoint) = endpoint {
            if let Ok(addr) = endpoint.local_addr() {
                tracing::info!(metrics = %addr, "serving /metrics, /healthz and /readyz");
            }
            tokio::spawn(endpoint.serve());
        }
        for (addr, l) in server.local_addrs().iter().zip(&config.listeners) {
            tracing::info!(listen = %addr, mode = l.get_ref().mode.as_str(), threads, "listening");
        }
        let reread = {
            let args = args.clone();
            move || configuration(&args)
        };
        let apply = {
            let (in_place, log) = (server.in_place(), log.clone());
            move |fresh: &Config| {
                in_place.apply(&fresh.limits);
                log.set_deny_lines_per_second(fresh.log.deny_lines_per_second);
            }
        };
        tokio::spawn(crate::reload::run(config.clone(), server.rules(), server.credentials(), metrics, reread, apply));
        let mut sockets = match server.handover_sockets() {
            Ok(sockets) => sockets,
            Err(e) => {
                eprintln!("snigate run: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        };
        if let Some(socket) = endpoint_socket {
            sockets.push((METRICS_SOCKET.to_string(), socket));
        }
        let handed_over = Arc::new(tokio::sync::Notify::new());
        tokio::spawn(serve_handovers(config.runtime.handover_socket.clone(), sockets, handed_over.clone()));
        if let Some(confirm) = confirm {
            match confirm.accepting() {
                Ok(()) => tracing::info!("took over the listening sockets; the previous process drains"),
                Err(e) => tracing::warn!(error = %e, "could not tell the previous process to stop accepting"),
            }
        }
        server
            .run(async {
                tokio::select! {
                    () = terminated() => {}
                    () = handed_over.notified() => tracing::info!("handed over; draining open connections"),
                }
            })
            .await;
        ExitCode::SUCCESS
    });
    // Connections still open past the drain deadline are cut here; then the last lines go out.
    runtime.shutdown_timeout(Duration::from_secs(1));
    log.finish(Duration::from_secs(2));
    code
}

/// The name the metrics endpoint's socket is handed over under.
const METRICS_SOCKET: &str = "(metrics)";

/// Hands the listening sockets to a new snigate: one that connects to the configured
/// handover socket, or, on SIGUSR2, this binary re-executed with the same arguments and
/// `--takeover`. Notifies `done` once the new process accepts; until then, and whenever a new
/// process fails, this one keeps serving.
async fn serve_handovers(
    configured: Option<PathBuf>,
    sockets: Vec<(String, socket2::Socket)>,
    done: Arc<tokio::sync::Notify>,
) {
    let sockets = Arc::new(sockets);
    let listener = configured.as_deref().and_then(|path| match handover_listener(path) {
        Ok(l) => Some(l),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cannot serve the handover socket");
            None
        }
    });
    let Ok(mut usr2) = signal(SignalKind::user_defined2()) else { return };
    loop {
        let connected = tokio::select! {
            accepted = async { listener.as_ref()?.accept().await.ok() }, if listener.is_some() => accepted.map(|(s, _)| s),
            _ = usr2.recv() => re_exec(configured.as_deref(), listener.as_ref()).await,
        };
        let Some(stream) = connected else { continue };
        let sockets = sockets.clone();
        let handed = tokio::task::spawn_blocking(move || {
            let stream = stream.into_std()?;
            stream.set_nonblocking(false)?;
            let fds: Vec<(String, std::os::fd::BorrowedFd<'_>)> =
                sockets.iter().map(|(name, s)| (name.clone(), std::os::fd::AsFd::as_fd(s))).collect();
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
    }
}

/// A Unix socket at `path` for new processes to take over from (a stale one is replaced).
fn handover_listener(path: &std::path::Path) -> std::io::Result<tokio::net::UnixListener> {
    let _ = std::fs::remove_file(path);
    tokio::net::UnixListener::bind(path)
}

/// SIGUSR2: starts this binary again with the same arguments and `--takeover`, and returns its
/// connection once it takes over; `None` when it fails first (its configuration is invalid).
async fn re_exec(
    configured: Option<&std::path::Path>,
    listener: Option<&tokio::net::UnixListener>,
) -> Option<tokio::net::UnixStream> {
    let temporary = std::env::temp_dir().join(format!("snigate-handover-{}.sock", std::process::id()));
    let own;
    let (path, listener) = match (configured, listener) {
        (Some(path), Some(listener)) => (path.to_path_buf(), listener),
        _ => {
            own = handover_listener(&temporary).ok()?;
            (temporary.clone(), &own)
        }
    };
    let (program, rest) = own_command()?;
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
    let _ = std::fs::remove_file(&temporary);
    if connected.is_some() {
        tracing::info!(pid = child.id(), "the new process is taking over");
        // It runs on; reaping it is its new parent's business once this process exits.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
    }
    connected
}

/// This process's program and arguments, without a `--takeover` it was started with.
fn own_command() -> Option<(std::ffi::OsString, Vec<std::ffi::OsString>)> {
    let mut args = std::env::args_os();
    let program = args.next()?;
    let mut rest = Vec::new();
    while let Some(arg) = args.next() {
        if arg == "--takeover" {
            args.next();
        } else {
            rest.push(arg);
        }
    }
    Some((program, rest))
}

/// Resolves on SIGTERM or SIGINT.
async fn terminated() {
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
}
