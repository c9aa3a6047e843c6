//! The stream reader over real sockets on 127.0.0.1: real TLS clients, slow and hostile ones.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use common::*;
use snigate::Reason;
use snigate::hello::ClientHello;
use snigate::hello::{HelloLimits, ReadError, read_client_hello};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const TIMEOUT: Duration = Duration::from_secs(10);

/// Holds the client's connection open until the reader has done with it and closed its end
/// (at most [`TIMEOUT`]), so that nothing the reader decides can come from the client's EOF.
async fn hold_until_reader_closes(s: &mut TcpStream) {
    let _ = tokio::time::timeout(TIMEOUT, s.read(&mut [0u8; 1])).await;
}

/// Accepts one connection on 127.0.0.1:0 while `client` runs, and reads its hello.
async fn serve_one<F, Fut>(timeout: Duration, client: F) -> (Result<ClientHello, ReadError>, BytesMut)
where
    F: FnOnce(std::net::SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = tokio::spawn(client(listener.local_addr().unwrap()));
    let (mut conn, _) = listener.accept().await.unwrap();
    let mut buf = BytesMut::new();
    let result = read_client_hello(&mut conn, &mut buf, HelloLimits::default(), timeout).await;
    drop(conn);
    client.await.unwrap();
    (result, buf)
}

#[tokio::test]
async fn openssl_s_client_through_a_real_listener() {
    for (flags, name) in [(&["-tls1_3"][..], "acme.my.salesforce.com"), (&["-tls1_2"][..], "Login.Salesforce.com.")] {
        let (result, buf) = serve_one(TIMEOUT, move |addr| async move {
            let mut child = tokio::process::Command::new("openssl")
                .args(["s_client", "-connect", &addr.to_string(), "-servername", name])
                .args(flags)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .kill_on_drop(true)
                .spawn()
                .expect("openssl s_client (apt-get install openssl)");
            let _ = tokio::time::timeout(Duration::from_secs(10), child.wait()).await;
            let _ = child.kill().await;
        })
        .await;
        let hello = result.unwrap();
        let want = name.trim_end_matches('.').to_ascii_lowercase();
        assert_eq!(hello.sni.unwrap().as_str(), want);
        assert!(buf.len() >= hello.wire_bytes);
    }
}

/// A recorded browser hello sent one byte per write with TCP_NODELAY, then more bytes: the
/// reader answers, and holds exactly the bytes sent, in order.
#[tokio::test]
async fn one_byte_segments_are_reassembled_and_kept() {
    let r = recording("chromium.bin");
    let sent = [r.bytes.clone(), record(0x17, TLS12, b"early data")].concat();
    let (to_send, hello_len) = (sent.clone(), r.bytes.len());
    let (result, buf) = serve_one(TIMEOUT, move |addr| async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.set_nodelay(true).unwrap();
        for b in &to_send[..hello_len] {
            s.write_all(std::slice::from_ref(b)).await.unwrap();
        }
        s.write_all(&to_send[hello_len..]).await.unwrap();
        hold_until_reader_closes(&mut s).await;
    })
    .await;
    let hello = result.unwrap();
    assert_eq!(hello.sni.unwrap().as_str(), r.sni.unwrap());
    assert_eq!(hello.wire_bytes, r.bytes.len());
    assert!(sent.starts_with(&buf), "buffered bytes are a prefix of what was sent");
    assert!(buf.len() >= r.bytes.len());
}

#[tokio::test]
async fn one_byte_records_over_tcp() {
    let r = recording("curl.bin");
    let (payload, version) = unframe(&r.bytes);
    let wire = frame(&payload, version, &[1]);
    let (result, buf) = serve_one(TIMEOUT, move |addr| async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&wire).await.unwrap();
        hold_until_reader_closes(&mut s).await;
    })
    .await;
    let hello = result.unwrap();
    assert_eq!(hello.carried, snigate::hello::Carried::Records(payload.len()));
    assert_eq!(hello.sni.unwrap().as_str(), r.sni.unwrap());
    assert_eq!(buf.len(), hello.wire_bytes);
}

async fn reason_for<F, Fut>(timeout: Duration, client: F) -> (Reason, Duration)
where
    F: FnOnce(std::net::SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let start = Instant::now();
    let (result, _) = serve_one(timeout, client).await;
    (result.expect_err("the hello must be refused").reason(), start.elapsed())
}

#[tokio::test]
async fn slow_client_times_out() {
    let r = recording("curl.bin");
    let (reason, took) = reason_for(Duration::from_millis(300), move |addr| async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&r.bytes[..100]).await.unwrap();
        // Silent for longer than the reader's 300 ms: the timeout being exceeded is what is
        // tested (had the reader waited on, it would see this client's EOF: malformed).
        tokio::time::sleep(Duration::from_millis(800)).await;
    })
    .await;
    assert_eq!(reason, Reason::HelloTimeout);
    assert!(took < Duration::from_secs(5));
}

