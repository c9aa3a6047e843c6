//! The configuration's sections other than the listeners: `[rules]`, `[limits]`, `[log]`,
//! `[metrics]`, `[runtime]` and `[destinations]`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

use super::keyword::Keyword;
use crate::hello::DEFAULT_MAX_HELLO_BYTES;
use crate::rules::list::ListSpec;
use crate::rules::rule::Verdict;
use crate::rules::suffix::PublicSuffixWildcards;

/// `[destinations]`: the destination guard's exceptions and additions, and the ports explicit
/// requests may name.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DestinationsConfig {
    /// Ranges carved out of the built-in denied set (an internal next hop).
    #[serde(default)]
    pub allow: Vec<IpNet>,
    /// Ranges added to it.
    #[serde(default)]
    pub deny: Vec<IpNet>,
    /// `connect` and `http` listeners: the ports a CONNECT or a request may name, unless the
    /// listener sets its own. Absent: 443 for `connect`, 80 for `http`.
    pub ports: Option<Vec<u16>>,
}

/// `[runtime]`.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuntimeConfig {
    /// Worker threads; absent or 0: one per CPU this process may run on. One thread runs the
    /// single-threaded runtime, which `benches/e2e.rs` measured cheaper per connection than a
    /// one-worker multi-threaded runtime (no hand-off between the main and the worker thread).
    #[serde(default)]
    pub threads: usize,
    /// Where a new snigate started with `--takeover PATH` can take over this one's listening
    /// sockets (a Unix socket this process serves). Absent: only SIGUSR2 hands over, through a
    /// private temporary socket.
    pub handover_socket: Option<PathBuf>,
    /// On SIGTERM, seconds to keep accepting after readiness turns off, before the listening
    /// sockets close: long enough for a load balancer (Kubernetes endpoints) to stop routing
    /// here. 0: close at once.
    #[serde(default)]
    pub shutdown_delay: f64,
    /// Run as a master process that never exits during an upgrade: it starts a worker process
    /// that serves, and on SIGUSR2 re-executes itself in place and starts a new worker that
    /// takes the sockets over. On by default as PID 1 (a container), where the process that
    /// exits would take the whole PID namespace with it.
    #[serde(default)]
    pub master: bool,
}

impl RuntimeConfig {
    /// `shutdown_delay` as a duration.
    pub fn shutdown_delay(&self) -> Duration {
        secs(self.shutdown_delay)
    }

    /// The worker threads to run: `threads`, or the CPUs available (CPU affinity and cgroup
    /// quota included).
    pub fn worker_threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

/// Whether a hello that carries encrypted_client_hello is matched on its outer SNI or denied.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EchPolicy {
    /// Match the outer SNI like any other name (browsers keep working).
    #[default]
    Outer,
    /// Deny every hello with the extension, reason `ech`. Breaks today's browsers, which send
    /// GREASE ECH on every connection.
    Deny,
}

/// `[rules]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    /// Rule files, or directories of `*.rules`. Absent: the embedded Salesforce preset.
    pub files: Option<Vec<PathBuf>>,
    /// Large domain lists.
    #[serde(default, rename = "list")]
    pub lists: Vec<ListConfig>,
    /// The verdict for a name no rule matches.
    #[serde(default = "default_verdict")]
    pub default: Verdict,
    /// ECH handling.
    #[serde(default)]
    pub ech: EchPolicy,
    /// Accept `_` in SNI labels.
    #[serde(default)]
    pub sni_allow_underscore: bool,
    /// A hello without SNI: decided by the `ip` rules (`ip`, the default), or denied whatever
    /// they say (`deny`), so that a tenant restriction by name cannot be bypassed by leaving
    /// the name out.
    #[serde(default)]
    pub no_sni: NoSni,
    /// Run with no rule at all (every connection decided by `default`): refused unless said
    /// here, so that an emptied rules folder or a deleted file cannot silently become deny-all
    /// (or allow-all).
    #[serde(default)]
    pub allow_empty: bool,
    /// An `allow *.X` or `allow .X` where `X` is a public suffix: refused at load (`deny`, the
    /// default), since anyone who registers a name there would pass, or accepted (`allow`).
    #[serde(default)]
    pub public_suffix_wildcards: PublicSuffixWildcards,
}

