//! The proxy end to end on 127.0.0.1: real TLS stacks through a real listener, byte-exact
//! splicing, and rejections as a client sees them.

mod common;

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use snigate::config::Config;
use snigate::proxy::Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const RULES: &str = "\
allow *.my.salesforce.com
deny  evil.my.salesforce.com
allow login.salesforce.com
";

/// Starts snigate in `upstream` mode in front of `upstream`, with RULES; returns its address
/// and a sender that shuts it down.
async fn start_proxy(dir: &Path, upstream: SocketAddr, extra: &str) -> (SocketAddr, oneshot::Sender<()>) {
    std::fs::write(dir.join("test.rules"), RULES).unwrap();
    let config = format!(
        "[[listener]]\nname = \"test\"\nlisten = \"127.0.0.1:0\"\nmode = \"upstream\"\nupstream = \"{upstream}\"\n{extra}\n\
         [rules]\nfiles = [\"{}\"]\n[log]\nformat = \"off\"\n",
        dir.join("test.rules").display()
    );
    let config = Config::parse("test.toml", &config).unwrap();
    let server = Server::bind(&config, config.compile_rules().unwrap()).await.unwrap();
    let addr = server.local_addrs()[0];
    let (tx, rx) = oneshot::channel();
    tokio::spawn(server.run(async {
        let _ = rx.await;
    }));
    (addr, tx)
}

/// A backend without cryptography: reads everything until the client's FIN, then answers
/// `reply` and closes. Sends what it received on the returned channel.
async fn recording_backend(reply: Vec<u8>) -> (SocketAddr, oneshot::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        s.write_all(&reply).await.unwrap();
        s.shutdown().await.unwrap();
        let _ = tx.send(got);
    });
    (addr, rx)
}

fn pseudo_random(n: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// The hello and everything after it reach the upstream exactly as sent, in both directions,
/// with the client's half-close passed on.
#[tokio::test]
async fn allowed_bytes_arrive_unchanged_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let reply = pseudo_random(300_000);
    let (backend, received) = recording_backend(reply.clone()).await;
    let (proxy, _stop) = start_proxy(dir.path(), backend, "").await;
    let hello = hello(&[sni(b"ACME.my.salesforce.com.")]);
    let sent = [hello, pseudo_random(1_000_000)].concat();
    let mut c = TcpStream::connect(proxy).await.unwrap();
    // The hello in three writes, to cross read boundaries.
    c.write_all(&sent[..10]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(20)).await;
    c.write_all(&sent[10..30]).await.unwrap();
    c.write_all(&sent[30..]).await.unwrap();
    c.shutdown().await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), c.read_to_end(&mut got)).await.unwrap().unwrap();
    assert!(got == reply, "the client got {} bytes, not the {} the backend sent", got.len(), reply.len());
    let upstream_got = received.await.unwrap();
    assert!(upstream_got == sent, "the upstream got {} bytes, not the {} sent", upstream_got.len(), sent.len());
}

/// What a rejected client reads before the connection ends.
async fn rejected_reads(bytes: &[u8], extra: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let (backend, _) = recording_backend(Vec::new()).await;
    let (proxy, _stop) = start_proxy(dir.path(), backend, extra).await;
    let mut c = TcpStream::connect(proxy).await.unwrap();
    c.write_all(bytes).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got)).await.expect("the proxy closes");
    got
}

#[tokio::test]
async fn denials_end_as_configured() {
    let denied = hello(&[sni(b"evil.my.salesforce.com")]);
    // access_denied(49), in the client's record version (TLS 1.0 here).
    assert_eq!(rejected_reads(&denied, "").await, [0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 49]);
    let unknown = hello(&[sni(b"example.org")]);
    assert_eq!(rejected_reads(&unknown, "").await, [0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 49]);
    let bad_name = hello(&[sni(b"a..b")]);
    assert_eq!(rejected_reads(&bad_name, "").await, [0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 112]);
    // Not TLS: no alert, just the close.
    assert_eq!(rejected_reads(b"GET / HTTP/1.1\r\n\r\n", "").await, b"");
    assert_eq!(rejected_reads(&denied, "reject = \"close\"").await, b"");
}

#[tokio::test]
async fn rst_style_resets() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, _) = recording_backend(Vec::new()).await;
    let (proxy, _stop) = start_proxy(dir.path(), backend, "reject = \"rst\"").await;
    let mut c = TcpStream::connect(proxy).await.unwrap();
    c.write_all(&hello(&[sni(b"evil.my.salesforce.com")])).await.unwrap();
    let mut got = Vec::new();
    let err = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got)).await.unwrap().unwrap_err();
    assert_eq!(err.kind(), std::io::ErrorKind::ConnectionReset);
}

/// openssl s_client → snigate → openssl s_server: the handshake completes end to end for an
/// allowed name, and the client sees access_denied for a denied one.
#[tokio::test]
async fn openssl_client_and_server_through_the_proxy() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = (dir.path().join("cert.pem"), dir.path().join("key.pem"));
    let status = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=acme.my.salesforce.com", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("openssl");
    assert!(status.success());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = tokio::process::Command::new("openssl")
        .args(["s_server", "-accept", &format!("127.0.0.1:{port}"), "-quiet", "-cert"])
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("openssl s_server");
    let backend: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    for _ in 0..100 {
        if TcpStream::connect(backend).await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (proxy, _stop) = start_proxy(dir.path(), backend, "").await;
    let s_client = move |name: &str| {
        std::process::Command::new("timeout")
            .args(["10", "openssl", "s_client", "-brief", "-connect", &proxy.to_string(), "-servername", name])
            .stdin(Stdio::null())
            .output()
            .expect("openssl s_client")
    };
    let allowed = tokio::task::spawn_blocking(move || s_client("acme.my.salesforce.com")).await.unwrap();
    let text = String::from_utf8_lossy(&allowed.stderr).to_lowercase();
    assert!(text.contains("connection established"), "s_client said: {text}");
    let denied = tokio::task::spawn_blocking(move || s_client("evil.my.salesforce.com")).await.unwrap();
    let text = String::from_utf8_lossy(&denied.stderr).to_lowercase();
    assert!(text.contains("access denied"), "s_client said: {text}");
    let _ = server.kill().await;
}
