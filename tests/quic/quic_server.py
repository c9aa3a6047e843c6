#!/usr/bin/env python3
"""QUIC echo server (aioquic) for snigate's QUIC filtering tests.

Usage: quic_server.py HOST PORT [--alpn h3,echo]

Generates a throwaway self-signed certificate (ECDSA P-256, in a temporary
directory removed at exit), listens on HOST:PORT (PORT 0 = an ephemeral port)
and prints "READY <port>" on stdout once listening. Accepts QUIC v1 and v2.
Every stream a client opens is read until FIN and its bytes are sent back,
followed by FIN. --alpn is a comma-separated list of ALPN protocols accepted
(default "h3,echo"); a client offering none of them gets a TLS
no_application_protocol alert. SIGTERM or SIGINT closes the server and exits 0.
"""
import argparse
import asyncio
import datetime
import os
import signal
import tempfile

from aioquic.asyncio import serve
from aioquic.quic.configuration import QuicConfiguration
from aioquic.quic.packet import QuicProtocolVersion
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def write_cert(directory):
    """Write a self-signed cert.pem/key.pem into DIRECTORY, return their paths."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "snigate-quic-test")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost")]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = os.path.join(directory, "cert.pem"), os.path.join(directory, "key.pem")
    with open(cert_path, "wb") as f:
        f.write(cert.public_bytes(serialization.Encoding.PEM))
    with open(key_path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM,
                                  serialization.PrivateFormat.PKCS8,
                                  serialization.NoEncryption()))
    return cert_path, key_path


def handle_stream(reader, writer):
    """Echo one stream: read until FIN, write it back, send FIN."""
    async def echo():
        data = await reader.read()
        writer.write(data)
        writer.write_eof()
    asyncio.ensure_future(echo())


async def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("host")
    p.add_argument("port", type=int)
    p.add_argument("--alpn", default="h3,echo")
    args = p.parse_args()

    config = QuicConfiguration(
        is_client=False,
        alpn_protocols=[a for a in args.alpn.split(",") if a],
        supported_versions=[QuicProtocolVersion.VERSION_1, QuicProtocolVersion.VERSION_2],
    )
    with tempfile.TemporaryDirectory(prefix="snigate-quic-") as tmp:
        config.load_cert_chain(*write_cert(tmp))
    server = await serve(args.host, args.port, configuration=config,
                         stream_handler=handle_stream)
    port = server._transport.get_extra_info("sockname")[1]
    print(f"READY {port}", flush=True)

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()


if __name__ == "__main__":
    asyncio.run(main())
