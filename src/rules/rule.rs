//! One parsed rule: an action, what it matches, and which sources it applies to.

use std::net::IpAddr;

use ipnet::IpNet;

use crate::policy::{RuleRef, Verdict};
use crate::rules::pattern::Pattern;

/// A rule as loaded from a rule file (lists become patterns of a [`List`](crate::List)).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// `allow` or `deny`.
    pub verdict: Verdict,
    /// A domain pattern (matched against the SNI) or a destination CIDR (`ip` rules, for
    /// connections without SNI).
    pub target: Target,
    /// The `from` clause: source networks the rule applies to. Empty means every source.
    pub from: Box<[IpNet]>,
    /// Where the rule was written, reported with every decision it makes.
    pub origin: RuleRef,
}

/// What a rule is matched against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A domain pattern, matched against the SNI.
    Name(Pattern),
    /// `ip CIDR`: matched against the destination of a connection without SNI.
    Ip(IpNet),
}

impl Rule {
    /// Whether the `from` clause admits `src` (always true without one). `src` should be
    /// canonical (see [`canonical_ip`]).
    pub fn admits(&self, src: IpAddr) -> bool {
        admits(&self.from, src)
    }
}

/// Shared by the rule, the compiled matcher and the reference: an empty scope admits all.
pub(crate) fn admits(from: &[IpNet], src: IpAddr) -> bool {
    from.is_empty() || from.iter().any(|net| net.contains(&src))
}

/// IPv4-mapped IPv6 addresses (`::ffff:10.0.0.1`, as dual-stack sockets report IPv4 peers)
/// become plain IPv4, so that IPv4 CIDRs match them.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}
