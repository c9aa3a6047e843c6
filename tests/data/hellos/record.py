#!/usr/bin/env python3
"""Record one real TLS ClientHello.

Usage: record.py OUT.bin [TIMEOUT_SECONDS]

Listens on 127.0.0.1 on an ephemeral port, prints "PORT <n>" (flushed),
accepts one connection and reads TLS records until one complete handshake
message of type client_hello (1) has been received. Writes exactly the bytes
of the records up to and including the record that completes the hello to
OUT.bin, then closes the connection. Exits non-zero on timeout/malformed input.
"""
import socket
import struct
import sys
import time


def main():
    out = sys.argv[1]
    timeout = float(sys.argv[2]) if len(sys.argv) > 2 else 20.0
    deadline = time.monotonic() + timeout

    def left():
        t = deadline - time.monotonic()
        if t <= 0:
            sys.exit("record.py: timeout")
        return t

    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    print("PORT", srv.getsockname()[1], flush=True)
    srv.settimeout(left())
    conn, _ = srv.accept()
    srv.close()

    buf = b""          # raw bytes received so far
    pos = 0            # end of the last complete record in buf
    hs = b""           # reassembled handshake payload
    with conn:
        while True:
            # consume every complete record currently buffered
            while len(buf) - pos >= 5:
                ctype, _ver, length = struct.unpack("!BHH", buf[pos:pos + 5])
                if ctype != 22:
                    sys.exit(f"record.py: unexpected record type {ctype}")
                if len(buf) - pos - 5 < length:
                    break
                hs += buf[pos + 5:pos + 5 + length]
                pos += 5 + length
                if len(hs) >= 4:
                    if hs[0] != 1:
                        sys.exit(f"record.py: first handshake type {hs[0]} is not client_hello")
                    if len(hs) >= 4 + int.from_bytes(hs[1:4], "big"):
                        with open(out, "wb") as f:
                            f.write(buf[:pos])
                        print("WROTE", pos, "bytes to", out, flush=True)
                        return
            conn.settimeout(left())
            data = conn.recv(65536)
            if not data:
                sys.exit("record.py: connection closed before a complete ClientHello")
            buf += data


if __name__ == "__main__":
    main()