/// `[rules] no_sni`: how a hello without SNI is decided.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NoSni {
    /// By the `ip` rules against its destination.
    #[default]
    Ip,
    /// Denied (`no_sni`), whatever the `ip` rules say.
    Deny,
}

keywords!(NoSni { Ip => "ip", Deny => "deny" });
keywords!(PublicSuffixWildcards { Deny => "deny", Allow => "allow" });

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            files: None,
            lists: Vec::new(),
            default: Verdict::Deny,
            ech: EchPolicy::Outer,
            sni_allow_underscore: false,
            no_sni: NoSni::Ip,
            allow_empty: false,
            public_suffix_wildcards: PublicSuffixWildcards::Deny,
        }
    }
}

fn default_verdict() -> Verdict {
    Verdict::Deny
}

/// One `[[rules.list]]`: a large list file tied to one action.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListConfig {
    /// The list file.
    pub path: PathBuf,
    /// The ruleset name (the `ruleset` metric label); defaults to the file name.
    pub name: Option<String>,
    /// What a match does.
    pub action: Verdict,
    /// Count and skip malformed lines instead of failing the load.
    #[serde(default)]
    pub lenient: bool,
    /// `enforce = "always"`: its denials stay denials in report scopes.
    #[serde(default)]
    pub enforce: ListEnforce,
}

/// `[[rules.list]] enforce`: whether a list's denials follow the report scopes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ListEnforce {
    /// Reported like every rule where a report scope applies (the default).
    #[default]
    Scoped,
    /// Denied in report scopes too (a malware blocklist stays a blocklist during a rollout).
    Always,
}

keywords!(ListEnforce { Scoped => "scoped", Always => "always" });

impl ListConfig {
    pub(crate) fn spec(&self) -> ListSpec {
        let name = self.name.clone().unwrap_or_else(|| {
            self.path.file_name().map_or_else(|| self.path.display().to_string(), |n| n.to_string_lossy().into_owned())
        });
        ListSpec { name, verdict: self.action, lenient: self.lenient }
    }
}

/// `[limits]`. Durations are in seconds (fractions allowed).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Open connections per listener; beyond it, the connection that has waited longest for its
    /// hello is closed to make room, else accept waits.
    pub max_connections: usize,
    /// Open connections per source (an IPv4 address or an IPv6 /64), across listeners; beyond
    /// it a new one is refused at once (`source_limit`).
    pub max_connections_per_source: usize,
    /// Connections per source not decided yet (waiting for their hello); beyond it a new one is
    /// refused at once (`source_limit`).
    pub max_hellos_per_source: usize,
    /// QUIC flows per source, across listeners, decided or not; beyond it a new one is refused
    /// at once (`source_limit`). Apart from the TCP limits: a datagram's source may be forged.
    pub max_quic_flows_per_source: usize,
    /// Deadline for the whole ClientHello.
    pub hello_timeout: f64,
    /// Deadline for the upstream connect.
    pub connect_timeout: f64,
    /// A spliced connection with no traffic either way for this long is closed.
    pub idle_timeout: f64,
    /// Cap on bytes held while inspecting the hello.
    pub max_hello_bytes: usize,
    /// On SIGTERM, how long open connections may take to finish.
    pub drain_timeout: f64,
    /// QUIC flows per listener (being decided, allowed or recently denied); beyond it the
    /// oldest flow still being decided makes room, else the new flow's datagram is dropped.
    pub max_flows: usize,
    /// A QUIC flow with no datagram either way for this long is forgotten.
    pub flow_idle_timeout: f64,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_connections: 100_000,
            max_connections_per_source: 1000,
            max_hellos_per_source: 100,
            max_quic_flows_per_source: 1000,
            hello_timeout: 10.0,
            connect_timeout: 5.0,
            idle_timeout: 600.0,
            max_hello_bytes: DEFAULT_MAX_HELLO_BYTES,
            drain_timeout: 30.0,
            max_flows: 10_000,
            flow_idle_timeout: 60.0,
        }
    }
}

