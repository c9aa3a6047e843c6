//! Large lists, side by side: snigate, HAProxy, nginx and sniproxy with the same N-domain deny
//! list in front of the end-to-end bench's allowlist (`*.my.salesforce.com`,
//! `login.salesforce.com`, default deny), for each N.
//!
//! Run through `benches/compare.sh` (after the e2e bench), or directly:
//! `cargo bench --bench lists`, with
//! - `SNIGATE_LISTS_SIZES` (default `0,100000,1000000`): the list sizes N;
//! - `SNIGATE_LISTS_PEERS` (default `snigate,haproxy,haproxy-dom,nginx,sniproxy`; a peer not
//!   installed is reported as such);
//! - `SNIGATE_LISTS_SECS` (default 3): seconds per load run;
//! - `SNIGATE_LISTS_START_SECS` (default 60): how long a proxy may take to listen.
//!
//! The list: a domain blocks itself and every name below it. Up to 100,000 entries it starts
//! with the real domains of EasyList and EasyPrivacy as Debian's uBlock Origin package ships
//! them (`support::names::easylist_domains`), topped up with synthetic names
//! (`support::names::domain`); larger lists, or without the package, are synthetic. Each
//! proxy's form of it is in `support::peers::configure`; snigate's is a `[[rules.list]]` with
//! `action = "deny"`.
//!
//! Per proxy and N, one proxy at a time, pinned to CPU 0 (this process, the load and the
//! backend, on CPU 1), with the load and backend of the e2e bench (`support::load`):
//! - start: spawn until the port accepts a connection; then one allowed hello must be answered;
//! - VmRSS (and PSS, which counts the pages a master shares with its worker once) of the
//!   process tree 0.3 s after that, and VmRSS after the load runs;
//! - allowed hellos at concurrency 16: conns/s, proxy CPU per 1,000 connections, p99 latency;
//! - denied hellos at concurrency 16, the SNI below the list's last entry (the lookup must find
//!   it; the default deny when N = 0): conns/s and CPU per 1,000;
//! - reload: the list gains `PROBE`, an allowed name, and the proxy is signalled (snigate,
//!   nginx and sniproxy SIGHUP, HAProxy in master-worker mode SIGUSR2); the reload time runs
//!   from the signal until a connection for `PROBE` is denied (the first of three denials in a
//!   row, polled every 5 ms); its peak is the largest VmRSS of the tree, sampled every 5 ms
//!   from the signal until 0.5 s after that, over the VmRSS just before the signal.
//!
//! Without `--bench` (as `cargo test --all-targets` runs it, debug build): snigate alone at
//! N = 1,000 with short runs, asserting that every figure was measured without errors.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::net::TcpListener;

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use support::load::{ALLOWED, Backend, CONN_TIMEOUT, DENIED, Expect, MAX_CONNS, RESPONSE, Run, Target, load, one};
use support::load::{serve, swap_sni};
use support::names::{self, Rng};
use support::peers::{self, Launch, RULES, SOURCE_LIMITS, Site};
use support::{Proc, clock_ticks, free_ports, memory_of, nofile_limit, pin_self};

/// The name the reload adds to the list: allowed by `*.my.salesforce.com` before, denied after.
/// As long as [`ALLOWED`], so that it fits the same recorded hello.
const PROBE: &str = "acme-dev-sandbox-99.my.salesforce.com";
/// Lists up to this size start with the real domains.
const REAL_UP_TO: usize = 100_000;
/// Concurrency of the load runs.
const CONC: usize = 16;
/// How long the first allowed hello may take once the port accepts.
const ANSWER_WITHIN: Duration = Duration::from_secs(60);
/// How long a reload may take to change the verdict.
const RELOAD_WITHIN: Duration = Duration::from_secs(120);
/// Consecutive denials of [`PROBE`] that mark the reload done (a connection cut while workers
/// hand over must not count as the new verdict).
const STREAK: usize = 3;
/// Memory sampling period during a reload.
const SAMPLE: Duration = Duration::from_millis(5);

/// One proxy at one list size; `None` where it was not measured, and `why` says why.
#[derive(Default)]
struct Row {
    /// Spawn until the port accepts, seconds.
    start: Option<f64>,
    /// VmRSS of the tree after the start, bytes.
    rss_start: Option<f64>,
    /// PSS of the tree after the start, bytes.
    pss_start: Option<f64>,
    /// VmRSS of the tree after the load runs, bytes.
    rss_load: Option<f64>,
    /// Allowed hellos at [`CONC`].
    allowed: Option<Run>,
    /// Denied hellos (a listed name) at [`CONC`].
    denied: Option<Run>,
    /// Signal until the new verdict, seconds.
    reload: Option<f64>,
    /// Largest VmRSS during the reload over VmRSS before it.
    reload_peak: Option<f64>,
    /// Why figures are missing: the first failure, which ends the row.
    why: Option<String>,
}

