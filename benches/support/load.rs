//! The connection load of the end-to-end benches and the backend behind the proxies: client
//! loops that connect, send a recorded ClientHello and read to EOF, and a backend that answers
//! without any cryptography, so that the figures are the proxies' own.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::os::fd::{AsRawFd, FromRawFd};
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt, Interest};
use tokio::net::{TcpListener, TcpStream};

use super::Proc;

/// The allowed name, the recorded browser hello's SNI swapped for one of the same length.
pub const ALLOWED: &str = "acme-dev-sandbox-12.my.salesforce.com";
/// The recorded hello's own SNI: under `.lightning.force.com`, hence denied by the allowlist.
pub const DENIED: &str = "acme--dev.sandbox.lightning.force.com";
/// Bytes the backend answers an allowed hello with (about a server's first flight).
pub const RESPONSE: usize = 4096;
/// Longest one connection may take before it counts as a `timeout` error.
pub const CONN_TIMEOUT: Duration = Duration::from_secs(10);
/// Upper bound on connections per load run, whatever the duration.
pub const MAX_CONNS: u64 = 2_000_000;

/// What the backend does with the next connections.
#[derive(Default)]
pub struct Backend {
    /// Bytes of request to read before answering (the hello as the client sent it).
    pub expect: AtomicUsize,
    /// Bytes to answer with, then close.
    pub respond: AtomicU64,
    /// Hold connections open without answering (idle mode).
    pub hold: AtomicBool,
    /// Connections held open now.
    pub held: AtomicUsize,
}

/// A proxy (or the direct baseline) as the load sees it.
pub struct Target {
    /// Row label.
    pub name: String,
    /// Where allowed and denied hellos go.
    pub addr: SocketAddr,
    /// The process whose CPU and memory are measured; `None` for direct.
    pub proc: Option<Rc<Proc>>,
}

/// One load run's results.
#[derive(Default, Clone)]
pub struct Run {
    /// Completed connections (allowed: full response; denied: closed by the proxy).
    pub ok: u64,
    /// Wall seconds.
    pub secs: f64,
    /// Connect to last response byte, µs, sorted.
    pub lat_us: Vec<u32>,
    /// Failures by kind.
    pub errors: BTreeMap<&'static str, u64>,
    /// How denied connections ended, by kind.
    pub endings: BTreeMap<&'static str, u64>,
    /// Proxy CPU seconds over the run.
    pub cpu: f64,
}

impl Run {
    pub fn rate(&self) -> f64 {
        self.ok as f64 / self.secs
    }
    pub fn pct(&self, p: f64) -> f64 {
        if self.lat_us.is_empty() {
            return f64::NAN;
        }
        let i = ((self.lat_us.len() as f64 * p) as usize).min(self.lat_us.len() - 1);
        self.lat_us[i] as f64 / 1000.0
    }
    /// Proxy CPU milliseconds per 1,000 completed connections.
    pub fn cpu_per_k(&self) -> f64 {
        self.cpu * 1e6 / self.ok.max(1) as f64
    }
}

/// The ClientHello `hello` with its SNI `from` replaced by `to`, a name of the same length, so
/// that no length field changes.
pub fn swap_sni(hello: &[u8], from: &str, to: &str) -> Vec<u8> {
    assert_eq!(from.len(), to.len());
    let at: Vec<usize> =
        hello.windows(from.len()).enumerate().filter(|(_, w)| *w == from.as_bytes()).map(|(i, _)| i).collect();
    assert_eq!(at.len(), 1, "{from} occurs once in the hello");
    let mut out = hello.to_vec();
    out[at[0]..at[0] + to.len()].copy_from_slice(to.as_bytes());
    out
}

/// The backend: per connection, reads the request (`expect` bytes), then answers `respond`
/// bytes and closes, or, in hold mode, keeps the connection until the client closes.
///
/// The answer is sent with `sendfile(2)` from a 1 MiB in-memory file, and clients discard what
/// they read with `MSG_TRUNC` (see [`one`]): the load side copies no payload, so that in bulk
/// transfers the proxy, not the load core, is what runs out first.
pub async fn serve(listener: TcpListener, b: Arc<Backend>) {
    let payload = Arc::new(payload_file());
    loop {
        let Ok((mut s, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(5)).await;
            continue;
        };
        let (b, payload) = (b.clone(), payload.clone());
        tokio::spawn(async move {
            let _ = s.set_nodelay(true);
            let expect = b.expect.load(Ordering::Relaxed);
            let mut buf = [0u8; 4096];
            let mut got = 0;
            while got < expect {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => got += n,
                }
            }
            if b.hold.load(Ordering::Relaxed) {
                b.held.fetch_add(1, Ordering::Relaxed);
                while matches!(s.read(&mut buf).await, Ok(n) if n > 0) {}
                b.held.fetch_sub(1, Ordering::Relaxed);
                return;
            }
            let mut left = b.respond.load(Ordering::Relaxed) as usize;
            let mut offset: libc::off_t = 0;
            while left > 0 {
                let n = left.min(PAYLOAD_BYTES - offset as usize);
                let sent = s
                    .async_io(Interest::WRITABLE, || {
                        // SAFETY: both descriptors are open for the call; `offset` is a live
                        // off_t that sendfile advances.
                        let r = unsafe { libc::sendfile(s.as_raw_fd(), payload.as_raw_fd(), &mut offset, n) };
                        if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(r as usize) }
                    })
                    .await;
                match sent {
                    Ok(0) | Err(_) => return,
                    Ok(k) => left -= k,
                }
                if offset as usize == PAYLOAD_BYTES {
                    offset = 0;
                }
            }
        });
    }
}

