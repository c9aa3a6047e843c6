//! The destination guard: where snigate may connect, whatever the name rules allowed.
//!
//! A name is only as safe as the addresses it resolves to: `*.localhost`, a DNS sinkhole's
//! 0.0.0.0, a record pointing at 169.254.169.254 or at snigate's own listener would turn an
//! allowed name into a self-loop or a request into the internal network. So every address
//! snigate chose by resolving a name is checked here before the connect. Like Smokescreen's
//! default, the built-in set denies loopback, unspecified, link-local, multicast, broadcast and
//! private ranges; `[destinations] allow` carves exceptions out of it and `deny` adds to it.
//! snigate's own listening addresses are refused always: no rule or exception can make a
//! connection loop back into snigate.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use ipnet::IpNet;

/// Who chose the address being checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chosen {
    /// snigate, by resolving a name or taking an explicit request's address: the whole
    /// built-in set applies.
    BySnigate,
    /// The client, by connecting there (transparent mode's original destination): only
    /// loopback, unspecified, snigate's own addresses and `deny` apply.
    ByClient,
}

/// Why an address is refused: the range it falls in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The address refused.
    pub addr: SocketAddr,
    /// The range and what it is, as the log's `error` states it.
    pub why: String,
}

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "destination {} refused: {}", self.addr, self.why)
    }
}

/// The ranges no connection is made to unless `[destinations] allow` says so.
const BUILT_IN: &[(&str, &str)] = &[
    ("0.0.0.0/8", "this network (unspecified)"),
    ("127.0.0.0/8", "loopback"),
    ("169.254.0.0/16", "link-local (cloud instance metadata)"),
    ("224.0.0.0/4", "multicast"),
    ("255.255.255.255/32", "broadcast"),
    ("10.0.0.0/8", "private (RFC 1918)"),
    ("172.16.0.0/12", "private (RFC 1918)"),
    ("192.168.0.0/16", "private (RFC 1918)"),
    ("100.64.0.0/10", "shared address space (RFC 6598, CGNAT)"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
    ("fe80::/10", "link-local"),
    ("ff00::/8", "multicast"),
    ("fc00::/7", "unique local (private)"),
    ("64:ff9b:1::/48", "local-use NAT64 (RFC 8215): the IPv4 address it stands for is not known"),
];

/// The ranges that still apply to a destination the client chose.
const ALWAYS: &[(&str, &str)] = &[
    ("0.0.0.0/8", "this network (unspecified)"),
    ("127.0.0.0/8", "loopback"),
    ("::/128", "unspecified"),
    ("::1/128", "loopback"),
];

/// The well-known NAT64 prefix (RFC 6052): its addresses stand for the IPv4 address in their
/// last 32 bits.
const NAT64: Ipv6Addr = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0);

