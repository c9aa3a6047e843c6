//! The TOML configuration: parsed, then validated as a whole before any socket is bound.
//!
//! Every problem is reported, each naming the file, the line and the reason; `snigate run`
//! exits 64 when there is any.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;
use toml::Spanned;

use crate::hello::DEFAULT_MAX_HELLO_BYTES;
use crate::policy::decide::RuleSet;
use crate::policy::destination::accepts;
use crate::rules::file::RuleErrors;
use crate::rules::list::ListSpec;
use crate::rules::rule::Verdict;

/// The configuration `snigate run` uses when given none: the Salesforce preset on
/// 127.0.0.1:8443 in `sni` mode, without root.
pub const EMBEDDED: &str = include_str!("../deploy/snigate.toml");

/// The name the embedded configuration reports in errors.
pub const EMBEDDED_NAME: &str = "(embedded default config)";

/// A whole configuration file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// One or more listeners, each with its own mode.
    #[serde(rename = "listener", default)]
    pub listeners: Vec<Spanned<ListenerConfig>>,
    /// Which rules decide, and the default verdict.
    #[serde(default)]
    pub rules: RulesConfig,
    /// Connection limits and timeouts.
    #[serde(default)]
    pub limits: LimitsConfig,
    /// The access log.
    #[serde(default)]
    pub log: LogConfig,
    /// The observability endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// The async runtime's threads.
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// Where connections may go, whatever the rules allowed.
    #[serde(default)]
    pub destinations: DestinationsConfig,
}

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

/// The port a CONNECT target names by default, and the only one `connect` listeners allow
/// unless configured.
pub const HTTPS_PORT: u16 = 443;
/// The port a plain-HTTP request names by default, and the only one `http` listeners allow
/// unless configured.
pub const HTTP_PORT: u16 = 80;

impl Config {
    /// The ports a `connect` or `http` listener's requests may name: its own `ports`, else
    /// `[destinations] ports`, else the mode's default port.
    pub fn destination_ports(&self, listener: &ListenerConfig) -> Vec<u16> {
        let default = match listener.mode {
            Mode::Http => HTTP_PORT,
            _ => HTTPS_PORT,
        };
        listener.ports.clone().or_else(|| self.destinations.ports.clone()).unwrap_or_else(|| vec![default])
    }
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
    /// temporary socket.
    pub handover_socket: Option<PathBuf>,
}

impl RuntimeConfig {
    /// The worker threads to run: `threads`, or the CPUs available (CPU affinity and cgroup
    /// quota included).
    pub fn worker_threads(&self) -> usize {
        match self.threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            n => n,
        }
    }
}

/// A keyword-valued setting: its spellings, the same in the file and on the command line.
pub trait Keyword: Sized + Copy + 'static {
    /// Every value, in documentation order.
    const ALL: &'static [Self];
    /// The spelling.
    fn as_str(self) -> &'static str;
}

/// `impl Keyword` from the one table of values and spellings.
macro_rules! keywords {
    ($ty:ty { $($variant:ident => $name:literal),+ $(,)? }) => {
        impl Keyword for $ty {
            const ALL: &'static [Self] = &[$(<$ty>::$variant),+];
            fn as_str(self) -> &'static str {
                match self {
                    $(<$ty>::$variant => $name),+
                }
            }
        }
    };
}

/// How a listener picks the upstream of an allowed connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Resolve the SNI through DNS and connect to it on `upstream_port`.
    Sni,
    /// Connect to the fixed `upstream` address.
    Upstream,
    /// Connect to the original destination (REDIRECT via SO_ORIGINAL_DST, or TPROXY).
    Transparent,
    /// An explicit HTTP CONNECT proxy (`HTTPS_PROXY=http://host:port`).
    Connect,
    /// Plain HTTP, filtered on the request's host.
    Http,
}

keywords!(Mode { Sni => "sni", Upstream => "upstream", Transparent => "transparent", Connect => "connect", Http => "http" });

/// The configured way to end a denied connection (`reject = "alert" | "rst" | "close"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RejectStyle {
    /// A fatal TLS alert, then FIN: clients show a readable error.
    #[default]
    Alert,
    /// An RST (SO_LINGER 0): nothing for the client to read.
    Rst,
    /// A plain FIN.
    Close,
}

