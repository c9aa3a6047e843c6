//! `snigate run`: the configuration (file or embedded, then flags) and its rules, handed to the
//! process's lifecycle.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use super::common::{EXIT_NOPERM, EXIT_OSERR, EXIT_UNAVAILABLE, EXIT_USAGE, parse_verdict};
use crate::config::{Config, ConfigError, EMBEDDED_NAME, LogConfig, LogFormat, LogLevel, Mode, OpsFormat, RejectStyle};
use crate::lifecycle::{self, Start};
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
    /// The operational log's level (stderr).
    #[arg(long, value_enum)]
    pub log_level: Option<LogLevel>,
    /// The operational log's form (stderr): a line of text, or a JSON object, per event.
    #[arg(long, value_enum)]
    pub log_operational: Option<OpsFormat>,
    /// Serve `/metrics`, `/healthz` and `/readyz` here (`off`: not at all).
    #[arg(long, value_name = "ADDR:PORT", value_parser = parse_metrics)]
    pub metrics: Option<MetricsFlag>,
    /// Take over the listening sockets of the snigate serving this handover socket (its
    /// `[runtime] handover_socket`); it stops accepting once this process accepts.
    #[arg(long, value_name = "PATH")]
    pub takeover: Option<PathBuf>,
    /// Run as a master process that never exits during an upgrade (as `[runtime] master`; on
    /// by default as PID 1).
    #[arg(long)]
    pub master: bool,
    /// Validate the configuration, its rule files and lists as `snigate check --config` does,
    /// and exit without binding anything (0 valid, 64 invalid).
    #[arg(long)]
    pub check: bool,
    /// Started by a master process: serve handovers at PATH, leave upgrades to the master.
    #[arg(long, value_name = "PATH", hide = true)]
    pub worker: Option<PathBuf>,
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

/// The exit code of a start that failed: sysexits for what the OS refused, 64 for the rest
/// (configuration the OS had no say in).
fn start_exit_code(kind: Option<std::io::ErrorKind>) -> u8 {
    use std::io::ErrorKind;
    match kind {
        Some(ErrorKind::AddrInUse | ErrorKind::AddrNotAvailable) => EXIT_UNAVAILABLE,
        Some(ErrorKind::PermissionDenied) => EXIT_NOPERM,
        Some(_) => EXIT_OSERR,
        None => EXIT_USAGE,
    }
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
            code: "usage",
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
            // The embedded listener's name belongs to its address; one built by flags is
            // named after its own.
            if args.config.is_none() {
                l.name = None;
            }
        }
        l.mode = l
            .mode
            .with_flags(args.mode, args.upstream.clone(), args.upstream_port)
            .map_err(|reason| vec![ConfigError { file: "command line".into(), line: None, code: "usage", reason }])?;
        if let Some(reject) = args.reject {
            l.reject = reject;
        }
    }
    if !args.rules.is_empty() {
        // Relative to the working directory, made absolute once: what is watched is what was read.
        config.rules.files =
            Some(args.rules.iter().map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone())).collect());
    }
    if let Some(default) = args.default {
        config.rules.default = default;
    }
    if let Some(log) = args.log {
        config.log.format = log;
    }
    if let Some(level) = args.log_level {
        config.log.level = level;
    }
    if let Some(operational) = args.log_operational {
        config.log.operational = operational;
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

/// Runs the proxy: the configuration and rules, then the process's lifecycle until it has
/// drained.
pub fn run_command(args: &RunArgs) -> ExitCode {
    crate::sys::map_large_allocations();
    let config = match configuration(args) {
        Ok(config) => config,
        Err(errors) => {
            for e in errors {
                eprintln!("snigate run: {e}");
            }
            return ExitCode::from(EXIT_USAGE);
        }
    };
    if args.check {
        return super::check::run_check(&config);
    }
    let rules = match config.compile_rules() {
        Ok(rules) => rules,
        Err(errors) => {
            eprint!("snigate run: invalid rules:\n{errors}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    operational_log(&config.log);
    // A master: as PID 1 (a container) and where configured, so that an upgrade never ends the
    // process the supervisor watches.
    if args.worker.is_none() && (args.master || config.runtime.master || std::process::id() == 1) {
        drop(rules);
        let Some((program, rest)) = lifecycle::own_command(std::env::args_os()) else {
            return ExitCode::from(EXIT_USAGE);
        };
        return match lifecycle::run_master(program, rest, args.takeover.clone()) {
            Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            Err(e) => {
                eprintln!("snigate run: {e}");
                ExitCode::from(EXIT_USAGE)
            }
        };
    }
    let reread = {
        let args = args.clone();
        Box::new(move || configuration(&args))
    };
    let start = Start { config, rules, takeover: args.takeover.clone(), reread, worker: args.worker.clone() };
    match lifecycle::run(start) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("snigate run: {e}");
            ExitCode::from(start_exit_code(e.kind))
        }
    }
}

/// Sets the operational log on stderr: `[log] level` and `operational`, for the whole process
/// (a master's workers are started with the same flags and file).
fn operational_log(log: &LogConfig) {
    let level = match log.level {
        LogLevel::Error => tracing::Level::ERROR,
        LogLevel::Warn => tracing::Level::WARN,
        LogLevel::Info => tracing::Level::INFO,
        LogLevel::Debug => tracing::Level::DEBUG,
    };
    let fmt = tracing_subscriber::fmt().with_writer(std::io::stderr).with_max_level(level).with_target(false);
    match log.operational {
        OpsFormat::Text => fmt.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).init(),
        // One object a line, its fields at the top level: what log collectors parse.
        OpsFormat::Json => fmt.json().flatten_event(true).with_current_span(false).with_span_list(false).init(),
    }
}
