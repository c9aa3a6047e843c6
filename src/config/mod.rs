//! The TOML configuration: parsed, then validated as a whole before any socket is bound.
//!
//! Every problem is reported, each naming the file, the line and the reason; `snigate run`
//! exits 64 when there is any.

use std::fmt;
use std::net::SocketAddr;
use std::path::Path;

use serde::Deserialize;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use crate::policy::decide::RuleSet;
use crate::policy::destination::accepts;
use crate::rules::file::{RuleError, RuleErrorKind, RuleErrors, enforced_always};
use crate::rules::fingerprint::Fingerprint;

#[macro_use]
mod keyword;
mod listener;
mod read;
mod report;
mod sections;

pub use keyword::Keyword;
pub use listener::{
    Credentials, HTTP_PORT, HTTPS_PORT, ListenerConfig, MAX_CREDENTIAL, Mode, ModeConfig, Protocol, ProxyVersion,
    RejectStyle, SpliceMode, VerifyDestination,
};
pub use report::{Enforce, ReportScope, Until};
pub use sections::{
    DEFAULT_DENY_LINES_PER_SECOND, DEFAULT_METRICS_LISTEN, DestinationsConfig, EchPolicy, LimitsConfig, ListConfig,
    ListEnforce, LogConfig, LogFormat, LogLevel, MetricsConfig, NoSni, OpsFormat, RulesConfig, RuntimeConfig,
};

/// The configuration `snigate run` uses when given none: the Salesforce preset on
/// 127.0.0.1:8443 in `sni` mode, without root.
pub const EMBEDDED: &str = include_str!("../../deploy/snigate.toml");

/// The name the embedded configuration reports in errors.
pub const EMBEDDED_NAME: &str = "(embedded default config)";

/// A whole configuration file.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    /// One or more listeners, each with its own mode.
    pub listeners: Vec<Spanned<ListenerConfig>>,
    /// Which rules decide, and the default verdict.
    pub rules: RulesConfig,
    /// Connection limits and timeouts.
    pub limits: LimitsConfig,
    /// The access log.
    pub log: LogConfig,
    /// The observability endpoint.
    pub metrics: MetricsConfig,
    /// The async runtime's threads.
    pub runtime: RuntimeConfig,
    /// Where connections may go, whatever the rules allowed.
    pub destinations: DestinationsConfig,
    /// `[[report]]`: sources whose connections every listener reports rather than denies.
    pub report: Vec<ReportScope>,
}

/// A configuration file as written, before its listeners are resolved into their modes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigFile {
    #[serde(rename = "listener", default)]
    listeners: Vec<Spanned<listener::ListenerFile>>,
    #[serde(default)]
    rules: RulesConfig,
    #[serde(default)]
    limits: LimitsConfig,
    #[serde(default)]
    log: LogConfig,
    #[serde(default)]
    metrics: MetricsConfig,
    #[serde(default)]
    runtime: RuntimeConfig,
    #[serde(default)]
    destinations: DestinationsConfig,
    #[serde(rename = "report", default)]
    report: Vec<Spanned<report::ReportFile>>,
}

impl Config {
    /// The ports a `connect` or `http` listener's requests may name: its own `ports`, else
    /// `[destinations] ports`, else the mode's default port. None for the other modes.
    pub fn destination_ports(&self, listener: &ListenerConfig) -> Vec<u16> {
        let (own, default) = match &listener.mode {
            ModeConfig::Http { ports } => (ports, HTTP_PORT),
            ModeConfig::Connect { ports, .. } => (ports, HTTPS_PORT),
            _ => return Vec::new(),
        };
        own.clone().or_else(|| self.destinations.ports.clone()).unwrap_or_else(|| vec![default])
    }
}

/// One configuration problem: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The configuration file (or the embedded default's name).
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
    /// A stable snake_case name of the kind of problem (`unknown_key`, `invalid_value`, …), for
    /// scripts reading `snigate check --json`.
    pub code: &'static str,
    /// What is wrong.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: {}", self.file, line, self.reason),
            None => write!(f, "{}: {}", self.file, self.reason),
        }
    }
}