/// What a listener receives: TCP connections, or QUIC over UDP.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// TCP: a TLS ClientHello (or, in the explicit modes, an HTTP request) first.
    #[default]
    Tcp,
    /// UDP: QUIC, decided by the ClientHello in the client's Initial packets.
    Quic,
}

keywords!(Protocol { Tcp => "tcp", Quic => "quic" });

keywords!(RejectStyle { Alert => "alert", Rst => "rst", Close => "close" });

/// How a listener moves the bytes of allowed connections (`splice = "auto" | "copy"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SpliceMode {
    /// `splice(2)` through a pipe per direction, zero copy; a direction that cannot get a pipe
    /// (EMFILE, ENFILE) copies instead for the rest of the connection.
    #[default]
    Auto,
    /// Read into a userspace buffer and write it out.
    Copy,
}

keywords!(SpliceMode { Auto => "auto", Copy => "copy" });

/// Which PROXY protocol header version to send upstream (`proxy_protocol_out`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyVersion {
    /// `PROXY TCP4 src dst sport dport\r\n`.
    V1,
    /// The binary header.
    V2,
}

/// The longest `user:password` line a credentials file may hold: credentials are compared
/// padded to this length, so that the comparison takes the same time whatever their lengths.
pub const MAX_CREDENTIAL: usize = 256;

/// `connect` mode's accepted `user:password` pairs, read and parsed once, when the
/// configuration is loaded (a bad file is a configuration error at its line).
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The file they were read from.
    pub path: PathBuf,
    /// `user:password` lines, as bytes.
    users: Vec<Vec<u8>>,
}

impl Credentials {
    /// Parses a credentials file's text: one `user:password` a line; `#` comments and blank
    /// lines ignored.
    pub fn parse(path: &Path, text: &str) -> Result<Credentials, String> {
        let users = text
            .lines()
            .enumerate()
            .map(|(i, l)| (i + 1, l.trim()))
            .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
            .map(|(n, l)| match (l.contains(':'), l.len() <= MAX_CREDENTIAL) {
                (true, true) => Ok(l.as_bytes().to_vec()),
                (false, _) => Err(format!("line {n}: expected user:password")),
                (true, false) => Err(format!("line {n}: longer than {MAX_CREDENTIAL} bytes")),
            })
            .collect::<Result<_, _>>()?;
        Ok(Credentials { path: path.to_path_buf(), users })
    }

    /// Reads and parses a credentials file.
    pub fn load(path: &Path) -> Result<Credentials, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("credentials {}: {e}", path.display()))?;
        Credentials::parse(path, &text).map_err(|e| format!("credentials {}: {e}", path.display()))
    }

    /// The accepted `user:password` pairs.
    pub fn users(&self) -> &[Vec<u8>] {
        &self.users
    }

    /// Whether the file is readable by its group or by others: secrets should not be.
    pub fn exposed(&self) -> bool {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(&self.path).is_ok_and(|m| m.permissions().mode() & 0o077 != 0)
    }
}

impl fmt::Debug for Credentials {
    /// The path and the number of users: never the secrets.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Credentials({}, {} users)", self.path.display(), self.users.len())
    }
}

impl<'de> Deserialize<'de> for Credentials {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Credentials, D::Error> {
        let path = PathBuf::deserialize(d)?;
        Credentials::load(&path).map_err(serde::de::Error::custom)
    }
}

