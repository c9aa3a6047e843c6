#!/usr/bin/env python3
"""Record the UDP datagrams a QUIC client sends, without ever answering.

Usage: capture.py PORT OUT [--count N] [--seconds T] [--window MS] [--host 127.0.0.1|::1]

Binds HOST:PORT (PORT 0 = an ephemeral port), prints "PORT <n>" on stdout,
then writes each received datagram as one lowercase hex line to OUT and logs
"<n> <ms since first datagram> <bytes> <peer>" for it on stderr.
Stops after N datagrams (default 8) or T seconds (default 10), whichever comes
first; both are capped (N <= 1000, T <= 300). With --window MS it also stops
at the first datagram arriving more than MS milliseconds after the first one,
without writing it: this keeps a client's first flight and drops its
retransmissions. Never sends anything.
"""
import argparse
import socket
import sys
import time


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("port", type=int)
    p.add_argument("out")
    p.add_argument("--count", type=int, default=8)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--window", type=float, help="keep only datagrams within MS of the first")
    p.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1", "::1"])
    args = p.parse_args()
    count = max(1, min(args.count, 1000))
    deadline = time.monotonic() + max(0.1, min(args.seconds, 300.0))

    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    sock.bind((args.host, args.port))
    print(f"PORT {sock.getsockname()[1]}", flush=True)

    first = None
    with open(args.out, "w") as out:
        for n in range(count):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            sock.settimeout(left)
            try:
                data, peer = sock.recvfrom(65535)
            except socket.timeout:
                break
            now = time.monotonic()
            first = now if first is None else first
            if args.window is not None and (now - first) * 1000 > args.window:
                print(f"{n + 1} {(now - first) * 1000:.1f} {len(data)} outside window, stop",
                      file=sys.stderr, flush=True)
                break
            out.write(data.hex() + "\n")
            out.flush()
            print(f"{n + 1} {(now - first) * 1000:.1f} {len(data)} {peer[0]}:{peer[1]}",
                  file=sys.stderr, flush=True)
    sock.close()


if __name__ == "__main__":
    main()
