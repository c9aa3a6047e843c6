//! The destination guard through real listeners: self-loops in every mode, internal addresses,
//! ports, `deny ip` rules on resolved destinations, ECH in `connect` mode and `no_sni`.
//!
//! Names resolve through /etc/hosts (`localhost`), so no DNS server is needed and nothing
//! leaves 127.0.0.0/8. A name is the same threat whether a hosts file, a `*.localhost`
//! answer or a DNS record sends it to 127.0.0.1.

mod common;
mod harness;

use std::path::Path;
use std::time::Duration;

use common::*;
use harness::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const ACCESS_DENIED: [u8; 7] = [0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 49];

/// A port nothing listens on now (the kernel's choice, released).
fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Only loopback allowed as a destination, where the default guard would refuse it.
const LOOPBACK: &str = "allow = [\"127.0.0.0/8\"]";

/// `listener` with `rules`, a JSON access log in `dir`, and the destination guard as it is by
/// default.
fn config(dir: &Path, listener: Listener, rules: &str) -> TestConfig {
    TestConfig::new(listener).rules(rules).log_json(&dir.join("access.log")).default_guard()
}

/// The access log's lines, once there are `n` (the writer flushes when idle).
async fn log_lines(dir: &Path, n: usize) -> Vec<serde_json::Value> {
    let read = || -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(dir.join("access.log")).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    eventually(Duration::from_secs(5), &format!("{n} access-log lines"), async || read().len() >= n).await;
    let lines = read();
    assert_eq!(lines.len(), n, "{lines:?}");
    lines
}

/// The last of `n` lines.
async fn last_line(dir: &Path, n: usize) -> serde_json::Value {
    log_lines(dir, n).await.pop().unwrap()
}

async fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await.expect("snigate answers");
    got
}

/// One request on a fresh connection; the whole answer. The client then closes, so that
/// snigate's connection ends (and logs) at once.
async fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(request).await.unwrap();
    read_all(&mut s).await
}

/// Connections the listener finished, over every verdict and reason, and its accept errors.
async fn counted(proxy: &Proxy) -> (f64, f64) {
    let samples = samples(&http_get(proxy.metrics_addr, "/metrics").await.1);
    let finished = samples
        .iter()
        .filter(|(k, _)| k.starts_with("snigate_connections_total{") && k.contains("listener=\"test\""))
        .map(|(_, v)| v)
        .sum();
    (finished, samples[&key("snigate_accept_errors_total", &[("listener", "test")])])
}

/// A name that resolves to snigate's own listener, allowed by the rules, with loopback allowed
/// as a destination: one client connection is one denial with `dst_denied`, never a loop.
#[tokio::test]
async fn self_loops_are_refused_in_every_mode() {
    for mode in ["sni", "connect", "http"] {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let listener = match mode {
            "sni" => Listener::sni(port),
            "connect" => Listener::connect(&[port]),
            _ => Listener::http(&[port]),
        };
        let proxy = config(dir.path(), listener.listen(format!("127.0.0.1:{port}")), "allow localhost\n")
            .destinations(LOOPBACK)
            .start(dir.path())
            .await;
        let got = match mode {
            "sni" => exchange(proxy.addr, &hello(&[sni(b"localhost")])).await,
            "connect" => exchange(proxy.addr, format!("CONNECT localhost:{port} HTTP/1.1\r\n\r\n").as_bytes()).await,
            _ => exchange(proxy.addr, format!("GET / HTTP/1.1\r\nHost: localhost:{port}\r\n\r\n").as_bytes()).await,
        };
        match mode {
            "sni" => assert_eq!(got, ACCESS_DENIED, "{mode}"),
            _ => assert!(got.starts_with(b"HTTP/1.1 403 "), "{mode}: {}", String::from_utf8_lossy(&got)),
        }
        let lines = log_lines(dir.path(), 1).await;
        assert_eq!(counted(&proxy).await, (1.0, 0.0), "{mode}: one connection, one denial, no accept errors");
        assert_eq!(lines[0]["reason"], "dst_denied", "{mode}: {lines:?}");
        assert!(lines[0]["error"].as_str().unwrap().contains("snigate itself"), "{mode}: {lines:?}");
    }
}