/// One `[[listener]]` block.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// The `listener` metric label and log field; defaults to the listen address.
    pub name: Option<String>,
    /// Address and port to accept on.
    pub listen: SocketAddr,
    /// `tcp` (the default) or `quic` (UDP; modes `upstream`, `sni` and `transparent`).
    #[serde(default)]
    pub protocol: Protocol,
    /// How the upstream is chosen.
    pub mode: Mode,
    /// `upstream` mode: where every allowed connection goes (`host:port` or `ip:port`).
    pub upstream: Option<String>,
    /// `sni` mode: the port to connect to; defaults to the listen port.
    pub upstream_port: Option<u16>,
    /// How denied connections end.
    #[serde(default)]
    pub reject: RejectStyle,
    /// SO_MARK for outbound sockets, so egress redirection rules can skip snigate's own traffic.
    pub mark: Option<u32>,
    /// `transparent` mode behind nftables TPROXY: the listening socket is IP_TRANSPARENT
    /// (needs CAP_NET_ADMIN) and the original destination is the accepted socket's own address.
    #[serde(default)]
    pub tproxy: bool,
    /// Require a PROXY protocol header (v1 or v2) in front of every connection, and accept
    /// connections only from these sources (load balancers). Empty: no PROXY protocol in.
    #[serde(default)]
    pub proxy_protocol_trusted: Vec<IpNet>,
    /// Send a PROXY protocol header of this version to the upstream.
    pub proxy_protocol_out: Option<ProxyVersion>,
    /// `transparent` mode: check the original destination against the SNI's DNS answers.
    pub verify_destination: Option<VerifyDestination>,
    /// `connect` mode: require `Proxy-Authorization: Basic` matching a line `user:password` of
    /// this file (read when the configuration is loaded).
    pub credentials: Option<Credentials>,
    /// How allowed connections move bytes: `splice(2)` in the kernel, or a userspace copy.
    #[serde(default)]
    pub splice: SpliceMode,
    /// `connect` and `http` modes: the ports a CONNECT or a request may name (overrides
    /// `[destinations] ports`).
    pub ports: Option<Vec<u16>>,
}

/// How a transparent connection's destination is checked against its SNI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VerifyDestination {
    /// The original destination must be among the SNI's A/AAAA answers (`dst_mismatch`).
    Dns,
}

impl ListenerConfig {
    /// The `listener` label.
    pub fn label(&self) -> String {
        self.name.clone().unwrap_or_else(|| self.listen.to_string())
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

impl Default for RulesConfig {
    fn default() -> Self {
        RulesConfig {
            files: None,
            lists: Vec::new(),
            default: Verdict::Deny,
            ech: EchPolicy::Outer,
            sni_allow_underscore: false,
            no_sni: NoSni::Ip,
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
}

impl ListConfig {
    fn spec(&self) -> ListSpec {
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
}

/// Default of `[log] deny_lines_per_second`: far above a normal denial rate, far below what
/// a flood of refused connections would write.
pub const DEFAULT_DENY_LINES_PER_SECOND: u32 = 100;

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig { format: LogFormat::Json, path: None, deny_lines_per_second: DEFAULT_DENY_LINES_PER_SECOND }
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

/// One configuration problem: where, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// The configuration file (or the embedded default's name).
    pub file: String,
    /// 1-based line, when known.
    pub line: Option<usize>,
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
        let config: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of(text, s.start));
            ConfigErrors(vec![ConfigError { file: file.to_string(), line, reason: e.message().to_string() }])
        })?;
        config.validate(file, Some(text))?;
        Ok(config)
    }

