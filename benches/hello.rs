//! ClientHello parse time on the recorded hellos (target: under 2 µs for a 2 KB hello).
//!
//! Run: `cargo bench --bench hello`

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
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

criterion_group!(benches, recorded, parse_and_decide, refused);
criterion_main!(benches);
