//! ClientHello parse time on the recorded hellos (target: under 2 µs for a 2 KB hello), and the
//! QUIC inspector on the recorded Initials (target: decrypt + parse of Chromium's two datagrams
//! under 5 µs).
//!
//! Run: `cargo bench --bench hello` (`cargo bench --bench hello -- quic` for the QUIC rows only).
//! With `SNIGATE_HELLO_PARSES=N` it only parses the recorded Chromium hello N times, for
//! `benches/profile.sh hello` to count the instructions of one parse under callgrind.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use snigate::hello::quic::{DEFAULT_MAX_DATAGRAMS, Inspect, Inspector, QuicLimits};
use snigate::hello::{HelloLimits, Parse, parse};

#[path = "../tests/common/mod.rs"]
mod common;

fn recorded(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse");
    for r in common::recorded() {
        assert!(matches!(parse(&r.bytes, HelloLimits::default()), Parse::Complete(_)), "{}", r.file);
        group.throughput(Throughput::Bytes(r.bytes.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("recorded", format!("{} ({} B)", r.file, r.bytes.len())),
            &r.bytes,
            |b, bytes| b.iter(|| parse(std::hint::black_box(bytes), HelloLimits::default())),
        );
    }
    // The worst legitimate framing: the browser hello in 1-byte records (6x the bytes).
    let r = common::recording("chromium.bin");
    let (payload, version) = common::unframe(&r.bytes);
    let tiny = common::frame(&payload, version, &[1]);
    group.throughput(Throughput::Bytes(tiny.len() as u64));
    group.bench_with_input(
        BenchmarkId::new("1-byte records", format!("chromium.bin ({} B)", tiny.len())),
        &tiny,
        |b, bytes| b.iter(|| parse(std::hint::black_box(bytes), HelloLimits::default())),
    );
    group.finish();
}

/// The hot path of an allowed connection: parse the hello, then decide with the shipped preset.
fn parse_and_decide(c: &mut Criterion) {
    let rules = snigate::RuleSet::new(snigate::preset_rules().unwrap(), Vec::new(), snigate::Verdict::Deny);
    let r = common::recording("chromium.bin");
    let src = std::net::IpAddr::from([10, 0, 0, 1]);
    let decide = |bytes: &[u8]| match parse(bytes, HelloLimits::default()) {
        Parse::Complete(h) => rules.decide(h.sni.as_ref(), src, None, 443).verdict,
        other => panic!("{other:?}"),
    };
    assert_eq!(decide(&r.bytes), snigate::Verdict::Allow);
    c.bench_function(&format!("parse+decide/chromium.bin ({} B, Salesforce preset)", r.bytes.len()), |b| {
        b.iter(|| decide(std::hint::black_box(&r.bytes)))
    });
}

fn refused(c: &mut Criterion) {
    let http = b"GET / HTTP/1.1\r\nHost: acme.my.salesforce.com\r\n\r\n";
    c.bench_function("parse/refuse not_tls (HTTP request)", |b| {
        b.iter(|| parse(std::hint::black_box(http), HelloLimits::default()))
    });
}

/// A new flow's inspection as the QUIC listener runs it: a fresh inspector (Initial keys from
/// the DCID, header protection, AEAD, CRYPTO reassembly, the hello parse) fed a recorded
/// capture's datagrams until `Complete`.
fn quic(c: &mut Criterion) {
    let limits = QuicLimits { hello: HelloLimits::default(), max_datagrams: DEFAULT_MAX_DATAGRAMS };
    let inspect = |datagrams: &[Vec<u8>]| {
        let mut inspector = Inspector::new(limits);
        let mut answer = Inspect::Incomplete;
        for d in datagrams {
            answer = inspector.push(d);
        }
        answer
    };
    let mut group = c.benchmark_group("quic");
    // chromium.hex: two datagrams, 15 CRYPTO frames out of order; aioquic-v1.hex: one datagram.
    for (name, file) in [("chromium", "chromium.hex"), ("aioquic-v1", "aioquic-v1.hex")] {
        let datagrams = common::quic_capture(file);
        assert!(matches!(inspect(&datagrams), Inspect::Complete(_)), "{file}");
        group.throughput(Throughput::Bytes(datagrams.iter().map(|d| d.len() as u64).sum()));
        group.bench_function(name, |b| b.iter(|| inspect(std::hint::black_box(&datagrams))));
    }
    group.finish();
}

criterion_group!(benches, recorded, parse_and_decide, refused, quic);

fn main() {
    if let Some(n) = std::env::var("SNIGATE_HELLO_PARSES").ok().and_then(|n| n.parse::<usize>().ok()) {
        let r = common::recording("chromium.bin");
        for _ in 0..n {
            std::hint::black_box(parse(std::hint::black_box(&r.bytes), HelloLimits::default()));
        }
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
