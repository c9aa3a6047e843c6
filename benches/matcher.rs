//! The domain matcher at 1k, 100k and 1M patterns: build time, heap bytes per pattern, and
//! lookup latency for hits and misses, for the production hash engine, the Aho-Corasick
//! engine, and (at 1k) the naive reference loop. All call the same decide path the proxy
//! calls.
//!
//! Cold lookups cycle through 4096 names spread over the whole table (mostly cache misses at
//! 1M); warm lookups repeat 16 names.
//!
//! Run: `cargo bench --bench matcher`. A summary table (the figures in docs/benchmarks.md) is printed
//! first; criterion's own estimates for the lookups follow. `SNIGATE_BENCH_SIZES=1000,100000`
//! restricts the sizes.

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group};
use snigate::internal::{AcMatcher, Reference};
use snigate::{List, Name, Pattern, RuleSet, Verdict};

mod support;

use support::names::{self, Form, Rng, domain};

/// Counts live and peak heap bytes, so that bytes per pattern are measured, not estimated.
struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

// SAFETY: forwards to the system allocator unchanged; only counts bytes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let now = LIVE.fetch_add(layout.size(), Ordering::Relaxed) + layout.size();
        PEAK.fetch_max(now, Ordering::Relaxed);
        // SAFETY: same layout contract as the caller's.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` came from `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size >= layout.size() {
            let now = LIVE.fetch_add(new_size - layout.size(), Ordering::Relaxed) + new_size - layout.size();
            PEAK.fetch_max(now, Ordering::Relaxed);
        } else {
            LIVE.fetch_sub(layout.size() - new_size, Ordering::Relaxed);
        }
        // SAFETY: same contract as the caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// `n` patterns: 50% exact (hosts files), 30% `.name` (adblock, plain lists), 20% `*.name`.
fn synthetic(n: usize, seed: u64) -> List {
    let mut rng = Rng(seed);
    let patterns = (0..n)
        .map(|_| {
            let (name, form) = names::pattern(&mut rng);
            let name = Name::parse(name.as_bytes(), false).expect("generated names are valid");
            match form {
                Form::Exact => Pattern::Exact(name),
                Form::Apex => Pattern::Apex(name),
                Form::Below => Pattern::Below(name),
            }
        })
        .collect();
    List { name: "synthetic".into(), verdict: Verdict::Deny, patterns, skipped: 0 }
}

/// `HITS` names spread evenly over the list, each matched by its pattern.
fn hit_names(list: &List) -> Vec<Name> {
    let step = (list.patterns.len() / HITS).max(1);
    list.patterns
        .iter()
        .step_by(step)
        .take(HITS)
        .map(|p| {
            let text = match p {
                Pattern::Exact(x) => x.to_string(),
                Pattern::Apex(x) => format!("cdn.{x}"),
                Pattern::Below(x) => format!("www.{x}"),
                other => unreachable!("synthetic lists hold no {other:?}"),
            };
            Name::parse(text.as_bytes(), false).unwrap()
        })
        .collect()
}

/// Query names per size: spread over the whole table, so lookups are mostly cache-cold.
const HITS: usize = 4096;

fn misses() -> Vec<Name> {
    let mut rng = Rng(0xdead_beef);
    (0..HITS).map(|_| Name::parse(domain(&mut rng).as_bytes(), false).unwrap()).collect()
}

/// Names in the warm set: the same few names again and again, all in cache.
const WARM: usize = 16;

const SRC: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 1, 2, 3));
/// The destination port every query is for.
const PORT: u16 = 443;