/// Bytes of the in-memory file the backend answers from.
const PAYLOAD_BYTES: usize = 1 << 20;

/// A memfd holding [`PAYLOAD_BYTES`] of 0x17.
fn payload_file() -> std::fs::File {
    use std::io::Write;
    // SAFETY: memfd_create reads a NUL-terminated name and returns a new descriptor or -1.
    let fd = unsafe { libc::memfd_create(c"payload".as_ptr(), libc::MFD_CLOEXEC) };
    assert!(fd >= 0, "memfd_create: {}", std::io::Error::last_os_error());
    // SAFETY: the descriptor was just created and is owned by nothing else.
    let mut file = unsafe { std::fs::File::from_raw_fd(fd) };
    file.write_all(&[0x17; PAYLOAD_BYTES]).expect("fill the payload file");
    file
}

#[derive(Clone, Copy)]
pub enum Expect {
    /// A response of exactly this many bytes, then EOF.
    Response(usize),
    /// The proxy refuses: it closes (with an alert, a FIN or a reset) without the backend's bytes.
    Denied,
}

/// Runs `conc` client loops against `t` for `dur` or `max` connections, whichever comes first.
/// Each connection: connect, send `hello`, read to EOF, close.
pub async fn load(t: &Target, hello: &[u8], expect: Expect, conc: usize, dur: Duration, max: u64, tick: f64) -> Run {
    let hello: Rc<[u8]> = hello.into();
    let started = Rc::new(AtomicU64::new(0));
    let cpu0 = t.proc.as_ref().map(|p| p.cpu_ticks());
    let start = Instant::now();
    let deadline = start + dur;
    let local = tokio::task::LocalSet::new();
    let mut handles = Vec::new();
    for _ in 0..conc {
        let (hello, started, addr) = (hello.clone(), started.clone(), t.addr);
        handles.push(local.spawn_local(async move {
            let mut r = Run::default();
            let mut buf =
                vec![0u8; if matches!(expect, Expect::Response(n) if n > RESPONSE) { 1 << 20 } else { 16 << 10 }];
            while Instant::now() < deadline && started.fetch_add(1, Ordering::Relaxed) < max {
                let t0 = Instant::now();
                match tokio::time::timeout(CONN_TIMEOUT, one(addr, &hello, &mut buf)).await {
                    Err(_) => *r.errors.entry("timeout").or_default() += 1,
                    Ok(Err(kind)) => *r.errors.entry(kind).or_default() += 1,
                    Ok(Ok((bytes, ending))) => match expect {
                        Expect::Response(n) if bytes == n && ending == "eof" => {
                            r.ok += 1;
                            r.lat_us.push(t0.elapsed().as_micros() as u32);
                        }
                        Expect::Response(_) => {
                            *r.errors.entry(if ending == "eof" { "short" } else { "reset" }).or_default() += 1
                        }
                        Expect::Denied if bytes <= 64 => {
                            r.ok += 1;
                            r.lat_us.push(t0.elapsed().as_micros() as u32);
                            *r.endings.entry(if bytes > 0 { "alert" } else { ending }).or_default() += 1;
                        }
                        Expect::Denied => *r.errors.entry("forwarded").or_default() += 1,
                    },
                }
            }
            r
        }));
    }
    let mut total = local
        .run_until(async {
            let mut total = Run::default();
            for h in handles {
                let r = h.await.unwrap();
                total.ok += r.ok;
                total.lat_us.extend(r.lat_us);
                for (k, v) in r.errors {
                    *total.errors.entry(k).or_default() += v;
                }
                for (k, v) in r.endings {
                    *total.endings.entry(k).or_default() += v;
                }
            }
            total
        })
        .await;
    total.secs = start.elapsed().as_secs_f64();
    if let (Some(p), Some(c0)) = (&t.proc, cpu0) {
        total.cpu = (p.cpu_ticks() - c0) as f64 / tick;
    }
    total.lat_us.sort_unstable();
    total
}

/// One connection; returns the bytes received and how it ended (`eof` or `reset`), or the kind
/// of failure.
pub async fn one(addr: SocketAddr, hello: &[u8], buf: &mut [u8]) -> Result<(usize, &'static str), &'static str> {
    let mut s = TcpStream::connect(addr).await.map_err(|_| "connect")?;
    let _ = s.set_nodelay(true);
    s.write_all(hello).await.map_err(|_| "write")?;
    let mut got = 0;
    loop {
        // MSG_TRUNC: TCP discards the bytes instead of copying them, and returns their count.
        let read = s
            .async_io(Interest::READABLE, || {
                // SAFETY: `buf` is valid for writes of its length (recv writes nothing with
                // MSG_TRUNC on TCP, but the kernel may check the range); the socket is open.
                let r = unsafe { libc::recv(s.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), libc::MSG_TRUNC) };
                if r < 0 { Err(std::io::Error::last_os_error()) } else { Ok(r as usize) }
            })
            .await;
        match read {
            Ok(0) => return Ok((got, "eof")),
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Ok((got, "reset")),
            Err(_) => return Err("read"),
        }
    }
}
