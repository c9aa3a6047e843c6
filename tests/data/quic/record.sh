#!/bin/bash
# Re-record the QUIC client Initial captures in this folder, then decode them.
#
# Usage: tests/data/quic/record.sh            (from the repository root)
#
# Needs python3 with aioquic (pip install aioquic) and Debian's chromium.
# All traffic goes to 127.0.0.1 only. For each client, tests/quic/capture.py
# listens on an ephemeral port (never answering) and keeps the datagrams that
# arrive within 50 ms of the first one (the first flight, before any
# retransmission); the client is given a bounded time and then stopped.
set -euo pipefail
cd "$(dirname "$0")/../../.."
DIR=tests/data/quic
SNI=acme.my.salesforce.com
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# start_capture NAME: start capture.py in the background, set CAP (pid) and PORT
start_capture() {
    python3 tests/quic/capture.py 0 "$TMP/$1.hex" --count 8 --seconds 10 --window 50 \
        >"$TMP/$1.port" 2>"$TMP/$1.log" &
    CAP=$!
    for _ in $(seq 50); do
        PORT=$(awk '/^PORT/{print $2}' "$TMP/$1.port")
        [ -n "$PORT" ] && return
        sleep 0.1
    done
    echo "capture.py did not start" >&2
    exit 1
}

# finish NAME HEADER: wait for the capture, write DIR/NAME.hex with its header
finish() {
    wait "$CAP" || true
    cat "$TMP/$1.log" >&2
    { echo "# $2; captured $(date -u +%F) by tests/data/quic/record.sh" \
           "(tests/quic/capture.py, first flight: datagrams within 50 ms of the first)"
      cat "$TMP/$1.hex"; } >"$DIR/$1.hex"
}

AIOQUIC=$(python3 -c 'import aioquic; print(aioquic.__version__)')
for v in 1 2; do
    start_capture "aioquic-v$v"
    python3 tests/quic/quic_client.py 127.0.0.1 "$PORT" --sni "$SNI" --version "$v" --timeout 1
    finish "aioquic-v$v" "aioquic $AIOQUIC client (tests/quic/quic_client.py --version $v --alpn h3), QUIC v$v Initial, SNI $SNI"
done

CHROMIUM=$(chromium --version 2>/dev/null | head -1)
start_capture chromium
PROFILE=$(mktemp -d)
setsid chromium --headless=new --no-sandbox --disable-gpu --user-data-dir="$PROFILE" \
    --no-first-run --disable-background-networking --disable-component-update \
    --enable-quic --origin-to-force-quic-on="$SNI:443" \
    --host-resolver-rules="MAP $SNI:443 127.0.0.1:$PORT" \
    "https://$SNI/" >"$TMP/chromium.out" 2>&1 &
CHROME=$!
wait "$CAP" || true      # the capture ends at the first retransmission (or 10 s)
kill -TERM -- "-$CHROME" 2>/dev/null || true   # chromium's own process group
sleep 1
kill -KILL -- "-$CHROME" 2>/dev/null || true
rm -rf "$PROFILE"
finish chromium "headless $CHROMIUM (Debian 12 package; --origin-to-force-quic-on), QUIC v1 Initials, SNI $SNI"

for f in aioquic-v1 aioquic-v2 chromium; do
    python3 tests/quic/decode_initial.py "$DIR/$f.hex" --sni "$SNI"
done
