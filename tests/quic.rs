//! QUIC listeners end to end: recorded Initials and a real QUIC stack (aioquic) through a real
//! listener, allowed and denied, and the limits a flood of Initials meets.

mod common;
mod harness;

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use harness::{Proxy, key, samples, scrape, start_listener};
use snigate::hello::quic::{Side, Version, long_header};
use snigate::internal::{crypto_frame, padded, seal_initial};
use tokio::net::UdpSocket;

const RULES: &str = "allow acme.my.salesforce.com\ndeny *\n";

/// A QUIC listener in `upstream` mode in front of `upstream`.
async fn quic_proxy(upstream: SocketAddr, limits: &str) -> (Proxy, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let listener = format!("protocol = \"quic\"\nmode = \"upstream\"\nupstream = \"{upstream}\"");
    (start_listener(dir.path(), &listener, RULES, limits).await, dir)
}

async fn counter(proxy: &Proxy, name: &str, labels: &[(&str, &str)]) -> f64 {
    samples(&scrape(proxy).await).get(&key(name, labels)).copied().unwrap_or(0.0)
}

async fn connections(proxy: &Proxy, verdict: &str, reason: &str) -> f64 {
    let labels = [("listener", "test"), ("verdict", verdict), ("reason", reason)];
    counter(proxy, "snigate_connections_total", &labels).await
}

/// Chromium's two recorded Initial datagrams, allowed: the upstream receives both, byte for
/// byte, from one socket, and what it answers reaches the client.
#[tokio::test]
async fn an_allowed_chromium_flow_reaches_the_upstream_unchanged() {
    let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (proxy, _dir) = quic_proxy(upstream.local_addr().unwrap(), "").await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let sent = common::quic_capture("chromium.hex");
    for d in &sent {
        client.send_to(d, proxy.addr).await.unwrap();
    }
    let mut buf = vec![0u8; 4096];
    let mut from = None;
    for d in &sent {
        let (n, peer) =
            tokio::time::timeout(Duration::from_secs(5), upstream.recv_from(&mut buf)).await.unwrap().unwrap();
        assert_eq!(&buf[..n], &d[..], "datagrams pass unchanged and in order");
        assert!(from.is_none_or(|f| f == peer), "one upstream socket per flow");
        from = Some(peer);
    }
    upstream.send_to(b"server datagram", from.unwrap()).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut buf)).await.unwrap().unwrap();
    assert_eq!(&buf[..n], b"server datagram");
}

/// Denied: the client gets a server Initial (CONNECTION_CLOSE) addressed to its Source
/// Connection ID at once, and the upstream gets nothing.
#[tokio::test]
async fn a_denied_flow_gets_a_connection_close_and_the_upstream_nothing() {
    let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (proxy, _dir) = quic_proxy(upstream.local_addr().unwrap(), "").await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dcid = [7u8; 8];
    let scid = [5u8; 6];
    let hello = common::hello_message_for("evil.my.salesforce.com");
    let datagram = seal_initial(
        Version::V2,
        &dcid,
        Side::Client,
        (&dcid, &scid),
        0,
        &padded(&crypto_frame(0, &hello), &dcid, &scid),
    );
    client.send_to(&datagram, proxy.addr).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let n = tokio::time::timeout(Duration::from_secs(1), client.recv(&mut buf))
        .await
        .expect("an answer within 1 s")
        .unwrap();
    let header = long_header(&buf[..n]).unwrap();
    assert!(header.is_initial() && header.version == Version::V2.wire());
    assert_eq!(header.dcid, scid, "addressed to the client's Source Connection ID");
    // Later datagrams of the denied flow are dropped, and counted.
    client.send_to(&datagram, proxy.addr).await.unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(300), upstream.recv_from(&mut buf)).await;
    assert!(quiet.is_err(), "the upstream received nothing");
    assert_eq!(connections(&proxy, "deny", "rule").await, 1.0);
    let dropped = [("listener", "test"), ("cause", "denied_flow")];
    assert_eq!(counter(&proxy, "snigate_quic_datagrams_dropped_total", &dropped).await, 1.0);
}

