#!/usr/bin/env bash
# Where snigate and its peers spend CPU per allowed connection, side by side, under the e2e
# bench's load (benches/e2e.rs: proxy on CPU 0, load and backend on CPU 1, concurrency 16, the
# recorded Chromium hello, a 4 KiB answer): `benches/profile.sh MODE [OUT]` from the repository
# root, OUT defaulting to a new temporary directory. MODE is one of
#
# - `perf`: `perf record -e cpu-clock -g` on each proxy over 20,000 connections; prints the
#   split of samples between user space and the kernel, and the top symbols of each.
# - `callgrind`: each proxy under `valgrind --tool=callgrind`, counting from just before 2,000
#   connections to just after them only; prints instructions per connection (user space,
#   deterministic), heap allocations per connection (calls to Rust's allocator, or for a C
#   program to malloc and its kin) and the top functions.
# - `strace`: `strace -f` on each proxy over 2,000 connections; prints system calls per
#   connection, epoll_ctl split by operation.
# - `hello`: no proxy; the recorded Chromium hello parsed 10,000 times (SNIGATE_PROFILE_PARSES)
#   by the hello bench under callgrind, counting inside `snigate::hello::parse` only; prints
#   instructions and allocations per parse (the name's included) and the top functions.
#
# Peers: SNIGATE_E2E_PEERS (default floor,nginx: the floor proxy of benches/support/floor.rs, the
# least a proxy does per connection, and nginx); SNIGATE_PROFILE_CONNS overrides the connection
# count. Runs as compare.sh does (ulimit -n raised, net.ipv4.tcp_max_tw_buckets=0 for the run
# and restored on exit), skips the timed runs, idle and bulk, and stops only what it started.
set -euo pipefail
cd "$(dirname "$0")/.."

mode=${1:?usage: benches/profile.sh perf|callgrind|strace|hello [OUT]}
out=${2:-$(mktemp -d)}
mkdir -p "$out"
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

# Calls into the allocator in a callgrind file, from its call records (names are given once per
# id, then the id alone): calls to Rust's allocator, or for a C program to malloc and its kin.
allocations() {
    awk '/^c?fn=\(/ { id = $1; sub(/^c?fn=/, "", id); name = $0; sub(/^c?fn=\([0-9]+\) ?/, "", name)
            if (name != "") names[id] = name; if ($0 ~ /^cfn=/) callee = names[id]; next }
        /^calls=/ { n = $1; sub(/^calls=/, "", n)
            if (callee ~ /__rust_(alloc|alloc_zeroed|realloc)$/) rust += n
            else if (callee ~ /^(malloc|calloc|realloc|posix_memalign|memalign|aligned_alloc)$/) libc += n }
        END { print (rust > 0 ? rust : libc) + 0 }' "$1"
}

if [ "$mode" = hello ]; then
    parses=${SNIGATE_PROFILE_PARSES:-10000}
    bench=$(cargo bench --bench hello --no-run 2>&1 | grep -oE 'target/[^ )]*/hello-[0-9a-f]+' | head -1)
    SNIGATE_HELLO_PARSES=$parses valgrind --tool=callgrind --toggle-collect='snigate::hello::parse::parse' \
        --callgrind-out-file="$out/hello.callgrind" "$bench" 2>/dev/null
    total=$(grep -m1 '^totals:' "$out/hello.callgrind" | awk '{ print $2 }')
    allocs=$(allocations "$out/hello.callgrind")
    echo "== parse of tests/data/hellos/chromium.bin: $((total / parses)) instructions per parse;" \
        "$(awk -v a="$allocs" -v n="$parses" 'BEGIN { printf "%.1f", a / n }') allocations per parse"
    callgrind_annotate --inclusive=no "$out/hello.callgrind" 2>/dev/null | grep -E '^ *[0-9,]+ ' | head -20
    echo "files: $out" >&2
    exit 0
fi

case "$mode" in
perf)
    conns=${SNIGATE_PROFILE_CONNS:-20000}
    attach="exec perf record -q -e cpu-clock -F 4999 -g -o $out/{name}.perf -p {pids}"
    wrap=""
    ;;
