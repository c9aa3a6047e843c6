#!/usr/bin/env bash
# Re-record every ClientHello fixture in this directory and rewrite MANIFEST.tsv.
# Usage: tests/data/hellos/record-all.sh   (all traffic goes to 127.0.0.1 only)
set -u
cd "$(dirname "$0")"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
: > "$TMP/list.tsv"
FAILED=()

# record FILE CLIENT VERSION SNI CMD -- CMD runs under bash with $PORT and $SNI set.
record() {
  local file=$1 client=$2 version=$3 sni=$4 cmd=$5 port= rpid cpid
  python3 record.py "$TMP/$file" 20 > "$TMP/rec.out" &
  rpid=$!
  for _ in $(seq 50); do
    port=$(awk '/^PORT/{print $2}' "$TMP/rec.out")
    [ -n "$port" ] && break
    sleep 0.1
  done
  PORT=$port SNI=$sni timeout -k 2 20 bash -c "$cmd" > "$TMP/$file.log" 2>&1 &
  cpid=$!
  if wait "$rpid"; then
    mv "$TMP/$file" "$file"
    printf '%s\t%s\t%s\t%s\n' "$file" "$client" "$version" "$sni" >> "$TMP/list.tsv"
    echo "ok   $file"
  else
    FAILED+=("$file"); echo "FAIL $file"; tail -5 "$TMP/$file.log"
  fi
  kill "$cpid" 2>/dev/null; wait "$cpid" 2>/dev/null
}

OSSL="openssl s_client -connect 127.0.0.1:\$PORT </dev/null"
OV=$(openssl version | cut -d' ' -f1-2)
record openssl-tls13.bin "openssl s_client -tls1_3" "$OV" acme.my.salesforce.com \
  "$OSSL -tls1_3 -servername \$SNI -alpn h2,http/1.1"
record openssl-tls12.bin "openssl s_client -tls1_2" "$OV" login.salesforce.com \
  "$OSSL -tls1_2 -servername \$SNI"
record openssl-nosni.bin "openssl s_client -noservername" "$OV" - \
  "$OSSL -noservername"
# 253-char SNI (the maximum) + 512-byte record limit: a real hello split over 2 records
LONG=acme-$(printf 'x%.0s' {1..58}).$(printf 'y%.0s' {1..63}).$(printf 'z%.0s' {1..63}).$(printf 'w%.0s' {1..43}).my.salesforce.com
record openssl-fragmented.bin "openssl s_client -max_send_frag 512" "$OV" "$LONG" \
  "$OSSL -max_send_frag 512 -servername \$SNI -alpn h2,http/1.1"
record curl.bin "curl" "$(curl --version | head -1 | cut -d' ' -f1-2,5)" acme--uat.sandbox.my.salesforce.com \
  "curl -sS -k --noproxy '*' --max-time 15 --resolve \$SNI:\$PORT:127.0.0.1 https://\$SNI:\$PORT/"
record gnutls-cli.bin "gnutls-cli" "$(gnutls-cli --version | head -1)" acme.lightning.force.com \
  "gnutls-cli --insecure -p \$PORT --sni-hostname \$SNI --alpn h2 --alpn http/1.1 127.0.0.1 </dev/null"
record python-ssl.bin "python3 ssl" "$(python3 -c 'import ssl,sys; print("Python", sys.version.split()[0], ssl.OPENSSL_VERSION)')" test.salesforce.com \
  "python3 -c 'import os,socket,ssl; c=ssl.create_default_context(); c.set_alpn_protocols([\"http/1.1\"]); c.wrap_socket(socket.create_connection((\"127.0.0.1\", int(os.environ[\"PORT\"])), 10), server_hostname=os.environ[\"SNI\"])'"
record node-tls.bin "node tls.connect" "$(node -p '"node " + process.version + " OpenSSL " + process.versions.openssl')" example.com \
  "node -e 'require(\"tls\").connect({host: \"127.0.0.1\", port: +process.env.PORT, servername: process.env.SNI, ALPNProtocols: [\"h2\", \"http/1.1\"]}).on(\"error\", e => console.error(e.message))'"
mkdir -p "$TMP/java" && javac -d "$TMP/java" JavaHello.java
record java17.bin "Java SSLSocket" "$(java -version 2>&1 | head -1 | tr -d '"')" acme.my.site.com \
  "java -cp $TMP/java JavaHello \$PORT \$SNI"
record chromium.bin "headless Chromium" "$(chromium --version 2>/dev/null | cut -d' ' -f1-2)" acme--dev.sandbox.lightning.force.com \
  "chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking --disable-component-update --disable-sync --no-proxy-server --user-data-dir=$TMP/chrome --host-resolver-rules=\"MAP \$SNI 127.0.0.1:\$PORT, MAP * ~NOTFOUND\" --dump-dom https://\$SNI/"

python3 verify.py "$TMP/list.tsv" > MANIFEST.tsv.new && mv MANIFEST.tsv.new MANIFEST.tsv || { rm -f MANIFEST.tsv.new; FAILED+=(verify); }
column -t -s$'\t' MANIFEST.tsv
[ ${#FAILED[@]} -eq 0 ] || { echo "failed: ${FAILED[*]}"; exit 1; }
