#!/bin/sh
# Builds the fully static snigate binary the container ships (musl, no dynamic dependencies),
# without Docker. The Dockerfile runs this same script.
#
#   deploy/container/build-static.sh [OUT]      # default OUT: target/static/snigate
#
# Needs the musl target (`rustup target add x86_64-unknown-linux-musl`) and musl-gcc (Debian
# package musl-tools), which compiles ring's C and assembly parts (QUIC's Initial keys). Exit 69
# when either cannot be had.
set -eu

cd "$(dirname "$0")/../.."
out=${1:-target/static/snigate}
target=x86_64-unknown-linux-musl

if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
    if ! rustup target add "$target"; then
        echo "build-static: cannot install the Rust target $target (rustup target add failed)" >&2
        exit 69
    fi
fi
if ! command -v musl-gcc >/dev/null; then
    echo "build-static: musl-gcc is missing (Debian package musl-tools)" >&2
    exit 69
fi
CC_x86_64_unknown_linux_musl=${CC_x86_64_unknown_linux_musl:-musl-gcc} \
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
    cargo build --locked --release --target "$target" --bin snigate
mkdir -p "$(dirname "$out")"
cp "${CARGO_TARGET_DIR:-target}/$target/release/snigate" "$out"
strip "$out" 2>/dev/null || true

# Refuse to hand over anything dynamic.
if file "$out" | grep -q 'dynamically linked'; then
    echo "build-static: $out is dynamically linked" >&2
    exit 1
fi
echo "$out"