/// Every problem found in a configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigErrors(pub Vec<ConfigError>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for e in &self.0 {
            writeln!(f, "{e}")?;
        }
        Ok(())
    }
}

impl std::error::Error for ConfigErrors {}

impl Config {
    /// Parses `text`, read from `file` (used in error messages), and validates it.
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigErrors> {
        let here = std::env::current_dir().unwrap_or_default();
        Config::parse_in(file, text, &here)
    }

    /// Parses `text`, read from `file`, with its relative paths relative to `base`, and
    /// validates it.
    pub fn parse_in(file: &str, text: &str, base: &Path) -> Result<Config, ConfigErrors> {
        let error = |p: read::Problem| ConfigError {
            file: file.to_string(),
            line: p.at.map(|at| line_of(text, at)),
            code: p.code,
            reason: p.reason,
        };
        let mut root = DeTable::parse(text).map_err(|e| {
            let at = e.span().map(|s| s.start);
            ConfigErrors(vec![error(read::Problem { at, code: "toml_syntax", reason: e.message().to_string() })])
        })?;
        let mut problems = Vec::new();
        let span = root.span();
        let table = root.get_mut();
        read::unknown_keys(table, read::keys_of::<ConfigFile>(), "the configuration", &mut problems);
        for (key, known) in [
            ("listener", read::keys_of::<listener::ListenerFile>()),
            ("rules", read::keys_of::<RulesConfig>()),
            ("limits", read::keys_of::<LimitsConfig>()),
            ("log", read::keys_of::<LogConfig>()),
            ("metrics", read::keys_of::<MetricsConfig>()),
            ("runtime", read::keys_of::<RuntimeConfig>()),
            ("destinations", read::keys_of::<DestinationsConfig>()),
        ] {
            let section = if key == "listener" { "[[listener]]".to_string() } else { format!("[{key}]") };
            for t in read::tables_under(table, key) {
                read::unknown_keys(t, known, &section, &mut problems);
                if key == "rules" {
                    for list in read::tables_under(t, "list") {
                        read::unknown_keys(list, read::keys_of::<ListConfig>(), "[[rules.list]]", &mut problems);
                    }
                }
            }
        }
        let root = Spanned::new(span, DeValue::Table(root.into_inner()));
        let parsed: Option<ConfigFile> = read::deserialize(root, &mut problems);
        let read_cleanly = problems.is_empty();
        let mut errors: Vec<ConfigError> = problems.into_iter().map(error).collect();
        let Some(parsed) = parsed else {
            errors.sort_by_key(|e| e.line);
            return Err(ConfigErrors(errors));
        };
        let mut listeners = Vec::new();
        for l in parsed.listeners {
            let span = l.span();
            let (resolved, reasons) = l.into_inner().resolve(base);
            let line = Some(line_of(text, span.start));
            errors.extend(reasons.into_iter().map(|reason| ConfigError {
                file: file.to_string(),
                line,
                code: "invalid_listener",
                reason,
            }));
            listeners.push(Spanned::new(span, resolved));
        }
        let mut scopes = Vec::new();
        for r in parsed.report {
            let line = Some(line_of(text, r.span().start));
            match r.into_inner().resolve() {
                Ok(scope) => scopes.push(scope),
                Err(reason) => {
                    errors.push(ConfigError { file: file.to_string(), line, code: "invalid_report", reason })
                }
            }
        }
        let mut rules = parsed.rules;
        let mut log = parsed.log;
        let mut runtime = parsed.runtime;
        let anchored = |p: &mut std::path::PathBuf| *p = base.join(&*p);
        rules.files.iter_mut().flatten().for_each(anchored);
        rules.lists.iter_mut().for_each(|l| anchored(&mut l.path));
        log.path.iter_mut().for_each(anchored);
        runtime.handover_socket.iter_mut().for_each(anchored);
        let config = Config {
            listeners,
            rules,
            limits: parsed.limits,
            log,
            metrics: parsed.metrics,
            runtime,
            destinations: parsed.destinations,
            report: scopes,
        };
        if let Err(more) = config.validate(file, Some(text)) {
            // A listener taken out for its errors leaves none: not a problem of its own.
            errors.extend(more.0.into_iter().filter(|e| read_cleanly || e.code != "no_listener"));
        }
        // In the order of the file: a listener's mode errors beside its other ones.
        errors.sort_by_key(|e| e.line);
        if errors.is_empty() { Ok(config) } else { Err(ConfigErrors(errors)) }
    }

