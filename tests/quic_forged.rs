//! QUIC from forged source addresses: a UDP datagram's source is only what it claims, so flows
//! from it must cost neither that address's TCP connections nor let snigate amplify toward it.

mod common;
mod harness;

use std::net::SocketAddr;
use std::time::Duration;

use harness::{Listener, Proxy, TestConfig, key, samples, scrape};
use snigate::hello::quic::{Side, Version};
use snigate::internal::{crypto_frame, padded, seal_initial};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, UdpSocket};

const RULES: &str = "allow acme.my.salesforce.com\ndeny *\n";
const ALLOWED: &str = "acme.my.salesforce.com";

async fn counter(proxy: &Proxy, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(&scrape(proxy).await).get(&key(name, labels)).copied().unwrap_or(0.0)
}

/// A client Initial to `dcid` carrying `hello` from offset 0, padded to 1,200 bytes.
fn initial_to(dcid: &[u8; 8], hello: &[u8]) -> Vec<u8> {
    seal_initial(Version::V1, dcid, Side::Client, (dcid, &[]), 0, &padded(&crypto_frame(0, hello), dcid, &[]))
}

/// A QUIC v1 Handshake packet (the long header in the clear, the rest opaque) of `len` bytes,
/// from `scid` to `dcid`.
fn handshake(dcid: &[u8], scid: &[u8], len: usize) -> Vec<u8> {
    let mut p = vec![0xe0, 0, 0, 0, 1, dcid.len() as u8];
    p.extend_from_slice(dcid);
    p.push(scid.len() as u8);
    p.extend_from_slice(scid);
    let rest = len - p.len() - 2;
    p.extend_from_slice(&(0x4000 | rest as u16).to_be_bytes());
    p.resize(len, 0);
    p
}

/// Forged Initials from 127.0.0.2, more than its TCP limits and never completing, fill its QUIC
/// budget, and are refused beyond it as QUIC (`max_quic_flows_per_source`); a TLS client at
/// 127.0.0.2 still connects through the same snigate's TCP listener.
#[tokio::test]
async fn forged_initials_leave_the_sources_tcp_connections_alone() {
    let backend = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let quic_upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let quic = Listener::upstream(quic_upstream.local_addr().unwrap()).quic();
    let proxy = TestConfig::new(quic)
        .and(Listener::upstream(backend.local_addr().unwrap()).name("tcp"))
        .rules(RULES)
        .limits("max_connections_per_source = 4\nmax_hellos_per_source = 2\nmax_quic_flows_per_source = 16")
        .log_json(&log)
        .start(dir.path())
        .await;
    let (quic_addr, tcp_addr) = (proxy.addrs[0], proxy.addrs[1]);
    // 24 Initials from 3 ports (8 flows being decided per port at most), half a hello each.
    let hello = common::hello_message_for(ALLOWED);
    let mut forged = Vec::new();
    for port in 0..3u8 {
        let socket = std::net::UdpSocket::bind("127.0.0.2:0").unwrap();
        for i in 0..8u8 {
            socket.send_to(&initial_to(&[port, i, 1, 2, 3, 4, 5, 6], &hello[..hello.len() / 2]), quic_addr).unwrap();
        }
        forged.push(socket);
    }
    let refused = [("listener", "test"), ("verdict", "deny"), ("reason", "source_limit")];
    common::eventually(Duration::from_secs(5), "8 forged flows refused", async || {
        counter(&proxy, "snigate_connections_total", &refused).await == 8.0
    })
    .await;
    assert_eq!(counter(&proxy, "snigate_active_connections", &[("listener", "test")]).await, 16.0);
    // More TLS clients from the same address than its TCP hello limit, held open at once.
    let wire = common::recording("openssl-tls13.bin").bytes;
    let mut clients = Vec::new();
    for _ in 0..3 {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut client = socket.connect(tcp_addr).await.unwrap();
        client.write_all(&wire).await.unwrap();
        let (mut upstream, _) = tokio::time::timeout(Duration::from_secs(5), backend.accept())
            .await
            .expect("the TLS client reaches its upstream")
            .unwrap();
        let mut got = vec![0u8; wire.len()];
        upstream.read_exact(&mut got).await.unwrap();
        assert_eq!(got, wire, "its hello passes unchanged");
        clients.push((client, upstream));
    }
    let tcp_refused = [("listener", "tcp"), ("verdict", "deny"), ("reason", "source_limit")];
    assert_eq!(counter(&proxy, "snigate_connections_total", &tcp_refused).await, 0.0);
    // The refusals read as QUIC's, naming the QUIC budget.
    proxy.log.finish(Duration::from_secs(2));
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&log).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let refusals: Vec<_> = lines.iter().filter(|l| l["reason"] == "source_limit").collect();
    assert_eq!(refusals.len(), 8, "{lines:?}");
    for line in refusals {
        assert_eq!(line["protocol"], "quic", "{line}");
        assert!(line["error"].as_str().unwrap().contains("max_quic_flows_per_source"), "{line}");
    }
    drop((forged, clients));
}

