//! The floor: the least a proxy in front of the backend can do per connection, to measure
//! snigate and the peers against. One thread, one epoll set, edge-triggered, plain system
//! calls: accept (deferred until the client's first bytes are there), read them, connect to the
//! backend and send them with the connect, then copy both ways, and close both sides at the
//! first end. No rules, no metrics, no logging, no timeouts; no allocation per connection
//! unless a write has to wait.
//!
//! Run by the e2e bench as a peer named `floor`: the bench binary runs itself with
//! `--floor LISTEN BACKEND` ([`main`]).

use std::net::SocketAddr;
use std::os::fd::{AsRawFd, IntoRawFd, RawFd};

use socket2::{Domain, Socket, Type};

/// Bytes read per system call.
const CHUNK: usize = 64 * 1024;
/// The epoll token of the listening socket; every other token is a connection's descriptor.
const LISTENER: u64 = u64::MAX;
/// Events taken per `epoll_wait`.
const EVENTS: usize = 256;

/// One side of a proxied connection, indexed by its descriptor.
#[derive(Default)]
struct Side {
    /// Whether the descriptor is one of ours and open.
    open: bool,
    /// The other side; `None` while a client's first bytes have not arrived.
    peer: Option<RawFd>,
    /// An event said the peer closed or failed: read on past a short read, to the end.
    hup: bool,
    /// This side has ended; the pair closes once what it sent has been passed on.
    ended: bool,
    /// Bytes read from this side that the peer has not taken yet.
    pending: Vec<u8>,
}

/// `--floor LISTEN BACKEND` in `args` (the bench binary's arguments): runs the floor proxy and
/// never returns. Anything else: returns.
pub fn main(args: &[String]) {
    let Some(at) = args.iter().position(|a| a == "--floor") else { return };
    let addr = |i: usize| args.get(at + i).and_then(|a| a.parse::<SocketAddr>().ok()).expect("--floor LISTEN BACKEND");
    let (listen, backend) = (addr(1), addr(2));
    let listener = listening(listen).unwrap_or_else(|e| panic!("floor: cannot listen on {listen}: {e}"));
    Floor::new(listener, backend).run()
}

/// A listening socket as snigate's: non-blocking, accepts deferred until the client has sent
/// something, TCP_NODELAY inherited by accepted sockets.
fn listening(addr: SocketAddr) -> std::io::Result<RawFd> {
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM.nonblocking(), None)?;
    socket.set_reuse_address(true)?;
    socket.set_tcp_nodelay(true)?;
    let one: libc::c_int = 1;
    // SAFETY: the option value is a live c_int of the size passed.
    let r = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&one as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into_raw_fd())
}

/// The proxy's state.
struct Floor {
    /// The epoll set.
    epoll: RawFd,
    /// The listening socket.
    listener: RawFd,
    /// Where every connection goes.
    backend: libc::sockaddr_in,
    /// Every connection's sides, by descriptor.
    sides: Vec<Side>,
    /// Where reads land.
    buf: Box<[u8]>,
}

/// The last system call's error number.
fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

