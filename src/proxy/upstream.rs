//! Choosing and reaching the upstream of an allowed connection, per listener mode.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::SockRef;
use tokio::net::{TcpSocket, TcpStream};

/// The original destination of a connection redirected to this listener: with REDIRECT
/// (nftables/iptables), SO_ORIGINAL_DST; with TPROXY, the accepted socket's own address.
/// `None` when the connection was addressed to snigate itself (`listen`): relaying it would loop.
pub fn original_destination(stream: &TcpStream, tproxy: bool, listen: SocketAddr) -> io::Result<Option<SocketAddr>> {
    let local = stream.local_addr()?;
    if tproxy {
        // TPROXY keeps the original destination as the socket's own address; only a
        // connection to the listening port itself is addressed to snigate.
        let to_self = local.port() == listen.port() && (listen.ip().is_unspecified() || local.ip() == listen.ip());
        return Ok((!to_self).then_some(local));
    }
    let sock = SockRef::from(stream);
    let redirected = if local.is_ipv4() { sock.original_dst_v4() } else { sock.original_dst_v6() };
    // Without NAT, conntrack reports the local address itself: not redirected.
    Ok(redirected.ok().and_then(|a| a.as_socket()).filter(|&dst| dst != local))
}

/// A listening socket for TPROXY: IP_TRANSPARENT lets it accept connections addressed to
/// any address that policy routing delivers locally.
pub fn bind_transparent(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    let socket = socket2::Socket::new(socket2::Domain::for_address(addr), socket2::Type::STREAM, None)?;
    if addr.is_ipv4() {
        socket.set_ip_transparent_v4(true)?;
    } else {
        socket.set_ip_transparent_v6(true)?;
    }
    socket.set_reuse_address(true)?;
    socket.set_nonblocking(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// Resolves `host` (a name or an address) with the system resolver; the first answer wins.
pub async fn resolve(host: &str, port: u16) -> io::Result<SocketAddr> {
    tokio::net::lookup_host((host, port))
        .await?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{host}: no addresses")))
}

/// Connects to the first of `addrs` that answers, trying them in order, all within `timeout`.
pub async fn connect_any(addrs: &[SocketAddr], timeout: Duration, mark: Option<u32>) -> io::Result<TcpStream> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no addresses");
    for &addr in addrs {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            break;
        }
        match connect(addr, left, mark).await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Connects to `addr` within `timeout`, with TCP_NODELAY and, when set, SO_MARK.
pub async fn connect(addr: SocketAddr, timeout: Duration, mark: Option<u32>) -> io::Result<TcpStream> {
    let socket = if addr.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
    if let Some(mark) = mark {
        SockRef::from(&socket).set_mark(mark)?;
    }
    socket.set_nodelay(true)?;
    tokio::time::timeout(timeout, socket.connect(addr)).await.map_err(|_| {
        io::Error::new(io::ErrorKind::TimedOut, format!("connect to {addr} timed out after {timeout:?}"))
    })?
}
