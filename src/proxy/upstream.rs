//! Choosing and reaching the upstream of an allowed connection, per listener mode.

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::time::Duration;

use std::future::{Future, poll_fn};
use std::pin::{Pin, pin};
use std::task::Poll;

use socket2::{Domain, SockRef, Socket, Type};
use tokio::net::TcpStream;
use tokio::time::Instant;

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

/// How long an answer of [`is_local`] is reused: addresses come and go rarely.
const LOCAL_TTL: std::time::Duration = std::time::Duration::from_secs(10);

/// Whether `ip` is one of this machine's addresses. The kernel's route to a local address
/// leaves from that very address; to any other, from an interface's. A route lookup (a UDP
/// socket connected, nothing sent) answers that whatever `ip_nonlocal_bind` says, and the
/// answer is kept for [`LOCAL_TTL`].
pub fn is_local(ip: std::net::IpAddr) -> bool {
    use std::collections::HashMap;
    use std::sync::Mutex;
    static SEEN: Mutex<Option<HashMap<std::net::IpAddr, (bool, std::time::Instant)>>> = Mutex::new(None);
    let now = std::time::Instant::now();
    let mut seen = SEEN.lock().unwrap_or_else(|e| e.into_inner());
    let seen = seen.get_or_insert_with(HashMap::new);
    if let Some(&(local, at)) = seen.get(&ip)
        && now.duration_since(at) < LOCAL_TTL
    {
        return local;
    }
    let unspecified: std::net::IpAddr = if ip.is_ipv4() { [0, 0, 0, 0].into() } else { [0u16; 8].into() };
    let local = std::net::UdpSocket::bind((unspecified, 0))
        .and_then(|s| s.connect((ip, 9)).and_then(|()| s.local_addr()))
        .is_ok_and(|from| from.ip() == ip);
    if seen.len() >= 4096 {
        seen.clear();
    }
    seen.insert(ip, (local, now));
    local
}

/// Resolves `host` (a name or an address) with the system resolver; the first answer wins.
pub async fn resolve(host: &str, port: u16) -> io::Result<SocketAddr> {
    tokio::net::lookup_host((host, port))
        .await?
        .next()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, format!("{host}: no addresses")))
}

/// How long an attempt runs alone before the next address is tried beside it (RFC 8305's
/// Connection Attempt Delay).
pub const ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Connects to the first of `addrs` that answers, within one `timeout` for all, and sends
/// `first` as soon as it can. Returns the stream and how many bytes of `first` went out with
/// the connect; the caller writes the rest.
///
/// Happy Eyeballs (RFC 8305): the address families alternate, starting with the first
/// answer's, and each attempt gets [`ATTEMPT_DELAY`] to itself before the next one starts
/// beside it (at once when it fails sooner), so a blackholed address, typically IPv6 on a
/// network without it, costs a quarter of a second rather than the whole timeout.
///
/// A failure names the last address tried (the one the access log records).
pub async fn connect_any(
    addrs: &[SocketAddr],
    timeout: Duration,
    mark: Option<u32>,
    first: &[u8],
) -> Result<(TcpStream, usize), ConnectFailed> {
    if let [addr] = addrs {
        return connect(*addr, timeout, mark, first).await.map_err(|error| ConnectFailed { tried: Some(*addr), error });
    }
    let order = interleave(addrs);
    let deadline = Instant::now() + timeout;
    let mut running: Vec<Attempt<'_>> = Vec::new();
    let mut started = 0;
    let mut last = io::Error::new(io::ErrorKind::NotFound, "no addresses");
    let mut head_start = pin!(tokio::time::sleep_until(Instant::now()));
    let race = poll_fn(|cx| {
        loop {
            // The next attempt starts when none is running or the last one's head start is over.
            while started < order.len() && (running.is_empty() || head_start.as_mut().poll(cx).is_ready()) {
                let left = deadline.saturating_duration_since(Instant::now());
                running.push(Box::pin(connect(order[started], left, mark, first)));
                started += 1;
                head_start.as_mut().reset(Instant::now() + ATTEMPT_DELAY);
            }
            let mut i = 0;
            while i < running.len() {
                match running[i].as_mut().poll(cx) {
                    Poll::Ready(Ok(connected)) => return Poll::Ready(Ok(connected)),
                    Poll::Ready(Err(e)) => {
                        last = e;
                        drop(running.swap_remove(i));
                    }
                    Poll::Pending => i += 1,
                }
            }
            if !running.is_empty() {
                return Poll::Pending;
            }
            if started == order.len() {
                return Poll::Ready(Err(std::mem::replace(&mut last, io::ErrorKind::NotFound.into())));
            }
        }
    });
    let raced = tokio::time::timeout_at(deadline, race).await.unwrap_or_else(|_| {
        Err(io::Error::new(io::ErrorKind::TimedOut, format!("connect to {addrs:?} timed out after {timeout:?}")))
    });
    let tried = started.checked_sub(1).map(|last| order[last]);
    raced.map_err(|error| ConnectFailed { tried, error })
}

