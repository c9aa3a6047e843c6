//! The PROXY protocol (HAProxy's v1 text and v2 binary headers): read in front of the
//! ClientHello from trusted load balancers, and written to upstreams that want it.
//! Parsing and encoding are the `ppp` crate's.

use std::net::{IpAddr, SocketAddr};

use bytes::BytesMut;
use ipnet::IpNet;
use ppp::{HeaderResult, v1, v2};
use tokio::io::{AsyncRead, AsyncReadExt};

use crate::config::ProxyVersion as Version;

/// What a PROXY header told us.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Addresses {
    /// The real client.
    pub source: SocketAddr,
    /// The address the client connected to.
    pub destination: SocketAddr,
}

/// Why an incoming PROXY header was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    /// The peer is not in `proxy_protocol_trusted`.
    #[error("PROXY protocol from untrusted source {0}")]
    Untrusted(IpAddr),
    /// The bytes are not a PROXY header.
    #[error("invalid PROXY protocol header: {0}")]
    Invalid(String),
    /// The header is longer than the cap.
    #[error("PROXY protocol header longer than {0} bytes")]
    TooLong(usize),
    /// The peer closed before the header was complete.
    #[error("closed before the PROXY protocol header was complete")]
    Closed,
    /// Reading failed.
    #[error("reading the PROXY protocol header failed: {0}")]
    Io(String),
}

/// Whether `peer` may send a PROXY header.
pub fn trusted(peer: IpAddr, trusted: &[IpNet]) -> bool {
    let peer = match peer {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(peer, IpAddr::V4),
        v4 => v4,
    };
    trusted.iter().any(|net| net.contains(&peer))
}

/// The v2 header's fixed start (RFC-like spec, section 2.2).
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";
/// The v1 header's start.
const V1_START: &[u8; 6] = b"PROXY ";
/// The longest v1 header, CRLF included (spec, section 2.1).
const V1_MAX: usize = 107;

/// Reads one PROXY header (v1 or v2) from `io` into `buf`, removes it from `buf` (whatever
/// followed it stays, to be parsed as the ClientHello), and returns the addresses it carries
/// (`None` for `UNKNOWN`/`LOCAL` headers: the connection's own addresses stand).
///
/// The answer does not depend on how the bytes arrive: a header is parsed once it is whole
/// (a v1 line up to its CRLF, a v2 header to the length it declares), and bytes that cannot
/// start either version are refused on the first read.
pub async fn read_header<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    max: usize,
) -> Result<Option<Addresses>, ProxyError> {
    loop {
        if let Some(len) = header_len(buf, max)? {
            let (parsed, addresses) = complete(HeaderResult::parse(&buf[..len]))?;
            if parsed != len {
                return Err(ProxyError::Invalid("header length disagrees with its content".into()));
            }
            let _ = buf.split_to(len);
            return Ok(addresses);
        }
        buf.reserve(512);
        match io.read_buf(buf).await {
            Ok(0) => return Err(ProxyError::Closed),
            Ok(_) => {}
            Err(e) => return Err(ProxyError::Io(e.to_string())),
        }
    }
}

/// The length of the whole header at the start of `buf`, once it is all there; `None` while
/// more is needed. A header longer than `max` is refused whatever has arrived of it.
fn header_len(buf: &[u8], max: usize) -> Result<Option<usize>, ProxyError> {
    let prefix = |start: &[u8]| buf.len().min(start.len());
    if buf[..prefix(V2_SIGNATURE)] == V2_SIGNATURE[..prefix(V2_SIGNATURE)] {
        if buf.len() < 16 {
            return Ok(None);
        }
        let len = 16 + usize::from(u16::from_be_bytes([buf[14], buf[15]]));
        if len > max {
            return Err(ProxyError::TooLong(max));
        }
        return Ok((buf.len() >= len).then_some(len));
    }
    if buf[..prefix(V1_START)] == V1_START[..prefix(V1_START)] {
        let window = &buf[..buf.len().min(V1_MAX.min(max))];
        return match window.windows(2).position(|w| w == b"\r\n") {
            Some(at) => Ok(Some(at + 2)),
            None if window.len() >= V1_MAX.min(max) => {
                Err(ProxyError::Invalid(format!("no CRLF in the first {} bytes of a v1 header", V1_MAX.min(max))))
            }
            None => Ok(None),
        };
    }
    Err(ProxyError::Invalid("neither a v1 nor a v2 PROXY header".into()))
}

