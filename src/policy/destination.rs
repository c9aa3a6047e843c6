//! The destination guard: where snigate may connect, whatever the name rules allowed.
//!
//! A name is only as safe as the addresses it resolves to: `*.localhost`, a DNS sinkhole's
//! 0.0.0.0, a record pointing at 169.254.169.254 or at snigate's own listener would turn an
//! allowed name into a self-loop or a request into the internal network. So every address
//! snigate chose by resolving a name is checked here before the connect. The built-in set is
//! every range of the IANA IPv4 and IPv6 Special-Purpose Address Registries that is not
//! globally reachable, with multicast, broadcast and the deprecated site-local and tunnel
//! prefixes; an IPv6 address that carries an IPv4 address is judged by that address too. The
//! machine's own addresses are refused on every port, since a service bound to 0.0.0.0 answers
//! on all of them. `[destinations] allow` carves exceptions out of all that and `deny` adds to
//! it. snigate's own listening addresses are refused always: no rule or exception can make a
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
    /// loopback, unspecified, this machine's and snigate's own addresses and `deny` apply.
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

/// The ranges no connection is made to unless `[destinations] allow` says so: the entries of
/// the IANA Special-Purpose Address Registries that are not globally reachable, plus those
/// that are but serve no destination a name should lead to (AS112 DNS sinks, AMT relays, the
/// 6to4 relay anycast), multicast and the deprecated IPv6 forms. The first match names the
/// range, so narrower entries come before the ranges that contain them.
///
/// Two registry entries are not here because an address in them is judged by the IPv4 address
/// it carries (see [`canonical`]): `::ffff:0:0/96` (IPv4-mapped, RFC 4291) and `64:ff9b::/96`
/// (NAT64, RFC 6052, globally reachable).
const BUILT_IN: &[(&str, &str)] = &[
    ("0.0.0.0/8", "this network (unspecified, RFC 791)"),
    ("10.0.0.0/8", "private (RFC 1918)"),
    ("100.64.0.0/10", "shared address space (RFC 6598, CGNAT)"),
    ("127.0.0.0/8", "loopback (RFC 1122)"),
    ("169.254.0.0/16", "link-local (RFC 3927; cloud instance metadata)"),
    ("172.16.0.0/12", "private (RFC 1918)"),
    // Whole: its two globally reachable anycast hosts (PCP .9, TURN .10) are no TLS service.
    ("192.0.0.0/24", "IETF protocol assignments (RFC 6890)"),
    ("192.0.2.0/24", "documentation, TEST-NET-1 (RFC 5737)"),
    ("192.31.196.0/24", "AS112-v4 DNS sink (RFC 7535)"),
    ("192.52.193.0/24", "AMT relay anycast (RFC 7450)"),
    ("192.88.99.0/24", "6to4 relay anycast, deprecated (RFC 7526)"),
    ("192.168.0.0/16", "private (RFC 1918)"),
    ("192.175.48.0/24", "AS112 direct delegation DNS sink (RFC 7534)"),
    ("198.18.0.0/15", "benchmarking (RFC 2544)"),
    ("198.51.100.0/24", "documentation, TEST-NET-2 (RFC 5737)"),
    ("203.0.113.0/24", "documentation, TEST-NET-3 (RFC 5737)"),
    ("224.0.0.0/4", "multicast (RFC 5771)"),
    ("255.255.255.255/32", "limited broadcast (RFC 919, RFC 8190)"),
    ("240.0.0.0/4", "reserved (RFC 1112)"),
    ("::/128", "unspecified (RFC 4291)"),
    ("::1/128", "loopback (RFC 4291)"),
    ("::/96", "IPv4-compatible, deprecated (RFC 4291)"),
    ("::ffff:0:0:0/96", "IPv4-translated, SIIT (RFC 2765)"),
    ("64:ff9b:1::/48", "local-use NAT64 (RFC 8215): the IPv4 address it stands for is not known"),
    ("100::/64", "discard-only (RFC 6666)"),
    ("2001::/32", "Teredo (RFC 4380): reaches its client through a relay"),
    ("2001:2::/48", "benchmarking (RFC 5180)"),
    ("2001::/23", "IETF protocol assignments (RFC 2928)"),
    ("2001:db8::/32", "documentation (RFC 3849)"),
    ("2002::/16", "6to4, deprecated (RFC 3056, RFC 7526): reaches its IPv4 address through a relay"),
    ("2620:4f:8000::/48", "AS112 direct delegation DNS sink (RFC 7534)"),
    ("3fff::/20", "documentation (RFC 9637)"),
    ("5f00::/16", "SRv6 segment identifiers (RFC 9602)"),
    ("fc00::/7", "unique local (private, RFC 4193)"),
    ("fe80::/10", "link-local (RFC 4291)"),
    ("fec0::/10", "site-local, deprecated (RFC 3879)"),
    ("ff00::/8", "multicast (RFC 4291)"),
];