/// No address of a [`connect_any`] answered.
#[derive(Debug)]
pub struct ConnectFailed {
    /// The last address an attempt was started to (`None`: there was none to try).
    pub tried: Option<SocketAddr>,
    /// Why the last attempt failed, or the timeout.
    pub error: io::Error,
}

/// One connection attempt in a race.
type Attempt<'a> = Pin<Box<dyn Future<Output = io::Result<(TcpStream, usize)>> + Send + 'a>>;

/// `addrs` with the address families alternating, starting with the first one's, each family in
/// the resolver's order (RFC 8305 section 4).
fn interleave(addrs: &[SocketAddr]) -> Vec<SocketAddr> {
    let first_v6 = addrs.first().is_some_and(SocketAddr::is_ipv6);
    let (mut same, mut other): (Vec<SocketAddr>, Vec<SocketAddr>) = addrs.iter().partition(|a| a.is_ipv6() == first_v6);
    let mut order = Vec::with_capacity(addrs.len());
    let (mut same, mut other) = (same.drain(..), other.drain(..));
    loop {
        match (same.next(), other.next()) {
            (None, None) => return order,
            (a, b) => order.extend(a.into_iter().chain(b)),
        }
    }
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

    /// A listening socket whose accept queue is full: SYNs to it are dropped, as on a
    /// blackholed path.
    async fn blackhole() -> (Socket, SocketAddr, Vec<(TcpStream, usize)>) {
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        listener.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
        listener.listen(0).unwrap();
        let addr = listener.local_addr().unwrap().as_socket().unwrap();
        let mut queued = Vec::new();
        while let Ok(filled) = connect(addr, Duration::from_millis(200), None, b"").await {
            queued.push(filled);
            assert!(queued.len() < 8, "the accept queue never filled");
        }
        (listener, addr, queued)
    }

    /// Happy Eyeballs: a blackholed first address costs its head start, not the timeout.
    #[tokio::test]
    async fn a_blackholed_address_does_not_use_up_the_timeout() {
        let (_hole, dead, _queued) = blackhole().await;
        let open = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let started = std::time::Instant::now();
        let (up, _) =
            connect_any(&[dead, open.local_addr().unwrap()], Duration::from_secs(5), None, b"x").await.unwrap();
        let took = started.elapsed();
        assert_eq!(up.peer_addr().unwrap(), open.local_addr().unwrap());
        assert!(took >= ATTEMPT_DELAY && took < Duration::from_secs(2), "took {took:?}");
    }

    /// All attempts share one timeout.
    #[tokio::test]
    async fn blackholed_addresses_time_out_together() {
        let (_hole, dead, _queued) = blackhole().await;
        let started = std::time::Instant::now();
        let failed = connect_any(&[dead, dead, dead], Duration::from_millis(600), None, b"x").await.unwrap_err();
        let took = started.elapsed();
        let err = failed.error;
        assert_eq!(failed.tried, Some(dead));
        assert_eq!(err.kind(), io::ErrorKind::TimedOut, "{err}");
        assert!(took < Duration::from_millis(1500), "took {took:?}");
    }

    #[test]
    fn families_alternate_from_the_first_answer_s() {
        let a = |s: &str| s.parse::<SocketAddr>().unwrap();
        let got = interleave(&[
            a("[2001:db8::1]:443"),
            a("[2001:db8::2]:443"),
            a("192.0.2.1:443"),
            a("192.0.2.2:443"),
            a("192.0.2.3:443"),
        ]);
        let want = [
            a("[2001:db8::1]:443"),
            a("192.0.2.1:443"),
            a("[2001:db8::2]:443"),
            a("192.0.2.2:443"),
            a("192.0.2.3:443"),
        ];
        assert_eq!(got, want);
    }

    /// A route lookup tells this machine's addresses from others, whatever binding allows.
    #[test]
    fn local_addresses_are_told_by_their_route() {
        assert!(is_local("127.0.0.1".parse().unwrap()));
        assert!(!is_local("192.0.2.1".parse().unwrap()), "TEST-NET-1 is nobody's own address");
    }
}