/// How many bytes in datagrams reach `socket` until it has been quiet for 300 ms (at most 5 s).
async fn received(socket: &UdpSocket) -> usize {
    let mut buf = vec![0u8; 4096];
    let mut total = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        match tokio::time::timeout(Duration::from_millis(300), socket.recv(&mut buf)).await {
            Ok(Ok(n)) => total += n,
            Ok(Err(e)) => panic!("{e}"),
            Err(_) => break,
        }
    }
    total
}

/// `n` server datagrams of 1,000 bytes, Handshake packets from the server's ID `scid`, from
/// `upstream` to the flow's socket `to`.
async fn answer(upstream: &UdpSocket, to: SocketAddr, scid: &[u8], n: usize) {
    for _ in 0..n {
        upstream.send_to(&handshake(&[], scid, 1000), to).await.unwrap();
    }
}

/// A forged Initial for an allowed name opens a flow whose upstream answers with many
/// datagrams: what reaches the forged address stays within 3x what it sent, the rest dropped
/// (`amplification`); once the address proves itself (a Handshake packet, or a short header,
/// to the ID the server chose), the replies flow freely. A Handshake packet to an ID anyone
/// could name proves nothing.
#[tokio::test]
async fn replies_to_an_unproven_address_stay_within_three_times_what_it_sent() {
    let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let proxy =
        TestConfig::new(Listener::upstream(upstream.local_addr().unwrap()).quic()).rules(RULES).start(dir.path()).await;
    let server_cid = [0x5e; 8];
    let hello = common::hello_message_for(ALLOWED);
    type Case = (&'static str, fn(&[u8; 8]) -> Vec<u8>, bool);
    let cases: [Case; 3] = [
        ("a Handshake packet to the client's own first ID", |first| handshake(first, &[], 60), false),
        ("a Handshake packet to the server's ID", |_| handshake(&[0x5e; 8], &[], 60), true),
        ("a short header to the server's ID", |_| [&[0x40][..], &[0x5e; 8], &[0; 51]].concat(), true),
    ];
    let mut buf = vec![0u8; 4096];
    let mut capped = 0.0;
    for (n, (case, proof, proves)) in cases.into_iter().enumerate() {
        let victim = UdpSocket::bind(format!("127.0.0.{}:0", 3 + n)).await.unwrap();
        let first = [0xa0 + n as u8; 8];
        let initial = initial_to(&first, &hello);
        victim.send_to(&initial, proxy.addr).await.unwrap();
        let (_, flow) =
            tokio::time::timeout(Duration::from_secs(5), upstream.recv_from(&mut buf)).await.unwrap().unwrap();
        answer(&upstream, flow, &server_cid, 40).await;
        let before = received(&victim).await;
        assert!(before <= 3 * initial.len(), "{case}: {before} bytes reached the address, for {}", initial.len());
        assert!(before >= 3000, "{case}: the first replies within the budget pass ({before} bytes)");
        capped += 37.0;
        let dropped = [("listener", "test"), ("cause", "amplification")];
        common::eventually(Duration::from_secs(5), "the replies beyond the budget counted", async || {
            counter(&proxy, "snigate_quic_datagrams_dropped_total", &dropped).await == capped
        })
        .await;
        // The proof reaches the upstream before the upstream answers again.
        let proof = proof(&first);
        victim.send_to(&proof, proxy.addr).await.unwrap();
        let (got, _) =
            tokio::time::timeout(Duration::from_secs(5), upstream.recv_from(&mut buf)).await.unwrap().unwrap();
        assert_eq!(&buf[..got], &proof[..], "{case}: the client's packet is forwarded");
        answer(&upstream, flow, &server_cid, 40).await;
        let after = received(&victim).await;
        match proves {
            true => assert_eq!(after, 40_000, "{case}: a proven address gets every reply"),
            false => {
                let sent = initial.len() + proof.len();
                assert!(before + after <= 3 * sent, "{case}: still held to 3x ({} of {sent})", before + after);
                capped += 40.0 - (after / 1000) as f64;
            }
        }
    }
}
