//! The proxy end to end on 127.0.0.1: real TLS stacks through a real listener, byte-exact
//! splicing, and rejections as a client sees them.

mod common;
mod harness;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use harness::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The hello and everything after it reach the upstream exactly as sent, in both directions,
/// with the client's half-close passed on.
#[tokio::test]
async fn allowed_bytes_arrive_unchanged_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let reply = pseudo_random(300_000);
    let (backend, received) = recording_backend(reply.clone()).await;
    let running = TestConfig::upstream(backend).start(dir.path()).await;
    let proxy = running.addr;
    let hello = hello(&[sni(b"ACME.my.salesforce.com.")]);
    let sent = [hello, pseudo_random(1_000_000)].concat();
    let mut c = TcpStream::connect(proxy).await.unwrap();
    // The hello in three writes, to cross read boundaries: the pause between the first two is
    // the client's, part of what is tested.
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

/// In `upstream` mode a rule's `port` clause is matched against the fixed upstream's port.
#[tokio::test]
async fn upstream_mode_matches_ports_against_the_upstream() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, received) = recording_backend(b"reply".to_vec()).await;
    let other = if backend.port() == 443 { 444 } else { 443 };
    let rules = format!("allow *.p.example port {}\nallow *.q.example port {other}\n", backend.port());
    let running = TestConfig::upstream(backend).rules(rules).start(dir.path()).await;
    let mut c = TcpStream::connect(running.addr).await.unwrap();
    c.write_all(&hello(&[sni(b"a.q.example")])).await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got)).await.unwrap().unwrap();
    assert_eq!(got, [0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 49], "another port: access_denied");
    let allowed = hello(&[sni(b"a.p.example")]);
    let mut c = TcpStream::connect(running.addr).await.unwrap();
    c.write_all(&allowed).await.unwrap();
    c.shutdown().await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got)).await.unwrap().unwrap();
    assert_eq!(got, b"reply");
    assert!(received.await.unwrap() == allowed, "the upstream gets the hello");
}

/// What a rejected client reads before the connection ends.
async fn rejected_reads(bytes: &[u8], listener: &str) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let (backend, _) = recording_backend(Vec::new()).await;
    let running = TestConfig::upstream(backend).listener(listener).start(dir.path()).await;
    let proxy = running.addr;
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
    // More bytes already behind the hello: closing with them unread would reset the connection
    // and destroy the alert, so snigate reads them away first.
    let with_more = [denied.clone(), pseudo_random(20_000)].concat();
    assert_eq!(rejected_reads(&with_more, "").await, [0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 49]);
    // Not TLS: no alert, just the close.
    assert_eq!(rejected_reads(b"GET / HTTP/1.1\r\n\r\n", "").await, b"");
    assert_eq!(rejected_reads(&denied, "reject = \"close\"").await, b"");
}

#[tokio::test]
async fn rst_style_resets() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, _) = recording_backend(Vec::new()).await;
    let running = TestConfig::upstream(backend).listener("reject = \"rst\"").start(dir.path()).await;
    let proxy = running.addr;
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
    let (mut server, backend) = tls_server(dir.path()).await;
    let running = TestConfig::upstream(backend).start(dir.path()).await;
    let proxy = running.addr;
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

/// Runs `openssl` with `args` in `dir`, and panics if it fails.
fn openssl(dir: &std::path::Path, args: &[&str]) {
    let out = std::process::Command::new("openssl").args(args).current_dir(dir).output().expect("openssl");
    assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
}

/// Mutual TLS passes through untouched: a server that requires a client certificate (Python's
/// ssl, standing in for an API on port 8443) sees the certificate `openssl s_client` presents,
/// with its intermediate, through snigate.
#[tokio::test]
async fn mutual_tls_passes_through() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"];
    openssl(
        d,
        &[&["req", "-x509"][..], &ec, &["-days", "1", "-subj", "/CN=Test Root", "-keyout", "ca.key", "-out", "ca.pem"]]
            .concat(),
    );
    std::fs::write(d.join("ca.ext"), "basicConstraints=critical,CA:true\nkeyUsage=critical,keyCertSign\n").unwrap();
    std::fs::write(d.join("leaf.ext"), "basicConstraints=CA:false\nsubjectAltName=DNS:acme.my.salesforce.com\n")
        .unwrap();
    let issue = |name: &str, subj: &str, issuer: &str, ext: &str| {
        openssl(
            d,
            &[
                &["req", "-new"][..],
                &ec,
                &["-subj", subj, "-keyout", &format!("{name}.key"), "-out", &format!("{name}.csr")],
            ]
            .concat(),
        );
        openssl(
            d,
            &[
                "x509",
                "-req",
                "-in",
                &format!("{name}.csr"),
                "-CA",
                &format!("{issuer}.pem"),
                "-CAkey",
                &format!("{issuer}.key"),
                "-CAcreateserial",
                "-days",
                "1",
                "-extfile",
                ext,
                "-out",
                &format!("{name}.pem"),
            ],
        );
    };
    issue("inter", "/CN=Test Intermediate", "ca", "ca.ext");
    issue("client", "/CN=acme-integration-user", "inter", "leaf.ext");
    issue("server", "/CN=acme.my.salesforce.com", "ca", "leaf.ext");

    let server_py = r#"