/// What every measurement shares.
struct Bench {
    /// Seconds per load run.
    secs: f64,
    /// How long a proxy may take to listen.
    start_within: Duration,
    /// Whether the proxies run on CPU 0 and this process on CPU 1.
    pinned: bool,
    /// Clock ticks per second.
    tick: f64,
    /// Descriptor limit, for the peers' connection limits.
    nofile: u64,
    /// Where allowed names go.
    backend: SocketAddr,
    /// The allowed hello ([`ALLOWED`]).
    allowed: Vec<u8>,
    /// The recorded hello, its SNI ([`DENIED`]) for swapping.
    recorded: Vec<u8>,
    /// The hello for [`PROBE`].
    probe: Vec<u8>,
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let var = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let num = |k: &str, d: f64| var(k).and_then(|v| v.parse::<f64>().ok()).unwrap_or(d);
    let list = |k: &str, d: &str| -> Vec<String> {
        var(k).unwrap_or_else(|| d.into()).split(',').filter(|s| !s.is_empty()).map(str::to_string).collect()
    };
    let (sizes, peers, secs, start_within) = if benching {
        let sizes = list("SNIGATE_LISTS_SIZES", "0,100000,1000000");
        let sizes: Vec<usize> = sizes.iter().map(|s| s.parse().expect("SNIGATE_LISTS_SIZES: numbers")).collect();
        let peers = list("SNIGATE_LISTS_PEERS", "snigate,haproxy,haproxy-dom,nginx,sniproxy");
        (sizes, peers, num("SNIGATE_LISTS_SECS", 3.0), num("SNIGATE_LISTS_START_SECS", 60.0))
    } else {
        (vec![1000], vec!["snigate".to_string()], 0.3, 30.0)
    };

    if benching {
        // Before this process pins itself: `nproc` counts the CPUs it may run on.
        header();
    }
    let recorded = common::recording("chromium.bin").bytes;
    let backend_std = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bench = Bench {
        secs,
        start_within: Duration::from_secs_f64(start_within),
        pinned: pin_self(),
        tick: clock_ticks(),
        nofile: nofile_limit(),
        backend: backend_std.local_addr().unwrap(),
        allowed: swap_sni(&recorded, DENIED, ALLOWED),
        probe: swap_sni(&recorded, DENIED, PROBE),
        recorded,
    };
    let dir = tempfile::tempdir().unwrap();
    let real = names::easylist_domains();
    let source = match &real {
        Some((d, from)) => format!(
            "{} real domains (EasyList + EasyPrivacy, from {from}) first in lists of up to {REAL_UP_TO} entries, \
             topped up with synthetic names; larger lists synthetic",
            d.len()
        ),
        None => "synthetic names only (no real list installed: Debian's webext-ublock-origin-firefox)".into(),
    };

    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let backend = Arc::new(Backend::default());
    backend.expect.store(bench.allowed.len(), Ordering::Relaxed);
    backend.respond.store(RESPONSE as u64, Ordering::Relaxed);
    let rows = rt.block_on(async {
        backend_std.set_nonblocking(true).unwrap();
        tokio::spawn(serve(TcpListener::from_std(backend_std).unwrap(), backend.clone()));
        let mut rows: BTreeMap<(String, usize), Row> = BTreeMap::new();
        for &n in &sizes {
            let list = deny_list(n, real.as_ref().map(|(d, _)| d.as_slice()).unwrap_or(&[]));
            let hit = listed_name(&list);
            let denied = swap_sni(&bench.recorded, DENIED, &hit);
            for peer in &peers {
                let at = dir.path().join(format!("{peer}-{n}"));
                std::fs::create_dir(&at).unwrap();
                let row = measure(&bench, peer, &at, &list, &denied).await;
                eprintln!("{peer} N={n}: {}", row.why.as_deref().unwrap_or("done"));
                rows.insert((peer.clone(), n), row);
            }
        }
        rows
    });

