#!/usr/bin/env python3
"""Decrypt recorded QUIC client Initial packets and print what they carry.

Usage: decode_initial.py FILE.hex [--sni EXPECTED]

FILE holds one datagram per line as hex ('#' lines and blank lines are
skipped). For every datagram, each coalesced long-header packet is parsed;
Initial packets (QUIC v1, RFC 9001, or v2, RFC 9369) are decrypted with the
client Initial keys derived from their own Destination Connection ID: header
protection removed (AES-128-ECB mask), payload opened with AES-128-GCM. The
frames of each packet are listed, the CRYPTO data of all datagrams reassembled,
and the ClientHello parsed for its SNI. Independent of snigate and of aioquic:
only the `cryptography` package is used.

Exits 1 if a packet fails to decrypt, the hello is incomplete, or the SNI
differs from --sni.
"""
import argparse
import hashlib
import hmac
import struct
import sys

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

V1, V2 = 0x00000001, 0x6B3343CF
SALT = {V1: bytes.fromhex("38762cf7f55934b34d179ae6a4c80cadccbb7f0a"),
        V2: bytes.fromhex("0dede3def700a6db819381be6e269dcbf9bd2ed9")}
LABEL = {V1: "quic", V2: "quicv2"}
# long-header packet type bits -> name, per version (RFC 9000 17.2, RFC 9369 3.2)
TYPES = {V1: ["Initial", "0-RTT", "Handshake", "Retry"],
         V2: ["Retry", "Initial", "0-RTT", "Handshake"]}
EXT_NAMES = {0: "server_name", 10: "supported_groups", 13: "signature_algorithms",
             16: "alpn", 27: "compress_certificate", 41: "pre_shared_key",
             43: "supported_versions", 45: "psk_key_exchange_modes", 51: "key_share",
             57: "quic_transport_parameters", 0x44CD: "alps", 0xFE0D: "ech"}


def expand_label(secret, label, length):
    full = b"tls13 " + label.encode()
    info = struct.pack("!HB", length, len(full)) + full + b"\x00"
    out, block, i = b"", b"", 1
    while len(out) < length:
        block = hmac.new(secret, block + info + bytes([i]), hashlib.sha256).digest()
        out, i = out + block, i + 1
    return out[:length]


def client_keys(dcid, version):
    initial = hmac.new(SALT[version], dcid, hashlib.sha256).digest()  # HKDF-Extract
    secret = expand_label(initial, "client in", 32)
    p = LABEL[version]
    return (expand_label(secret, p + " key", 16), expand_label(secret, p + " iv", 12),
            expand_label(secret, p + " hp", 16))


def varint(b, i):
    n = 1 << (b[i] >> 6)
    v = b[i] & 0x3F
    for k in range(1, n):
        v = (v << 8) | b[i + k]
    return v, i + n


def decrypt_initial(dg, start, pn_off, end, dcid, version):
    """Return (packet number, plaintext payload) of the Initial at dg[start:end]."""
    key, iv, hp = client_keys(dcid, version)
    enc = Cipher(algorithms.AES(hp), modes.ECB()).encryptor()
    mask = enc.update(dg[pn_off + 4:pn_off + 20]) + enc.finalize()
    first = dg[start] ^ (mask[0] & 0x0F)
    pn_len = (first & 3) + 1
    pn_bytes = bytes(x ^ m for x, m in zip(dg[pn_off:pn_off + pn_len], mask[1:]))
    header = bytes([first]) + dg[start + 1:pn_off] + pn_bytes
    pn = int.from_bytes(pn_bytes, "big")
    nonce = bytes(a ^ b for a, b in zip(iv, pn.to_bytes(12, "big")))
    return pn, AESGCM(key).decrypt(nonce, dg[pn_off + pn_len:end], header)


def parse_frames(p):
    """Yield (description, crypto_offset or None, crypto_data or None)."""
    i = 0
    while i < len(p):
        t = p[i]
        if t == 0x00:
            j = i
            while j < len(p) and p[j] == 0:
                j += 1
            yield f"PADDING({j - i})", None, None
            i = j
        elif t == 0x01:
            yield "PING", None, None
            i += 1
        elif t in (0x02, 0x03):
            largest, i = varint(p, i + 1)
            _, i = varint(p, i)
            count, i = varint(p, i)
            _, i = varint(p, i)
            for _ in range(2 * count + (3 if t == 0x03 else 0)):
                _, i = varint(p, i)
            yield f"ACK(largest={largest})", None, None
        elif t == 0x06:
            off, i = varint(p, i + 1)
            n, i = varint(p, i)
            yield f"CRYPTO[{off}+{n}]", off, p[i:i + n]
            i += n
        elif t == 0x1C:
            code, i = varint(p, i + 1)
            _, i = varint(p, i)
            n, i = varint(p, i)
            yield f"CONNECTION_CLOSE(code={code}, reason={p[i:i + n]!r})", None, None
            i += n
        else:
            yield f"UNKNOWN(0x{t:02x}) + {len(p) - i} bytes", None, None
            return