/// Where connections may go: the built-in set, the operator's exceptions and additions, and
/// snigate's own addresses.
#[derive(Debug, Clone)]
pub struct DestinationGuard {
    /// `[destinations] allow`: carved out of the built-in set.
    allow: Vec<IpNet>,
    /// `[destinations] deny`: added to it.
    deny: Vec<IpNet>,
    /// Every address snigate listens on (listeners and the metrics endpoint).
    own: Vec<SocketAddr>,
    /// The built-in set, parsed once.
    built_in: Vec<(IpNet, &'static str)>,
    /// The part of it that applies to every destination, parsed once.
    always: Vec<(IpNet, &'static str)>,
}

impl DestinationGuard {
    /// A guard with the operator's `allow` and `deny` ranges and snigate's `own` addresses.
    pub fn new(allow: Vec<IpNet>, deny: Vec<IpNet>, own: Vec<SocketAddr>) -> DestinationGuard {
        let parse = |ranges: &[(&str, &'static str)]| {
            ranges.iter().map(|(net, what)| (net.parse().expect("a valid built-in range"), *what)).collect()
        };
        DestinationGuard { allow, deny, own, built_in: parse(BUILT_IN), always: parse(ALWAYS) }
    }

    /// Whether a connection may go to `addr`. `is_local` says whether an address belongs to
    /// this machine; it is asked only about addresses on the port of a listener bound to every
    /// address (0.0.0.0 or ::).
    pub fn check(&self, addr: SocketAddr, chosen: Chosen, is_local: impl Fn(IpAddr) -> bool) -> Result<(), Refused> {
        let ip = canonical(addr.ip());
        let refuse = |why: String| Err(Refused { addr, why });
        if let Some(own) = self.own_listener(addr, &is_local) {
            return refuse(format!("snigate itself listens there ({own})"));
        }
        if let Some(net) = self.deny.iter().find(|n| n.contains(&ip)) {
            return refuse(format!("in {net}, denied by [destinations] deny"));
        }
        let allowed = chosen == Chosen::BySnigate && self.allow.iter().any(|a| a.contains(&ip));
        if let Some((net, what)) = self.always.iter().find(|(n, _)| n.contains(&ip))
            && !allowed
        {
            return refuse(format!("in {net} ({what})"));
        }
        if allowed || chosen == Chosen::ByClient {
            return Ok(());
        }
        match self.built_in.iter().find(|(net, _)| net.contains(&ip)) {
            Some((net, what)) => refuse(format!("in {net} ({what}); [destinations] allow can make an exception")),
            None => Ok(()),
        }
    }
}

impl DestinationGuard {
    /// The address of snigate's own that accepts connections to `addr`, if any: the same
    /// address, or, on a listener bound to every address, any address of this machine on its
    /// port (`is_local` says which are).
    pub fn own_listener(&self, addr: SocketAddr, is_local: impl Fn(IpAddr) -> bool) -> Option<SocketAddr> {
        self.own.iter().find(|&&own| accepts(own, addr, &is_local)).copied()
    }
}

/// Whether a socket listening on `listen` accepts connections to `addr`: the same address, or,
/// on a listener bound to every address, any address of this machine on its port (`is_local`
/// says which are, beside loopback and unspecified).
pub fn accepts(listen: SocketAddr, addr: SocketAddr, is_local: impl Fn(IpAddr) -> bool) -> bool {
    let ip = canonical(addr.ip());
    listen.port() == addr.port()
        && (canonical(listen.ip()) == ip || (listen.ip().is_unspecified() && (is_always(ip) || is_local(ip))))
}

/// Loopback or unspecified: addresses that always mean this machine.
fn is_always(ip: IpAddr) -> bool {
    ip.is_loopback() || ip.is_unspecified()
}

/// IPv4-mapped and NAT64 (64:ff9b::/96) addresses as the IPv4 address they stand for.
pub fn canonical(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) if v6.segments()[..6] == NAT64.segments()[..6] => {
            let [.., a, b, c, d] = v6.octets();
            IpAddr::V4(Ipv4Addr::new(a, b, c, d))
        }
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn guard(allow: &[&str], deny: &[&str], own: &[&str]) -> DestinationGuard {
        DestinationGuard::new(
            allow.iter().map(|n| n.parse().unwrap()).collect(),
            deny.iter().map(|n| n.parse().unwrap()).collect(),
            own.iter().map(|a| addr(a)).collect(),
        )
    }

    fn refused(g: &DestinationGuard, a: &str, chosen: Chosen) -> Option<String> {
        g.check(addr(a), chosen, |_| false).err().map(|r| r.why)
    }

    #[test]
    fn the_built_in_set_refuses_internal_addresses() {
        let g = guard(&[], &[], &[]);
        let cases = [
            ("127.0.0.1:443", "loopback"),
            ("127.9.9.9:443", "loopback"),
            ("0.0.0.0:443", "unspecified"),
            ("169.254.169.254:80", "link-local"),
            ("224.0.0.1:443", "multicast"),
            ("255.255.255.255:443", "broadcast"),
            ("10.1.2.3:443", "RFC 1918"),
            ("172.31.0.1:443", "RFC 1918"),
            ("192.168.1.1:443", "RFC 1918"),
            ("100.100.100.200:443", "CGNAT"),
            ("[::1]:443", "loopback"),
            ("[::]:443", "unspecified"),
            ("[fe80::1]:443", "link-local"),
            ("[ff02::1]:443", "multicast"),
            ("[fd00::1]:443", "unique local"),
            ("[::ffff:127.0.0.1]:443", "loopback"),
            ("[::ffff:169.254.169.254]:443", "link-local"),
            ("[64:ff9b::a9fe:a9fe]:443", "link-local"),
        ];
        for (a, want) in cases {
            let why = refused(&g, a, Chosen::BySnigate).unwrap_or_else(|| panic!("{a} passed"));
            assert!(why.contains(want), "{a}: {why}");
        }
        for a in ["13.108.0.1:443", "[2606:4700::1]:443", "172.32.0.1:443", "100.128.0.1:443", "[64:ff9b::d6c:1]:443"] {
            assert_eq!(refused(&g, a, Chosen::BySnigate), None, "{a}");
        }
    }

    #[test]
    fn allow_carves_out_and_deny_adds() {
        let g = guard(&["10.20.0.0/16", "127.0.0.0/8"], &["203.0.113.0/24", "10.20.5.0/24"], &[]);
        assert_eq!(refused(&g, "10.20.1.1:443", Chosen::BySnigate), None);
        assert_eq!(refused(&g, "127.0.0.1:443", Chosen::BySnigate), None);
        assert!(refused(&g, "10.21.0.1:443", Chosen::BySnigate).is_some());
        assert!(refused(&g, "203.0.113.7:443", Chosen::BySnigate).unwrap().contains("[destinations] deny"));
        assert!(refused(&g, "10.20.5.1:443", Chosen::BySnigate).unwrap().contains("deny"), "deny wins over allow");
    }

    #[test]
    fn the_client_s_own_destination_is_held_to_loopback_and_deny_only() {
        let g = guard(&[], &["203.0.113.0/24"], &[]);
        assert_eq!(refused(&g, "10.1.2.3:443", Chosen::ByClient), None);
        assert_eq!(refused(&g, "169.254.169.254:80", Chosen::ByClient), None);
        assert!(refused(&g, "127.0.0.1:443", Chosen::ByClient).is_some());
        assert!(refused(&g, "0.0.0.0:443", Chosen::ByClient).is_some());
        assert!(refused(&g, "203.0.113.1:443", Chosen::ByClient).is_some());
        let allowing = guard(&["127.0.0.0/8"], &[], &[]);
        assert!(
            refused(&allowing, "127.0.0.1:443", Chosen::ByClient).is_some(),
            "no exception for the client's choice"
        );
    }

    #[test]
    fn snigate_s_own_addresses_are_refused_whatever_is_allowed() {
        let g = guard(&["0.0.0.0/0", "::/0"], &[], &["127.0.0.1:9443", "0.0.0.0:8443", "[::1]:9464"]);
        for a in [
            "127.0.0.1:9443",
            "127.0.0.1:8443",
            "127.1.2.3:8443",
            "[::ffff:127.0.0.1]:9443",
            "[::1]:9464",
            "0.0.0.0:8443",
        ] {
            let why = refused(&g, a, Chosen::BySnigate).unwrap_or_else(|| panic!("{a} passed"));
            assert!(why.contains("snigate itself"), "{a}: {why}");
        }
        assert_eq!(refused(&g, "127.0.0.1:9444", Chosen::BySnigate), None, "another port");
        assert_eq!(refused(&g, "192.0.2.1:8443", Chosen::BySnigate), None, "not a local address");
        let local =
            g.check(addr("192.0.2.1:8443"), Chosen::BySnigate, |ip| ip == "192.0.2.1".parse::<IpAddr>().unwrap());
        assert!(local.is_err(), "a local address on a wildcard listener's port");
    }

    #[test]
    fn nat64_forms_are_judged_as_their_ipv4_address() {
        assert_eq!(canonical("64:ff9b::cb00:7101".parse().unwrap()), "203.0.113.1".parse::<IpAddr>().unwrap());
        let g = guard(&[], &["203.0.113.0/24"], &[]);
        assert!(refused(&g, "[64:ff9b::cb00:7101]:443", Chosen::BySnigate).unwrap().contains("deny"));
        let why = refused(&g, "[64:ff9b:1::a00:1]:443", Chosen::BySnigate).unwrap();
        assert!(why.contains("local-use NAT64"), "{why}");
    }
}
