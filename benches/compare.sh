#!/usr/bin/env bash
# End-to-end comparison of snigate with HAProxy, nginx (stream, ssl_preread) and sniproxy, the
# floor (benches/support/floor.rs: a proxy that only accepts, connects and copies, reported as
# snigate ÷ floor beside snigate ÷ each peer) and a direct-to-backend baseline, in one run:
# `benches/compare.sh` from the repository root.
#
# 1. Installs the peers when missing (Debian: haproxy, nginx-light + libnginx-mod-stream,
#    sniproxy) without letting apt start them as services.
# 2. Raises `ulimit -n` for the 10,000 idle connections.
# 3. Sets net.ipv4.tcp_max_tw_buckets=0 for the run and restores it on exit: every closed
#    loopback connection would otherwise leave a TIME_WAIT socket, which caps every setup,
#    direct included, near 14k connections/s. Traffic goes to 127.0.0.1 only.
# 4. With SNIGATE_E2E_MAX_LOAD (e.g. 1.5), waits up to 20 minutes for the 1-minute load
#    average to drop below it (the machine may be shared), then runs anyway.
# 5. Runs `cargo bench --bench e2e` (see benches/e2e.rs for the SNIGATE_E2E_* knobs) and prints
#    the machine, kernel, peer versions and the markdown tables, then (SNIGATE_E2E_STRACE=0
#    skips it) the system calls per connection of each proxy under strace.
# 6. Runs it again with several workers per proxy, nothing pinned (SNIGATE_COMPARE_WORKERS,
#    default 2; 1 skips it): connection rates and CPU only (no idle, bulk or strace pass).
# 7. Then (SNIGATE_COMPARE_LISTS=0 skips it) runs `cargo bench --bench lists`: the same proxies
#    with a 0, 100k and 1M-domain deny list in front of the allowlist (start, memory, load,
#    reload; see benches/lists.rs for the SNIGATE_LISTS_* knobs). Its 100k list starts with the
#    real EasyList and EasyPrivacy domains of Debian's webext-ublock-origin-firefox, installed
#    with the peers.
set -euo pipefail
cd "$(dirname "$0")/.."

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
have() { [ -x "/usr/sbin/$1" ] || command -v "$1" >/dev/null 2>&1; }

missing=()
have haproxy || missing+=(haproxy)
have nginx || missing+=(nginx-light)
[ -e /usr/lib/nginx/modules/ngx_stream_module.so ] || missing+=(libnginx-mod-stream)
have sniproxy || missing+=(sniproxy)
have strace || missing+=(strace)
lists=${SNIGATE_COMPARE_LISTS:-1}
if [ "$lists" != 0 ] && ! ls /usr/share/mozilla/extensions/*/uBlock0@raymondhill.net/assets/thirdparties/easylist/easylist.txt \
    /usr/share/chromium/extensions/ublock-origin/assets/thirdparties/easylist/easylist.txt >/dev/null 2>&1; then
    missing+=(webext-ublock-origin-firefox)
fi
if [ ${#missing[@]} -gt 0 ]; then
    echo "installing ${missing[*]}" >&2
    # policy-rc.d exit 101: the packages' maintainer scripts must not start the services.
    guard=""
    if [ ! -e /usr/sbin/policy-rc.d ]; then
        guard=/usr/sbin/policy-rc.d
        printf '#!/bin/sh\nexit 101\n' | as_root tee "$guard" >/dev/null
        as_root chmod +x "$guard"
    fi
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    [ -n "$guard" ] && as_root rm -f "$guard"
fi

# Two descriptors per idle connection on the load side, two in the proxy, plus slack.
want=65536
if [ "$(ulimit -Hn)" != unlimited ] && [ "$(ulimit -Hn)" -lt "$want" ]; then
    ulimit -Hn "$want" 2>/dev/null || true
fi
ulimit -n "$want" 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# Build first: the build itself raises the load average.
cargo bench --bench e2e --no-run
[ "$lists" = 0 ] || cargo bench --bench lists --no-run

if [ -n "${SNIGATE_E2E_MAX_LOAD:-}" ]; then
    for _ in $(seq 20); do
        load=$(cut -d' ' -f1 /proc/loadavg)
        awk -v l="$load" -v m="$SNIGATE_E2E_MAX_LOAD" 'BEGIN { exit !(l < m) }' && break
        echo "load average $load >= $SNIGATE_E2E_MAX_LOAD; waiting a minute" >&2
        sleep 60
    done
fi

# The sysctl is system-wide: set it for the measured run only, and restore it on any exit.
tw=$(sysctl -n net.ipv4.tcp_max_tw_buckets)
restore() { as_root sysctl -qw net.ipv4.tcp_max_tw_buckets="$tw"; }
trap restore EXIT
as_root sysctl -qw net.ipv4.tcp_max_tw_buckets=0

echo "date: $(date -u '+%Y-%m-%d %H:%M UTC')"
echo "machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)"
echo "load average before the run: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "peers: $(haproxy -v | head -1 | cut -d' ' -f1-3); $(nginx -v 2>&1 | cut -d' ' -f3); $(sniproxy -V 2>&1 | head -1)"
echo "command: benches/compare.sh (ulimit -n $(ulimit -n), tcp_max_tw_buckets=0 during the run, was $tw)"
# System calls per connection under strace, after the timed runs (0 turns it off).
SNIGATE_E2E_STRACE=${SNIGATE_E2E_STRACE-1}
[ "$SNIGATE_E2E_STRACE" = 0 ] && unset SNIGATE_E2E_STRACE || export SNIGATE_E2E_STRACE
cargo bench --bench e2e
workers=${SNIGATE_COMPARE_WORKERS:-2}
if [ "$workers" != 1 ]; then
    echo
    echo "## $workers workers per proxy, unpinned"
    env -u SNIGATE_E2E_STRACE SNIGATE_E2E_WORKERS="$workers" SNIGATE_E2E_IDLE=0 SNIGATE_E2E_BULK_MIB=0 \
        cargo bench --bench e2e
fi
echo "load average after the run: $(cut -d' ' -f1-3 /proc/loadavg)"
if [ "$lists" != 0 ]; then
    echo
    echo "## Large lists"
    cargo bench --bench lists
    echo "load average after the lists run: $(cut -d' ' -f1-3 /proc/loadavg)"
fi
