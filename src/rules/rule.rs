//! One parsed rule: an action, what it matches, which sources and destination ports it applies
//! to, and where it was written; and the verdict vocabulary every later layer reports in.
//!
//! A [`Rule`] keeps its text, for `snigate check`; the compiled snapshot keeps neither rules
//! nor text (see `policy::origin`).

use std::fmt;
use std::net::IpAddr;
use std::sync::Arc;

use ipnet::IpNet;

use super::pattern::Pattern;

/// Whether a connection may proceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
    /// Splice the connection to its upstream.
    Allow,
    /// Reject it.
    Deny,
}

impl Verdict {
    /// `allow` or `deny`: the metric label and the rule-file keyword.
    pub const fn as_str(self) -> &'static str {
        match self {
            Verdict::Allow => "allow",
            Verdict::Deny => "deny",
        }
    }
}

impl fmt::Display for Verdict {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for Verdict {
    type Err = String;

    /// `allow` or `deny`, as in rule files and on the command line.
    fn from_str(s: &str) -> Result<Verdict, String> {
        match s {
            "allow" => Ok(Verdict::Allow),
            "deny" => Ok(Verdict::Deny),
            _ => Err(format!("`{s}`: expected allow or deny")),
        }
    }
}

/// A rule as loaded from a rule file (lists become patterns of a [`List`](super::list::List)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `allow` or `deny`.
    pub verdict: Verdict,
    /// A domain pattern (matched against the SNI) or a destination CIDR (`ip` rules, for
    /// connections without SNI).
    pub target: Target,
    /// The `from` clause: source networks the rule applies to. Empty means every source.
    pub from: Box<[IpNet]>,
    /// The `port` clause: destination ports the rule applies to, sorted and disjoint. Empty
    /// means every port.
    pub ports: Box<[PortRange]>,
    /// The file it was written in, as named when loaded.
    pub file: Arc<str>,
    /// 1-based line in the file.
    pub line: u32,
    /// The rule as written, comment removed and whitespace collapsed (for `snigate check`).
    pub text: Box<str>,
}

/// What a rule is matched against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A domain pattern, matched against the SNI.
    Name(Pattern),
    /// `ip CIDR`: matched against the destination of a connection without SNI.
    Ip(IpNet),
}

/// Destination ports `first..=last` of a `port` clause; one port is a range of one. Ports
/// are 1 to 65535: port 0 stands for "unknown", which no range contains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PortRange {
    /// The lowest port of the range (at least 1).
    pub first: u16,
    /// The highest port of the range (at least `first`).
    pub last: u16,
}

impl PortRange {
    /// Whether `port` is in the range.
    pub const fn contains(self, port: u16) -> bool {
        self.first <= port && port <= self.last
    }

    /// Whether the two ranges share a port.
    pub const fn overlaps(self, other: PortRange) -> bool {
        self.first <= other.last && other.first <= self.last
    }
}

impl fmt::Display for PortRange {
    /// `443`, or `8000-8999`: as written in rule files.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.first == self.last {
            true => write!(f, "{}", self.first),
            false => write!(f, "{}-{}", self.first, self.last),
        }
    }
}

impl Rule {
    /// `file:line`, as decisions and findings name a rule.
    pub fn location(&self) -> String {
        format!("{}:{}", self.file, self.line)
    }

    /// Whether the `from` clause admits `src` (always true without one). `src` should be
    /// canonical (see [`canonical_ip`]).
    pub fn admits(&self, src: IpAddr) -> bool {
        admits(&self.from, src)
    }

    /// Whether the `port` clause admits destination port `port` (always true without one;
    /// port 0, unknown, is admitted only then).
    pub fn admits_port(&self, port: u16) -> bool {
        admits_port(&self.ports, port)
    }
}

/// Shared by the rule, the compiled matcher and the reference: an empty scope admits all.
pub(crate) fn admits(from: &[IpNet], src: IpAddr) -> bool {
    from.is_empty() || from.iter().any(|net| net.contains(&src))
}

/// [`admits`] for the `port` clause: an empty clause admits every port, 0 included.
pub(crate) fn admits_port(ports: &[PortRange], port: u16) -> bool {
    ports.is_empty() || ports.iter().any(|r| r.contains(port))
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, as dual-stack sockets report IPv4 peers)
/// become plain IPv4, so that IPv4 CIDRs match them.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}
