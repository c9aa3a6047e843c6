#!/usr/bin/env python3
"""Independently parse recorded ClientHellos and emit MANIFEST.tsv.

Usage: verify.py LIST.tsv > MANIFEST.tsv
Files are relative to this directory. LIST.tsv lines: file<TAB>client<TAB>client_version<TAB>expected_sni_or_-
Fails (exit 1) if a file is malformed or its SNI differs from the expected one.
"""
import os
import struct
import sys


def parse(path):
    data = open(path, "rb").read()
    pos, records, hs = 0, 0, b""
    while pos < len(data):
        ctype, _ver, length = struct.unpack("!BHH", data[pos:pos + 5])
        assert ctype == 22, f"record type {ctype}"
        assert pos + 5 + length <= len(data), "truncated record"
        hs += data[pos + 5:pos + 5 + length]
        pos += 5 + length
        records += 1
    assert hs[0] == 1, "not a client_hello"
    body_len = int.from_bytes(hs[1:4], "big")
    assert len(hs) == 4 + body_len, "trailing or missing handshake bytes"
    p = 4 + 2 + 32                                    # version, random
    p += 1 + hs[p]                                    # session_id
    p += 2 + int.from_bytes(hs[p:p + 2], "big")       # cipher_suites
    p += 1 + hs[p]                                    # compression_methods
    ext_end = p + 2 + int.from_bytes(hs[p:p + 2], "big")
    assert ext_end == len(hs), "extensions length mismatch"
    p += 2
    sni, alpn, ech = [], [], False
    while p < ext_end:
        etype, elen = struct.unpack("!HH", hs[p:p + 4])
        ext = hs[p + 4:p + 4 + elen]
        p += 4 + elen
        if etype == 0:  # server_name
            q = 2
            while q < len(ext):
                ntype, nlen = ext[q], int.from_bytes(ext[q + 1:q + 3], "big")
                if ntype == 0:
                    sni.append(ext[q + 3:q + 3 + nlen].decode("ascii"))
                q += 3 + nlen
        elif etype == 16:  # ALPN
            q = 2
            while q < len(ext):
                alpn.append(ext[q + 1:q + 1 + ext[q]].decode("ascii"))
                q += 1 + ext[q]
        elif etype == 0xFE0D:
            ech = True
    assert p == ext_end
    return len(data), records, sni, alpn, ech


def main():
    base = os.path.dirname(os.path.abspath(__file__))
    print("file\tclient\tversion_string_of_client\tsni\talpn\tbytes\trecords\tech")
    ok = True
    for line in open(sys.argv[1]):
        if not line.strip():
            continue
        fname, client, version, expected = line.rstrip("\n").split("\t")
        size, records, sni, alpn, ech = parse(os.path.join(base, fname))
        got = ",".join(sni) or "-"
        if got != expected:
            print(f"verify.py: {fname}: SNI {got!r} != expected {expected!r}", file=sys.stderr)
            ok = False
        print("\t".join([fname, client, version, got, ",".join(alpn) or "-",
                         str(size), str(records), "yes" if ech else "no"]))
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
