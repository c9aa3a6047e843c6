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
use crate::metrics::endpoint::Endpoint;
use crate::metrics::registry::Metrics;
use crate::proxy::server::Server;
use crate::rules::rule::Verdict;

/// Arguments of `snigate run`. Flags override the configuration file; with neither, the
/// embedded default applies. Listener flags apply to the configuration's only listener.
#[derive(Debug, Default, clap::Args)]
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
    let mut builder = if threads == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        let mut b = tokio::runtime::Builder::new_multi_thread();
        b.worker_threads(threads);
        b
    };
    let runtime = match builder.enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("snigate run: cannot start the runtime: {e}");
            return ExitCode::from(EXIT_INVALID);
        }
    };
    let log = match AccessLog::open(&config.log) {
        Ok(log) => log,
        Err(e) => {
            eprintln!("snigate run: {e}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let code = runtime.block_on(async {
        let metrics = Arc::new(Metrics::new());
        // The endpoint is bound first: a taken metrics port fails the start like any other.
        let endpoint = match config.metrics.address() {
            Some(addr) => match Endpoint::bind(addr, metrics.clone()).await {
                Ok(endpoint) => Some(endpoint),
                Err(e) => {
                    eprintln!("snigate run: {e}");
                    return ExitCode::from(EXIT_USAGE);
                }
            },
            None => None,
        };
        // The destination guard refuses the endpoint's address as bound (port 0 resolved).
        if let Some(addr) = endpoint.as_ref().and_then(|e| e.local_addr().ok()) {
            config.metrics.listen = addr;
        }
        let server = match Server::bind(&config, rules, metrics.clone(), &log).await {
            Ok(server) => server,
            Err(e) => {
                eprintln!("snigate run: {e}");
                return ExitCode::from(EXIT_USAGE);
            }
        };
        if let Some(endpoint) = endpoint {
            if let Ok(addr) = endpoint.local_addr() {
                tracing::info!(metrics = %addr, "serving /metrics, /healthz and /readyz");
            }
            tokio::spawn(endpoint.serve());
        }
        for (addr, l) in server.local_addrs().iter().zip(&config.listeners) {
            tracing::info!(listen = %addr, mode = l.get_ref().mode.as_str(), threads, "listening");
        }
        tokio::spawn(crate::reload::run(config.clone(), server.rules(), server.credentials(), metrics));
        server.run(terminated()).await;
        ExitCode::SUCCESS
    });
    // Connections still open past the drain deadline are cut here; then the last lines go out.
    runtime.shutdown_timeout(Duration::from_secs(1));
    log.finish(Duration::from_secs(2));
    code
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