impl Floor {
    fn new(listener: RawFd, backend: SocketAddr) -> Floor {
        let SocketAddr::V4(v4) = backend else { panic!("floor: the backend must be IPv4") };
        let backend = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() },
            sin_zero: [0; 8],
        };
        // SAFETY: epoll_create1 takes flags only.
        let epoll = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
        assert!(epoll >= 0, "epoll_create1: {}", std::io::Error::last_os_error());
        let floor = Floor { epoll, listener, backend, sides: Vec::new(), buf: vec![0; CHUNK].into_boxed_slice() };
        floor.watch(listener, LISTENER);
        floor
    }

    /// Adds `fd` to the epoll set, edge-triggered, for reads, writes and the peer's close, once
    /// for its whole life: no other epoll_ctl is made, and closing it removes it.
    fn watch(&self, fd: RawFd, token: u64) {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLOUT | libc::EPOLLRDHUP | libc::EPOLLET) as u32,
            u64: token,
        };
        // SAFETY: `ev` is a live epoll_event; both descriptors are open.
        let r = unsafe { libc::epoll_ctl(self.epoll, libc::EPOLL_CTL_ADD, fd, &mut ev) };
        assert!(r == 0, "epoll_ctl: {}", std::io::Error::last_os_error());
    }

    fn run(mut self) -> ! {
        let mut events = vec![libc::epoll_event { events: 0, u64: 0 }; EVENTS];
        loop {
            // SAFETY: `events` holds EVENTS writable entries.
            let n = unsafe { libc::epoll_wait(self.epoll, events.as_mut_ptr(), EVENTS as i32, -1) };
            if n < 0 {
                assert_eq!(errno(), libc::EINTR, "epoll_wait: {}", std::io::Error::last_os_error());
                continue;
            }
            for ev in &events[..n as usize] {
                let (flags, token) = (ev.events as i32, ev.u64);
                if token == LISTENER {
                    self.accept();
                    continue;
                }
                let fd = token as RawFd;
                if !self.sides[fd as usize].open {
                    continue; // closed earlier in this batch
                }
                if flags & (libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) != 0 {
                    self.sides[fd as usize].hup = true;
                }
                let Some(peer) = self.sides[fd as usize].peer else {
                    if flags & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) != 0 {
                        self.first(fd, true);
                    }
                    continue;
                };
                if flags & libc::EPOLLOUT != 0 && !self.sides[peer as usize].pending.is_empty() {
                    self.pump(peer);
                }
                if flags & (libc::EPOLLIN | libc::EPOLLRDHUP | libc::EPOLLHUP | libc::EPOLLERR) != 0
                    && self.sides[fd as usize].open
                {
                    self.pump(fd);
                }
            }
        }
    }

    /// Accepts every pending connection.
    fn accept(&mut self) {
        loop {
            // SAFETY: null address pointers ask for no peer address.
            let fd = unsafe {
                libc::accept4(
                    self.listener,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                    libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                )
            };
            if fd < 0 {
                match errno() {
                    libc::EINTR | libc::ECONNABORTED => continue,
                    // EAGAIN, or out of descriptors: the next connection's event retries.
                    _ => return,
                }
            }
            *self.side(fd) = Side { open: true, ..Side::default() };
            self.first(fd, false);
        }
    }

    /// The side for `fd`, the table grown to hold it.
    fn side(&mut self, fd: RawFd) -> &mut Side {
        let i = fd as usize;
        if self.sides.len() <= i {
            self.sides.resize_with(i + 1, Side::default);
        }
        &mut self.sides[i]
    }

    /// A client's first bytes: connect to the backend, sending them with the connect. None yet:
    /// wait for them (`watched`: the client is in the epoll set already).
    fn first(&mut self, client: RawFd, watched: bool) {
        // SAFETY: `buf` is valid for writes of its length.
        let n = unsafe { libc::recv(client, self.buf.as_mut_ptr().cast(), self.buf.len(), 0) };
        if n < 0 && errno() == libc::EAGAIN {
            if !watched {
                self.watch(client, client as u64);
            }
            return;
        }
        if n <= 0 {
            self.close(client, None);
            return;
        }
        let n = n as usize;
        // SAFETY: socket takes plain arguments.
        let up =
            unsafe { libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC, 0) };
        if up < 0 {
            self.close(client, None);
            return;
        }
        *self.side(up) = Side { open: true, peer: Some(client), ..Side::default() };
        self.sides[client as usize].peer = Some(up);
        // SAFETY: `backend` is a live sockaddr_in of the size passed.
        let r = unsafe {
            libc::connect(
                up,
                (&self.backend as *const libc::sockaddr_in).cast(),
                size_of::<libc::sockaddr_in>() as libc::socklen_t,
            )
        };
        if r < 0 && errno() != libc::EINPROGRESS {
            self.close(client, Some(up));
            return;
        }
        // Over loopback the handshake is done when connect returns: the bytes go at once.
        // SAFETY: the first `n` bytes of `buf` are initialised.
        let sent = unsafe { libc::send(up, self.buf.as_ptr().cast(), n, libc::MSG_NOSIGNAL) };
        let sent = match sent {
            s if s >= 0 => s as usize,
            _ if errno() == libc::EAGAIN => 0,
            _ => {
                self.close(client, Some(up));
                return;
            }
        };
        if sent < n {
            self.sides[client as usize].pending = self.buf[sent..n].to_vec();
        }
        self.watch(up, up as u64);
        if !watched {
            self.watch(client, client as u64);
        }
        // A full buffer: more may be there (an edge already reported is not reported again).
        if n == self.buf.len() {
            self.pump(client);
        }
    }

    /// Moves what `from` has sent to its peer: what waited first, then reads until `from` is
    /// drained or the peer cannot take more.
    fn pump(&mut self, from: RawFd) {
        let Some(to) = self.sides[from as usize].peer else { return };
        if !self.flush(from, to) {
            return;
        }
        if self.sides[from as usize].ended || self.sides[to as usize].ended {
            self.close(from, Some(to));
            return;
        }
        loop {
            // SAFETY: `buf` is valid for writes of its length.
            let n = unsafe { libc::recv(from, self.buf.as_mut_ptr().cast(), self.buf.len(), 0) };
            if n < 0 && errno() == libc::EAGAIN {
                return;
            }
            if n <= 0 {
                // The end (or a failure): once what the other way waits to deliver is out.
                self.sides[from as usize].ended = true;
                if self.sides[to as usize].pending.is_empty() {
                    self.close(from, Some(to));
                }
                return;
            }
            let n = n as usize;
            // SAFETY: the first `n` bytes of `buf` are initialised.
            let sent = unsafe { libc::send(to, self.buf.as_ptr().cast(), n, libc::MSG_NOSIGNAL) };
            let sent = match sent {
                s if s >= 0 => s as usize,
                _ if errno() == libc::EAGAIN => 0,
                _ => {
                    self.close(from, Some(to));
                    return;
                }
            };
            if sent < n {
                self.sides[from as usize].pending = self.buf[sent..n].to_vec();
                return;
            }
            // A short read drained the socket; later bytes raise a new edge. After the peer's
            // close no edge follows: read on to the end.
            if n < self.buf.len() && !self.sides[from as usize].hup {
                return;
            }
        }
    }

    /// Writes what `from` has pending to `to`. Whether it is all out; a failure closes both.
    fn flush(&mut self, from: RawFd, to: RawFd) -> bool {
        let mut pending = std::mem::take(&mut self.sides[from as usize].pending);
        let mut at = 0;
        while at < pending.len() {
            let rest = &pending[at..];
            // SAFETY: `rest` is initialised for its length.
            let sent = unsafe { libc::send(to, rest.as_ptr().cast(), rest.len(), libc::MSG_NOSIGNAL) };
            if sent < 0 {
                if errno() == libc::EAGAIN {
                    pending.drain(..at);
                    self.sides[from as usize].pending = pending;
                } else {
                    self.close(from, Some(to));
                }
                return false;
            }
            at += sent as usize;
        }
        true
    }

    /// Closes `a` and `b` (which leaves the epoll set with them).
    fn close(&mut self, a: RawFd, b: Option<RawFd>) {
        for fd in std::iter::once(a).chain(b) {
            self.sides[fd as usize] = Side::default();
            // SAFETY: `fd` is open and ours; nothing uses it after this.
            unsafe { libc::close(fd) };
        }
    }
}