import socket, ssl, sys
ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
ctx.load_cert_chain("server.pem", "server.key")
ctx.load_verify_locations("ca.pem")
ctx.verify_mode = ssl.CERT_REQUIRED
srv = socket.create_server(("127.0.0.1", 0))
srv.settimeout(20)
print(srv.getsockname()[1], flush=True)
conn, _ = srv.accept()
tls = ctx.wrap_socket(conn, server_side=True)
subject = dict(x[0] for x in tls.getpeercert()["subject"])
print("client", subject["commonName"], flush=True)
tls.sendall(b"hello " + subject["commonName"].encode() + b"\n")
tls.close()
"#;
    let mut server = tokio::process::Command::new("python3")
        .args(["-c", server_py])
        .current_dir(d)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("python3");
    let mut lines = tokio::io::BufReader::new(server.stdout.take().unwrap());
    let mut port = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut port).await.unwrap();
    let backend: SocketAddr = format!("127.0.0.1:{}", port.trim()).parse().unwrap();
    let running = TestConfig::upstream(backend).start(d).await;
    let proxy = running.addr.to_string();
    let dd = d.to_path_buf();
    let client = tokio::task::spawn_blocking(move || {
        std::process::Command::new("timeout")
            .args(["10", "openssl", "s_client", "-connect", &proxy, "-servername", "acme.my.salesforce.com"])
            .args([
                "-cert",
                "client.pem",
                "-cert_chain",
                "inter.pem",
                "-key",
                "client.key",
                "-CAfile",
                "ca.pem",
                "-verify_return_error",
                "-quiet",
            ])
            .current_dir(dd)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    let mut seen = String::new();
    tokio::io::AsyncBufReadExt::read_line(&mut lines, &mut seen).await.unwrap();
    assert_eq!(seen.trim(), "client acme-integration-user", "the server saw the client certificate");
    assert_eq!(String::from_utf8_lossy(&client.stdout).trim(), "hello acme-integration-user");
    let _ = server.wait().await;
}

/// PROXY protocol: a v1 header from a trusted balancer sets the client address the rules and
/// the upstream see; the upstream gets a v2 header with those addresses, then the hello.
#[tokio::test]
async fn proxy_protocol_in_and_out() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, received) = recording_backend(b"ok".to_vec()).await;
    let rules = "allow acme.my.salesforce.com from 203.0.113.0/24\n";
    let running = TestConfig::upstream(backend)
        .rules(rules)
        .listener("proxy_protocol_trusted = [\"127.0.0.0/8\"]\nproxy_protocol_out = \"v2\"")
        .start(dir.path())
        .await;
    let h = hello(&[sni(b"acme.my.salesforce.com")]);
    let mut c = TcpStream::connect(running.addr).await.unwrap();
    c.write_all(b"PROXY TCP4 203.0.113.9 198.51.100.1 40000 443\r\n").await.unwrap();
    c.write_all(&h).await.unwrap();
    c.shutdown().await.unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, b"ok");
    let upstream_got = received.await.unwrap();
    let v2 = [
        &b"\r\n\r\n\0\r\nQUIT\n"[..], // signature
        &[0x21, 0x11, 0x00, 0x0c],    // v2 PROXY, TCP over IPv4, 12 address bytes
        &[203, 0, 113, 9, 198, 51, 100, 1],
        &40000u16.to_be_bytes(),
        &443u16.to_be_bytes(),
    ]
    .concat();
    assert_eq!(upstream_got, [v2, h.clone()].concat());

    // The same hello from a source the rule does not cover is denied: the header decided.
    let mut c = TcpStream::connect(running.addr).await.unwrap();
    c.write_all(b"PROXY TCP4 192.0.2.9 198.51.100.1 40000 443\r\n").await.unwrap();
    c.write_all(&h).await.unwrap();
    let mut got = Vec::new();
    c.read_to_end(&mut got).await.unwrap();
    assert_eq!(got, [0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 49]);

    // Without a header the connection is refused, without an alert.
    let mut c = TcpStream::connect(running.addr).await.unwrap();
    c.write_all(&h).await.unwrap();
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got).await;
    assert!(got.is_empty());
}

#[tokio::test]
async fn proxy_protocol_from_an_untrusted_source_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, _) = recording_backend(Vec::new()).await;
    let running =
        TestConfig::upstream(backend).listener("proxy_protocol_trusted = [\"10.0.0.0/8\"]").start(dir.path()).await;
    let mut c = TcpStream::connect(running.addr).await.unwrap();
    c.write_all(b"PROXY TCP4 203.0.113.9 198.51.100.1 40000 443\r\n").await.unwrap();
    c.write_all(&hello(&[sni(b"acme.my.salesforce.com")])).await.unwrap();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut got)).await.unwrap();
    assert!(got.is_empty());
}

/// `sni` mode: the allowed name is resolved (here through /etc/hosts) and reached on the
/// listener's upstream port.
#[tokio::test]
async fn sni_mode_resolves_the_name() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, received) = recording_backend(b"ok".to_vec()).await;
    let running = TestConfig::sni(backend.port()).rules("allow localhost\n").start(dir.path()).await;
    let h = hello(&[sni(b"localhost")]);
    let mut c = TcpStream::connect(running.addr).await.unwrap();
    c.write_all(&h).await.unwrap();
    c.shutdown().await.unwrap();
    let mut got = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), c.read_to_end(&mut got)).await.unwrap().unwrap();
    assert_eq!(got, b"ok");
    assert_eq!(received.await.unwrap(), h);
}