#[tokio::test]
async fn close_before_any_byte_is_client_closed() {
    let (reason, _) = reason_for(TIMEOUT, |addr| async move {
        drop(TcpStream::connect(addr).await.unwrap());
    })
    .await;
    assert_eq!(reason, Reason::ClientClosed);
}

#[tokio::test]
async fn close_mid_hello_is_malformed() {
    let r = recording("curl.bin");
    let (reason, _) = reason_for(TIMEOUT, move |addr| async move {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(&r.bytes[..200]).await.unwrap();
        s.shutdown().await.unwrap();
    })
    .await;
    assert_eq!(reason, Reason::Malformed);
}

/// Refusals that need no more bytes come at once, not after the timeout, and the client's
/// connection stays open meanwhile (so the answer cannot come from an EOF).
#[tokio::test]
async fn hostile_first_bytes_are_refused_without_waiting() {
    let cases: Vec<(Vec<u8>, Reason)> = vec![
        (b"GET / HTTP/1.1\r\n".to_vec(), Reason::NotTls),
        (record(0x16, TLS10, &[0x01, 0x10, 0x00, 0x00]), Reason::HelloTooLarge),
        (hello(&[sni(b"two..dots")]), Reason::InvalidSni),
    ];
    for (bytes, want) in cases {
        let (reason, took) = reason_for(TIMEOUT, move |addr| async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            s.write_all(&bytes).await.unwrap();
            hold_until_reader_closes(&mut s).await;
        })
        .await;
        assert_eq!(reason, want);
        assert!(took < TIMEOUT / 2, "{want:?} took {took:?}");
    }
}

/// The reader that does not wait: it settles a hello that is all there, hands a partial one on
/// (keeping its bytes) to the awaiting reader, and reports a close.
#[tokio::test]
async fn what_is_there_is_read_without_waiting() {
    use snigate::hello::read_client_hello_now;
    use std::io::Write;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let accept = || {
        let (s, _) = listener.accept().unwrap();
        s.set_nonblocking(true).unwrap();
        s
    };
    let hello = recording("chromium.bin").bytes;
    // Loopback delivers within the write; wait for the bytes all the same.
    let settled = |c: &std::net::TcpStream| arrived(c, libc::POLLIN);

    let mut client = std::net::TcpStream::connect(addr).unwrap();
    client.write_all(&hello).unwrap();
    let conn = accept();
    settled(&conn);
    let mut buf = BytesMut::new();
    let got = read_client_hello_now(&conn, &mut buf, HelloLimits::default()).expect("settled").unwrap();
    assert_eq!(got.sni.unwrap().as_str(), "acme--dev.sandbox.lightning.force.com");
    assert_eq!(&buf[..], &hello[..]);

    let mut client = std::net::TcpStream::connect(addr).unwrap();
    client.write_all(&hello[..100]).unwrap();
    let conn = accept();
    settled(&conn);
    let mut buf = BytesMut::new();
    assert!(read_client_hello_now(&conn, &mut buf, HelloLimits::default()).is_none(), "the rest is still to come");
    assert_eq!(&buf[..], &hello[..100]);
    client.write_all(&hello[100..]).unwrap();
    let mut conn = TcpStream::from_std(conn).unwrap();
    let got = read_client_hello(&mut conn, &mut buf, HelloLimits::default(), TIMEOUT).await.unwrap();
    assert_eq!(got.wire_bytes, hello.len());
    assert_eq!(&buf[..], &hello[..]);

    let mut client = std::net::TcpStream::connect(addr).unwrap();
    client.write_all(&hello[..100]).unwrap();
    client.shutdown(std::net::Shutdown::Write).unwrap();
    let conn = accept();
    arrived(&conn, libc::POLLRDHUP);
    let mut buf = BytesMut::new();
    let err = read_client_hello_now(&conn, &mut buf, HelloLimits::default()).expect("settled").unwrap_err();
    assert_eq!(err.reason(), Reason::Malformed, "closed mid-hello: {err}");
}

/// Blocks until `events` (`POLLIN`: bytes to read; `POLLRDHUP`: the client's FIN) have reached
/// `conn`, for at most 5 s.
fn arrived(conn: &std::net::TcpStream, events: libc::c_short) {
    use std::os::fd::AsRawFd;
    let mut fd = libc::pollfd { fd: conn.as_raw_fd(), events, revents: 0 };
    // SAFETY: one valid pollfd, for the duration of the call.
    let n = unsafe { libc::poll(&mut fd, 1, 5000) };
    assert!(n == 1 && fd.revents & events != 0, "poll {n}, revents {:#x}: not within 5 s", fd.revents);
}
