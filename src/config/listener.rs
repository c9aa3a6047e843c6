//! `[[listener]]`: where a listener accepts, its mode with that mode's own settings, and the
//! keywords its settings take.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use ipnet::IpNet;
use serde::Deserialize;

use super::keyword::Keyword;
use super::report::{self, Enforce, EnforceKeyword};

/// The port a CONNECT target names by default, and the only one `connect` listeners allow
/// unless configured.
pub const HTTPS_PORT: u16 = 443;
/// The port a plain-HTTP request names by default, and the only one `http` listeners allow
/// unless configured.
pub const HTTP_PORT: u16 = 80;

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

/// One `[[listener]]` block: the settings every listener has, and its mode with that mode's
/// own settings.
#[derive(Debug, Clone, PartialEq)]
pub struct ListenerConfig {
    /// The `listener` metric label and log field; defaults to the listen address.
    pub name: Option<String>,
    /// Address and port to accept on.
    pub listen: SocketAddr,
    /// `tcp` (the default) or `quic` (UDP; modes `upstream`, `sni` and `transparent`).
    pub protocol: Protocol,
    /// How the upstream is chosen, with the settings only that mode has.
    pub mode: ModeConfig,
    /// How denied connections end.
    pub reject: RejectStyle,
    /// SO_MARK for outbound sockets, so egress redirection rules can skip snigate's own traffic.
    pub mark: Option<u32>,
    /// Require a PROXY protocol header (v1 or v2) in front of every connection, and accept
    /// connections only from these sources (load balancers). Empty: no PROXY protocol in.
    pub proxy_protocol_trusted: Vec<IpNet>,
    /// Send a PROXY protocol header of this version to the upstream.
    pub proxy_protocol_out: Option<ProxyVersion>,
    /// How allowed connections move bytes: `splice(2)` in the kernel, or a userspace copy.
    pub splice: SpliceMode,
    /// Whether what the policy denies is denied or reported (live: a reload changes it).
    pub enforce: Enforce,
}

/// A listener's mode and the settings that belong to it alone: a setting of another mode
/// cannot be written here.
#[derive(Debug, Clone, PartialEq)]
pub enum ModeConfig {
    /// Resolve the SNI and connect to it.
    Sni {
        /// The port allowed names are reached on; absent: the listen port.
        upstream_port: Option<u16>,
    },
    /// Connect every allowed connection to one fixed upstream.
    Upstream {
        /// Where (`host:port` or `ip:port`), resolved once when the listener is bound.
        upstream: String,
    },
    /// Connect to the original destination.
    Transparent {
        /// Behind nftables TPROXY: the listening socket is IP_TRANSPARENT (needs
        /// CAP_NET_ADMIN) and the original destination is the accepted socket's own address.
        tproxy: bool,
        /// Check the original destination against the SNI's DNS answers.
        verify_destination: Option<VerifyDestination>,
    },
    /// An explicit HTTP CONNECT proxy.
    Connect {
        /// Require `Proxy-Authorization: Basic` matching a line `user:password` of this file
        /// (read when the configuration is loaded, and again on every reload).
        credentials: Option<Credentials>,
        /// The ports a CONNECT may name (overrides `[destinations] ports`).
        ports: Option<Vec<u16>>,
    },
    /// Plain HTTP, filtered on the request's host.
    Http {
        /// The ports a request may name (overrides `[destinations] ports`).
        ports: Option<Vec<u16>>,
    },
}

impl ModeConfig {
    /// The mode's keyword.
    pub fn mode(&self) -> Mode {
        match self {
            ModeConfig::Sni { .. } => Mode::Sni,
            ModeConfig::Upstream { .. } => Mode::Upstream,
            ModeConfig::Transparent { .. } => Mode::Transparent,
            ModeConfig::Connect { .. } => Mode::Connect,
            ModeConfig::Http { .. } => Mode::Http,
        }
    }

    /// Whether the listening socket is IP_TRANSPARENT (`transparent` mode with `tproxy`).
    pub fn tproxy(&self) -> bool {
        matches!(self, ModeConfig::Transparent { tproxy: true, .. })
    }

    /// The credentials file of a `connect` listener that has one.
    pub fn credentials(&self) -> Option<&Credentials> {
        match self {
            ModeConfig::Connect { credentials, .. } => credentials.as_ref(),
            _ => None,
        }
    }

    /// `mode` with the settings of the command line: `upstream` and `upstream_port` belong to
    /// the modes that take them, and what the mode keeps of `self` is kept.
    pub fn with_flags(
        &self,
        mode: Option<Mode>,
        upstream: Option<String>,
        upstream_port: Option<u16>,
    ) -> Result<ModeConfig, String> {
        let mode = mode.unwrap_or(self.mode());
        let kept = (self.mode() == mode).then_some(self);
        let resolved = match mode {
            Mode::Sni => {
                let kept = match kept {
                    Some(ModeConfig::Sni { upstream_port }) => *upstream_port,
                    _ => None,
                };
                ModeConfig::Sni { upstream_port: upstream_port.or(kept) }
            }
            Mode::Upstream => {
                let kept = match kept {
                    Some(ModeConfig::Upstream { upstream }) => Some(upstream.clone()),
                    _ => None,
                };
                let upstream = upstream.clone().or(kept).ok_or_else(needs_upstream)?;
                ModeConfig::Upstream { upstream }
            }
            _ => kept.cloned().unwrap_or_else(|| ModeConfig::default_for(mode)),
        };
        let misplaced =
            [("upstream", upstream.is_some(), Mode::Upstream), ("upstream_port", upstream_port.is_some(), Mode::Sni)];
        match misplaced.into_iter().find(|&(_, given, owner)| given && owner != mode) {
            Some((key, _, _)) => Err(only_used(key, mode)),
            None => Ok(resolved),
        }
    }