/// The ranges that still apply to a destination the client chose.
const ALWAYS: &[(&str, &str)] = &[
    ("0.0.0.0/8", "this network (unspecified, RFC 791)"),
    ("127.0.0.0/8", "loopback (RFC 1122)"),
    ("::/128", "unspecified (RFC 4291)"),
    ("::1/128", "loopback (RFC 4291)"),
];

/// The well-known NAT64 prefix (RFC 6052): its addresses stand for the IPv4 address in their
/// last 32 bits.
const NAT64: Ipv6Addr = Ipv6Addr::new(0x64, 0xff9b, 0, 0, 0, 0, 0, 0);

/// How an IPv6 address carries an IPv4 address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Embedding {
    /// `::ffff:a.b.c.d` (RFC 4291): the IPv4 address itself, on a dual-stack socket.
    Mapped,
    /// `64:ff9b::a.b.c.d` (RFC 6052): the IPv4 address, through a NAT64 translator.
    Nat64,
    /// `::a.b.c.d` (RFC 4291, deprecated): automatic tunnelling to the IPv4 address.
    Compatible,
    /// `::ffff:0:a.b.c.d` (RFC 2765): translated to the IPv4 address by SIIT.
    Siit,
    /// `2002:AABB:CCDD::/48` (RFC 3056): a 6to4 relay forwards to the IPv4 address.
    SixToFour,
    /// `2001:0:…` (RFC 4380): a Teredo relay forwards to the client's IPv4 address, stored
    /// inverted in the last 32 bits.
    Teredo,
}

impl Embedding {
    /// The form's name, as refusals state it.
    pub const fn as_str(self) -> &'static str {
        match self {
            Embedding::Mapped => "IPv4-mapped",
            Embedding::Nat64 => "NAT64",
            Embedding::Compatible => "IPv4-compatible",
            Embedding::Siit => "SIIT",
            Embedding::SixToFour => "6to4",
            Embedding::Teredo => "Teredo",
        }
    }
}

/// The IPv4 address an IPv6 address carries, and how, if it does.
pub fn embedded(ip: Ipv6Addr) -> Option<(Embedding, Ipv4Addr)> {
    let s = ip.segments();
    let [.., a, b, c, d] = ip.octets();
    let last = Ipv4Addr::new(a, b, c, d);
    match s {
        [0, 0, 0, 0, 0, 0xffff, ..] => Some((Embedding::Mapped, last)),
        _ if s[..6] == NAT64.segments()[..6] => Some((Embedding::Nat64, last)),
        // `::` and `::1` are themselves, not tunnels.
        [0, 0, 0, 0, 0, 0, 0, 0 | 1] => None,
        [0, 0, 0, 0, 0, 0, ..] => Some((Embedding::Compatible, last)),
        [0, 0, 0, 0, 0xffff, 0, ..] => Some((Embedding::Siit, last)),
        [0x2002, hi, lo, ..] => Some((Embedding::SixToFour, Ipv4Addr::from(u32::from(hi) << 16 | u32::from(lo)))),
        [0x2001, 0, ..] => Some((Embedding::Teredo, Ipv4Addr::from(!u32::from(last)))),
        _ => None,
    }
}