    /// Reads and parses a configuration file. The relative paths it names (rule files, lists,
    /// credentials, the access log, the handover socket) are relative to the file's folder,
    /// whatever the working directory.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let file = path.display().to_string();
        let error = |reason: String| {
            ConfigErrors(vec![ConfigError { file: file.clone(), line: None, code: "unreadable", reason }])
        };
        let text = std::fs::read_to_string(path).map_err(|e| error(e.to_string()))?;
        let absolute = std::path::absolute(path).map_err(|e| error(e.to_string()))?;
        let base = absolute.parent().unwrap_or(Path::new("/"));
        Config::parse_in(&file, &text, base)
    }

    /// The embedded default configuration.
    pub fn embedded() -> Config {
        Config::parse(EMBEDDED_NAME, EMBEDDED).expect("the embedded configuration is valid")
    }

    /// Checks the whole configuration; `text` (the source, when there is one) locates errors.
    pub fn validate(&self, file: &str, text: Option<&str>) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        if self.listeners.is_empty() {
            let reason = "no [[listener]] configured".into();
            errors.push(ConfigError { file: file.to_string(), line: None, code: "no_listener", reason });
        }
        let mut err = |span: Option<std::ops::Range<usize>>, reason: String| {
            errors.push(ConfigError {
                file: file.to_string(),
                line: span.zip(text).map(|(s, t)| line_of(t, s.start)),
                code: "invalid_config",
                reason,
            })
        };
        let mut seen = std::collections::HashMap::new();
        for l in &self.listeners {
            let span = Some(l.span());
            let l = l.get_ref();
            // Port 0 asks the kernel for a fresh port each time: never a clash.
            if l.listen.port() != 0
                && let Some(previous) = seen.insert((l.listen, l.protocol), l.label())
            {
                err(span.clone(), format!("listen address {} is also used by listener {previous:?}", l.listen));
            }
            if l.protocol == Protocol::Quic {
                if matches!(l.mode, ModeConfig::Connect { .. } | ModeConfig::Http { .. }) {
                    let mode = l.mode.mode().as_str();
                    err(
                        span.clone(),
                        format!("protocol = \"quic\" takes mode upstream, sni or transparent, not {mode:?}"),
                    );
                }
                if matches!(l.mode, ModeConfig::Transparent { tproxy: false, .. }) {
                    let why = "protocol = \"quic\" in transparent mode needs tproxy = true (UDP has no REDIRECT that keeps the destination)";
                    err(span.clone(), why.into());
                }
                if !l.proxy_protocol_trusted.is_empty() || l.proxy_protocol_out.is_some() {
                    err(span.clone(), "PROXY protocol is for TCP listeners, not protocol = \"quic\"".into());
                }
            }
            // As in a rule: port 0 is no destination port, and would match nothing.
            match &l.mode {
                ModeConfig::Connect { ports: Some(ports), .. } | ModeConfig::Http { ports: Some(ports) }
                    if ports.contains(&0) =>
                {
                    err(key_after(text, span.clone(), "ports"), "ports: 0 is not a port (1-65535)".into());
                }
                ModeConfig::Sni { upstream_port: Some(0) } => {
                    let at = key_after(text, span.clone(), "upstream_port");
                    err(at, "upstream_port: 0 is not a port (1-65535)".into());
                }
                _ => {}
            }
            if let ModeConfig::Upstream { upstream } = &l.mode
                && let Ok(upstream) = upstream.parse::<SocketAddr>()
                && let Some(own) =
                    self.listeners.iter().map(|o| o.get_ref()).find(|o| accepts(o.listen, upstream, |_| false))
            {
                err(
                    span.clone(),
                    format!("upstream {upstream} is snigate's own listener {:?}: it would loop", own.label()),
                );
            }
        }
        if let Some(addr) = self.metrics.address()
            && addr.port() != 0
            && let Some(l) = self.listeners.iter().find(|l| l.get_ref().listen == addr)
        {
            err(
                Some(l.span()),
                format!("metrics listen address {addr} is also used by listener {:?}", l.get_ref().label()),
            );
        }
        for net in self.destinations.allow.iter().chain(&self.destinations.deny) {
            if net.trunc() != *net {
                err(
                    key_span(text, "allow").or(key_span(text, "deny")),
                    format!("[destinations] {net} has host bits set (did you mean {}?)", net.trunc()),
                );
            }
        }
        if self.destinations.ports.as_ref().is_some_and(|p| p.contains(&0)) {
            err(key_span(text, "ports"), "[destinations] ports: 0 is not a port (1-65535)".into());
        }
        let limits = &self.limits;
        for (name, value) in [
            ("hello_timeout", limits.hello_timeout),
            ("connect_timeout", limits.connect_timeout),
            ("idle_timeout", limits.idle_timeout),
            ("drain_timeout", limits.drain_timeout),
            ("flow_idle_timeout", limits.flow_idle_timeout),
        ] {
            if !(value.is_finite() && value > 0.0) {
                err(key_span(text, name), format!("limits.{name} must be a positive number of seconds"));
            }
        }
        for (name, value) in [
            ("max_connections", limits.max_connections),
            ("max_connections_per_source", limits.max_connections_per_source),
            ("max_hellos_per_source", limits.max_hellos_per_source),
            ("max_quic_flows_per_source", limits.max_quic_flows_per_source),
            ("max_flows", limits.max_flows),
        ] {
            if value == 0 {
                err(key_span(text, name), format!("limits.{name} must be at least 1"));
            }
        }
        let delay = self.runtime.shutdown_delay;
        if !(delay.is_finite() && delay >= 0.0) {
            err(
                key_span(text, "shutdown_delay"),
                "runtime.shutdown_delay must be 0 or a positive number of seconds".into(),
            );
        }
        if limits.max_hello_bytes < 512 {
            err(key_span(text, "max_hello_bytes"), "limits.max_hello_bytes must be at least 512".into());
        }
        if errors.is_empty() { Ok(()) } else { Err(ConfigErrors(errors)) }
    }

    /// What only new sockets apply: the listeners (their credentials and `enforce` aside), the
    /// access log's format and path, the operational log's level and form, `[metrics]`,
    /// `[runtime]` and `[destinations]`. Everything else is live: a reload applies it in place.
    pub fn fixed(&self) -> StaticConfig {
        let listeners = self
            .listeners
            .iter()
            .map(|l| {
                let mut l = l.get_ref().clone();
                if let ModeConfig::Connect { credentials, .. } = &mut l.mode {
                    *credentials = None;
                }
                l.enforce = Enforce::Enforce;
                l
            })
            .collect();
        StaticConfig {
            listeners,
            log: (self.log.format, self.log.path.clone(), self.log.level, self.log.operational),
            metrics: self.metrics.clone(),
            runtime: self.runtime.clone(),
            destinations: self.destinations.clone(),
        }
    }

    /// What differs from `fresh` that only a new process can apply (a handover: SIGUSR2),
    /// by section; empty when a reload applies all of `fresh` in place.
    pub fn needs_handover(&self, fresh: &Config) -> Vec<&'static str> {
        self.fixed().changed(&fresh.fixed())
    }

    /// The configured rule files' and lists' fingerprint as they are on disk now.
    pub fn fingerprint(&self) -> Fingerprint {
        let lists: Vec<&Path> = self.rules.lists.iter().map(|l| l.path.as_path()).collect();
        Fingerprint::of(self.rules.files.as_deref(), &lists).with_settings(&self.rules)
    }

    /// Loads and compiles the configured rules and lists into a snapshot.
    pub fn compile_rules(&self) -> Result<RuleSet, RuleErrors> {
        let lists: Vec<_> = self.rules.lists.iter().map(|l| (l.spec(), l.path.as_path())).collect();
        let suffixes = self.rules.public_suffix_wildcards;
        let set = RuleSet::load_with(self.rules.files.as_deref(), &lists, self.rules.default, suffixes)?;
        if set.is_empty() && !self.rules.allow_empty {
            let files = match &self.rules.files {
                Some(files) => files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>().join(", "),
                None => "the embedded preset".into(),
            };
            let kind = RuleErrorKind::Empty;
            return Err(RuleErrors(vec![RuleError { file: files.into(), line: 0, column: 0, kind }]));
        }
        let mut always = self.rules.files.as_deref().map(enforced_always).unwrap_or_default();
        always.extend(self.rules.lists.iter().filter(|l| l.enforce == ListEnforce::Always).map(|l| l.spec().name));
        let set = set.enforce_always(&always);
        Ok(match self.rules.no_sni {
            NoSni::Ip => set,
            NoSni::Deny => set.deny_no_sni(),
        })
    }
}