    /// A mode with its settings at their defaults (`upstream` mode has none: it needs its
    /// upstream).
    fn default_for(mode: Mode) -> ModeConfig {
        match mode {
            Mode::Sni => ModeConfig::Sni { upstream_port: None },
            Mode::Upstream => ModeConfig::Upstream { upstream: String::new() },
            Mode::Transparent => ModeConfig::Transparent { tproxy: false, verify_destination: None },
            Mode::Connect => ModeConfig::Connect { credentials: None, ports: None },
            Mode::Http => ModeConfig::Http { ports: None },
        }
    }
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

/// A `[[listener]]` block as written: every key any mode takes, each checked against the
/// mode's own keys ([`MODE_KEYS`]) when it becomes a [`ListenerConfig`].
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ListenerFile {
    name: Option<String>,
    listen: SocketAddr,
    #[serde(default)]
    protocol: Protocol,
    mode: Mode,
    upstream: Option<String>,
    upstream_port: Option<u16>,
    #[serde(default)]
    reject: RejectStyle,
    mark: Option<u32>,
    tproxy: Option<bool>,
    #[serde(default)]
    proxy_protocol_trusted: Vec<IpNet>,
    proxy_protocol_out: Option<ProxyVersion>,
    verify_destination: Option<VerifyDestination>,
    /// Read when the listener is resolved, relative to the configuration file's folder.
    credentials: Option<PathBuf>,
    #[serde(default)]
    splice: SpliceMode,
    ports: Option<Vec<u16>>,
    #[serde(default)]
    enforce: EnforceKeyword,
    report_until: Option<String>,
}

/// The keys that belong to some modes only, and those modes: the one statement of which
/// setting goes with which mode.
const MODE_KEYS: &[(&str, &[Mode])] = &[
    ("upstream", &[Mode::Upstream]),
    ("upstream_port", &[Mode::Sni]),
    ("tproxy", &[Mode::Transparent]),
    ("verify_destination", &[Mode::Transparent]),
    ("credentials", &[Mode::Connect]),
    ("ports", &[Mode::Connect, Mode::Http]),
];

fn needs_upstream() -> String {
    "mode = \"upstream\" needs `upstream`".into()
}

/// The error for `key` on a listener of `mode`, which does not take it.
fn only_used(key: &str, mode: Mode) -> String {
    let owners = MODE_KEYS.iter().find(|(k, _)| *k == key).map_or(&[][..], |(_, modes)| *modes);
    let owners: Vec<String> = owners.iter().map(|m| format!("{:?}", m.as_str())).collect();
    format!("`{key}` is only used in mode = {} (this listener is {:?})", owners.join(" or "), mode.as_str())
}

impl ListenerFile {
    /// The listener this block describes, and every key it sets that its mode does not take
    /// (the listener is still returned then, for the checks across listeners).
    pub(super) fn resolve(self, base: &Path) -> (ListenerConfig, Vec<String>) {
        let f = self;
        let given = [
            ("upstream", f.upstream.is_some()),
            ("upstream_port", f.upstream_port.is_some()),
            ("tproxy", f.tproxy.unwrap_or(false)),
            ("verify_destination", f.verify_destination.is_some()),
            ("credentials", f.credentials.is_some()),
            ("ports", f.ports.is_some()),
        ];
        let takes = |key: &str| MODE_KEYS.iter().any(|(k, modes)| *k == key && modes.contains(&f.mode));
        let mut errors: Vec<String> =
            given.iter().filter(|&&(key, set)| set && !takes(key)).map(|&(key, _)| only_used(key, f.mode)).collect();
        let mode = match f.mode {
            Mode::Sni => ModeConfig::Sni { upstream_port: f.upstream_port },
            Mode::Upstream => match f.upstream {
                Some(upstream) => ModeConfig::Upstream { upstream },
                None => {
                    errors.insert(0, needs_upstream());
                    ModeConfig::default_for(Mode::Upstream)
                }
            },
            Mode::Transparent => {
                ModeConfig::Transparent { tproxy: f.tproxy.unwrap_or(false), verify_destination: f.verify_destination }
            }
            Mode::Connect => {
                let credentials =
                    f.credentials.and_then(|path| Credentials::load(&base.join(path)).map_err(|e| errors.push(e)).ok());
                ModeConfig::Connect { credentials, ports: f.ports.clone() }
            }
            Mode::Http => ModeConfig::Http { ports: f.ports },
        };
        let enforce = report::enforce(f.enforce, f.report_until.as_deref()).unwrap_or_else(|e| {
            errors.push(e);
            Enforce::Enforce
        });
        let listener = ListenerConfig {
            name: f.name,
            listen: f.listen,
            protocol: f.protocol,
            mode,
            reject: f.reject,
            mark: f.mark,
            proxy_protocol_trusted: f.proxy_protocol_trusted,
            proxy_protocol_out: f.proxy_protocol_out,
            splice: f.splice,
            enforce,
        };
        (listener, errors)
    }
}
