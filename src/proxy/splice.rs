//! Moving bytes both ways once a connection is allowed, with half-close and an idle timeout:
//! in the kernel with `splice(2)` through a pipe per direction, or by copying in userspace.

use std::io;
use std::net::Shutdown;
use std::os::fd::AsFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use socket2::SockRef;
use tokio::io::Interest;
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::config::SpliceMode;
use crate::sys::{self, Pipe};

/// Bytes read per system call while a direction copies.
const CHUNK: usize = 16 * 1024;

/// The capacity asked of each pipe: 1 MiB, the default `fs.pipe-max-size`, so that an
/// unprivileged process may ask for it. Against the default 64 KiB it cut snigate's CPU per GiB
/// by about a third in `benches/throughput.rs`. Pipes exist only during bursts, so the size costs
/// nothing on idle connections; past the user's pipe quota the kernel refuses the resize and
/// the pipe keeps its default size.
const PIPE_SIZE: Option<usize> = Some(1 << 20);

/// Bytes moved, per direction.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    /// Client to upstream.
    pub upstream: u64,
    /// Upstream to client.
    pub downstream: u64,
}

/// How a spliced connection ended.
#[derive(Debug)]
pub enum End {
    /// Both sides closed their write half (FIN both ways): the normal end.
    Closed,
    /// Nothing moved either way for the idle timeout.
    Idle,
    /// A side failed (for example a reset).
    Error(io::Error),
    /// `stop` resolved first (the server's drain deadline passed).
    Stopped,
}

/// Moves client → upstream and upstream → client until both directions see EOF, a side fails,
/// nothing moves for `idle`, or `stop` resolves. An EOF in one direction is passed on as a FIN (shutdown of the
/// write half) while the other direction keeps flowing.
///
/// A direction holds a pipe (`auto`) or a buffer (`copy`) only while it has data to move, so an
/// idle connection holds neither: no memory and no descriptors beyond its two sockets.
///
/// Not an `async fn`: a wrapper would hold its arguments beside the relay's own copies, and
/// this future is held for a spliced connection's whole life.
pub fn splice<'a>(
    client: &'a TcpStream,
    upstream: &'a TcpStream,
    idle: Duration,
    mode: SpliceMode,
    stop: impl Future<Output = ()> + 'a,
) -> impl Future<Output = (Moved, End)> + 'a {
    let pipes: Pipes = match mode {
        SpliceMode::Auto => Some(|| Pipe::new(PIPE_SIZE)),
        SpliceMode::Copy => None,
    };
    relay(client, upstream, idle, pipes, stop)
}

/// Where a direction gets its pipe; `None` copies in userspace.
type Pipes = Option<fn() -> io::Result<Pipe>>;

/// How long the upstream may take to finish its answers and close once the client →
/// upstream direction has refused a request (and closed its side): the refusal is written
/// after the answers before it.
pub const REFUSAL_GRACE: Duration = Duration::from_secs(10);