    print(&rows, &sizes, &peers, &bench, benching, &source);
    if !benching {
        for ((peer, n), row) in rows.iter().filter(|((p, _), _)| p == "snigate") {
            assert!(row.why.is_none(), "{peer} N={n}: {:?}", row.why);
            for (kind, run) in [("allowed", &row.allowed), ("denied", &row.denied)] {
                let run = run.as_ref().unwrap();
                assert!(run.errors.is_empty(), "{peer} N={n} {kind}: {:?}", run.errors);
                assert!(run.ok > 0, "{peer} N={n} {kind}: no connection completed");
            }
            assert!(row.reload.is_some() && row.reload_peak.is_some(), "{peer} N={n}: reload");
        }
    }
}

/// The date, the machine and the peers' versions, as `benches/compare.sh` prints them.
fn header() {
    let sh = |cmd: &str| {
        let out = std::process::Command::new("sh").args(["-c", cmd]).output().map(|o| o.stdout).unwrap_or_default();
        String::from_utf8_lossy(&out).trim().to_string()
    };
    println!("date: {}", sh("date -u '+%Y-%m-%d %H:%M UTC'"));
    println!(
        "machine: {}",
        sh(
            "echo \"$(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)\""
        )
    );
    println!("load average before the run: {}", sh("cut -d' ' -f1-3 /proc/loadavg"));
    println!(
        "peers: {}",
        sh("echo \"$(haproxy -v 2>/dev/null | head -1 | cut -d' ' -f1-3); $(nginx -v 2>&1 | cut -d' ' -f3); \
            $(sniproxy -V 2>&1 | head -1)\"")
    );
}

/// The first `n` deny entries: the real domains first while `n` ≤ [`REAL_UP_TO`], then
/// synthetic ones; none of them covers, or lies below, a name the bench decides otherwise.
fn deny_list(n: usize, real: &[String]) -> Vec<String> {
    let reserved = [ALLOWED, DENIED, PROBE, "login.salesforce.com", "my.salesforce.com"];
    let clear =
        |d: &str| !reserved.iter().any(|r| r == &d || r.ends_with(&format!(".{d}")) || d.ends_with(&format!(".{r}")));
    let mut seen = std::collections::HashSet::new();
    let mut out = Vec::with_capacity(n);
    let real = if n <= REAL_UP_TO { real } else { &[] };
    for d in real.iter().filter(|d| clear(d)).take(n) {
        seen.insert(d.clone());
        out.push(d.clone());
    }
    let mut rng = Rng(7);
    while out.len() < n {
        let d = names::domain(&mut rng);
        if clear(&d) && seen.insert(d.clone()) {
            out.push(d);
        }
    }
    out
}

/// A name the list denies, as long as [`DENIED`] (to fit the recorded hello): the last entry
/// that fits, itself or with a label in front; [`DENIED`] (the default deny) when the list is
/// empty.
fn listed_name(list: &[String]) -> String {
    let len = DENIED.len();
    let Some(d) = list.iter().rev().find(|d| d.len() == len || d.len() + 2 <= len) else { return DENIED.into() };
    if d.len() == len { d.clone() } else { format!("{}.{d}", "x".repeat(len - d.len() - 1)) }
}

/// snigate's configuration for `site` (its listener, the allowlist, the deny list as a
/// `[[rules.list]]`), or a peer's ([`peers::configure`]).
fn configure(peer: &str, site: &Site) -> Option<Launch> {
    if peer != "snigate" {
        return peers::configure(peer, site);
    }
    let rules = site.dir.join("allow.rules");
    std::fs::write(&rules, RULES).unwrap();
    let list = if site.deny.is_empty() {
        String::new()
    } else {
        let path = peers::domain_file(site);
        format!("[[rules.list]]\npath = \"{}\"\nname = \"deny\"\naction = \"deny\"\n", path.display())
    };
    let config = format!(
        "[[listener]]\nname = \"lists\"\nlisten = \"{}\"\nmode = \"upstream\"\nupstream = \"{}\"\n\
         [rules]\nfiles = [\"{}\"]\ndefault = \"deny\"\n{list}\
         [metrics]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"off\"\n{SOURCE_LIMITS}",
        site.addr,
        site.backend,
        rules.display()
    );
    let path = site.dir.join("snigate.toml");
    std::fs::write(&path, config).unwrap();
    let args = vec!["run".into(), "--config".into(), path.to_str().unwrap().into()];
    Some(Launch { program: env!("CARGO_BIN_EXE_snigate").into(), args })
}