/// With the default guard: loopback names, snigate's own metrics endpoint and ports other than
/// the mode's are refused, each with `dst_denied` and the range or port named.
#[tokio::test]
async fn internal_addresses_and_other_ports_are_refused_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = config(dir.path(), Listener::sni(443), "allow localhost\n").start(dir.path()).await;
    assert_eq!(exchange(proxy.addr, &hello(&[sni(b"localhost")])).await, ACCESS_DENIED);
    let line = last_line(dir.path(), 1).await;
    assert_eq!(line["reason"], "dst_denied");
    assert!(line["error"].as_str().unwrap().contains("loopback"), "{line}");

    // SSRF into snigate's own metrics through an http listener.
    let dir = tempfile::tempdir().unwrap();
    let metrics_port = free_port();
    let proxy = config(dir.path(), Listener::http(&[80, metrics_port]), "allow localhost\n")
        .metrics(format!("listen = \"127.0.0.1:{metrics_port}\""))
        .start(dir.path())
        .await;
    let request =
        format!("GET http://localhost:{metrics_port}/metrics HTTP/1.1\r\nHost: localhost:{metrics_port}\r\n\r\n");
    let got = exchange(proxy.addr, request.as_bytes()).await;
    assert!(got.starts_with(b"HTTP/1.1 403 "), "{}", String::from_utf8_lossy(&got));
    assert!(!String::from_utf8_lossy(&got).contains("snigate_"), "no metrics leaked");
    let line = last_line(dir.path(), 1).await;
    assert_eq!(line["reason"], "dst_denied");

    // A CONNECT to a port the listener does not serve.
    let dir = tempfile::tempdir().unwrap();
    let proxy = config(dir.path(), Listener::connect(&[]), "allow *.my.salesforce.com\n").start(dir.path()).await;
    let got = exchange(proxy.addr, b"CONNECT acme.my.salesforce.com:22 HTTP/1.1\r\n\r\n").await;
    assert!(got.starts_with(b"HTTP/1.1 403 "), "{}", String::from_utf8_lossy(&got));
    let line = last_line(dir.path(), 1).await;
    assert_eq!(line["reason"], "dst_denied");
    assert!(line["error"].as_str().unwrap().contains("port 22"), "{line}");
}

/// A name the rules allow, resolving (through the hosts file) to a host-local service on the
/// port snigate connects to: the guard refuses the address, the connection is denied with
/// `dst_denied`, the log names the address and the registry range with its RFC, and the
/// service receives nothing.
#[tokio::test]
async fn an_allowed_name_resolving_to_a_refused_address_is_denied() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, mut received) = recording_backend(b"ok".to_vec()).await;
    let proxy = config(dir.path(), Listener::sni(backend.port()), "allow localhost\n").start(dir.path()).await;
    assert_eq!(exchange(proxy.addr, &hello(&[sni(b"localhost")])).await, ACCESS_DENIED);
    let line = last_line(dir.path(), 1).await;
    assert_eq!(line["verdict"], "deny", "{line}");
    assert_eq!(line["reason"], "dst_denied", "{line}");
    let error = line["error"].as_str().unwrap();
    let refused = format!("destination 127.0.0.1:{} refused: in 127.0.0.0/8 (loopback (RFC 1122))", backend.port());
    assert!(error.contains(&refused), "{error}");
    assert!(received.try_recv().is_err(), "the local service was not reached");
}

/// A `deny ip` rule bars a resolved destination, whatever name led there.
#[tokio::test]
async fn deny_ip_rules_bar_resolved_destinations() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, _received) = recording_backend(b"ok".to_vec()).await;
    let rules = "allow localhost\ndeny ip 127.0.0.0/8\n";
    let proxy = config(dir.path(), Listener::sni(backend.port()), rules).destinations(LOOPBACK).start(dir.path()).await;
    assert_eq!(exchange(proxy.addr, &hello(&[sni(b"localhost")])).await, ACCESS_DENIED);
    let line = last_line(dir.path(), 1).await;
    assert_eq!(line["reason"], "dst_denied");
    assert!(line["error"].as_str().unwrap().contains("denied by rule"), "{line}");
}

/// `ech = "deny"` holds in `connect` mode too.
#[tokio::test]
async fn ech_is_denied_in_connect_mode() {
    let dir = tempfile::tempdir().unwrap();
    let (backend, _received) = recording_backend(b"ok".to_vec()).await;
    let proxy = config(dir.path(), Listener::connect(&[backend.port()]), "allow localhost\n")
        .rules_setting("ech = \"deny\"")
        .destinations(LOOPBACK)
        .start(dir.path())
        .await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    s.write_all(format!("CONNECT localhost:{} HTTP/1.1\r\n\r\n", backend.port()).as_bytes()).await.unwrap();
    let mut head = [0u8; 39];
    s.read_exact(&mut head).await.unwrap();
    assert!(head.starts_with(b"HTTP/1.1 200 "));
    s.write_all(&hello(&[sni(b"localhost"), ext(0xfe0d, &[0, 0, 1, 0, 1, 0, 0, 0])])).await.unwrap();
    assert_eq!(read_all(&mut s).await, ACCESS_DENIED);
    let line = last_line(dir.path(), 1).await;
    assert_eq!(line["reason"], "ech", "{line}");
}

/// `[rules] no_sni = "deny"`: a hello without SNI is denied even where an `ip` rule allows
/// its destination, so leaving the name out cannot bypass a restriction by name.
#[tokio::test]
async fn no_sni_deny_overrides_ip_rules() {
    for (setting, allowed) in [("", true), ("no_sni = \"deny\"", false)] {
        let dir = tempfile::tempdir().unwrap();
        let (backend, _received) = recording_backend(b"ok".to_vec()).await;
        let proxy = config(dir.path(), Listener::upstream(backend), "allow ip 127.0.0.0/8\n")
            .rules_setting(setting)
            .start(dir.path())
            .await;
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(&hello(&[])).await.unwrap();
        s.shutdown().await.unwrap();
        let got = read_all(&mut s).await;
        match allowed {
            true => assert_eq!(got, b"ok", "{setting:?}"),
            false => assert_eq!(got, ACCESS_DENIED, "{setting:?}"),
        }
    }
}