/// [`splice`], with the client → upstream direction carried by `up` instead (an HTTP
/// connection's requests, each decided as it passes), metered like a spliced one. `up`'s
/// `Some`: it refused something and closed the upstream's side; the upstream then has
/// [`REFUSAL_GRACE`] to finish, past which the connection ends [`End::Idle`]. The upstream →
/// client direction is spliced, and does not pass on the upstream's FIN once `up` refused:
/// the refusal follows.
pub async fn splice_up<R>(
    client: &TcpStream,
    upstream: &TcpStream,
    idle: Duration,
    mode: SpliceMode,
    stop: impl Future<Output = ()>,
    up: impl AsyncFnOnce(&Meter<'_>) -> io::Result<Option<R>>,
) -> (Moved, End, Option<R>) {
    let pipes: Pipes = match mode {
        SpliceMode::Auto => Some(|| Pipe::new(PIPE_SIZE)),
        SpliceMode::Copy => None,
    };
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let (up_moved, down_moved) = (AtomicU64::new(0), AtomicU64::new(0));
    let one_ended = AtomicBool::new(false);
    let mut refused = None;
    let end = {
        let to_upstream = Meter { moved: &up_moved, last: &last, start, one_ended: &one_ended };
        let to_client = Meter { moved: &down_moved, last: &last, start, one_ended: &one_ended };
        let both = async {
            let mut down = std::pin::pin!(pump(upstream, client, &to_client, pipes));
            let mut up = std::pin::pin!(up(&to_upstream));
            tokio::select! {
                biased;
                done = &mut up => match done? {
                    None => down.await,
                    Some(r) => {
                        refused = Some(r);
                        match tokio::time::timeout(REFUSAL_GRACE, down).await {
                            Ok(done) => done,
                            Err(_) => Err(io::ErrorKind::TimedOut.into()),
                        }
                    }
                },
                done = &mut down => {
                    done?;
                    refused = up.await?;
                    Ok(())
                }
            }
        };
        let watchdog = watchdog(&last, start, idle);
        tokio::select! {
            biased;
            r = both => match r {
                Ok(()) => End::Closed,
                Err(e) if e.kind() == io::ErrorKind::TimedOut => End::Idle,
                Err(e) => End::Error(e),
            },
            () = watchdog => End::Idle,
            () = stop => End::Stopped,
        }
    };
    let moved = Moved { upstream: up_moved.load(Ordering::Relaxed), downstream: down_moved.load(Ordering::Relaxed) };
    (moved, end, refused)
}

/// Resolves once nothing has moved either way for `idle`.
async fn watchdog(last: &AtomicU64, start: Instant, idle: Duration) {
    loop {
        let since = Duration::from_millis(last.load(Ordering::Relaxed));
        let deadline = start + since + idle;
        if Instant::now() >= deadline {
            return;
        }
        tokio::time::sleep_until(deadline).await;
    }
}

async fn relay(
    client: &TcpStream,
    upstream: &TcpStream,
    idle: Duration,
    pipes: Pipes,
    stop: impl Future<Output = ()>,
) -> (Moved, End) {
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let (up, down) = (AtomicU64::new(0), AtomicU64::new(0));
    let one_ended = AtomicBool::new(false);
    let both = async {
        let to_upstream = Meter { moved: &up, last: &last, start, one_ended: &one_ended };
        let to_client = Meter { moved: &down, last: &last, start, one_ended: &one_ended };
        tokio::try_join!(pump(client, upstream, &to_upstream, pipes), pump(upstream, client, &to_client, pipes))
    };
    let watchdog = watchdog(&last, start, idle);
    // In order (`biased`): the relay first, and no random draw on every wake-up.
    let end = tokio::select! {
        biased;
        r = both => match r { Ok(_) => End::Closed, Err(e) => End::Error(e) },
        () = watchdog => End::Idle,
        () = stop => End::Stopped,
    };
    (Moved { upstream: up.load(Ordering::Relaxed), downstream: down.load(Ordering::Relaxed) }, end)
}

/// One direction's byte count, and the connection's last-traffic clock the watchdog reads.
#[derive(Clone, Copy)]
pub struct Meter<'a> {
    /// Bytes delivered in this direction.
    moved: &'a AtomicU64,
    /// Milliseconds from `start` to the last delivery in either direction.
    last: &'a AtomicU64,
    /// When the splice began.
    start: Instant,
    /// Whether a direction has ended already.
    one_ended: &'a AtomicBool,
}

impl Meter<'_> {
    /// `n` bytes delivered.
    pub fn add(&self, n: usize) {
        self.moved.fetch_add(n as u64, Ordering::Relaxed);
        self.last.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// This direction's EOF: passed on as a FIN (shutdown of the write half of `to`) while the
    /// other direction keeps flowing. When the other direction has ended already, both sockets
    /// are about to be closed, and closing sends the FIN: no shutdown call is needed.
    pub fn ended(&self, to: &TcpStream) -> io::Result<()> {
        if self.one_ended.swap(true, Ordering::Relaxed) { Ok(()) } else { SockRef::from(to).shutdown(Shutdown::Write) }
    }
}

/// One direction: move everything until EOF, then shut down the write half of `to`.
async fn pump(from: &TcpStream, to: &TcpStream, meter: &Meter<'_>, pipes: Pipes) -> io::Result<()> {
    match pipes {
        Some(new_pipe) => pump_pipe(from, to, meter, new_pipe).await,
        // Boxed: `splice = "copy"` is the exception, and its state would size every task.
        None => Box::pin(pump_copy(from, to, meter)).await,
    }
}

/// Waits until `stream` is readable. `TcpStream::readable` builds a 152-byte waiter; polling the
/// readiness directly keeps one waker per direction in the socket's own slot, which is enough
/// here (one task reads each socket), and keeps an idle connection's task smaller.
fn readable(stream: &TcpStream) -> impl Future<Output = io::Result<()>> + '_ {
    std::future::poll_fn(|cx| stream.poll_read_ready(cx))
}