/// Median ns per lookup over batches of `names.len()` lookups.
fn median_ns(names: &[Name], mut f: impl FnMut(&Name) -> bool) -> f64 {
    let mut samples = Vec::new();
    let deadline = Instant::now() + Duration::from_millis(400);
    while samples.len() < 15 || (Instant::now() < deadline && samples.len() < 200) {
        let t = Instant::now();
        let mut allowed = 0usize;
        for n in names {
            allowed += usize::from(f(black_box(n)));
        }
        black_box(allowed);
        samples.push(t.elapsed().as_nanos() as f64 / names.len() as f64);
    }
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

/// The sizes to run. Without `--bench` (as `cargo test --all-targets` runs benches, in a
/// debug build) only the smallest, so that the check stays quick.
fn sizes() -> Vec<usize> {
    let benching = std::env::args().any(|a| a == "--bench");
    std::env::var("SNIGATE_BENCH_SIZES")
        .ok()
        .map(|s| s.split(',').filter_map(|x| x.trim().parse().ok()).collect())
        .unwrap_or_else(|| if benching { vec![1_000, 100_000, 1_000_000] } else { vec![1_000] })
}

/// Builds each engine, measures bytes and time, prints the summary table, and returns the
/// built sets for the criterion lookups.
/// One size, built: its size, both engines, hit names, and the naive reference at 1k.
type Built = (usize, RuleSet, AcMatcher, Vec<Name>, Option<Reference>);

fn summary() -> Vec<Built> {
    let miss = misses();
    let mut built = Vec::new();
    println!(
        "\n| patterns | engine | build | heap B/pattern | hit median (cold) | miss median (cold) | hit median (warm) |"
    );
    println!("| ---: | --- | ---: | ---: | ---: | ---: | ---: |");
    for n in sizes() {
        let g0 = LIVE.load(Ordering::Relaxed);
        let list = synthetic(n, 42);
        let list_bytes = LIVE.load(Ordering::Relaxed) - g0;
        let hits = hit_names(&list);
        let reference = (n <= 1_000).then(|| Reference::new(&[], std::slice::from_ref(&list), Verdict::Deny));
        let input = list.patterns.len();
        // Production engine: what stays live after the build; the input list is consumed.
        let before = LIVE.load(Ordering::Relaxed);
        let t = Instant::now();
        let set = RuleSet::new(Vec::new(), vec![list], Verdict::Deny);
        let build = t.elapsed();
        let retained = LIVE.load(Ordering::Relaxed) + list_bytes - before;
        assert!(set.decide(Some(&hits[0]), SRC, None, PORT).reason == snigate::Reason::Rule, "hit names must hit");
        let hit_ns = median_ns(&hits, |name| set.decide(Some(name), SRC, None, PORT).verdict == Verdict::Allow);
        let miss_ns = median_ns(&miss, |name| set.decide(Some(name), SRC, None, PORT).verdict == Verdict::Allow);
        let warm_ns =
            median_ns(&hits[..WARM], |name| set.decide(Some(name), SRC, None, PORT).verdict == Verdict::Allow);
        println!(
            "| {n} | hash (production) | {} | {:.1} | {hit_ns:.0} ns | {miss_ns:.0} ns | {warm_ns:.0} ns |",
            fmt_dur(build),
            retained as f64 / input as f64
        );
        // Aho-Corasick engine, over the same keys and actions.
        let before = LIVE.load(Ordering::Relaxed);
        PEAK.store(before, Ordering::Relaxed);
        let t = Instant::now();
        let ac = AcMatcher::new(&set).expect("automaton builds");
        let ac_build = t.elapsed();
        let ac_bytes = LIVE.load(Ordering::Relaxed) - before;
        let ac_peak = PEAK.load(Ordering::Relaxed) - before;
        let hit_ns = median_ns(&hits, |name| ac.decide(&set, Some(name), SRC, None, PORT).verdict == Verdict::Allow);
        let miss_ns = median_ns(&miss, |name| ac.decide(&set, Some(name), SRC, None, PORT).verdict == Verdict::Allow);
        let warm_ns =
            median_ns(&hits[..WARM], |name| ac.decide(&set, Some(name), SRC, None, PORT).verdict == Verdict::Allow);
        println!(
            "| {n} | aho-corasick | {} + {} | {:.1} + {:.1} (peak {:.0}) | {hit_ns:.0} ns | {miss_ns:.0} ns | {warm_ns:.0} ns |",
            fmt_dur(build),
            fmt_dur(ac_build),
            retained as f64 / input as f64,
            ac_bytes as f64 / input as f64,
            ac_peak as f64 / input as f64,
        );
        if let Some(r) = &reference {
            let hit_ns = median_ns(&hits, |name| r.decide(Some(name), SRC, None, PORT).verdict == Verdict::Allow);
            let miss_ns = median_ns(&miss, |name| r.decide(Some(name), SRC, None, PORT).verdict == Verdict::Allow);
            let warm_ns =
                median_ns(&hits[..WARM], |name| r.decide(Some(name), SRC, None, PORT).verdict == Verdict::Allow);
            println!("| {n} | naive loop | - | - | {hit_ns:.0} ns | {miss_ns:.0} ns | {warm_ns:.0} ns |");
        }
        built.push((n, set, ac, hits, reference));
    }
    println!("\nhash build from text (parse + compile), 1 run each:");
    for n in sizes() {
        let list = synthetic(n, 7);
        let text: String = list.patterns.iter().map(|p| format!("{p}\n")).collect();
        drop(list);
        let t = Instant::now();
        let spec = snigate::ListSpec { name: "synthetic".into(), verdict: Verdict::Deny, lenient: false };
        let list = snigate::parse_list(&spec, &text).expect("synthetic list parses");
        let set = RuleSet::new(Vec::new(), vec![list], Verdict::Deny);
        println!("  {n}: {} ({} patterns)", fmt_dur(t.elapsed()), set.len());
    }
    println!();
    built
}

fn fmt_dur(d: Duration) -> String {
    if d.as_secs_f64() >= 1.0 {
        format!("{:.2} s", d.as_secs_f64())
    } else if d.as_millis() >= 1 {
        format!("{:.0} ms", d.as_secs_f64() * 1e3)
    } else {
        format!("{:.0} µs", d.as_secs_f64() * 1e6)
    }
}

fn lookups(c: &mut Criterion) {
    let miss = misses();
    for (n, set, ac, hits, reference) in summary() {
        let mut g = c.benchmark_group(format!("lookup/{n}"));
        g.sample_size(20).measurement_time(Duration::from_secs(2)).warm_up_time(Duration::from_millis(500));
        for (kind, names) in [("hit", &hits), ("miss", &miss)] {
            let mut i = 0;
            g.bench_function(format!("hash/{kind}"), |b| {
                b.iter(|| {
                    i = (i + 1) % names.len();
                    set.decide(Some(black_box(&names[i])), SRC, None, PORT)
                })
            });
            let mut i = 0;
            g.bench_function(format!("aho-corasick/{kind}"), |b| {
                b.iter(|| {
                    i = (i + 1) % names.len();
                    ac.decide(&set, Some(black_box(&names[i])), SRC, None, PORT)
                })
            });
            if let Some(r) = &reference {
                let mut i = 0;
                g.bench_function(format!("naive/{kind}"), |b| {
                    b.iter(|| {
                        i = (i + 1) % names.len();
                        r.decide(Some(black_box(&names[i])), SRC, None, PORT)
                    })
                });
            }
        }
        g.finish();
    }
}

fn builds(c: &mut Criterion) {
    let mut g = c.benchmark_group("build");
    g.sample_size(10);
    for n in sizes().into_iter().filter(|&n| n <= 100_000) {
        let list = synthetic(n, 42);
        g.bench_function(format!("hash/{n}"), |b| {
            b.iter_batched(
                || list.clone(),
                |l| RuleSet::new(Vec::new(), vec![l], Verdict::Deny),
                criterion::BatchSize::LargeInput,
            )
        });
    }
    g.finish();
}

criterion_group!(benches, lookups, builds);

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
}