/// The header length and addresses of a complete parse.
fn complete(parsed: HeaderResult<'_>) -> Result<(usize, Option<Addresses>), ProxyError> {
    match parsed {
        HeaderResult::V1(Ok(h)) => {
            let addresses = match h.addresses {
                v1::Addresses::Tcp4(a) => {
                    Some(pair(a.source_address, a.source_port, a.destination_address, a.destination_port))
                }
                v1::Addresses::Tcp6(a) => {
                    Some(pair(a.source_address, a.source_port, a.destination_address, a.destination_port))
                }
                v1::Addresses::Unknown => None,
            };
            Ok((h.header.len(), addresses))
        }
        HeaderResult::V2(Ok(h)) => {
            let addresses = match (h.command, h.addresses) {
                (v2::Command::Proxy, v2::Addresses::IPv4(a)) => {
                    Some(pair(a.source_address, a.source_port, a.destination_address, a.destination_port))
                }
                (v2::Command::Proxy, v2::Addresses::IPv6(a)) => {
                    Some(pair(a.source_address, a.source_port, a.destination_address, a.destination_port))
                }
                // LOCAL (health checks) and non-IP families: the connection's own addresses stand.
                _ => None,
            };
            Ok((h.len(), addresses))
        }
        HeaderResult::V1(Err(e)) => Err(ProxyError::Invalid(e.to_string())),
        HeaderResult::V2(Err(e)) => Err(ProxyError::Invalid(e.to_string())),
    }
}

fn pair<A: Into<IpAddr>>(source: A, source_port: u16, destination: A, destination_port: u16) -> Addresses {
    Addresses {
        source: SocketAddr::new(source.into(), source_port),
        destination: SocketAddr::new(destination.into(), destination_port),
    }
}

/// The header announcing a connection from `source` to `destination`.
pub fn encode(version: Version, source: SocketAddr, destination: SocketAddr) -> Vec<u8> {
    let (source, destination) = same_family(source, destination);
    match version {
        Version::V1 => v1::Addresses::from((source, destination)).to_string().into_bytes(),
        Version::V2 => v2::Builder::with_addresses(
            v2::Version::Two | v2::Command::Proxy,
            v2::Protocol::Stream,
            (source, destination),
        )
        .build()
        .expect("writing a header to a Vec cannot fail"),
    }
}

