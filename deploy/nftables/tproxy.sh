#!/bin/sh
# TPROXY on a gateway: forwarded TCP 443 and 8443 is delivered, without NAT, to snigate's
# transparent listener (`mode = "transparent"`, `tproxy = true`, needs CAP_NET_ADMIN), which
# sees the original destination as its socket's own address. Marked packets are routed to the
# local host by a policy-routing table.
#
#   deploy/nftables/tproxy.sh up [PORT] [MARK]     # defaults: 15002 0x1
#   deploy/nftables/tproxy.sh down [PORT] [MARK]
#
# SNIGATE_ROUTE_TABLE (default 100) names the routing table used for the local route.
set -eu

action=${1:-up}
port=${2:-15002}
mark=${3:-0x1}
table=${SNIGATE_ROUTE_TABLE:-100}

case $action in
up)
    for family in -4 -6; do
        ip "$family" rule del fwmark "$mark" lookup "$table" 2>/dev/null || true
        ip "$family" rule add fwmark "$mark" lookup "$table"
    done
    ip -4 route replace local 0.0.0.0/0 dev lo table "$table"
    ip -6 route replace local ::/0 dev lo table "$table"
    nft -f - <<NFT
table inet snigate_tproxy
delete table inet snigate_tproxy
table inet snigate_tproxy {
    chain prerouting {
        type filter hook prerouting priority mangle; policy accept;
        # Packets of connections snigate has already accepted go to its socket.
        meta l4proto tcp socket transparent 1 meta mark set $mark accept
        meta l4proto tcp tcp dport { 443, 8443 } tproxy to :$port meta mark set $mark accept
    }
}
NFT
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
    echo "usage: $0 up|down [PORT] [MARK]" >&2
    exit 64
    ;;
esac