/// One proxy with `list` in front of the allowlist: started, loaded, reloaded, stopped.
async fn measure(b: &Bench, peer: &str, dir: &Path, list: &[String], denied: &[u8]) -> Row {
    let mut row = Row::default();
    let [addr, closed] = free_ports();
    let mut site = Site {
        dir,
        addr,
        backend: b.backend,
        closed,
        nofile: b.nofile,
        deny: list,
        generation: 1,
        reloadable: true,
        workers: 1,
    };
    let Some(launch) = configure(peer, &site) else {
        row.why = Some("not installed".into());
        return row;
    };
    let args: Vec<&str> = launch.args.iter().map(String::as_str).collect();
    let err = dir.join(format!("{peer}.err"));
    let (proc, took) =
        match Proc::launch(peer, &launch.program, &args, b.pinned, &[addr], err.to_str().unwrap(), b.start_within) {
            Ok(started) => started,
            Err(e) => {
                let within = format!("did not start within {} s", b.start_within.as_secs());
                row.why = Some(if e.contains("did not start") { within } else { e.lines().take(2).collect() });
                return row;
            }
        };
    row.start = Some(took.as_secs_f64());
    let proc = Rc::new(proc);
    let mut buf = vec![0u8; 16 << 10];
    let deadline = Instant::now() + ANSWER_WITHIN;
    while verdict(addr, &b.probe, &mut buf).await != Some(true) {
        if Instant::now() > deadline {
            row.why = Some(format!("listens but answered no allowed hello within {} s", ANSWER_WITHIN.as_secs()));
            return row;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    row.rss_start = Some(proc.memory("VmRSS:") as f64);
    row.pss_start = Some(proc.pss() as f64);

    let t = Target { name: peer.into(), addr, proc: Some(proc.clone()) };
    let d = Duration::from_secs_f64(b.secs);
    row.allowed = Some(load(&t, &b.allowed, Expect::Response(RESPONSE), CONC, d, MAX_CONNS, b.tick).await);
    row.denied = Some(load(&t, denied, Expect::Denied, CONC, d, MAX_CONNS, b.tick).await);
    drop(t);
    row.rss_load = Some(proc.memory("VmRSS:") as f64);

    // The new list, written before the signal; the configuration now names it.
    let mut grown = list.to_vec();
    grown.push(PROBE.into());
    site.deny = &grown;
    site.generation = 2;
    configure(peer, &site);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let steady = proc.memory("VmRSS:") as f64;
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (stop, pid) = (stop.clone(), proc.pid());
        std::thread::spawn(move || {
            let mut peak = 0;
            while !stop.load(Ordering::Relaxed) {
                peak = peak.max(memory_of(pid, "status", "VmRSS:"));
                std::thread::sleep(SAMPLE);
            }
            peak
        })
    };
    let t0 = Instant::now();
    proc.signal(peers::reload_signal(peer));
    let (mut streak, mut first) = (0, None);
    while streak < STREAK && t0.elapsed() < RELOAD_WITHIN {
        if verdict(addr, &b.probe, &mut buf).await == Some(false) {
            first = first.or(Some(t0.elapsed()));
            streak += 1;
        } else {
            (streak, first) = (0, None);
        }
        tokio::time::sleep(SAMPLE).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.join().unwrap() as f64;
    match first.filter(|_| streak >= STREAK) {
        Some(took) => {
            row.reload = Some(took.as_secs_f64());
            row.reload_peak = Some(peak / steady);
        }
        None => row.why = Some(format!("reload: {PROBE} not denied within {} s", RELOAD_WITHIN.as_secs())),
    }
    row
}

/// One connection with `hello`: `Some(true)` answered by the backend, `Some(false)` closed by the
/// proxy without an answer, `None` anything else (a failure, a timeout).
async fn verdict(addr: SocketAddr, hello: &[u8], buf: &mut [u8]) -> Option<bool> {
    match tokio::time::timeout(CONN_TIMEOUT, one(addr, hello, buf)).await {
        Ok(Ok((n, "eof"))) if n == RESPONSE => Some(true),
        Ok(Ok((n, _))) if n <= 64 => Some(false),
        _ => None,
    }
}

/// A figure: its title, whether higher is better, its value in a row and how it prints.
struct Figure {
    title: &'static str,
    higher: bool,
    value: fn(&Row) -> Option<f64>,
    decimals: usize,
}

const MIB: f64 = (1 << 20) as f64;

/// The figures, in groups.
fn figures() -> Vec<(&'static str, Vec<Figure>)> {
    let f = |title, higher, value, decimals| Figure { title, higher, value, decimals };
    vec![
        (
            "Start and memory",
            vec![
                f("start → listening, s", false, |r| r.start, 3),
                f("VmRSS after start, MiB", false, |r| r.rss_start.map(|b| b / MIB), 1),
                f("PSS after start, MiB", false, |r| r.pss_start.map(|b| b / MIB), 1),
                f("VmRSS after the load, MiB", false, |r| r.rss_load.map(|b| b / MIB), 1),
            ],
        ),
        (
            "Allowed hellos, concurrency 16",
            vec![
                f("conns/s", true, |r| r.allowed.as_ref().map(Run::rate), 0),
                f("CPU ms per 1k connections", false, |r| r.allowed.as_ref().map(Run::cpu_per_k), 0),
                f("p99 latency, ms", false, |r| r.allowed.as_ref().map(|x| x.pct(0.99)), 2),
            ],
        ),
        (
            "Denied hellos (a listed name; N = 0: the default deny), concurrency 16",
            vec![
                f("denies/s", true, |r| r.denied.as_ref().map(Run::rate), 0),
                f("CPU ms per 1k rejects", false, |r| r.denied.as_ref().map(Run::cpu_per_k), 0),
            ],
        ),
        (
            "Reload (one name added to the list)",
            vec![
                f("signal → new verdict, s", false, |r| r.reload, 3),
                f("peak VmRSS ÷ steady", false, |r| r.reload_peak, 2),
            ],
        ),
    ]
}

fn print(
    rows: &BTreeMap<(String, usize), Row>,
    sizes: &[usize],
    peers: &[String],
    b: &Bench,
    benching: bool,
    source: &str,
) {
    println!(
        "\nsnigate {} | {} | {} s per load run | deny list: {source}\n",
        if benching { "release" } else { "debug (test mode)" },
        if b.pinned { "proxy on CPU 0, load + backend on CPU 1" } else { "not pinned" },
        b.secs
    );
    // One footnote per row that stopped short.
    let mut notes: Vec<String> = Vec::new();
    let mut note_of: BTreeMap<(String, usize), usize> = BTreeMap::new();
    for ((peer, n), row) in rows {
        if let Some(why) = &row.why {
            notes.push(format!("{peer}, N = {n}: {why}"));
            note_of.insert((peer.clone(), *n), notes.len());
        }
    }
    let head: Vec<String> = sizes.iter().map(|n| format!("N = {n}")).collect();
    for (group, figures) in figures() {
        println!("### {group}\n");
        for fig in figures {
            println!("| {} | {} |", fig.title, head.join(" | "));
            println!("| --- |{}", " ---: |".repeat(sizes.len()));
            for peer in peers {
                let cells: Vec<String> = sizes
                    .iter()
                    .map(|&n| {
                        let key = (peer.clone(), n);
                        match rows.get(&key).and_then(fig.value).filter(|v| v.is_finite()) {
                            Some(v) => format!("{v:.*}", fig.decimals),
                            None => note_of.get(&key).map_or("-".into(), |k| format!("- [{k}]")),
                        }
                    })
                    .collect();
                println!("| {peer} | {} |", cells.join(" | "));
            }
            let ratios: Vec<String> = sizes
                .iter()
                .filter_map(|&n| {
                    let ours = rows.get(&("snigate".to_string(), n)).and_then(fig.value)?;
                    let best = peers
                        .iter()
                        .filter(|p| *p != "snigate")
                        .filter_map(|p| Some((p, rows.get(&(p.clone(), n)).and_then(fig.value)?)))
                        .filter(|(_, v)| v.is_finite())
                        .reduce(|a, c| if (c.1 > a.1) == fig.higher { c } else { a })?;
                    Some(format!("N = {n}: {:.2}× ({})", ours / best.1, best.0))
                })
                .collect();
            if !ratios.is_empty() {
                let better = if fig.higher { "higher" } else { "lower" };
                println!("\nsnigate ÷ best peer ({better} is better): {}", ratios.join("; "));
            }
            println!();
        }
    }
    if !notes.is_empty() {
        println!("Not measured:\n");
        for (i, note) in notes.iter().enumerate() {
            println!("{}. {note}", i + 1);
        }
        println!();
    }
    println!("errors and deny endings:\n");
    for ((peer, n), row) in rows {
        for (kind, run) in [("allowed", &row.allowed), ("denied", &row.denied)] {
            if let Some(run) = run {
                println!("- {peer} N = {n} {kind}: {} ok, errors {:?}, endings {:?}", run.ok, run.errors, run.endings);
            }
        }
    }
}