/// Both addresses in one family: IPv4-mapped IPv6 addresses are written as IPv4 when the other
/// side is IPv4 (a dual-stack listener sees IPv4 clients that way).
fn same_family(a: SocketAddr, b: SocketAddr) -> (SocketAddr, SocketAddr) {
    let unmap = |s: SocketAddr| match s.ip() {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(s, |v4| SocketAddr::from((v4, s.port()))),
        IpAddr::V4(_) => s,
    };
    let (ua, ub) = (unmap(a), unmap(b));
    if ua.is_ipv4() == ub.is_ipv4() { (ua, ub) } else { (a, b) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reads_v1_and_v2_and_keeps_what_follows() {
        let src: SocketAddr = "203.0.113.7:40000".parse().unwrap();
        let dst: SocketAddr = "10.0.0.1:443".parse().unwrap();
        for version in [Version::V1, Version::V2] {
            let mut wire = encode(version, src, dst);
            wire.extend(b"\x16\x03\x01rest");
            let mut buf = BytesMut::new();
            let got = read_header(&mut wire.as_slice(), &mut buf, 4096).await.unwrap();
            assert_eq!(got, Some(Addresses { source: src, destination: dst }), "{version:?}");
            assert_eq!(&buf[..], b"\x16\x03\x01rest", "{version:?}");
        }
    }

    #[tokio::test]
    async fn rejects_garbage_and_truncation() {
        let mut buf = BytesMut::new();
        let e = read_header(&mut &b"\x16\x03\x01\x00\x05hello"[..], &mut buf, 4096).await.unwrap_err();
        assert!(matches!(e, ProxyError::Invalid(_)), "{e:?}");
        let mut buf = BytesMut::new();
        let e = read_header(&mut &b"PROXY TCP4 1.2.3.4"[..], &mut buf, 4096).await.unwrap_err();
        assert_eq!(e, ProxyError::Closed);
    }

    #[test]
    fn trust_is_by_cidr_and_unmaps_ipv4() {
        let nets: Vec<IpNet> = vec!["10.0.0.0/8".parse().unwrap()];
        assert!(trusted("10.1.2.3".parse().unwrap(), &nets));
        assert!(trusted("::ffff:10.1.2.3".parse().unwrap(), &nets));
        assert!(!trusted("192.0.2.1".parse().unwrap(), &nets));
    }

    #[test]
    fn v1_text_is_exact() {
        let h = encode(Version::V1, "192.0.2.1:5000".parse().unwrap(), "[::ffff:10.0.0.1]:443".parse().unwrap());
        assert_eq!(h, b"PROXY TCP4 192.0.2.1 10.0.0.1 5000 443\r\n");
    }

    /// Reads `data` handed out `chunk` bytes at a time (0: all at once).
    async fn read_in(data: &[u8], chunk: usize) -> Result<Option<Addresses>, ProxyError> {
        struct Chunked<'a>(&'a [u8], usize);
        impl AsyncRead for Chunked<'_> {
            fn poll_read(
                mut self: std::pin::Pin<&mut Self>,
                _: &mut std::task::Context<'_>,
                out: &mut tokio::io::ReadBuf<'_>,
            ) -> std::task::Poll<std::io::Result<()>> {
                let n = match self.1 {
                    0 => self.0.len(),
                    c => c.min(self.0.len()),
                }
                .min(out.remaining());
                out.put_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                std::task::Poll::Ready(Ok(()))
            }
        }
        read_header(&mut Chunked(data, chunk), &mut BytesMut::new(), 512).await
    }

    /// The answer does not depend on how the bytes arrive (inputs a fuzzer and a reader of
    /// the parser found to differ once).
    #[tokio::test]
    async fn the_answer_does_not_depend_on_the_chunking() {
        let mut v2_513 = b"\r\n\r\n\0\r\nQUIT\n\x21\x11\x01\xf1".to_vec();
        v2_513.extend_from_slice(&[10, 0, 0, 1, 10, 0, 0, 2, 0, 1, 0, 2, 4, 1, 0xe2]);
        v2_513.resize(513, 0x20);
        let cases: [&[u8]; 4] = [
            b"PROXY TCPXY6 PROXY",
            b"PROXY TCP6 4fa7:7ae5:1c63:48e7:a4ae:f764:3a71:ee4d daf0:6c9:2:3b0:a4bf:ac:a0:0e81 40000 443\r\n\x16\x03\x01",
            "PROXY UNKNOWN ab\u{e9}\r\n".as_bytes(),
            &v2_513,
        ];
        for data in cases {
            let whole = read_in(data, 0).await;
            for chunk in [1, 2, 3, 7, 17, 494] {
                let got = read_in(data, chunk).await;
                assert_eq!(got, whole, "{:?} in chunks of {chunk}", String::from_utf8_lossy(data));
            }
        }
        assert_eq!(read_in(&v2_513, 0).await, Err(ProxyError::TooLong(512)));
        assert_eq!(
            read_in(b"GET / HTTP/1.1\r\n", 1).await,
            Err(ProxyError::Invalid("neither a v1 nor a v2 PROXY header".into()))
        );
    }
}
