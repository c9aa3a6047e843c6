//! Choosing and reaching the upstream of an allowed connection, per listener mode.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::time::Duration;

use socket2::{Domain, SockRef, Socket, Type};
use tokio::net::TcpStream;

/// The original destination of a connection redirected to this listener: with REDIRECT
/// (nftables/iptables), SO_ORIGINAL_DST; with TPROXY, the accepted socket's own address.
/// `None` when the connection was addressed to snigate itself (`listen`): relaying it would loop.
pub fn original_destination(stream: &impl AsFd, tproxy: bool, listen: SocketAddr) -> io::Result<Option<SocketAddr>> {
    let sock = SockRef::from(stream);
    let local = sock.local_addr()?.as_socket().ok_or_else(|| io::Error::other("not an IP socket"))?;
    if tproxy {
        // TPROXY keeps the original destination as the socket's own address; only a
        // connection to the listening port itself is addressed to snigate.
        let to_self = local.port() == listen.port() && (listen.ip().is_unspecified() || local.ip() == listen.ip());
        return Ok((!to_self).then_some(local));
    }
    let redirected = if local.is_ipv4() { sock.original_dst_v4() } else { sock.original_dst_v6() };
    // Without NAT, conntrack reports the local address itself: not redirected.
    Ok(redirected.ok().and_then(|a| a.as_socket()).filter(|&dst| dst != local))
}

/// Resolves `host` (a name or an address) with the system resolver; the first answer wins.
pub async fn resolve(host: &str, port: u16) -> io::Result<SocketAddr> {
    tokio::net::lookup_host((host, port))
        .await?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{host}: no addresses")))
}

/// Connects to the first of `addrs` that answers, trying them in order, all within `timeout`,
/// and sends `first` as soon as it can. Returns the stream and how many bytes of `first` went
/// out with the connect; the caller writes the rest.
pub async fn connect_any(
    addrs: &[SocketAddr],
    timeout: Duration,
    mark: Option<u32>,
    first: &[u8],
) -> io::Result<(TcpStream, usize)> {
    let deadline = tokio::time::Instant::now() + timeout;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no addresses");
    for &addr in addrs {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        if left.is_zero() {
            break;
        }
        match connect(addr, left, mark, first).await {
            Ok(connected) => return Ok(connected),
            Err(e) => last = e,
        }
    }
    Err(last)
}

/// Connects to `addr` within `timeout`, with TCP_NODELAY and, when set, SO_MARK, and sends
/// what it can of `first` at once (see [`connect_any`]).
///
/// Over loopback and short paths the handshake is usually complete by the time a non-blocking
/// `connect` returns, so `first` is sent right away, which saves a wait for writability and an
/// SO_ERROR query. A send before the handshake completes fails with EAGAIN and sends nothing;
/// the connect is then awaited as usual. A refused connect reports its error to the send.
pub async fn connect(
    addr: SocketAddr,
    timeout: Duration,
    mark: Option<u32>,
    first: &[u8],
) -> io::Result<(TcpStream, usize)> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking(), None)?;
    if let Some(mark) = mark {
        socket.set_mark(mark)?;
    }
    socket.set_tcp_nodelay(true)?;
    match socket.connect(&addr.into()) {
        Ok(()) => {}
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    let sent = match first {
        [] => None,
        _ => match socket.send_with_flags(first, libc::MSG_NOSIGNAL) {
            Ok(n) => Some(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => None,
            Err(e) => return Err(e),
        },
    };
    let stream = TcpStream::from_std(socket.into())?;
    if let Some(n) = sent {
        return Ok((stream, n));
    }
    let connected = async {
        stream.writable().await?;
        stream.take_error()?.map_or(Ok(()), Err)
    };
    tokio::time::timeout(timeout, connected).await.map_err(|_| {
        io::Error::new(io::ErrorKind::TimedOut, format!("connect to {addr} timed out after {timeout:?}"))
    })??;
    Ok((stream, 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;

    #[tokio::test]
    async fn the_first_bytes_go_out_with_the_connect() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let (up, sent) = connect(addr, Duration::from_secs(5), None, b"hello").await.unwrap();
        assert_eq!(sent, 5, "over loopback the handshake is done when connect returns");
        assert!(up.nodelay().unwrap());
        let (mut accepted, _) = listener.accept().unwrap();
        let mut got = [0; 5];
        accepted.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
    }

    #[tokio::test]
    async fn a_refused_connect_is_an_error_and_the_next_address_is_tried() {
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
        let err = connect(closed, Duration::from_secs(5), None, b"hello").await.unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::ConnectionRefused);
        let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let (up, _) =
            connect_any(&[closed, open.local_addr().unwrap()], Duration::from_secs(5), None, b"x").await.unwrap();
        assert_eq!(up.peer_addr().unwrap(), open.local_addr().unwrap());
    }

    /// A listener whose accept queue is full drops SYNs: the handshake does not complete, the
    /// early send finds nothing to send on, and the connect times out.
    #[tokio::test]
    async fn an_unanswered_connect_times_out() {
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        listener.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
        listener.listen(0).unwrap();
        let addr = listener.local_addr().unwrap().as_socket().unwrap();
        // Fill the queue (backlog 0 holds one connection), never accepting.
        let mut queued = Vec::new();
        let started = std::time::Instant::now();
        let err = loop {
            match connect(addr, Duration::from_millis(300), None, b"hello").await {
                Ok(filled) => queued.push(filled),
                Err(e) => break e,
            }
            assert!(queued.len() < 8, "the accept queue never filled");
        };
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(err.to_string().contains("timed out after"), "{err}");
        assert!(started.elapsed() >= Duration::from_millis(300));
    }
}