/// Where connections may go: the built-in set, the operator's exceptions and additions,
/// snigate's own addresses and this machine's.
#[derive(Debug, Clone)]
pub struct DestinationGuard {
    /// `[destinations] allow`: carved out of the built-in set and this machine's addresses.
    allow: Vec<IpNet>,
    /// `[destinations] deny`: added to it.
    deny: Vec<IpNet>,
    /// Every address snigate listens on (listeners and the metrics endpoint).
    own: Vec<SocketAddr>,
    /// This machine's interface addresses, read at start: a service listening on 0.0.0.0 or
    /// :: answers on each of them, public ones included.
    machine: Vec<IpAddr>,
    /// The built-in set, parsed once.
    built_in: Vec<(IpNet, &'static str)>,
    /// The part of it that applies to every destination, parsed once.
    always: Vec<(IpNet, &'static str)>,
}

impl DestinationGuard {
    /// A guard with the operator's `allow` and `deny` ranges, snigate's `own` addresses and the
    /// `machine`'s interface addresses.
    pub fn new(allow: Vec<IpNet>, deny: Vec<IpNet>, own: Vec<SocketAddr>, machine: Vec<IpAddr>) -> DestinationGuard {
        let parse = |ranges: &[(&str, &'static str)]| {
            ranges.iter().map(|(net, what)| (net.parse().expect("a valid built-in range"), *what)).collect()
        };
        let machine = machine.into_iter().map(canonical).collect();
        DestinationGuard { allow, deny, own, machine, built_in: parse(BUILT_IN), always: parse(ALWAYS) }
    }

    /// Whether a connection may go to `addr`. `is_local` says whether an address belongs to
    /// this machine; it is asked about addresses that pass every range, so that an address
    /// the machine gained after start is refused too.
    ///
    /// An IPv6 address that carries an IPv4 address is judged by both: mapped and NAT64 forms
    /// by the IPv4 address alone (that is where they lead); the tunnel forms (compatible, SIIT,
    /// 6to4, Teredo) by the IPv4 address first, then by their own deprecated range, which
    /// refuses them even when the IPv4 address is public: a relay, or this machine's own
    /// tunnel, decides where they end up. An exception must cover the form that is refused.
    pub fn check(&self, addr: SocketAddr, chosen: Chosen, is_local: impl Fn(IpAddr) -> bool) -> Result<(), Refused> {
        let refuse = |why: String| Err(Refused { addr, why });
        if let Some(own) = self.own_listener(addr, &is_local) {
            return refuse(format!("snigate itself listens there ({own})"));
        }
        let by_snigate = chosen == Chosen::BySnigate;
        for (ip, via) in forms(addr.ip()) {
            // Names both forms when the IPv4 address inside is the one refused.
            let form = match via {
                Some(how) => format!("{} is {} for {ip}, ", addr.ip(), how.as_str()),
                None => String::new(),
            };
            if let Some(net) = self.deny.iter().find(|n| n.contains(&ip)) {
                return refuse(format!("{form}in {net}, denied by [destinations] deny"));
            }
            if by_snigate && self.allow.iter().any(|a| a.contains(&ip)) {
                continue;
            }
            if let Some((net, what)) = self.always.iter().find(|(n, _)| n.contains(&ip)) {
                return refuse(format!("{form}in {net} ({what})"));
            }
            if by_snigate && let Some((net, what)) = self.built_in.iter().find(|(net, _)| net.contains(&ip)) {
                return refuse(format!("{form}in {net} ({what}); [destinations] allow can make an exception"));
            }
            if self.machine.contains(&ip) || is_local(ip) {
                return refuse(format!("{form}{ip} is an address of this machine"));
            }
        }
        Ok(())
    }
}

/// The addresses `ip` is judged as, each with how it was carried: the IPv4 address a mapped or
/// NAT64 address stands for; for a tunnel form, the IPv4 address inside, then the address
/// itself.
fn forms(ip: IpAddr) -> impl Iterator<Item = (IpAddr, Option<Embedding>)> {
    let (first, second) = match ip {
        IpAddr::V6(v6) => match embedded(v6) {
            Some((how @ (Embedding::Mapped | Embedding::Nat64), v4)) => ((IpAddr::V4(v4), Some(how)), None),
            Some((how, v4)) => ((IpAddr::V4(v4), Some(how)), Some((ip, None))),
            None => ((ip, None), None),
        },
        IpAddr::V4(_) => ((ip, None), None),
    };
    std::iter::once(first).chain(second)
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
    match ip {
        IpAddr::V6(v6) => match embedded(v6) {
            Some((Embedding::Mapped | Embedding::Nat64, v4)) => IpAddr::V4(v4),
            _ => ip,
        },
        IpAddr::V4(_) => ip,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn guard(allow: &[&str], deny: &[&str], own: &[&str]) -> DestinationGuard {
        machine_guard(allow, deny, own, &[])
    }

    fn machine_guard(allow: &[&str], deny: &[&str], own: &[&str], machine: &[&str]) -> DestinationGuard {
        DestinationGuard::new(
            allow.iter().map(|n| n.parse().unwrap()).collect(),
            deny.iter().map(|n| n.parse().unwrap()).collect(),
            own.iter().map(|a| addr(a)).collect(),
            machine.iter().map(|a| a.parse().unwrap()).collect(),
        )
    }

    fn refused(g: &DestinationGuard, a: &str, chosen: Chosen) -> Option<String> {
        g.check(addr(a), chosen, |_| false).err().map(|r| r.why)
    }

    /// One address inside each entry of the built-in set, and the range the refusal must name.
    const REGISTRY: &[(&str, &str, &str)] = &[
        ("0.1.2.3:443", "0.0.0.0/8", "unspecified"),
        ("10.1.2.3:443", "10.0.0.0/8", "RFC 1918"),
        ("100.100.100.200:443", "100.64.0.0/10", "CGNAT"),
        ("127.9.9.9:443", "127.0.0.0/8", "loopback"),
        ("169.254.169.254:80", "169.254.0.0/16", "link-local"),
        ("172.31.0.1:443", "172.16.0.0/12", "RFC 1918"),
        ("192.0.0.8:443", "192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.1:443", "192.0.2.0/24", "TEST-NET-1"),
        ("192.31.196.1:443", "192.31.196.0/24", "AS112-v4"),
        ("192.52.193.1:443", "192.52.193.0/24", "AMT"),
        ("192.88.99.1:443", "192.88.99.0/24", "6to4 relay anycast"),
        ("192.168.1.1:443", "192.168.0.0/16", "RFC 1918"),
        ("192.175.48.1:443", "192.175.48.0/24", "AS112 direct delegation"),
        ("198.19.0.1:443", "198.18.0.0/15", "benchmarking"),
        ("198.51.100.1:443", "198.51.100.0/24", "TEST-NET-2"),
        ("203.0.113.1:443", "203.0.113.0/24", "TEST-NET-3"),
        ("224.0.0.1:443", "224.0.0.0/4", "multicast"),
        ("255.255.255.255:443", "255.255.255.255/32", "broadcast"),
        ("240.0.0.1:443", "240.0.0.0/4", "reserved"),
        ("[::]:443", "::/128", "unspecified"),
        ("[::1]:443", "::1/128", "loopback"),
        ("[::102:304]:443", "::/96", "IPv4-compatible"),
        ("[::ffff:0:d6c:1]:443", "::ffff:0:0:0/96", "SIIT"),
        ("[64:ff9b:1::a00:1]:443", "64:ff9b:1::/48", "local-use NAT64"),
        ("[100::1]:443", "100::/64", "discard-only"),
        ("[2001:0:4136:e378:8000:63bf:f293:fffe]:443", "2001::/32", "Teredo"),
        ("[2001:2::1]:443", "2001:2::/48", "benchmarking"),
        ("[2001:1::1]:443", "2001::/23", "IETF protocol assignments"),
        ("[2001:db8::1]:443", "2001:db8::/32", "documentation"),
        ("[2002:d6c:1::1]:443", "2002::/16", "6to4"),
        ("[2620:4f:8000::1]:443", "2620:4f:8000::/48", "AS112"),
        ("[3fff::1]:443", "3fff::/20", "documentation"),
        ("[5f00::1]:443", "5f00::/16", "SRv6"),
        ("[fd00::1]:443", "fc00::/7", "unique local"),
        ("[fe80::1]:443", "fe80::/10", "link-local"),
        ("[fec0::1]:443", "fec0::/10", "site-local"),
        ("[ff02::1]:443", "ff00::/8", "multicast"),
    ];

    #[test]
    fn every_registry_entry_is_refused_with_its_range_named() {
        let g = guard(&[], &[], &[]);
        for (a, net, want) in REGISTRY {
            let why = refused(&g, a, Chosen::BySnigate).unwrap_or_else(|| panic!("{a} passed"));
            assert!(why.contains(&format!("in {net} (")) && why.contains(want), "{a}: {why}");
        }
        // The table covers the built-in set, entry for entry.
        let mut named: Vec<&str> = REGISTRY.iter().map(|(_, net, _)| *net).collect();
        let mut built: Vec<&str> = BUILT_IN.iter().map(|(net, _)| *net).collect();
        named.sort_unstable();
        built.sort_unstable();
        assert_eq!(named, built);
        for a in ["13.108.0.1:443", "[2606:4700::1]:443", "172.32.0.1:443", "100.128.0.1:443", "192.0.3.1:443"] {
            assert_eq!(refused(&g, a, Chosen::BySnigate), None, "{a}");
        }
    }

    #[test]
    fn an_exception_carves_each_entry_out() {
        for (a, net, _) in REGISTRY {
            assert_eq!(refused(&guard(&[net], &[], &[]), a, Chosen::BySnigate), None, "{a} with allow {net}");
        }
    }

    /// Each form an IPv6 address can carry an IPv4 address in, around a private, a loopback
    /// and a public address: the IPv4 address inside decides, and the reason names both.
    #[test]
    fn embedded_ipv4_addresses_are_judged_by_the_address_inside() {
        let g = guard(&[], &[], &[]);
        let cases = [
            ("[::ffff:127.0.0.1]:443", "IPv4-mapped for 127.0.0.1, in 127.0.0.0/8 (loopback"),
            ("[::ffff:10.1.2.3]:443", "IPv4-mapped for 10.1.2.3, in 10.0.0.0/8 (private"),
            ("[64:ff9b::a9fe:a9fe]:443", "NAT64 for 169.254.169.254, in 169.254.0.0/16 (link-local"),
            ("[64:ff9b::7f00:1]:443", "NAT64 for 127.0.0.1, in 127.0.0.0/8 (loopback"),
            ("[::127.0.0.1]:443", "IPv4-compatible for 127.0.0.1, in 127.0.0.0/8 (loopback"),
            ("[::10.1.2.3]:443", "IPv4-compatible for 10.1.2.3, in 10.0.0.0/8 (private"),
            ("[::ffff:0:127.0.0.1]:443", "SIIT for 127.0.0.1, in 127.0.0.0/8 (loopback"),
            ("[::ffff:0:192.168.0.1]:443", "SIIT for 192.168.0.1, in 192.168.0.0/16 (private"),
            ("[2002:7f00:1::1]:443", "6to4 for 127.0.0.1, in 127.0.0.0/8 (loopback"),
            ("[2002:a01:203::1]:443", "6to4 for 10.1.2.3, in 10.0.0.0/8 (private"),
            // Teredo keeps its client's address inverted: 0x80fffffe is 127.0.0.1.
            ("[2001:0:4136:e378:8000:63bf:80ff:fffe]:443", "Teredo for 127.0.0.1, in 127.0.0.0/8 (loopback"),
            ("[2001:0:4136:e378:8000:63bf:f5fe:fdfc]:443", "Teredo for 10.1.2.3, in 10.0.0.0/8 (private"),
        ];
        for (a, want) in cases {
            let why = refused(&g, a, Chosen::BySnigate).unwrap_or_else(|| panic!("{a} passed"));
            let shown = addr(a).ip().to_string();
            assert!(why.starts_with(&format!("{shown} is ")) && why.contains(want), "{a}: {why}");
        }
        // A public address inside: the translations lead there and pass; the tunnel forms are
        // refused by their own deprecated range.
        assert_eq!(refused(&g, "[::ffff:13.108.0.1]:443", Chosen::BySnigate), None);
        assert_eq!(refused(&g, "[64:ff9b::d6c:1]:443", Chosen::BySnigate), None);
        for (a, net) in [
            ("[::13.108.0.1]:443", "::/96"),
            ("[::ffff:0:13.108.0.1]:443", "::ffff:0:0:0/96"),
            ("[2002:d6c:1::1]:443", "2002::/16"),
            ("[2001:0:4136:e378:8000:63bf:f293:fffe]:443", "2001::/32"),
        ] {
            let why = refused(&g, a, Chosen::BySnigate).unwrap_or_else(|| panic!("{a} passed"));
            assert!(why.starts_with(&format!("in {net} (")), "{a}: {why}");
        }
        // An exception for the range inside does not open the tunnel; one for both does.
        assert!(refused(&guard(&["127.0.0.0/8"], &[], &[]), "[2002:7f00:1::1]:443", Chosen::BySnigate).is_some());
        let both = guard(&["127.0.0.0/8", "2002::/16"], &[], &[]);
        assert_eq!(refused(&both, "[2002:7f00:1::1]:443", Chosen::BySnigate), None);
        // The client's own choice is held to loopback inside a tunnel form too.
        let why = refused(&g, "[2002:7f00:1::1]:443", Chosen::ByClient).unwrap();
        assert!(why.contains("6to4 for 127.0.0.1"), "{why}");
        assert_eq!(refused(&g, "[2002:a01:203::1]:443", Chosen::ByClient), None);
    }

    #[test]
    fn embedded_forms_decode_their_ipv4_address() {
        let v4 = |s: &str| s.parse::<Ipv4Addr>().unwrap();
        let cases = [
            ("::ffff:1.2.3.4", Some((Embedding::Mapped, v4("1.2.3.4")))),
            ("64:ff9b::1.2.3.4", Some((Embedding::Nat64, v4("1.2.3.4")))),
            ("::1.2.3.4", Some((Embedding::Compatible, v4("1.2.3.4")))),
            ("::ffff:0:1.2.3.4", Some((Embedding::Siit, v4("1.2.3.4")))),
            ("2002:102:304:5::6", Some((Embedding::SixToFour, v4("1.2.3.4")))),
            ("2001:0:4136:e378:8000:63bf:fefd:fcfb", Some((Embedding::Teredo, v4("1.2.3.4")))),
            ("::", None),
            ("::1", None),
            ("64:ff9b:1::1.2.3.4", None),
            ("2001:db8::1", None),
        ];
        for (ip, want) in cases {
            assert_eq!(embedded(ip.parse().unwrap()), want, "{ip}");
        }
    }

    #[test]
    fn this_machine_s_addresses_are_refused_on_every_port() {
        let g = machine_guard(&[], &[], &[], &["127.0.0.1", "13.108.0.7", "2606:4700::7", "::1"]);
        for a in
            ["13.108.0.7:443", "13.108.0.7:5432", "[2606:4700::7]:443", "[::ffff:13.108.0.7]:22", "[2002:d6c:7::1]:443"]
        {
            for chosen in [Chosen::BySnigate, Chosen::ByClient] {
                let why = refused(&g, a, chosen).unwrap_or_else(|| panic!("{a} passed ({chosen:?})"));
                assert!(why.contains("is an address of this machine"), "{a} ({chosen:?}): {why}");
            }
        }
        assert_eq!(refused(&g, "[2606:4700::8]:443", Chosen::BySnigate), None, "another address");
        // `allow` naming the address is the exception, for snigate's own choices only.
        let allowing = machine_guard(&["2606:4700::7/128"], &[], &[], &["2606:4700::7"]);
        assert_eq!(refused(&allowing, "[2606:4700::7]:443", Chosen::BySnigate), None);
        assert!(refused(&allowing, "[2606:4700::7]:443", Chosen::ByClient).is_some());
        // An address the machine gained after start: the route lookup finds it.
        let g = guard(&[], &[], &[]);
        let local = |ip: IpAddr| ip == "13.108.0.9".parse::<IpAddr>().unwrap();
        let why = g.check(addr("13.108.0.9:8080"), Chosen::BySnigate, local).unwrap_err().why;
        assert!(why.contains("13.108.0.9 is an address of this machine"), "{why}");
        assert!(g.check(addr("13.108.0.10:8080"), Chosen::BySnigate, local).is_ok());
    }

    #[test]
    fn allow_carves_out_and_deny_adds() {
        let g = guard(&["10.20.0.0/16", "127.0.0.0/8"], &["13.108.0.0/16", "10.20.5.0/24"], &[]);
        assert_eq!(refused(&g, "10.20.1.1:443", Chosen::BySnigate), None);
        assert_eq!(refused(&g, "127.0.0.1:443", Chosen::BySnigate), None);
        assert!(refused(&g, "10.21.0.1:443", Chosen::BySnigate).is_some());
        assert!(refused(&g, "13.108.0.7:443", Chosen::BySnigate).unwrap().contains("[destinations] deny"));
        assert!(refused(&g, "[2002:d6c:7::1]:443", Chosen::BySnigate).unwrap().contains("[destinations] deny"));
        assert!(refused(&g, "10.20.5.1:443", Chosen::BySnigate).unwrap().contains("deny"), "deny wins over allow");
    }

    #[test]
    fn the_client_s_own_destination_is_held_to_loopback_and_deny_only() {
        let g = guard(&[], &["13.108.0.0/16"], &[]);
        assert_eq!(refused(&g, "10.1.2.3:443", Chosen::ByClient), None);
        assert_eq!(refused(&g, "169.254.169.254:80", Chosen::ByClient), None);
        assert!(refused(&g, "127.0.0.1:443", Chosen::ByClient).is_some());
        assert!(refused(&g, "0.0.0.0:443", Chosen::ByClient).is_some());
        assert!(refused(&g, "13.108.0.1:443", Chosen::ByClient).is_some());
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
        let local = |ip: IpAddr| ip == "192.0.2.1".parse::<IpAddr>().unwrap();
        let why = g.check(addr("192.0.2.1:8443"), Chosen::BySnigate, local).unwrap_err().why;
        assert!(why.contains("snigate itself"), "a local address on a wildcard listener's port: {why}");
    }

    #[test]
    fn nat64_forms_are_judged_as_their_ipv4_address() {
        assert_eq!(canonical("64:ff9b::cb00:7101".parse().unwrap()), "203.0.113.1".parse::<IpAddr>().unwrap());
        assert_eq!(canonical("2002:cb00:7101::1".parse().unwrap()), "2002:cb00:7101::1".parse::<IpAddr>().unwrap());
        let g = guard(&[], &["13.108.0.0/16"], &[]);
        assert!(refused(&g, "[64:ff9b::d6c:1]:443", Chosen::BySnigate).unwrap().contains("deny"));
    }
}