/// Waits until `stream` is writable, as [`readable`] does.
fn writable(stream: &TcpStream) -> impl Future<Output = io::Result<()>> + '_ {
    std::future::poll_fn(|cx| stream.poll_write_ready(cx))
}

/// Zero copy: socket → pipe → socket, for bulk. A burst's first read goes through a small
/// userspace buffer instead: most bursts (a handshake flight, a request, the closing EOF) fit in
/// it, and copying them costs a read and a write where a pipe would cost pipe2, fcntl, two
/// splices and two closes. Only a burst that fills the buffer moves the rest through a pipe,
/// created then and closed once the socket has nothing more to read and the pipe is empty, so
/// it lives only through bulk bursts.
async fn pump_pipe(
    from: &TcpStream,
    to: &TcpStream,
    meter: &Meter<'_>,
    new_pipe: fn() -> io::Result<Pipe>,
) -> io::Result<()> {
    loop {
        readable(from).await?;
        let mut rest = Vec::new();
        let n = match SCRATCH.with_borrow_mut(|buf| first_read(from, to, buf, &mut rest, meter))? {
            None => continue,
            Some(0) => return meter.ended(to),
            Some(n) => n,
        };
        if !rest.is_empty() {
            write_all(&rest, to, meter).await?;
        }
        if n < CHUNK {
            continue;
        }
        let pipe = match new_pipe() {
            Ok(pipe) => pipe,
            Err(e) => {
                tracing::debug!(error = %e, "no pipe for splice; copying in userspace");
                // Boxed: a rare fallback should not size every connection's task.
                return Box::pin(pump_copy(from, to, meter)).await;
            }
        };
        loop {
            let filled = from.try_io(Interest::READABLE, || sys::splice(from.as_fd(), pipe.writer(), pipe.capacity()));
            match filled {
                Ok(0) => return meter.ended(to),
                Ok(n) => drain(&pipe, n, to, meter).await?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
    }
}

thread_local! {
    /// Where a burst's first read lands: one buffer per runtime thread instead of an
    /// allocation per burst. It is never held across an await.
    static SCRATCH: std::cell::RefCell<Box<[u8]>> = std::cell::RefCell::new(vec![0; CHUNK].into_boxed_slice());
}

/// Reads once from `from` into `buf` and writes what it can of it to `to` at once; bytes `to`
/// cannot take now are left in `rest`. `None`: nothing to read after all. A short read drained
/// the socket, so its readiness is cleared, as tokio's own reads do, and the next turn waits
/// instead of trying a read that would block; an EOF is not lost, since tokio keeps read-closed
/// readiness set.
fn first_read(
    from: &TcpStream,
    to: &TcpStream,
    buf: &mut [u8],
    rest: &mut Vec<u8>,
    meter: &Meter<'_>,
) -> io::Result<Option<usize>> {
    let short = std::cell::Cell::new(0);
    let read = from.try_io(Interest::READABLE, || match from.try_read(buf) {
        Ok(n) if n > 0 && n < buf.len() => {
            short.set(n);
            Err(io::ErrorKind::WouldBlock.into())
        }
        other => other,
    });
    let n = match read {
        Ok(n) => n,
        Err(e) if e.kind() == io::ErrorKind::WouldBlock && short.get() > 0 => short.get(),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut sent = 0;
    while sent < n {
        match to.try_write(&buf[sent..n]) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(k) => {
                sent += k;
                meter.add(k);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
            Err(e) => return Err(e),
        }
    }
    rest.extend_from_slice(&buf[sent..n]);
    Ok(Some(n))
}

/// Splices the `n` bytes in `pipe` into `to`, waiting while `to` cannot take more.
async fn drain(pipe: &Pipe, mut n: usize, to: &TcpStream, meter: &Meter<'_>) -> io::Result<()> {
    while n > 0 {
        match to.try_io(Interest::WRITABLE, || sys::splice(pipe.reader(), to.as_fd(), n)) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(k) => {
                n -= k;
                meter.add(k);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => writable(to).await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Userspace copy. The buffer is allocated per burst, so an idle direction holds none.
async fn pump_copy(from: &TcpStream, to: &TcpStream, meter: &Meter<'_>) -> io::Result<()> {
    loop {
        readable(from).await?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            match from.try_read(&mut buf) {
                Ok(0) => return meter.ended(to),
                Ok(n) => write_all(&buf[..n], to, meter).await?,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
    }
}

/// Writes all of `buf` to `to`, metered.
pub async fn write_all(mut buf: &[u8], to: &TcpStream, meter: &Meter<'_>) -> io::Result<()> {
    while !buf.is_empty() {
        match to.try_write(buf) {
            Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
            Ok(k) => {
                buf = &buf[k..];
                meter.add(k);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => writable(to).await?,
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;
    use std::sync::Mutex;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn tcp_pair() -> (TcpStream, TcpStream) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (a, b) = tokio::join!(TcpStream::connect(l.local_addr().unwrap()), l.accept());
        (a.unwrap(), b.unwrap().0)
    }

    /// The `pipe:[inode]` names of the pipes `tracked` made.
    static MADE: Mutex<Vec<String>> = Mutex::new(Vec::new());

    fn fd_name(fd: i32) -> String {
        std::fs::read_link(format!("/proc/self/fd/{fd}")).map(|p| p.display().to_string()).unwrap_or_default()
    }

    fn tracked() -> io::Result<Pipe> {
        let pipe = Pipe::new(PIPE_SIZE)?;
        MADE.lock().unwrap().push(fd_name(pipe.reader().as_raw_fd()));
        Ok(pipe)
    }

    fn open_fds() -> Vec<String> {
        std::fs::read_dir("/proc/self/fd")
            .unwrap()
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
            .map(fd_name)
            .collect()
    }

    /// Moves `n` bytes each way through `relay` and leaves the connection open; returns the
    /// client's and the upstream's sockets, so that the caller decides how it ends.
    async fn burst(pipes: Pipes, n: usize) -> (TcpStream, TcpStream, tokio::task::JoinHandle<(Moved, End)>) {
        let (mut client, client_side) = tcp_pair().await;
        let (upstream_side, mut upstream) = tcp_pair().await;
        let relay = tokio::spawn(async move {
            relay(&client_side, &upstream_side, Duration::from_secs(10), pipes, std::future::pending()).await
        });
        let data = vec![0x5a; n];
        let mut got = vec![0; n];
        client.write_all(&data).await.unwrap();
        upstream.read_exact(&mut got).await.unwrap();
        assert!(got == data);
        upstream.write_all(&data).await.unwrap();
        client.read_exact(&mut got).await.unwrap();
        assert!(got == data);
        (client, upstream, relay)
    }

    #[tokio::test]
    async fn pipes_live_only_through_bursts() {
        let (client, upstream, relay) = burst(Some(tracked), 1 << 20).await;
        let made = MADE.lock().unwrap().clone();
        assert!(made.len() >= 2, "a pipe per direction at least: {made:?}");
        let mut still_open = Vec::new();
        for _ in 0..100 {
            let open = open_fds();
            still_open = made.iter().filter(|p| open.contains(p)).cloned().collect();
            if still_open.is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(still_open.is_empty(), "pipes held by an idle connection: {still_open:?}");
        drop((client, upstream));
        assert!(matches!(relay.await.unwrap(), (Moved { upstream: 1_048_576, downstream: 1_048_576 }, _)));
    }

    #[tokio::test]
    async fn without_pipes_it_copies() {
        let (mut client, mut upstream, relay) =
            burst(Some(|| Err(io::Error::from_raw_os_error(libc::EMFILE))), 300_000).await;
        client.shutdown().await.unwrap();
        upstream.shutdown().await.unwrap();
        let (moved, end) = relay.await.unwrap();
        assert_eq!(moved, Moved { upstream: 300_000, downstream: 300_000 });
        assert!(matches!(end, End::Closed), "{end:?}");
    }

    #[tokio::test]
    async fn stop_ends_the_splice_with_what_moved() {
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (mut client, client_side) = tcp_pair().await;
        let (upstream_side, mut upstream) = tcp_pair().await;
        let stop = async move {
            let _ = stop_rx.await;
        };
        let relay =
            tokio::spawn(async move { relay(&client_side, &upstream_side, Duration::from_secs(10), None, stop).await });
        client.write_all(b"hello").await.unwrap();
        let mut got = [0; 5];
        upstream.read_exact(&mut got).await.unwrap();
        stop_tx.send(()).unwrap();
        let (moved, end) = relay.await.unwrap();
        assert_eq!(moved, Moved { upstream: 5, downstream: 0 });
        assert!(matches!(end, End::Stopped), "{end:?}");
    }
}