/// 1-based line of byte offset `at`.
fn line_of(text: &str, at: usize) -> usize {
    text[..at.min(text.len())].bytes().filter(|&b| b == b'\n').count() + 1
}

/// Where `key = …` first appears, for errors about values serde accepted.
fn key_span(text: Option<&str>, key: &str) -> Option<std::ops::Range<usize>> {
    let text = text?;
    let mut at = 0;
    for line in text.split_inclusive('\n') {
        let trimmed = line.trim_start();
        if trimmed.strip_prefix(key).is_some_and(|rest| rest.trim_start().starts_with('=')) {
            return Some(at..at + line.len());
        }
        at += line.len();
    }
    None
}

/// Where `key = …` first appears from the start of `within` on (a listener's key), else
/// `within`.
fn key_after(text: Option<&str>, within: Option<std::ops::Range<usize>>, key: &str) -> Option<std::ops::Range<usize>> {
    let start = within.as_ref()?.start;
    let found = key_span(text.and_then(|t| t.get(start..)), key).map(|s| start + s.start..start + s.end);
    found.or(within)
}

/// The part of a configuration that only new sockets apply ([`Config::fixed`]): a reload that
/// changes it needs a handover; one that does not applies the whole configuration in place.
#[derive(Debug, Clone, PartialEq)]
pub struct StaticConfig {
    /// The listeners, credentials and `enforce` aside (both are live).
    pub listeners: Vec<ListenerConfig>,
    /// The access log's format and path, and the operational log's level and form (the
    /// process's log subscriber is set once, at start).
    pub log: (LogFormat, Option<std::path::PathBuf>, LogLevel, OpsFormat),
    /// The observability endpoint.
    pub metrics: MetricsConfig,
    /// Workers and the handover socket.
    pub runtime: RuntimeConfig,
    /// The destination guard's ranges and the explicit modes' ports.
    pub destinations: DestinationsConfig,
}

impl StaticConfig {
    /// The sections that differ from `other`.
    pub fn changed(&self, other: &StaticConfig) -> Vec<&'static str> {
        let StaticConfig { listeners, log, metrics, runtime, destinations } = self;
        [
            ("[[listener]]", *listeners != other.listeners),
            ("[log] format, path, level and operational", *log != other.log),
            ("[metrics]", *metrics != other.metrics),
            ("[runtime]", *runtime != other.runtime),
            ("[destinations]", *destinations != other.destinations),
        ]
        .into_iter()
        .filter_map(|(section, changed)| changed.then_some(section))
        .collect()
    }
}
