//! `snigate replay` at scale: a million access-log lines decided again against a million
//! rules, the whole command timed (rules loaded and compiled, the log read and decided, the
//! report printed), in lines per second, with its peak resident memory. The same rules with no
//! log, a tenth of the log and three times the log show what loading costs, and that memory
//! does not follow the log's length (only the distinct names that flip, which a real log's
//! bounded set of names bounds).
//!
//! `cargo bench --bench replay`; SNIGATE_REPLAY_RULES and SNIGATE_REPLAY_LINES change the sizes
//! (default 1,000,000 each; 1,000 each when `cargo test --all-targets` runs it as a smoke test).

#[path = "support/mod.rs"]
mod support;

use std::fmt::Write as _;
use std::io::{BufWriter, Write};
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use psl::Psl;

use support::measured;
use support::names::{Form, Rng, domain, pattern};

fn env(key: &str, default: usize) -> usize {
    std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// Writes `n` rules (synthetic patterns, a blocklist's spread of forms); returns the names they
/// were made from, every 16th kept, for the log to hit.
fn write_rules(path: &Path, n: usize) -> Vec<String> {
    let mut out = BufWriter::new(std::fs::File::create(path).unwrap());
    let mut rng = Rng(0x5eed_0001);
    let mut seen = std::collections::HashSet::with_capacity(n);
    let mut hits = Vec::new();
    while seen.len() < n {
        let (name, form) = pattern(&mut rng);
        if !seen.insert(name.clone()) {
            continue;
        }
        // A wildcard over a public suffix is a load error (the synthetic names hit a few).
        let info = psl::List.find(name.rsplit('.').map(str::as_bytes));
        let suffix = info.typ.is_some() && info.len == name.len();
        let (verdict, target) = match form {
            Form::Exact => ("allow", name.clone()),
            _ if suffix => ("allow", name.clone()),
            Form::Apex => ("allow", format!(".{name}")),
            Form::Below => ("deny", format!("*.{name}")),
        };
        writeln!(out, "{verdict} {target}").unwrap();
        if seen.len() % 16 == 0 {
            hits.push(if form == Form::Below { format!("www.{name}") } else { name });
        }
    }
    hits
}

/// Writes `n` access-log lines as snigate writes them, from a bounded set of names as real
/// traffic has (a tenth of them flip): half a ruled name, half one of 20,000 others; a few
/// hundred distinct clients.
fn write_log(path: &Path, n: usize, hits: &[String]) {
    let mut out = BufWriter::new(std::fs::File::create(path).unwrap());
    let mut rng = Rng(0x5eed_0002);
    let others: Vec<String> = (0..20_000).map(|_| domain(&mut rng)).collect();
    let hits = &hits[..hits.len().min(20_000)];
    let mut line = String::with_capacity(512);
    for i in 0..n {
        let name = match rng.below(2) {
            0 => &hits[rng.below(hits.len() as u64) as usize],
            _ => &others[rng.below(others.len() as u64) as usize],
        };
        let (verdict, reason) = if rng.below(3) == 0 { ("deny", "default") } else { ("allow", "rule") };
        line.clear();
        let _ = write!(
            line,
            "{{\"time\":\"2026-12-0{}T{:02}:{:02}:{:02}.{:03}Z\",\"listener\":\"egress\",\"client\":\"10.1.{}.{}:{}\",\
             \"original_dst\":null,\"protocol\":\"tls\",\"sni\":\"{name}\",\"host\":null,\"alpn\":[\"h2\",\"http/1.1\"],\
             \"tls_version\":\"1.3\",\"ech\":false,\"verdict\":\"{verdict}\",\"reason\":\"{reason}\",\
             \"rule\":null,\"upstream\":\"192.0.2.{}:443\",\"stage\":\"splice\",\"error\":null,\
             \"bytes_up\":{},\"bytes_down\":{},\"duration\":0.{:03}}}",
            1 + i % 6,
            i / 3600 % 24,
            i / 60 % 60,
            i % 60,
            i % 1000,
            rng.below(4),
            rng.below(100),
            1024 + rng.below(60000),
            rng.below(254) + 1,
            500 + rng.below(2000),
            rng.below(1 << 20),
            rng.below(1000)
        );
        writeln!(out, "{line}").unwrap();
    }
}

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this as a smoke test
    // (debug build), at a size that proves the command runs.
    let benching = std::env::args().any(|a| a == "--bench");
    let size = |key: &str| env(key, if benching { 1_000_000 } else { 1_000 });
    let (rules_n, lines_n) = (size("SNIGATE_REPLAY_RULES"), size("SNIGATE_REPLAY_LINES"));
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("big.rules");
    let hits = write_rules(&rules, rules_n);
    let bin = env!("CARGO_BIN_EXE_snigate");
    println!("## snigate replay: {lines_n} log lines against {rules_n} rules\n");
    println!("| log lines | wall s | CPU s | lines/s (whole command) | peak RSS MiB |");
    println!("| ---: | ---: | ---: | ---: | ---: |");
    // The command must run to its report (exit 1: something flipped to deny, which synthetic
    // traffic does), or the timings below would time an error.
    let probe = dir.path().join("probe.log");
    write_log(&probe, 100, &hits);
    let out =
        Command::new(bin).args(["replay", "--json", "--log"]).arg(&probe).arg("--rules").arg(&rules).output().unwrap();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|_| panic!("replay failed ({}): {}", out.status, String::from_utf8_lossy(&out.stderr)));
    assert_eq!(report["records"], 100, "{report}");
    let mut load = 0.0;
    for n in [0, lines_n / 10, lines_n, 3 * lines_n] {
        let log = dir.path().join(format!("access-{n}.log"));
        write_log(&log, n, &hits);
        let start = Instant::now();
        let u = measured(Command::new(bin).args(["replay", "--json", "--log"]).arg(&log).arg("--rules").arg(&rules));
        let wall = start.elapsed().as_secs_f64();
        // Exit 1 means something flipped to deny, which synthetic traffic does: not a failure.
        assert!(u.max_rss > 0, "replay did not run");
        if n == 0 {
            load = wall;
        }
        let rate = if n == 0 { "-".to_string() } else { format!("{:.0}", n as f64 / wall) };
        println!("| {n} | {wall:.2} | {:.2} | {rate} | {:.1} |", u.cpu, u.max_rss as f64 / (1 << 20) as f64);
        std::fs::remove_file(&log).unwrap();
    }
    println!("\nLoading and compiling the rules alone (no log line): {load:.2} s.");
}
