//! The explicit modes on 127.0.0.1: `connect` (curl and a Rust client through an HTTP CONNECT
//! proxy), `http` (plain HTTP filtered on the host), and `verify_destination`.
//! Names resolve through /etc/hosts (`localhost`), so no DNS server is needed.

mod common;
mod harness;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use harness::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const RULES_LOCAL: &str = "allow localhost\nallow *.my.salesforce.com\ndeny evil.my.salesforce.com\n";

async fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await.expect("closed in time");
    got
}

/// Sends a CONNECT and returns the proxy's response head.
async fn connect(proxy: SocketAddr, target: &str, extra: &str) -> (TcpStream, String) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n{extra}\r\n").as_bytes()).await.unwrap();
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let mut b = [0u8; 1];
        match tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await.unwrap().unwrap() {
            0 => break,
            _ => head.push(b[0]),
        }
    }
    (s, String::from_utf8(head).unwrap())
}

#[tokio::test]
async fn connect_tunnels_only_the_host_it_named() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, received) = recording_backend(b"from upstream".to_vec()).await;
    let proxy = TestConfig::connect(&[backend.port(), 443]).rules(RULES_LOCAL).start(dir.path()).await;
    let target = format!("localhost:{}", backend.port());

    let (mut s, head) = connect(proxy.addr, &target, "").await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let h = hello(&[sni(b"LocalHost.")]);
    s.write_all(&h).await.unwrap();
    s.shutdown().await.unwrap();
    assert_eq!(read_all(&mut s).await, b"from upstream");
    assert_eq!(received.await.unwrap(), h, "the upstream sees the tunnel's bytes, not the CONNECT");

    let (mut s, head) = connect(proxy.addr, "evil.my.salesforce.com:443", "").await;
    assert!(head.starts_with("HTTP/1.1 403 "), "{head}");
    assert_eq!(String::from_utf8(read_all(&mut s).await).unwrap(), "snigate: denied by policy\n");

    let (mut s, head) = connect(proxy.addr, &target, "").await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    s.write_all(&hello(&[sni(b"evil.my.salesforce.com")])).await.unwrap();
    assert_eq!(read_all(&mut s).await, [0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 49], "sni_mismatch: access_denied");

    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"GET http://localhost/ HTTP/1.1\r\nHost: localhost\r\n\r\n").await.unwrap();
    assert!(String::from_utf8(read_all(&mut s).await).unwrap().starts_with("HTTP/1.1 405 "));
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(b"CONNECT a..b:443 HTTP/1.1\r\n\r\n").await.unwrap();
    assert!(String::from_utf8(read_all(&mut s).await).unwrap().starts_with("HTTP/1.1 400 "));
}

#[tokio::test]
async fn connect_requires_credentials_when_configured() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("users"), "ops:s3cret\n").unwrap();
    let (backend, _received) = recording_backend(Vec::new()).await;
    let users = dir.path().join("users");
    let proxy = TestConfig::connect(&[backend.port()])
        .listener(format!("credentials = \"{}\"", users.display()))
        .rules(RULES_LOCAL)
        .start(dir.path())
        .await;
    let target = format!("localhost:{}", backend.port());
    let (_s, head) = connect(proxy.addr, &target, "").await;
    assert!(head.starts_with("HTTP/1.1 407 ") && head.contains("Proxy-Authenticate: Basic"), "{head}");
    let (_s, head) = connect(proxy.addr, &target, "Proxy-Authorization: Basic b3BzOndyb25n\r\n").await;
    assert!(head.starts_with("HTTP/1.1 407 "), "wrong password: {head}");
    let (_s, head) = connect(proxy.addr, &target, "Proxy-Authorization: Basic b3BzOnMzY3JldA==\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    let (_s, head) = connect(proxy.addr, &target, "Proxy-Authorization: basic b3BzOnMzY3JldA==\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200 "), "the scheme in any case: {head}");

    // Revoked on reload, without a restart; a broken file keeps the running credentials.
    std::fs::write(dir.path().join("users"), "ops:n3w\n").unwrap();
    snigate::reload_credentials(&proxy.config, &proxy.live).unwrap();
    let (_s, head) = connect(proxy.addr, &target, "Proxy-Authorization: Basic b3BzOnMzY3JldA==\r\n").await;
    assert!(head.starts_with("HTTP/1.1 407 "), "the old password no longer works: {head}");
    let (_s, head) = connect(proxy.addr, &target, "Proxy-Authorization: Basic b3BzOm4zdw==\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200 "), "the new one does: {head}");
    std::fs::write(dir.path().join("users"), "no colon\n").unwrap();
    assert!(snigate::reload_credentials(&proxy.config, &proxy.live).is_err());
    let (_s, head) = connect(proxy.addr, &target, "Proxy-Authorization: Basic b3BzOm4zdw==\r\n").await;
    assert!(head.starts_with("HTTP/1.1 200 "), "kept: {head}");
}