def parse_hello(h):
    """Return (SNI or None, offset of the SNI in H or None, [extension names])."""
    i = 4 + 2 + 32
    i += 1 + h[i]
    i += 2 + int.from_bytes(h[i:i + 2], "big")
    i += 1 + h[i]
    end = i + 2 + int.from_bytes(h[i:i + 2], "big")
    i += 2
    sni, where, names = None, None, []
    while i < end:
        typ, n = struct.unpack("!HH", h[i:i + 4])
        body = h[i + 4:i + 4 + n]
        names.append(EXT_NAMES.get(typ, "grease" if typ & 0x0F0F == 0x0A0A else f"0x{typ:04x}"))
        if typ == 0 and body[2] == 0:
            sni = body[5:5 + int.from_bytes(body[3:5], "big")].decode()
            where = i + 4 + 5
        if typ == 16:
            alpn, k = [], 2
            while k < len(body):
                alpn.append(body[k + 1:k + 1 + body[k]].decode())
                k += 1 + body[k]
            names[-1] += "=" + ",".join(alpn)
        if typ == 51:  # key_share: list the groups offered
            groups, k = [], 2
            while k < len(body):
                groups.append(f"0x{int.from_bytes(body[k:k + 2], 'big'):04x}")
                k += 4 + int.from_bytes(body[k + 2:k + 4], "big")
            names[-1] += "=" + ",".join(groups)
        i += 4 + n
    return sni, where, names


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("file")
    ap.add_argument("--sni")
    args = ap.parse_args()
    lines = [l.strip() for l in open(args.file) if l.strip() and not l.startswith("#")]
    dgs = [bytes.fromhex(l) for l in lines]
    print(f"file: {args.file}")
    print(f"datagrams: {len(dgs)} ({', '.join(str(len(d)) for d in dgs)} bytes)")
    ok = True
    crypto = {}  # DCID -> [(datagram index, offset, data)] in sent order
    npackets = 0
    for d, dg in enumerate(dgs, 1):
        print(f"datagram {d}: {len(dg)} bytes")
        i = 0
        while i < len(dg):
            start = i
            if not dg[i] & 0x80:
                zero = "all zero" if not any(dg[i:]) else f"first 0x{dg[i]:02x}"
                print(f"  {len(dg) - i} trailing bytes after the packets ({zero})")
                break
            version = int.from_bytes(dg[i + 1:i + 5], "big")
            i += 5
            dcid = dg[i + 1:i + 1 + dg[i]]
            i += 1 + dg[i]
            scid = dg[i + 1:i + 1 + dg[i]]
            i += 1 + dg[i]
            if version not in TYPES:
                print(f"  unknown version 0x{version:08x}")
                ok = False
                break
            kind = TYPES[version][(dg[start] >> 4) & 3]
            token = b""
            if kind == "Initial":
                tlen, i = varint(dg, i)
                token, i = dg[i:i + tlen], i + tlen
            length, pn_off = varint(dg, i)
            end = pn_off + length
            npackets += 1
            desc = (f"  packet {npackets}: {kind} v{1 if version == V1 else 2} "
                    f"first=0x{dg[start]:02x} dcid={dcid.hex()} scid={scid.hex()} "
                    f"token={len(token)} length={length}")
            if kind != "Initial":
                print(desc + " (not decrypted)")
                i = end
                continue
            try:
                pn, plain = decrypt_initial(dg, start, pn_off, end, dcid, version)
            except Exception as e:  # InvalidTag or truncated packet
                print(desc + f" DECRYPT FAILED: {type(e).__name__}")
                ok = False
                i = end
                continue
            print(desc + f" pn={pn}")
            frames = []
            for text, off, data in parse_frames(plain):
                frames.append(text)
                if off is not None:
                    crypto.setdefault(dcid, []).append((d, off, data))
            print("    frames: " + " ".join(frames))
            i = end
    print(f"packets: {npackets}")
    if not crypto:
        print("no CRYPTO data")
        return 1
    for dcid, frames in crypto.items():
        if len(crypto) > 1:
            print(f"connection dcid={dcid.hex()}:")
        ok = reassemble(frames, args.sni) and ok
    return 0 if ok else 1


def reassemble(crypto, expected_sni):
    """Report on and check the CRYPTO frames [(datagram, offset, data)] of one connection."""
    ok = True
    offsets = [off for _, off, _ in crypto]
    print(f"CRYPTO frames: {len(crypto)}; offsets in sent order: {offsets}")
    print("CRYPTO in order: " + ("yes" if offsets == sorted(offsets) else "no (out of order)"))
    buf, have, done_at = bytearray(), set(), {}
    for d, off, data in crypto:
        if off + len(data) > len(buf):
            buf.extend(b"\0" * (off + len(data) - len(buf)))
        for k, byte in enumerate(data):
            if off + k in have and buf[off + k] != byte and ok:
                print(f"CRYPTO overlap mismatch at offset {off + k}")
                ok = False
            buf[off + k] = byte
            have.add(off + k)
            done_at.setdefault(off + k, d)
    ranges = []
    for pos in sorted(have):
        if ranges and ranges[-1][1] == pos:
            ranges[-1][1] = pos + 1
        else:
            ranges.append([pos, pos + 1])
    print(f"CRYPTO ranges: {' '.join(f'[{a},{b})' for a, b in ranges)}")
    if len(buf) < 4 or buf[0] != 1:
        print("no ClientHello")
        return False
    total = 4 + int.from_bytes(buf[1:4], "big")
    if not all(p in have for p in range(total)):
        print(f"ClientHello: {total} bytes, INCOMPLETE")
        return False
    sources = sorted({done_at[p] for p in range(total)})
    print(f"ClientHello: {total} bytes (handshake header included), from datagrams "
          f"{sources}; complete after datagram {sources[-1]}; "
          f"spans more than one datagram: {'yes' if len(sources) > 1 else 'no'}")
    sni, where, names = parse_hello(bytes(buf[:total]))
    print(f"extensions: {' '.join(names)}")
    if sni is None:
        print("SNI: none")
    else:
        carriers = sorted({done_at[p] for p in range(where, where + len(sni))})
        print(f"SNI: {sni} (hello bytes [{where},{where + len(sni)}), in datagrams {carriers})")
    if expected_sni is not None and sni != expected_sni:
        print(f"SNI MISMATCH: expected {expected_sni}")
        ok = False
    return ok


if __name__ == "__main__":
    sys.exit(main())
