//! What a flood of forged QUIC Initials costs in memory, measured as this process's resident
//! set: alone in its test binary, so that no other test's allocations blur it.

mod common;
mod harness;

use std::time::Duration;

use harness::{Listener, Proxy, TestConfig, key, samples, scrape};
use snigate::hello::quic::{Side, Version};
use snigate::internal::{crypto_frame, padded, seal_initial};
use tokio::net::UdpSocket;

/// Flows in the flood: the default `max_flows`, so that the table is full.
const FLOWS: usize = 10_000;
/// Datagrams per flow, each carrying 1,100 bytes of a hello that never completes.
const PER_FLOW: usize = 2;
const CHUNK: usize = 1100;
/// Flows one address and port may have being decided at once (`MAX_UNDECIDED_PER_ADDR`).
const PER_PORT: usize = 8;

/// This process's resident set, in bytes.
fn rss() -> usize {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("VmRSS:")).unwrap();
    line.split_whitespace().nth(1).unwrap().parse::<usize>().unwrap() * 1024
}

async fn gauge(proxy: &Proxy, name: &str) -> f64 {
    samples(&scrape(proxy).await).get(&key(name, &[("listener", "test")])).copied().unwrap_or(0.0)
}

/// 10,000 forged flows, each sent 2 Initial datagrams (2,400 bytes) of a hello that never
/// completes: while they are held, snigate's memory grows by at most 2x the bytes they sent
/// plus 4 KiB per flow (buffered datagrams, CRYPTO pieces, keys, record, table entries); once
/// they have timed out and been forgotten, it falls back to within 16 MiB of where it started
/// (freed blocks go back to the system, not only to the allocator).
#[tokio::test]
async fn a_forged_flood_holds_what_it_sent_and_gives_it_back() {
    let upstream = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let proxy = TestConfig::new(Listener::upstream(upstream.local_addr().unwrap()).quic())
        .rules("allow acme.my.salesforce.com\ndeny *\n")
        .limits("max_quic_flows_per_source = 100000\nhello_timeout = 10\nflow_idle_timeout = 1")
        .start(dir.path())
        .await;
    // A handshake message that announces 16,000 bytes: it never completes.
    let mut hello = vec![0x01, 0x00, 0x3e, 0x80];
    hello.resize(PER_FLOW * CHUNK, 0);
    let hello = &hello;
    let datagrams = |flow: usize| {
        let dcid = (flow as u64 | 0xf1 << 56).to_be_bytes();
        (0..PER_FLOW).map(move |i| {
            let frame = crypto_frame((i * CHUNK) as u64, &hello[i * CHUNK..(i + 1) * CHUNK]);
            seal_initial(Version::V1, &dcid, Side::Client, (&dcid, &[]), i as u32, &padded(&frame, &dcid, &[]))
        })
    };
    let per_flow_bytes: usize = datagrams(0).map(|d| d.len()).sum();
    let before = rss();
    let started = std::time::Instant::now();
    for port in 0..FLOWS / PER_PORT {
        // An address each: a port freed and bound again would find its old flows still there.
        let socket = UdpSocket::bind(format!("127.1.{}.{}:0", port / 250, port % 250 + 1)).await.unwrap();
        for flow in port * PER_PORT..(port + 1) * PER_PORT {
            for d in datagrams(flow) {
                socket.send_to(&d, proxy.addr).await.unwrap();
            }
        }
        // Lets the listener (on this thread) read them before its socket's buffer overflows.
        tokio::task::yield_now().await;
        assert!(started.elapsed() < Duration::from_secs(60), "the flood is bounded in time");
    }
    common::eventually(Duration::from_secs(10), "every forged flow held", async || {
        gauge(&proxy, "snigate_active_connections").await == FLOWS as f64
    })
    .await;
    let peak = rss();
    let sent = FLOWS * per_flow_bytes;
    let bound = 2 * sent + FLOWS * 4096;
    let grown = peak.saturating_sub(before);
    eprintln!(
        "RSS before {} KiB, with {FLOWS} flows {} KiB (+{} KiB, {} B per flow; {} B sent per flow), bound +{} KiB",
        before / 1024,
        peak / 1024,
        grown / 1024,
        grown / FLOWS,
        per_flow_bytes,
        bound / 1024
    );
    assert!(grown <= bound, "{grown} bytes held for {sent} bytes sent");
    // The flows time out, their denials are forgotten, and a sweep gives the memory back.
    common::eventually(Duration::from_secs(30), "the forged flows gone", async || {
        gauge(&proxy, "snigate_active_connections").await == 0.0
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = rss();
    eprintln!("RSS after expiry {} KiB", after / 1024);
    assert!(after <= before + (16 << 20), "{} KiB still held after expiry", after.saturating_sub(before) / 1024);
}