/// A source that sends Initials without ever completing a hello holds at most
/// `max_quic_flows_per_source` flows (its TCP limits play no part); the rest are refused at
/// once (`source_limit`), and another flow is still served.
#[tokio::test]
async fn a_flood_of_initials_from_one_source_is_bounded() {
    let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let limits = "max_quic_flows_per_source = 10\nmax_hellos_per_source = 1\nmax_connections_per_source = 1";
    let (proxy, _dir) = quic_proxy(upstream.local_addr().unwrap(), limits).await;
    let hello = common::hello_message_for("acme.my.salesforce.com");
    let half = &hello[..hello.len() / 2];
    let mut flood = Vec::new();
    for i in 0..50u8 {
        let dcid = [i; 8];
        let d = seal_initial(
            Version::V1,
            &dcid,
            Side::Client,
            (&dcid, &[]),
            0,
            &padded(&crypto_frame(0, half), &dcid, &[]),
        );
        let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.send_to(&d, proxy.addr).unwrap();
        flood.push(socket);
    }
    let mut refused = 0.0;
    for _ in 0..50 {
        refused = connections(&proxy, "deny", "source_limit").await;
        if refused >= 40.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(refused, 40.0, "ten flows held, forty refused");
    let deciding = counter(&proxy, "snigate_active_connections", &[("listener", "test")]).await;
    assert_eq!(deciding, 10.0);
    // A datagram that is not an Initial starts nothing.
    let stray = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    stray.send_to(&[0x40; 1200], proxy.addr).unwrap();
    let cause = [("listener", "test"), ("cause", "not_initial")];
    for _ in 0..50 {
        if counter(&proxy, "snigate_quic_datagrams_dropped_total", &cause).await == 1.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(counter(&proxy, "snigate_quic_datagrams_dropped_total", &cause).await, 1.0);
    drop(flood);
}

/// A full flow table makes room by closing the flow that has waited longest for its hello, as a
/// full TCP listener does: a new client is never shut out by silent ones.
#[tokio::test]
async fn a_full_flow_table_evicts_the_oldest_undecided_flow() {
    let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (proxy, _dir) = quic_proxy(upstream.local_addr().unwrap(), "max_flows = 3").await;
    let hello = common::hello_message_for("acme.my.salesforce.com");
    let mut clients = Vec::new();
    for i in 0..5u8 {
        let dcid = [0x40 + i; 8];
        let first = &hello[..60];
        let d = seal_initial(
            Version::V1,
            &dcid,
            Side::Client,
            (&dcid, &[]),
            0,
            &padded(&crypto_frame(0, first), &dcid, &[]),
        );
        let socket = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        socket.send_to(&d, proxy.addr).await.unwrap();
        clients.push((socket, dcid));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut evicted = 0.0;
    for _ in 0..50 {
        evicted = connections(&proxy, "deny", "hello_timeout").await;
        if evicted >= 2.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(evicted, 2.0, "the two oldest flows made room");
    // The newest flow is still being decided: the rest of its hello completes it.
    let (socket, dcid) = &clients[4];
    let rest = seal_initial(
        Version::V1,
        dcid,
        Side::Client,
        (dcid, &[]),
        1,
        &padded(&crypto_frame(60, &hello[60..]), dcid, &[]),
    );
    socket.send_to(&rest, proxy.addr).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), upstream.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!(n, 1200, "the allowed flow's first datagram reached the upstream");
}

/// Flows that never complete their hello end at `hello_timeout`, and free their slots.
#[tokio::test]
async fn an_unfinished_hello_times_out() {
    let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (proxy, _dir) = quic_proxy(upstream.local_addr().unwrap(), "hello_timeout = 0.3").await;
    let hello = common::hello_message_for("acme.my.salesforce.com");
    let dcid = [3u8; 8];
    let d = seal_initial(
        Version::V1,
        &dcid,
        Side::Client,
        (&dcid, &[]),
        0,
        &padded(&crypto_frame(0, &hello[..50]), &dcid, &[]),
    );
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    client.send_to(&d, proxy.addr).await.unwrap();
    tokio::time::sleep(Duration::from_millis(900)).await;
    assert_eq!(connections(&proxy, "deny", "hello_timeout").await, 1.0);
    assert_eq!(counter(&proxy, "snigate_active_connections", &[("listener", "test")]).await, 0.0);
}

/// aioquic, a real QUIC stack, through a real listener.
mod aioquic {
    use super::*;

    use common::aioquic_python as python;

    /// The echo server, stopped by pid when dropped.
    struct Server(Child, SocketAddr);

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }

    fn server(python: &str) -> Server {
        use std::io::BufRead;
        let mut child = Command::new(python)
            .args(["tests/quic/quic_server.py", "127.0.0.1", "0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut line = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap()).read_line(&mut line).unwrap();
        let port: u16 = line.trim().strip_prefix("READY ").expect("READY <port>").parse().unwrap();
        Server(child, SocketAddr::from(([127, 0, 0, 1], port)))
    }

    /// One client run: its JSON answer.
    async fn client(python: &str, to: SocketAddr, sni: &str, version: &str) -> serde_json::Value {
        client_from(python, to, sni, version, 0).await
    }

    /// One client run from local port `port` (any with 0): its JSON answer.
    async fn client_from(python: &str, to: SocketAddr, sni: &str, version: &str, port: u16) -> serde_json::Value {
        let out = tokio::process::Command::new(python)
            .args(["tests/quic/quic_client.py", &to.ip().to_string(), &to.port().to_string(), "--sni", sni])
            .args(["--alpn", "echo", "--version", version, "--timeout", "5", "--message", "through snigate"])
            .args(["--local-port", &port.to_string()])
            .output();
        let out = tokio::time::timeout(Duration::from_secs(20), out).await.unwrap().unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)))
    }

    #[tokio::test]
    async fn allowed_handshakes_complete_and_denied_ones_close_at_once() {
        let python = match python() {
            Ok(p) => p,
            Err(why) => return eprintln!("skipped: {why}"),
        };
        let backend = server(&python);
        let (proxy, _dir) = quic_proxy(backend.1, "flow_idle_timeout = 1").await;
        for version in ["1", "2"] {
            let allowed = client(&python, proxy.addr, "acme.my.salesforce.com", version).await;
            assert_eq!(allowed["result"], "connected", "v{version}: {allowed}");
            assert_eq!(allowed["echo"], "through snigate", "v{version}: {allowed}");
            let denied = client(&python, proxy.addr, "other.my.salesforce.com", version).await;
            assert_eq!(denied["result"], "closed", "v{version}: {denied}");
            assert_eq!(denied["error_code"], 0x100 + 49, "access_denied: {denied}");
            assert!(denied["elapsed"].as_f64().unwrap() < 1.0, "refused in under a second: {denied}");
        }
        assert_eq!(connections(&proxy, "deny", "rule").await, 2.0);
        // Allowed flows are logged and counted when they go quiet.
        let mut allowed = 0.0;
        for _ in 0..40 {
            allowed = connections(&proxy, "allow", "rule").await;
            if allowed == 2.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(allowed, 2.0);
        let up = counter(&proxy, "snigate_bytes_total", &[("direction", "upstream")]).await;
        assert!(up > 2400.0, "the flows' bytes are counted ({up})");
    }

    /// A client that opens a new connection from the address and port of one it just closed
    /// (or that was just denied) gets it decided on its own hello, once, whatever the first
    /// connection's verdict; the first flow is left as it was, still known meanwhile.
    #[tokio::test]
    async fn a_new_connection_from_a_reused_port_is_decided_on_its_own_hello() {
        let python = match python() {
            Ok(p) => p,
            Err(why) => return eprintln!("skipped: {why}"),
        };
        let backend = server(&python);
        let idle = Duration::from_secs(4);
        let (proxy, _dir) = quic_proxy(backend.1, "flow_idle_timeout = 4").await;
        let (allow, deny) = ("acme.my.salesforce.com", "other.my.salesforce.com");
        let expect = |sni: &str, answer: &serde_json::Value, what: &str| match sni == allow {
            true => assert_eq!(answer["echo"], "through snigate", "{what}: {answer}"),
            false => {
                assert_eq!(answer["result"], "closed", "{what}: {answer}");
                assert!(answer["elapsed"].as_f64().unwrap() < 1.0, "{what}, refused at once: {answer}");
            }
        };
        for (first, second) in [(allow, allow), (allow, deny), (deny, allow), (deny, deny)] {
            let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
            let begun = std::time::Instant::now();
            let one = client_from(&python, proxy.addr, first, "1", port).await;
            let two = client_from(&python, proxy.addr, second, "1", port).await;
            expect(first, &one, &format!("{first} first"));
            expect(second, &two, &format!("{second} after {first}"));
            assert!(begun.elapsed() < idle, "the first flow was still known when the second connection began");
        }
        assert_eq!(connections(&proxy, "deny", "rule").await, 4.0, "each denied connection logged once");
        let mut allowed = 0.0;
        for _ in 0..80 {
            allowed = connections(&proxy, "allow", "rule").await;
            if allowed == 4.0 {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(allowed, 4.0, "each allowed connection logged once, when it went quiet");
        assert_eq!(connections(&proxy, "deny", "malformed").await, 0.0);
        let other = [("listener", "test"), ("cause", "other_hello")];
        assert_eq!(counter(&proxy, "snigate_quic_datagrams_dropped_total", &other).await, 0.0);
    }

    /// A soak of real clients, several at once, each reusing one local port for all its
    /// connections (as clients behind a NAT, or reusing sockets, do), allowed and denied mixed:
    /// every allowed connection completes, every denied one is refused at once, and each is
    /// counted exactly once, so that snigate's allow and deny counts equal the clients' own.
    #[tokio::test]
    async fn a_soak_of_reused_ports_counts_every_connection_once() {
        let python = match python() {
            Ok(p) => p,
            Err(why) => return eprintln!("skipped: {why}"),
        };
        let backend = server(&python);
        let (proxy, _dir) = quic_proxy(backend.1, "flow_idle_timeout = 1").await;
        const CLIENTS: usize = 4;
        const EACH: usize = 12;
        let began = std::time::Instant::now();
        let runs = (0..CLIENTS).map(|k| {
            let python = python.clone();
            let to = proxy.addr;
            tokio::spawn(async move {
                let port = std::net::UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
                let (mut allowed, mut denied) = (0.0, 0.0);
                for i in 0..EACH {
                    let deny = (i + k) % 3 == 0;
                    let sni = if deny { "other.my.salesforce.com" } else { "acme.my.salesforce.com" };
                    let answer = client_from(&python, to, sni, "1", port).await;
                    match deny {
                        false => {
                            assert_eq!(answer["echo"], "through snigate", "client {k}, run {i}: {answer}");
                            allowed += 1.0;
                        }
                        true => {
                            assert_eq!(answer["result"], "closed", "client {k}, run {i}: {answer}");
                            denied += 1.0;
                        }
                    }
                }
                (allowed, denied)
            })
        });
        let (mut allowed, mut denied) = (0.0, 0.0);
        for run in runs.collect::<Vec<_>>() {
            let (a, d) = run.await.unwrap();
            allowed += a;
            denied += d;
        }
        assert!(began.elapsed() < Duration::from_secs(120), "bounded in time");
        assert_eq!(connections(&proxy, "deny", "rule").await, denied, "every denied connection counted once");
        let mut counted = 0.0;
        for _ in 0..100 {
            counted = connections(&proxy, "allow", "rule").await;
            if counted >= allowed {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert_eq!(counted, allowed, "every allowed connection counted once, when it went quiet");
        let other = [("listener", "test"), ("cause", "other_hello")];
        assert_eq!(counter(&proxy, "snigate_quic_datagrams_dropped_total", &other).await, 0.0);
    }
}

/// A client Initial, packet number `pn`, to `dcid`, carrying `hello` from offset 0.
fn initial_to(dcid: &[u8; 8], pn: u32, hello: &[u8]) -> Vec<u8> {
    seal_initial(Version::V1, dcid, Side::Client, (dcid, &[]), pn, &padded(&crypto_frame(0, hello), dcid, &[]))
}

/// Two connections from one address and port are two flows, told apart by connection ID: each
/// has its own upstream socket, each upstream's datagrams reach the client, a short header to the
/// server's ID of the older one reaches the older one's upstream, and a second hello under the
/// first connection's ID is still dropped.
#[tokio::test]
async fn connections_sharing_an_address_are_told_apart_by_connection_id() {
    let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (proxy, _dir) = quic_proxy(upstream.local_addr().unwrap(), "").await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let allowed = common::hello_message_for("acme.my.salesforce.com");
    let (first, second) = ([0x31u8; 8], [0x32u8; 8]);
    let mut buf = vec![0u8; 2048];
    let mut next =
        async || tokio::time::timeout(Duration::from_secs(5), upstream.recv_from(&mut buf)).await.unwrap().unwrap();
    client.send_to(&initial_to(&first, 0, &allowed), proxy.addr).await.unwrap();
    let (n, one) = next().await;
    assert_eq!(n, 1200);
    client.send_to(&initial_to(&second, 0, &allowed), proxy.addr).await.unwrap();
    let (n, two) = next().await;
    assert_eq!(n, 1200);
    assert_ne!(one, two, "each connection has its own upstream socket");
    // The server of the first connection picks its ID; the client's short header to it goes there.
    let server_cid = [0x99u8; 6];
    let server_initial =
        seal_initial(Version::V1, &first, Side::Server, (&[], &server_cid), 0, &crypto_frame(0, &[0; 40]));
    upstream.send_to(&server_initial, one).await.unwrap();
    let mut back = vec![0u8; 2048];
    let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut back)).await.unwrap().unwrap();
    assert_eq!(&back[..n], &server_initial[..], "the first connection's answer reached the client");
    upstream.send_to(b"to the second", two).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(5), client.recv(&mut back)).await.unwrap().unwrap();
    assert_eq!(&back[..n], b"to the second");
    let short = [&[0x41][..], &server_cid, b"short header payload"].concat();
    client.send_to(&short, proxy.addr).await.unwrap();
    let (n, from) = next().await;
    assert_eq!((&buf[..n], from), (&short[..], one), "the short header went to the first connection");
    // Another hello under the first connection's ID is not a new connection.
    let evil = common::hello_message_for("evil.my.salesforce.com");
    client.send_to(&initial_to(&first, 1, &evil), proxy.addr).await.unwrap();
    let quiet = tokio::time::timeout(Duration::from_millis(300), upstream.recv_from(&mut buf)).await;
    assert!(quiet.is_err(), "the smuggled hello did not reach the upstream");
    let cause = [("listener", "test"), ("cause", "other_hello")];
    assert_eq!(counter(&proxy, "snigate_quic_datagrams_dropped_total", &cause).await, 1.0);
    assert_eq!(connections(&proxy, "deny", "malformed").await, 0.0);
}

/// One client address and port holds a bounded number of connections being decided; more are
/// refused at once (`source_limit`) and logged, and the port's held ones stay.
#[tokio::test]
async fn one_port_holds_a_bounded_number_of_undecided_connections() {
    let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (proxy, _dir) = quic_proxy(upstream.local_addr().unwrap(), "").await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let hello = common::hello_message_for("acme.my.salesforce.com");
    for i in 0..11u8 {
        client.send_to(&initial_to(&[0x50 + i; 8], 0, &hello[..60]), proxy.addr).await.unwrap();
    }
    let mut refused = 0.0;
    for _ in 0..50 {
        refused = connections(&proxy, "deny", "source_limit").await;
        if refused >= 3.0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(refused, 3.0, "eight held, three refused");
    assert_eq!(counter(&proxy, "snigate_active_connections", &[("listener", "test")]).await, 8.0);
}

/// On an allowed flow, a new Initial with the same connection ID and another hello (after the
/// client closed the first connection, say) is not forwarded: the server would read a hello
/// snigate never decided on. The allowed flow's own datagrams still pass.
#[tokio::test]
async fn a_second_hello_on_an_allowed_flow_is_dropped() {
    let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (proxy, _dir) = quic_proxy(upstream.local_addr().unwrap(), "").await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dcid = [0x21u8; 8];
    let initial = |pn: u32, hello: &[u8]| {
        seal_initial(Version::V1, &dcid, Side::Client, (&dcid, &[]), pn, &padded(&crypto_frame(0, hello), &dcid, &[]))
    };
    let allowed = common::hello_message_for("acme.my.salesforce.com");
    client.send_to(&initial(0, &allowed), proxy.addr).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), upstream.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!(n, 1200);
    client.send_to(&initial(1, &common::hello_message_for("evil.my.salesforce.com")), proxy.addr).await.unwrap();
    client.send_to(&initial(2, &allowed), proxy.addr).await.unwrap();
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), upstream.recv_from(&mut buf)).await.unwrap().unwrap();
    let header = long_header(&buf[..n]).unwrap();
    assert!(header.is_initial());
    let cause = [("listener", "test"), ("cause", "other_hello")];
    assert_eq!(counter(&proxy, "snigate_quic_datagrams_dropped_total", &cause).await, 1.0);
    // Only the retransmission came through: nothing else is waiting.
    let quiet = tokio::time::timeout(Duration::from_millis(200), upstream.recv_from(&mut buf)).await;
    assert!(quiet.is_err());
}

/// An Initial of a version snigate cannot read gets a Version Negotiation, is counted as
/// denied (`quic_version`), and leaves nothing behind.
#[tokio::test]
async fn an_unknown_version_gets_a_version_negotiation() {
    let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (proxy, _dir) = quic_proxy(upstream.local_addr().unwrap(), "").await;
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let mut d = vec![0u8; 1200];
    d[..5].copy_from_slice(&[0xc0, 0x1a, 0x2a, 0x3a, 0x4a]);
    d[5] = 8;
    d[6..14].copy_from_slice(&[4; 8]);
    d[14] = 2;
    d[15..17].copy_from_slice(&[6, 6]);
    client.send_to(&d, proxy.addr).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let n = tokio::time::timeout(Duration::from_secs(1), client.recv(&mut buf)).await.unwrap().unwrap();
    let header = long_header(&buf[..n]).unwrap();
    assert_eq!((header.version, header.dcid, header.scid), (0, &[6u8, 6][..], &[4u8; 8][..]));
    assert_eq!(connections(&proxy, "deny", "quic_version").await, 1.0);
    assert_eq!(counter(&proxy, "snigate_active_connections", &[("listener", "test")]).await, 0.0);
}

/// Denied flows are remembered apart from the flows being decided: however many a client makes,
/// they take no room from another client's hello.
#[tokio::test]
async fn denied_flows_take_no_room_from_new_ones() {
    let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let (proxy, _dir) = quic_proxy(upstream.local_addr().unwrap(), "max_flows = 2").await;
    let denied = common::hello_message_for("evil.my.salesforce.com");
    for i in 0..6u8 {
        let dcid = [0x60 + i; 8];
        let d = seal_initial(
            Version::V1,
            &dcid,
            Side::Client,
            (&dcid, &[]),
            0,
            &padded(&crypto_frame(0, &denied), &dcid, &[]),
        );
        UdpSocket::bind("127.0.0.1:0").await.unwrap().send_to(&d, proxy.addr).await.unwrap();
    }
    let allowed = common::hello_message_for("acme.my.salesforce.com");
    let dcid = [0x77u8; 8];
    let d = seal_initial(
        Version::V1,
        &dcid,
        Side::Client,
        (&dcid, &[]),
        0,
        &padded(&crypto_frame(0, &allowed), &dcid, &[]),
    );
    tokio::time::sleep(Duration::from_millis(100)).await;
    UdpSocket::bind("127.0.0.1:0").await.unwrap().send_to(&d, proxy.addr).await.unwrap();
    let mut buf = vec![0u8; 2048];
    let (n, _) = tokio::time::timeout(Duration::from_secs(5), upstream.recv_from(&mut buf)).await.unwrap().unwrap();
    assert_eq!(n, 1200, "the allowed flow reached the upstream");
    assert_eq!(connections(&proxy, "deny", "rule").await, 6.0);
}

/// A QUIC listener with `enforce = "report"` forwards a flow the rules deny, and counts it as
/// reported once the flow ends; the same flow on an enforcing listener is denied.
#[tokio::test]
async fn a_reporting_quic_listener_forwards_what_it_would_deny() {
    for (enforce, forwarded) in [("report", true), ("enforce", false)] {
        let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let listener = format!(
            "protocol = \"quic\"\nmode = \"upstream\"\nupstream = \"{}\"\nenforce = \"{enforce}\"",
            upstream.local_addr().unwrap()
        );
        let proxy = start_listener(dir.path(), &listener, RULES, "flow_idle_timeout = 0.3").await;
        let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let denied = common::hello_message_for("zzzz.my.salesforce.org");
        client.send_to(&initial_to(&[0x41; 8], 0, &denied), proxy.addr).await.unwrap();
        let mut buf = vec![0u8; 2048];
        let got = tokio::time::timeout(Duration::from_secs(1), upstream.recv_from(&mut buf)).await.is_ok();
        assert_eq!(got, forwarded, "{enforce}: forwarded");
        let (verdict, reason) = if forwarded { ("allow", "report") } else { ("deny", "rule") };
        common::eventually(Duration::from_secs(5), "the flow counted", async || {
            connections(&proxy, verdict, reason).await == 1.0
        })
        .await;
        let would = counter(&proxy, "snigate_would_deny_total", &[("listener", "test"), ("reason", "rule")]).await;
        assert_eq!(would, if forwarded { 1.0 } else { 0.0 }, "{enforce}");
    }
}

/// Report scopes over QUIC, as over TCP: a `[[report]]` scope covers its sources and no other,
/// an expired scope enforces, an always-enforced list stays a denial, and safety is never
/// relaxed (the per-source QUIC budget, the destination guard).
#[tokio::test]
async fn quic_report_scopes_cover_what_they_name_and_never_relax_safety() {
    use harness::{Listener, TestConfig};
    /// One denied name's Initial from `source`: whether it reached the upstream.
    async fn forwarded(proxy: &Proxy, upstream: &UdpSocket, source: &str, name: &str, dcid: u8) -> bool {
        let client = UdpSocket::bind(format!("{source}:0")).await.unwrap();
        let hello = common::hello_message_for(name);
        client.send_to(&initial_to(&[dcid; 8], 0, &hello), proxy.addr).await.unwrap();
        let mut buf = vec![0u8; 2048];
        tokio::time::timeout(Duration::from_millis(700), upstream.recv_from(&mut buf)).await.is_ok()
    }
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("block.txt"), "bbbbbbbbb.blocked.test\n").unwrap();
    let start = async |until: &str, limits: &str| {
        let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let proxy = TestConfig::new(Listener::upstream(upstream.local_addr().unwrap()).quic())
            .rules(RULES)
            .limits(format!("flow_idle_timeout = 0.3\n{limits}"))
            .table(format!("[[report]]\nfrom = [\"127.0.0.2/32\"]\nuntil = \"{until}\""))
            .table(format!(
                "[[rules.list]]\npath = \"{}\"\naction = \"deny\"\nenforce = \"always\"",
                dir.path().join("block.txt").display()
            ))
            .start(dir.path())
            .await;
        (proxy, upstream)
    };
    let (proxy, upstream) = start("2999-12-31", "").await;
    assert!(forwarded(&proxy, &upstream, "127.0.0.2", "zzzz.my.salesforce.org", 0x51).await, "in the scope");
    assert!(!forwarded(&proxy, &upstream, "127.0.0.3", "zzzz.my.salesforce.org", 0x52).await, "another source");
    assert!(!forwarded(&proxy, &upstream, "127.0.0.2", "bbbbbbbbb.blocked.test", 0x53).await, "always enforced");
    let would = [("listener", "test"), ("reason", "rule")];
    common::eventually(Duration::from_secs(5), "one reported flow", async || {
        counter(&proxy, "snigate_would_deny_total", &would).await == 1.0
    })
    .await;

    let (ended, upstream) = start("2000-01-01", "").await;
    assert!(!forwarded(&ended, &upstream, "127.0.0.2", "zzzz.my.salesforce.org", 0x54).await, "expired scope");

    // The source's QUIC budget holds in a report scope: the second flow is refused before any rule.
    let (budget, upstream) = start("2999-12-31", "max_quic_flows_per_source = 1").await;
    assert!(forwarded(&budget, &upstream, "127.0.0.2", "zzzz.my.salesforce.org", 0x55).await);
    assert!(!forwarded(&budget, &upstream, "127.0.0.2", "zzzz.my.salesforce.org", 0x56).await, "source_limit");
    let limited = [("listener", "test"), ("verdict", "deny"), ("reason", "source_limit")];
    assert_eq!(counter(&budget, "snigate_connections_total", &limited).await, 1.0);

    // The destination guard holds in a report scope: an sni listener's name that resolves to
    // loopback (the default guard refuses it) is denied, reported or not.
    let guarded = TestConfig::new(Listener::sni(443).quic())
        .rules("allow localhost\n")
        .default_guard()
        .table("[[report]]\nfrom = [\"127.0.0.0/8\"]\nuntil = \"2999-12-31\"")
        .start(dir.path())
        .await;
    let client = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    // A hello of the test's own making (the recorded ones carry names of another length): the
    // handshake message of a TLS record.
    let hello = common::hello(&[common::sni(b"localhost")]);
    client.send_to(&initial_to(&[0x57; 8], 0, &hello[5..]), guarded.addr).await.unwrap();
    let denied = [("listener", "test"), ("verdict", "deny"), ("reason", "dst_denied")];
    common::eventually(Duration::from_secs(5), "dst_denied", async || {
        counter(&guarded, "snigate_connections_total", &denied).await == 1.0
    })
    .await;
}