    /// Reads and parses a configuration file.
    pub fn load(path: &Path) -> Result<Config, ConfigErrors> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigErrors(vec![ConfigError { file: file.clone(), line: None, reason: e.to_string() }]))?;
        Config::parse(&file, &text)
    }

    /// The embedded default configuration.
    pub fn embedded() -> Config {
        Config::parse(EMBEDDED_NAME, EMBEDDED).expect("the embedded configuration is valid")
    }

    /// Checks the whole configuration; `text` (the source, when there is one) locates errors.
    pub fn validate(&self, file: &str, text: Option<&str>) -> Result<(), ConfigErrors> {
        let mut errors = Vec::new();
        let mut err = |span: Option<std::ops::Range<usize>>, reason: String| {
            errors.push(ConfigError {
                file: file.to_string(),
                line: span.zip(text).map(|(s, t)| line_of(t, s.start)),
                reason,
            })
        };
        if self.listeners.is_empty() {
            err(None, "no [[listener]] configured".into());
        }
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
            match (l.mode, &l.upstream) {
                (Mode::Upstream, None) => err(span.clone(), "mode = \"upstream\" needs `upstream`".into()),
                (Mode::Sni | Mode::Transparent, Some(_)) => err(
                    span.clone(),
                    format!("`upstream` is only used in mode = \"upstream\" (this listener is {:?})", l.mode.as_str()),
                ),
                _ => {}
            }
            if l.verify_destination.is_some() && l.mode != Mode::Transparent {
                err(span.clone(), "`verify_destination` is only used in mode = \"transparent\"".into());
            }
            if l.credentials.is_some() && l.mode != Mode::Connect {
                err(span.clone(), "`credentials` is only used in mode = \"connect\"".into());
            }
            if l.tproxy && l.mode != Mode::Transparent {
                err(span.clone(), "`tproxy` is only used in mode = \"transparent\"".into());
            }
            if l.upstream_port.is_some() && l.mode != Mode::Sni {
                err(span.clone(), "`upstream_port` is only used in mode = \"sni\"".into());
            }
            if l.protocol == Protocol::Quic {
                if matches!(l.mode, Mode::Connect | Mode::Http) {
                    let mode = l.mode.as_str();
                    err(
                        span.clone(),
                        format!("protocol = \"quic\" takes mode upstream, sni or transparent, not {mode:?}"),
                    );
                }
                if l.mode == Mode::Transparent && !l.tproxy {
                    let why = "protocol = \"quic\" in transparent mode needs tproxy = true (UDP has no REDIRECT that keeps the destination)";
                    err(span.clone(), why.into());
                }
                if !l.proxy_protocol_trusted.is_empty() || l.proxy_protocol_out.is_some() {
                    err(span.clone(), "PROXY protocol is for TCP listeners, not protocol = \"quic\"".into());
                }
            }
            if l.ports.is_some() && !matches!(l.mode, Mode::Connect | Mode::Http) {
                err(span.clone(), "`ports` is only used in mode = \"connect\" or \"http\"".into());
            }
            if let Some(upstream) = l.upstream.as_deref().and_then(|u| u.parse::<SocketAddr>().ok())
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
            ("max_flows", limits.max_flows),
        ] {
            if value == 0 {
                err(key_span(text, name), format!("limits.{name} must be at least 1"));
            }
        }
        if limits.max_hello_bytes < 512 {
            err(key_span(text, "max_hello_bytes"), "limits.max_hello_bytes must be at least 512".into());
        }
        if errors.is_empty() { Ok(()) } else { Err(ConfigErrors(errors)) }
    }

    /// What differs from `fresh` that only a new process can apply (a handover: SIGUSR2).
    /// A reload applies the rest in place: the rule files, the lists, the default verdict and
    /// `no_sni`, the `[limits]` timeouts, `max_hello_bytes` and per-source limits, and
    /// `[log] deny_lines_per_second`.
    pub fn needs_handover(&self, fresh: &Config) -> Vec<&'static str> {
        let listeners = |c: &Config| c.listeners.iter().map(|l| l.get_ref().clone()).collect::<Vec<_>>();
        let rules = &self.rules;
        let fresh_rules = &fresh.rules;
        [
            ("[[listener]]", listeners(self) != listeners(fresh)),
            ("[limits] max_connections", self.limits.max_connections != fresh.limits.max_connections),
            ("[limits] drain_timeout", self.limits.drain_timeout != fresh.limits.drain_timeout),
            ("[log] format and path", (self.log.format, &self.log.path) != (fresh.log.format, &fresh.log.path)),
            ("[metrics]", self.metrics != fresh.metrics),
            ("[runtime]", self.runtime != fresh.runtime),
            ("[destinations]", self.destinations != fresh.destinations),
            ("[rules] ech", rules.ech != fresh_rules.ech),
            ("[rules] sni_allow_underscore", rules.sni_allow_underscore != fresh_rules.sni_allow_underscore),
        ]
        .into_iter()
        .filter_map(|(section, changed)| changed.then_some(section))
        .collect()
    }

    /// Loads and compiles the configured rules and lists into a snapshot.
    pub fn compile_rules(&self) -> Result<RuleSet, RuleErrors> {
        let lists: Vec<_> = self.rules.lists.iter().map(|l| (l.spec(), l.path.as_path())).collect();
        let set = RuleSet::load(self.rules.files.as_deref(), &lists, self.rules.default)?;
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