callgrind)
    conns=${SNIGATE_PROFILE_CONNS:-2000}
    # Instrumented only while attached: the start-up and the split-hello probe are left out.
    attach="for p in \$(echo {pids} | tr , ' '); do callgrind_control -i on \$p >/dev/null; done; \
        trap 'for p in \$(echo {pids} | tr , \" \"); do callgrind_control -i off \$p >/dev/null; callgrind_control -d \$p >/dev/null; done; exit' INT; \
        while :; do sleep 1; done"
    wrap="valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file=$out/%p.callgrind"
    ;;
strace)
    conns=${SNIGATE_PROFILE_CONNS:-2000}
    attach="exec strace -f -q -o $out/{name}.strace -p {pids}"
    wrap=""
    ;;
*)
    echo "unknown mode $mode (perf, callgrind, strace, hello)" >&2
    exit 64
    ;;
esac

ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"
cargo bench --bench e2e --no-run
tw=$(sysctl -n net.ipv4.tcp_max_tw_buckets)
restore() { as_root sysctl -qw net.ipv4.tcp_max_tw_buckets="$tw"; }
trap restore EXIT
as_root sysctl -qw net.ipv4.tcp_max_tw_buckets=0

SNIGATE_E2E_PEERS=${SNIGATE_E2E_PEERS:-floor,nginx} SNIGATE_E2E_ROUNDS=0 SNIGATE_E2E_IDLE=0 SNIGATE_E2E_BULK_MIB=0 \
    SNIGATE_E2E_ATTACH="$attach" SNIGATE_E2E_ATTACH_CONNS="$conns" SNIGATE_BENCH_WRAP="$wrap" \
    cargo bench --bench e2e 2>&1 | grep -E 'attached|pid|error|panic' | tee "$out/pids" >&2

# The reports read only part of their input (head): no pipefail from here on.
set +o pipefail
per() { awk -v n="$conns" '{ printf "%s %.1f\n", $0, $NF / n }'; }
case "$mode" in
perf)
    for f in "$out"/*.perf; do
        # cpu-clock counts nanoseconds: the event count over the connections is the CPU per one.
        ns=$(perf report -i "$f" --stdio 2>/dev/null | grep -m1 'Event count' | grep -oE '[0-9]+$')
        echo "== $(basename "$f" .perf): $((ns / conns)) ns of CPU per connection, by object (the kernel's included)"
        perf report -i "$f" --no-children --sort dso --stdio -g none 2>/dev/null | grep -E '^ +[0-9]'
        echo "-- top symbols"
        perf report -i "$f" --no-children --sort dso,sym --stdio -g none 2>/dev/null | grep -E '^ +[0-9]' | head -40
    done
    ;;
callgrind)
    # The dumps taken at the end of the pass (the files at exit hold the same counts).
    for f in "$out"/*.callgrind.1; do
        total=$(grep -m1 '^totals:' "$f" | awk '{ print $2 }')
        [ "${total:-0}" -gt 0 ] || continue
        pid=$(basename "$f" .callgrind.1)
        name=$(grep -m1 ": pid $pid\$" "$out/pids" | sed 's/: pid.*//')
        allocs=$(allocations "$f")
        echo "== ${name:-$(grep -m1 '^cmd:' "$f" | awk '{ print $2 }')}: $total instructions, $((total / conns)) per connection;" \
            "$allocs allocations, $(awk -v a="$allocs" -v n="$conns" 'BEGIN { printf "%.1f", a / n }') per connection"
        callgrind_annotate --inclusive=no "$f" 2>/dev/null | grep -E '^ *[0-9,]+ ' | head -30
    done
    ;;
strace)
    for f in "$out"/*.strace; do
        echo "== $(basename "$f" .strace): calls per connection"
        grep -oE '^[0-9]+ +[a-z_0-9]+\(' "$f" | awk '{ print $2 }' | tr -d '(' | sort | uniq -c | sort -rn | awk '{ print $2, $1 }' | per
        grep -oE 'epoll_ctl\([0-9]+, EPOLL_CTL_[A-Z]+' "$f" | awk -F', ' '{ print $2 }' | sort | uniq -c | awk '{ print $2, $1 }' | per
    done
    ;;
esac
echo "files: $out" >&2
