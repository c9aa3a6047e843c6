#!/bin/sh
# TPROXY on a gateway: nothing this host forwards gets around snigate, over IPv4 or IPv6, and
# nothing is NATed.
#   TCP, every port   to snigate's transparent listener on TCP_PORT (`mode = "transparent"`,
#                     `tproxy = true`, needs CAP_NET_ADMIN), which sees the original
#                     destination as its socket's own address and decides by the first bytes
#   UDP 443 (QUIC)    to snigate's QUIC listener on QUIC_PORT (`protocol = "quic"`), or dropped
#                     when no QUIC_PORT is given
#   DNS (UDP/TCP 53)  only to the resolvers, dropped elsewhere
#   other UDP         only where allowed
#   ICMP, ICMPv6      left alone; every other protocol (SCTP, UDP-Lite, GRE...) dropped
# Left alone: traffic arriving on the unfiltered interfaces, traffic to the gateway itself,
# answers to connections that came in, and the internal networks. Packets for snigate's
# sockets are marked, and a policy-routing table routes the mark to the local host. While
# snigate does not listen, what it would receive is dropped.
#
#   deploy/nftables/tproxy.sh up [TCP_PORT] [MARK] [QUIC_PORT]    # defaults: 15002 0x1, no QUIC
#   deploy/nftables/tproxy.sh down [TCP_PORT] [MARK] [QUIC_PORT]
#   deploy/nftables/tproxy.sh check [TCP_PORT] [MARK] [QUIC_PORT]   # nft -c, changes nothing
#
# The environment sets the rest; lists are comma-separated nftables set elements.
set -eu

action=${1:-up}
tcp_port=${2:-15002}
mark=${3:-0x1}
quic_port=${4:-}
# The routing table that holds the local route.
table=${SNIGATE_ROUTE_TABLE:-100}
# nftables has no empty set: the loopback defaults below are placeholders that add nothing.
# Incoming interfaces left alone, e.g. '"lo", "wan0"'.
unfiltered_if=${SNIGATE_UNFILTERED_IF:-\"lo\"}
# Networks forwarded unfiltered, e.g. '10.0.0.0/8, 192.168.0.0/16' and 'fd00::/8'.
internal_v4=${SNIGATE_INTERNAL_V4:-127.0.0.0/8}
internal_v6=${SNIGATE_INTERNAL_V6:-::1/128}
# The DNS servers clients may ask, beyond the gateway itself.
resolvers_v4=${SNIGATE_RESOLVERS_V4:-127.0.0.53}
resolvers_v6=${SNIGATE_RESOLVERS_V6:-::1}
# Other UDP allowed, as 'address or prefix . port', e.g. '192.0.2.1 . 123'.
udp_allow_v4=${SNIGATE_UDP_ALLOW_V4:-127.0.0.1 . 9}
udp_allow_v6=${SNIGATE_UDP_ALLOW_V6:-::1 . 9}

rules() {
    if [ -n "$quic_port" ]; then quic=quic_tproxy; else quic=quic_drop; fi
    cat <<DEFINES
define TCP_PORT = $tcp_port
define QUIC_PORT = ${quic_port:-0}
define QUIC = "$quic"
define MARK = $mark
define UNFILTERED_IF = { $unfiltered_if }
define INTERNAL_V4 = { $internal_v4 }
define INTERNAL_V6 = { $internal_v6 }
define RESOLVERS_V4 = { $resolvers_v4 }
define RESOLVERS_V6 = { $resolvers_v6 }
define UDP_ALLOW_V4 = { $udp_allow_v4 }
define UDP_ALLOW_V6 = { $udp_allow_v6 }
DEFINES
    cat <<'NFT'
table inet snigate_tproxy
delete table inet snigate_tproxy
table inet snigate_tproxy {
    # What no chain below filters or hands to snigate.
    chain unfiltered {
        iifname $UNFILTERED_IF accept
        fib daddr type { local, broadcast, multicast } accept
        ct direction reply accept
        ip daddr $INTERNAL_V4 accept
        ip6 daddr $INTERNAL_V6 accept
        ip daddr $RESOLVERS_V4 meta l4proto { tcp, udp } th dport 53 accept
        ip6 daddr $RESOLVERS_V6 meta l4proto { tcp, udp } th dport 53 accept
    }
    chain quic_tproxy {
        meta l4proto udp tproxy to :$QUIC_PORT meta mark set $MARK accept
        drop
    }
    chain quic_drop {
        drop
    }
    chain prerouting {
        type filter hook prerouting priority mangle; policy accept;
        # Packets of connections snigate has already accepted go to its socket.
        meta l4proto tcp socket transparent 1 meta mark set $MARK accept
        jump unfiltered
        meta l4proto { tcp, udp } th dport 53 counter drop
        meta l4proto tcp tproxy to :$TCP_PORT meta mark set $MARK accept
        meta l4proto tcp counter drop
        udp dport 443 jump $QUIC
        ip daddr . udp dport $UDP_ALLOW_V4 accept
        ip6 daddr . udp dport $UDP_ALLOW_V6 accept
        meta l4proto { icmp, ipv6-icmp } accept
        counter drop
    }
}
NFT
}

case $action in
up)
    rules | nft -c -f -
    for family in -4 -6; do
        ip "$family" rule del fwmark "$mark" lookup "$table" 2>/dev/null || true
        ip "$family" rule add fwmark "$mark" lookup "$table"
    done
    ip -4 route replace local 0.0.0.0/0 dev lo table "$table"
    ip -6 route replace local ::/0 dev lo table "$table"
    rules | nft -f -
    ;;
check)
    rules | nft -c -f -
    ;;
down)
    nft delete table inet snigate_tproxy 2>/dev/null || true
    for family in -4 -6; do
        ip "$family" rule del fwmark "$mark" lookup "$table" 2>/dev/null || true
    done
    ip -4 route flush table "$table" 2>/dev/null || true
    ip -6 route flush table "$table" 2>/dev/null || true
    ;;
*)
    echo "usage: $0 up|down|check [TCP_PORT] [MARK] [QUIC_PORT]" >&2
    exit 64
    ;;
esac
