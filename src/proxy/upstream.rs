//! Choosing and reaching the upstream of an allowed connection, per listener mode.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use socket2::SockRef;
use tokio::net::{TcpSocket, TcpStream};

/// The original destination of a connection redirected to this listener (nftables/iptables
/// REDIRECT), from SO_ORIGINAL_DST. `None` when the connection was addressed to snigate itself
/// (the original destination is the local address): relaying it would loop.
pub fn original_destination(stream: &TcpStream) -> io::Result<Option<SocketAddr>> {
    let sock = SockRef::from(stream);
    let local = stream.local_addr()?;
    let redirected = if local.is_ipv4() { sock.original_dst_v4() } else { sock.original_dst_v6() };
    let dst = redirected.ok().and_then(|a| a.as_socket()).unwrap_or(local);
    Ok((dst != local).then_some(dst))
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