/// curl, configured with a proxy as users do, through snigate to `openssl s_server`.
#[tokio::test]
async fn curl_through_connect_mode() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let out = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
            "-keyout",
            "key.pem",
            "-out",
            "cert.pem",
        ])
        .current_dir(d)
        .output()
        .unwrap();
    assert!(out.status.success());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let mut server = tokio::process::Command::new("openssl")
        .args(["s_server", "-accept", &format!("127.0.0.1:{port}"), "-www", "-cert", "cert.pem", "-key", "key.pem"])
        .current_dir(d)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(5), "openssl s_server accepts", async || {
        TcpStream::connect(("127.0.0.1", port)).await.is_ok()
    })
    .await;
    let proxy = TestConfig::connect(&[port, 443]).rules(RULES_LOCAL).start(d).await;
    let curl = |url: String| {
        let proxy = format!("http://{}", proxy.addr);
        let cacert = d.join("cert.pem");
        async move {
            tokio::process::Command::new("curl")
                .args(["-sS", "--max-time", "10", "-x", &proxy, "--cacert"])
                .arg(cacert)
                .arg(url)
                .output()
                .await
                .expect("curl")
        }
    };
    let ok = curl(format!("https://localhost:{port}/")).await;
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("s_server"), "the page came from s_server");
    let denied = curl("https://evil.my.salesforce.com/".to_string()).await;
    assert!(!denied.status.success());
    assert!(String::from_utf8_lossy(&denied.stderr).contains("403"), "{}", String::from_utf8_lossy(&denied.stderr));
    let _ = server.kill().await;
}

#[tokio::test]
async fn plain_http_is_filtered_on_the_host() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, received) = recording_backend(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n".to_vec()).await;
    let proxy = TestConfig::http(&[backend.port(), 80]).rules(RULES_LOCAL).start(dir.path()).await;
    let request = format!("POST /x HTTP/1.1\r\nHost: LOCALHOST:{}\r\nContent-Length: 5\r\n\r\nhello", backend.port());
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    s.shutdown().await.unwrap();
    assert!(read_all(&mut s).await.starts_with(b"HTTP/1.1 200 OK"));
    assert_eq!(received.await.unwrap(), request.as_bytes(), "byte for byte");

    for (request, status) in [
        ("GET / HTTP/1.1\r\nHost: evil.my.salesforce.com\r\n\r\n", "403"),
        ("GET http://example.org/ HTTP/1.1\r\nHost: example.org\r\n\r\n", "403"),
        ("GET / HTTP/1.1\r\n\r\n", "400"),
        ("GET http://localhost/ HTTP/1.1\r\nHost: evil.my.salesforce.com\r\n\r\n", "400"),
        ("\x16\x03\x01\x00\x05hello", "400"),
    ] {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let got = String::from_utf8_lossy(&read_all(&mut s).await).into_owned();
        assert!(got.starts_with(&format!("HTTP/1.1 {status} ")), "{request:?}: {got}");
    }
}

/// `verify_destination = "dns"`: the original destination (here given by a PROXY header, as a
/// balancer in front of a transparent listener would) must be one of the SNI's addresses.
#[tokio::test]
async fn verify_destination_checks_the_sni_against_dns() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, received) = recording_backend(b"ok".to_vec()).await;
    let proxy = TestConfig::new(Listener::transparent())
        .listener("verify_destination = \"dns\"\nproxy_protocol_trusted = [\"127.0.0.0/8\"]")
        .rules(RULES_LOCAL)
        .start(dir.path())
        .await;
    let h = hello(&[sni(b"localhost")]);
    let port = backend.port();

    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(format!("PROXY TCP4 127.0.0.1 127.0.0.1 40000 {port}\r\n").as_bytes()).await.unwrap();
    s.write_all(&h).await.unwrap();
    s.shutdown().await.unwrap();
    assert_eq!(read_all(&mut s).await, b"ok", "localhost is 127.0.0.1: verified");
    assert_eq!(received.await.unwrap(), h);

    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(format!("PROXY TCP4 127.0.0.1 127.0.0.2 40000 {port}\r\n").as_bytes()).await.unwrap();
    s.write_all(&h).await.unwrap();
    assert_eq!(read_all(&mut s).await, [0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 49], "dst_mismatch");
}
