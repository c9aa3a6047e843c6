#!/usr/bin/env python3
"""Minimal QUIC test client (aioquic) for snigate's QUIC filtering tests.

Usage:
    quic_client.py HOST PORT --sni NAME [--alpn h3|echo] [--version 1|2]
                   [--timeout SECS] [--message TEXT] [--local-port PORT]

Connects to HOST:PORT over QUIC with server name NAME, certificate
verification disabled, and prints exactly one JSON line:

    {"result": "connected"|"closed"|"timeout", "error_code": int|null,
     "reason": str|null, "elapsed": float, "echo": str|null}

- "connected": the handshake completed. With --message, a bidirectional
  stream is opened, TEXT is sent with FIN and the reply is read until FIN
  into "echo" (null if no complete reply arrived within the time left).
  No HTTP/3 framing is used, even with --alpn h3: the stream carries raw bytes,
  which is what tests/quic/quic_server.py echoes.
- "closed": the peer sent CONNECTION_CLOSE before the handshake completed;
  "error_code" and "reason" are the frame's error code and reason phrase
  (a TLS alert A is reported as 0x0100 + A, e.g. 305 for access_denied).
  If aioquic itself gave up before the handshake completed (e.g. no common
  version after a Version Negotiation packet), the result is also "closed",
  with aioquic's own code and the reason prefixed with "local: ".
- "timeout": neither happened within --timeout seconds (default 5).

"elapsed" is the time in seconds from the start until the result was known
(handshake completion, CONNECTION_CLOSE received, or the timeout); the echo
exchange is not included. Exit status is 0 for all three results, 2 for
usage errors.

--local-port PORT sends from that UDP port (on any address), so that a test
can open a second connection from the address and port of a first one.

--version 1|2 selects QUIC v1 (0x00000001) or QUIC v2 (0x6b3343cf, RFC 9369)
as the client's initial version, and it is the only version the client
offers, so a server cannot upgrade the connection to the other version through
compatible version negotiation (RFC 9368). aioquic 1.x supports v2
(QuicProtocolVersion.VERSION_2); with an aioquic that lacks it, --version 2
is refused as a usage error (exit 2).
"""
import argparse
import asyncio
import json
import socket
import ssl
import sys

from aioquic.asyncio.protocol import QuicConnectionProtocol
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.connection import QuicConnection
from aioquic.quic.packet import QuicProtocolVersion


class _Connection(QuicConnection):
    """QuicConnection that reports a received CONNECTION_CLOSE at once
    (aioquic only emits ConnectionTerminated after the draining period)."""

    on_peer_close = None

    def _handle_connection_close_frame(self, context, frame_type, buf):
        super()._handle_connection_close_frame(context, frame_type, buf)
        if self.on_peer_close is not None:
            self.on_peer_close(self._close_event)


async def run(args, version):
    loop = asyncio.get_running_loop()
    start = loop.time()
    deadline = start + args.timeout
    out = {"result": "timeout", "error_code": None, "reason": None,
           "elapsed": 0.0, "echo": None}

    config = QuicConfiguration(
        is_client=True,
        alpn_protocols=[args.alpn],
        server_name=args.sni,
        verify_mode=ssl.CERT_NONE,
        idle_timeout=args.timeout + 5,
        original_version=version,
        supported_versions=[version],
    )
    conn = _Connection(configuration=config)
    peer_closed = loop.create_future()
    conn.on_peer_close = lambda ev: peer_closed.done() or peer_closed.set_result(ev)

    info = (await loop.getaddrinfo(args.host, args.port, type=socket.SOCK_DGRAM))[0]
    transport, proto = await loop.create_datagram_endpoint(
        lambda: QuicConnectionProtocol(conn), family=info[0],
        local_addr=("::" if info[0] == socket.AF_INET6 else "0.0.0.0", args.local_port)
        if args.local_port else None)
    connected = asyncio.ensure_future(proto.wait_connected())
    try:
        proto.connect(info[4])
        await asyncio.wait({connected, peer_closed}, timeout=args.timeout,
                           return_when=asyncio.FIRST_COMPLETED)
        out["elapsed"] = round(loop.time() - start, 4)
        if connected.done() and connected.exception() is None:
            out["result"] = "connected"
            if args.message is not None:
                out["echo"] = await echo(proto, conn, args.message, deadline - loop.time())
        elif peer_closed.done():
            ev = peer_closed.result()
            out.update(result="closed", error_code=ev.error_code, reason=ev.reason_phrase)
        elif connected.done():
            ev = conn._close_event
            out.update(result="closed",
                       error_code=ev.error_code if ev else None,
                       reason="local: " + (ev.reason_phrase if ev else "connection lost"))
    finally:
        proto.close()
        try:
            await asyncio.wait_for(proto.wait_closed(), 1.0)
        except asyncio.TimeoutError:
            pass
        if connected.done():
            connected.exception()  # mark a ConnectionError as retrieved
        else:
            connected.cancel()
        transport.close()
    return out


async def echo(proto, conn, message, time_left):
    """Send MESSAGE with FIN on a new bidi stream; return the reply or None."""
    if time_left <= 0:
        return None
    reader, writer = await proto.create_stream()
    writer.write(message.encode())
    writer.write_eof()
    try:
        data = await asyncio.wait_for(reader.read(), time_left)
    except asyncio.TimeoutError:
        return None
    if conn._close_event is not None:  # EOF came from the connection ending, not FIN
        return None
    return data.decode(errors="replace")


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--sni", required=True)
    p.add_argument("--alpn", choices=["h3", "echo"], default="h3")
    p.add_argument("--version", type=int, choices=[1, 2], default=1)
    p.add_argument("--timeout", type=float, default=5.0)
    p.add_argument("--message")
    p.add_argument("--local-port", type=int, default=0)
    args = p.parse_args()
    if not 0 < args.port < 65536:
        p.error("PORT must be 1..65535")
    if not 0 <= args.local_port < 65536:
        p.error("--local-port must be 0..65535")
    if not 0 < args.timeout <= 300:
        p.error("--timeout must be in (0, 300]")
    if args.version == 2:
        version = getattr(QuicProtocolVersion, "VERSION_2", None)
        if version is None:
            p.error("this aioquic has no QUIC v2 support")
    else:
        version = QuicProtocolVersion.VERSION_1
    print(json.dumps(asyncio.run(run(args, version))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