impl LimitsConfig {
    /// `hello_timeout` as a duration.
    pub fn hello_timeout(&self) -> Duration {
        secs(self.hello_timeout)
    }
    /// `connect_timeout` as a duration.
    pub fn connect_timeout(&self) -> Duration {
        secs(self.connect_timeout)
    }
    /// `idle_timeout` as a duration.
    pub fn idle_timeout(&self) -> Duration {
        secs(self.idle_timeout)
    }
    /// `drain_timeout` as a duration.
    pub fn drain_timeout(&self) -> Duration {
        secs(self.drain_timeout)
    }
    /// `flow_idle_timeout` as a duration.
    pub fn flow_idle_timeout(&self) -> Duration {
        secs(self.flow_idle_timeout)
    }
}

/// Seconds as a duration, at most a year: deadlines are added to instants, which must not
/// overflow.
fn secs(s: f64) -> Duration {
    const YEAR: Duration = Duration::from_secs(365 * 86_400);
    Duration::try_from_secs_f64(s).unwrap_or(YEAR).min(YEAR)
}

/// Access-log format.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// One JSON object per connection.
    #[default]
    Json,
    /// One human-readable line per connection.
    Text,
    /// No access log.
    Off,
}

keywords!(LogFormat { Json => "json", Text => "text", Off => "off" });

/// The operational log's level: what snigate says about itself on stderr (`[log] level`,
/// `--log-level`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    /// Only what stops snigate or a part of it.
    Error,
    /// Also what an operator should look at: failed reloads, limits too low.
    Warn,
    /// Also the start, reloads, handovers and the drain.
    #[default]
    Info,
    /// Also the detail of each of them.
    Debug,
}

keywords!(LogLevel { Error => "error", Warn => "warn", Info => "info", Debug => "debug" });

/// The operational log's form (`[log] operational`, `--log-operational`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OpsFormat {
    /// One line of text per event.
    #[default]
    Text,
    /// One JSON object per event, for log collectors.
    Json,
}

keywords!(OpsFormat { Text => "text", Json => "json" });

/// `[log]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// The format of the access log.
    pub format: LogFormat,
    /// Append the access log to this file instead of stdout.
    pub path: Option<PathBuf>,
    /// Denial lines written per second and listener; beyond it they are counted, not written,
    /// and a summary line says how many were suppressed. 0: no limit.
    pub deny_lines_per_second: u32,
    /// The operational log's level.
    pub level: LogLevel,
    /// The operational log's form.
    pub operational: OpsFormat,
}

/// Default of `[log] deny_lines_per_second`: far above a normal denial rate, far below what
/// a flood of refused connections would write.
pub const DEFAULT_DENY_LINES_PER_SECOND: u32 = 100;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            format: LogFormat::Json,
            path: None,
            deny_lines_per_second: DEFAULT_DENY_LINES_PER_SECOND,
            level: LogLevel::Info,
            operational: OpsFormat::Text,
        }
    }
}

/// The default metrics address.
pub const DEFAULT_METRICS_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 9464);

/// `[metrics]`: the HTTP endpoint serving `/metrics`, `/healthz` and `/readyz`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Whether to serve the endpoint at all.
    pub enabled: bool,
    /// Where to serve it.
    pub listen: SocketAddr,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig { enabled: true, listen: DEFAULT_METRICS_LISTEN }
    }
}

impl MetricsConfig {
    /// The address to bind, when enabled.
    pub fn address(&self) -> Option<SocketAddr> {
        self.enabled.then_some(self.listen)
    }
}
