//! Splicing, through both paths (`splice = "auto"`, zero copy, and `splice = "copy"`): large
//! payloads both ways at once arrive byte for byte, half-close passes in each direction, byte
//! counts are exact, and an idle connection is closed.

mod common;
mod harness;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use harness::{Proxy, TestConfig};
use snigate::{End, Moved, SpliceMode, splice};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{Instant, timeout};

/// Bytes each way in the large transfer. The debug build moves this through both paths in a
/// few seconds.
const LARGE: usize = 64 << 20;

/// Starts snigate in `upstream` mode in front of `upstream`, allowing every name, with the given
/// `splice` option and idle timeout; returns its address and the running proxy (dropping it
/// stops it).
async fn start_proxy(upstream: SocketAddr, splice: &str, idle: f64) -> (SocketAddr, Proxy, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let proxy = TestConfig::upstream(upstream)
        .listener(format!("splice = \"{splice}\""))
        .rules("allow *\n")
        .limit("idle_timeout", idle)
        .start(dir.path())
        .await;
    (proxy.addr, proxy, dir)
}

/// A deterministic byte stream (xorshift64*), produced and checked in 8-byte words so that
/// neither side holds the whole payload.
struct Stream(u64);

impl Stream {
    fn fill(&mut self, out: &mut [u8]) {
        assert!(out.len().is_multiple_of(8));
        for word in out.chunks_exact_mut(8) {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            word.copy_from_slice(&self.0.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
        }
    }
}

/// Writes `len` bytes of stream `seed`, then shuts down the write half.
async fn send_stream(w: &mut (impl AsyncWriteExt + Unpin), seed: u64, len: usize) {
    let mut stream = Stream(seed);
    let mut buf = vec![0u8; 64 << 10];
    let mut left = len;
    while left > 0 {
        let n = left.min(buf.len());
        stream.fill(&mut buf[..n]);
        w.write_all(&buf[..n]).await.unwrap();
        left -= n;
    }
    w.shutdown().await.unwrap();
}

/// Reads `len` bytes, checks them against stream `seed`, then expects EOF.
async fn check_stream(r: &mut (impl AsyncReadExt + Unpin), seed: u64, len: usize, what: &str) {
    let mut stream = Stream(seed);
    let (mut got, mut want) = (vec![0u8; 64 << 10], vec![0u8; 64 << 10]);
    let mut at = 0;
    while at < len {
        let n = (len - at).min(got.len());
        r.read_exact(&mut got[..n]).await.unwrap_or_else(|e| panic!("{what}: short at {at} of {len}: {e}"));
        stream.fill(&mut want[..n]);
        if got[..n] != want[..n] {
            let i = (0..n).find(|&i| got[i] != want[i]).unwrap_or(0);
            panic!("{what}: byte {} differs", at + i);
        }
        at += n;
    }
    assert_eq!(r.read(&mut got).await.unwrap(), 0, "{what}: more than {len} bytes, or no EOF");
}

/// 64 MiB up and 64 MiB down at the same time, each followed by a FIN, through a real listener.
async fn large_both_ways(mode: &str) {
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (proxy, _running, _dir) = start_proxy(backend.local_addr().unwrap(), mode, 60.0).await;
    let hello = hello(&[sni(b"acme.my.salesforce.com")]);
    let started = Instant::now();
    let server = {
        let hello = hello.clone();
        tokio::spawn(async move {
            let (s, _) = backend.accept().await.unwrap();
            let (mut r, mut w) = s.into_split();
            let reading = async {
                let mut first = vec![0; hello.len()];
                r.read_exact(&mut first).await.unwrap();
                assert_eq!(first, hello, "the replayed hello");
                check_stream(&mut r, 1, LARGE, "upstream received").await;
            };
            tokio::join!(reading, send_stream(&mut w, 2, LARGE));
        })
    };
    let c = TcpStream::connect(proxy).await.unwrap();
    let (mut r, mut w) = c.into_split();
    w.write_all(&hello).await.unwrap();
    let client =
        async { tokio::join!(send_stream(&mut w, 1, LARGE), check_stream(&mut r, 2, LARGE, "client received")) };
    timeout(Duration::from_secs(120), async { tokio::join!(client, server).1.unwrap() }).await.expect("done in time");
    eprintln!("{mode}: 2 x {} MiB in {:.2?}", LARGE >> 20, started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_payloads_both_ways_at_once_spliced() {
    large_both_ways("auto").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn large_payloads_both_ways_at_once_copied() {
    large_both_ways("copy").await;
}

/// The client sends, shuts down its write side, and still reads the upstream's answer, which
/// the upstream sends only after seeing the client's FIN.
#[tokio::test]
async fn client_half_close_passes_on_and_the_reply_still_arrives() {
    for mode in ["auto", "copy"] {
        let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (proxy, _running, _dir) = start_proxy(backend.local_addr().unwrap(), mode, 60.0).await;
        let server = tokio::spawn(async move {
            let (mut s, _) = backend.accept().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            s.write_all(b"answer after your FIN").await.unwrap();
            s.shutdown().await.unwrap();
            got
        });
        let sent = [hello(&[sni(b"a.example")]), b"question".to_vec()].concat();
        let mut c = TcpStream::connect(proxy).await.unwrap();
        c.write_all(&sent).await.unwrap();
        c.shutdown().await.unwrap();
        let mut got = Vec::new();
        timeout(Duration::from_secs(10), c.read_to_end(&mut got)).await.unwrap().unwrap();
        assert_eq!(got, b"answer after your FIN", "{mode}");
        assert_eq!(server.await.unwrap(), sent, "{mode}");
    }
}

/// The upstream answers and shuts down its write side first; the client sees that EOF, and
/// what it sends afterwards still reaches the upstream.
#[tokio::test]
async fn upstream_half_close_passes_on_and_later_client_data_still_arrives() {
    for mode in ["auto", "copy"] {
        let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (proxy, _running, _dir) = start_proxy(backend.local_addr().unwrap(), mode, 60.0).await;
        let server = tokio::spawn(async move {
            let (mut s, _) = backend.accept().await.unwrap();
            s.write_all(b"done talking").await.unwrap();
            s.shutdown().await.unwrap();
            let mut got = Vec::new();
            s.read_to_end(&mut got).await.unwrap();
            got
        });
        let hello = hello(&[sni(b"a.example")]);
        let mut c = TcpStream::connect(proxy).await.unwrap();
        c.write_all(&hello).await.unwrap();
        let mut got = Vec::new();
        timeout(Duration::from_secs(10), c.read_to_end(&mut got)).await.unwrap().unwrap();
        assert_eq!(got, b"done talking", "{mode}");
        c.write_all(b"late words").await.unwrap();
        c.shutdown().await.unwrap();
        let got = timeout(Duration::from_secs(10), server).await.unwrap().unwrap();
        assert_eq!(got, [hello, b"late words".to_vec()].concat(), "{mode}");
    }
}

/// Traffic keeps a connection open past the idle timeout; silence then closes it, after the
/// timeout and not long after.
#[tokio::test]
async fn idle_connection_is_closed_and_traffic_keeps_it_open() {
    const IDLE: Duration = Duration::from_millis(400);
    for mode in ["auto", "copy"] {
        let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let (proxy, _running, _dir) = start_proxy(backend.local_addr().unwrap(), mode, IDLE.as_secs_f64()).await;
        let server = tokio::spawn(async move {
            let (mut s, _) = backend.accept().await.unwrap();
            let mut got = Vec::new();
            let _ = s.read_to_end(&mut got).await;
            got.len()
        });
        let mut c = TcpStream::connect(proxy).await.unwrap();
        c.write_all(&hello(&[sni(b"a.example")])).await.unwrap();
        // 1.2 s of a byte every 100 ms: three idle timeouts long, never idle for one. The pace is
        // what is tested.
        let mut last = Instant::now();
        for _ in 0..12 {
            tokio::time::sleep(Duration::from_millis(100)).await;
            c.write_all(b".").await.unwrap();
            last = Instant::now();
        }
        let mut byte = [0u8; 1];
        assert!(timeout(Duration::from_millis(100), c.read(&mut byte)).await.is_err(), "{mode}: closed while busy");
        let read = timeout(Duration::from_secs(5), c.read(&mut byte)).await.expect("closed when idle");
        assert!(matches!(read, Ok(0) | Err(_)), "{mode}: {read:?}");
        // The proxy's traffic clock counts whole milliseconds: allow for the truncation.
        let after = last.elapsed();
        assert!(
            after + Duration::from_millis(2) >= IDLE && after < IDLE * 4,
            "{mode}: closed {after:?} after the last byte"
        );
        let upstream_got = timeout(Duration::from_secs(5), server).await.unwrap().unwrap();
        assert!(upstream_got > 12, "{mode}: the upstream got {upstream_got} bytes");
    }
}

/// Two connected TCP sockets on 127.0.0.1.
async fn tcp_pair() -> (TcpStream, TcpStream) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (a, b) = tokio::join!(TcpStream::connect(l.local_addr().unwrap()), l.accept());
    (a.unwrap(), b.unwrap().0)
}

/// `splice` itself: the counts per direction are exact, and the end is reported as it came.
#[tokio::test]
async fn counts_per_direction_and_how_it_ended() {
    for mode in [SpliceMode::Auto, SpliceMode::Copy] {
        let (mut client, client_side) = tcp_pair().await;
        let (upstream_side, mut upstream) = tcp_pair().await;
        let relay = tokio::spawn(async move {
            splice(&client_side, &upstream_side, Duration::from_secs(10), mode, std::future::pending()).await
        });
        let up = vec![7u8; 300_001];
        let down = vec![9u8; 70_003];
        let (a, b) = tokio::join!(
            async {
                client.write_all(&up).await.unwrap();
                client.shutdown().await.unwrap();
                let mut got = Vec::new();
                client.read_to_end(&mut got).await.unwrap();
                got
            },
            async {
                upstream.write_all(&down).await.unwrap();
                upstream.shutdown().await.unwrap();
                let mut got = Vec::new();
                upstream.read_to_end(&mut got).await.unwrap();
                got
            }
        );
        assert!(a == down && b == up, "{mode:?}: payloads");
        let (moved, end) = relay.await.unwrap();
        assert_eq!(moved, Moved { upstream: 300_001, downstream: 70_003 }, "{mode:?}");
        assert!(matches!(end, End::Closed), "{mode:?}: {end:?}");

        let (_client, client_side) = tcp_pair().await;
        let (upstream_side, _upstream) = tcp_pair().await;
        let (moved, end) =
            splice(&client_side, &upstream_side, Duration::from_millis(50), mode, std::future::pending()).await;
        assert_eq!(moved, Moved::default());
        assert!(matches!(end, End::Idle), "{mode:?}: {end:?}");

        let (client, client_side) = tcp_pair().await;
        let (upstream_side, _upstream) = tcp_pair().await;
        socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO)).unwrap();
        drop(client);
        let (_, end) =
            splice(&client_side, &upstream_side, Duration::from_secs(10), mode, std::future::pending()).await;
        assert!(
            matches!(end, End::Error(ref e) if e.kind() == std::io::ErrorKind::ConnectionReset),
            "{mode:?}: {end:?}"
        );

        // An upstream that has gone entirely: writing to it fails (EPIPE or reset), and the
        // process survives the SIGPIPE that comes with it.
        let (mut client, client_side) = tcp_pair().await;
        let (upstream_side, upstream) = tcp_pair().await;
        drop(upstream);
        let writing = tokio::spawn(async move {
            for _ in 0..64 {
                if client.write_all(&[1u8; 64 << 10]).await.is_err() {
                    break;
                }
            }
        });
        let (_, end) =
            splice(&client_side, &upstream_side, Duration::from_secs(10), mode, std::future::pending()).await;
        let gone = [std::io::ErrorKind::BrokenPipe, std::io::ErrorKind::ConnectionReset];
        assert!(matches!(end, End::Error(ref e) if gone.contains(&e.kind())), "{mode:?}: {end:?}");
        drop(client_side);
        writing.await.unwrap();
    }
}
