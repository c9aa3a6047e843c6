//! End to end, side by side: snigate against HAProxy, nginx and sniproxy with the same
//! allowlist, the floor (a proxy that only accepts, connects and copies: `support::floor`) and
//! a direct-to-backend baseline, in one run under the same conditions.
//!
//! Run through `benches/compare.sh` (installs the peers, raises `ulimit -n`, sets
//! `net.ipv4.tcp_max_tw_buckets=0` for the run). Directly: `cargo bench --bench e2e`, with
//! - `SNIGATE_E2E_PEERS` (default `floor,haproxy,nginx,sniproxy`; a peer not installed is
//!   skipped; `floor` is this binary run as [`support::floor`], and has no denial pass: it has
//!   no rules),
//! - `SNIGATE_E2E_SECS` (default 3): seconds per load run,
//! - `SNIGATE_E2E_ROUNDS` (default 3): rounds of the load runs, interleaved across proxies,
//! - `SNIGATE_E2E_IDLE` (default 10000): idle connections held open for memory,
//! - `SNIGATE_E2E_BULK_MIB` (default 1024): bytes of one bulk response (0 skips bulk),
//! - `SNIGATE_E2E_WORKERS` (default 1): workers per proxy. 1: every proxy pinned to CPU 0, the
//!   load to CPU 1. More: nothing pinned; snigate `[runtime] threads`, HAProxy `nbthread`,
//!   nginx `worker_processes` (with `reuseport`, its fastest form for several workers) set to
//!   it, sniproxy as it is (single-threaded), and one more row, snigate with one worker, for
//!   the scaling,
//! - `SNIGATE_E2E_BASELINE=PATH`: another snigate binary (an earlier build) measured beside
//!   this one with the same configuration, as `snigate (baseline)`,
//! - `SNIGATE_E2E_STRACE=1`: also counts each proxy's system calls per connection with
//!   `strace -c -f` over 2,000 allowed and 2,000 denied connections (slows the proxy; a separate
//!   pass after the timed runs).
//! - `SNIGATE_E2E_ATTACH`: a command run beside each proxy during a separate pass of
//!   `SNIGATE_E2E_ATTACH_CONNS` (default 20,000) allowed connections at concurrency 16, then
//!   interrupted (SIGINT to its process group); `{pids}` in it is the proxy's pids, comma
//!   separated, and `{name}` its name. For example
//!   `perf record -e cpu-clock -g -o /tmp/{name}.perf -p {pids}`. `benches/profile.sh` uses it.
//! - `SNIGATE_BENCH_WRAP`: a command every proxy is started under (see `support::wrapper`).
//!
//! This process is the load generator and the backend (one current-thread runtime, pinned to
//! CPU 1 with one worker per proxy); every proxy runs pinned to CPU 0 (unpinned with more
//! workers, see `SNIGATE_E2E_WORKERS`). The backend answers without any
//! cryptography: it reads the whole ClientHello, writes a fixed response and closes, so the
//! figures are the proxies' own. Without `--bench` (as `cargo test --all-targets` runs it, debug
//! build) a short smoke run of snigate, the floor and direct only.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use support::load::{ALLOWED, Backend, DENIED, Expect, MAX_CONNS, RESPONSE, Run, Target, load, serve, swap_sni};
use support::peers::{self, RULES, SOURCE_LIMITS, Site};
use support::{Proc, clock_ticks, free_ports, nofile_limit, own_cpu_ticks, pin_self};

fn env(k: &str) -> Option<f64> {
    std::env::var(k).ok().and_then(|v| v.parse().ok())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Started as the floor proxy: runs it and never returns.
    support::floor::main(&args);
    let benching = args.iter().any(|a| a == "--bench");
    let secs = if benching { env("SNIGATE_E2E_SECS").unwrap_or(3.0) } else { 0.3 };
    let rounds = if benching { env("SNIGATE_E2E_ROUNDS").unwrap_or(3.0) as usize } else { 1 };
    let mut idle_n = if benching { env("SNIGATE_E2E_IDLE").unwrap_or(10_000.0) as usize } else { 50 };
    let bulk = if benching { env("SNIGATE_E2E_BULK_MIB").unwrap_or(1024.0) as u64 } else { 8 } << 20;
    let peers: Vec<String> = if benching {
        std::env::var("SNIGATE_E2E_PEERS")
            .unwrap_or_else(|_| "floor,haproxy,nginx,sniproxy".into())
            .split(',')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect()
    } else {
        vec!["floor".to_string()]
    };
    // Each idle connection costs this process two descriptors (client and backend side), and
    // the proxy two (client and upstream).
    let nofile = nofile_limit();
    if (idle_n as u64) * 2 + 200 > nofile {
        let fit = (nofile.saturating_sub(200) / 2) as usize;
        eprintln!(
            "ulimit -n is {nofile}: idle connections lowered from {idle_n} to {fit} (raise it: benches/compare.sh)"
        );
        idle_n = fit;
    }

    let workers = if benching { env("SNIGATE_E2E_WORKERS").unwrap_or(1.0).max(1.0) as usize } else { 1 };
    let pinned = workers == 1 && pin_self();
    let tick = clock_ticks();
    let dir = tempfile::tempdir().unwrap();
    let backend_std = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_addr = backend_std.local_addr().unwrap();

    // Hellos: the recorded headless Chromium hello (1,779 B, one record), allowed and denied,
    // and the allowed one split across two TLS records for the probe.
    let recorded = common::recording("chromium.bin").bytes;
    let allowed = swap_sni(&recorded, DENIED, ALLOWED);
    let denied = recorded.clone();
    let split = common::splittings(&allowed).into_iter().find(|(n, _)| *n == "2 records").unwrap().1;

    let mut targets = vec![Target { name: "direct".into(), addr: backend_addr, proc: None }];
    let own = env!("CARGO_BIN_EXE_snigate").to_string();
    let (snigate, snigate_addr, copy_addr) = start_snigate(&own, "snigate", dir.path(), backend_addr, pinned, workers);
    targets.push(Target { name: "snigate".into(), addr: snigate_addr, proc: Some(snigate.clone()) });
    if workers > 1 {
        let name = "snigate 1 worker";
        let (one, addr, _) = start_snigate(&own, name, dir.path(), backend_addr, pinned, 1);
        targets.push(Target { name: name.into(), addr, proc: Some(one) });
    }
    if let Ok(baseline) = std::env::var("SNIGATE_E2E_BASELINE") {
        let name = "snigate (baseline)";
        let (base, addr, _) = start_snigate(&baseline, name, dir.path(), backend_addr, pinned, workers);
        targets.push(Target { name: name.into(), addr, proc: Some(base) });
    }
    for peer in &peers {
        match start_peer(peer, dir.path(), backend_addr, pinned, nofile, workers) {
            Some((proc, addr)) => targets.push(Target { name: peer.clone(), addr, proc: Some(Rc::new(proc)) }),
            None => eprintln!("{peer}: not installed, skipped (benches/compare.sh installs it)"),
        }
    }

    for t in &targets[1..] {
        eprintln!("{}: pid {}", t.name, t.proc.as_ref().unwrap().pid());
    }
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let backend = Arc::new(Backend::default());
    let report = rt.block_on(async {
        let listener = TcpListener::from_std({
            backend_std.set_nonblocking(true).unwrap();
            backend_std
        })
        .unwrap();
        tokio::spawn(serve(listener, backend.clone()));
        let mut report = Report::default();

        // Split-hello probe and idle memory first, before load runs leave freed memory in the
        // proxies' allocators for the idle connections to reuse.
        for t in &targets[1..] {
            backend.expect.store(split.len(), Ordering::Relaxed);
            backend.respond.store(RESPONSE as u64, Ordering::Relaxed);
            let r = load(t, &split, Expect::Response(RESPONSE), 1, Duration::from_secs(5), 1, tick).await;
            let verdict = if r.ok == 1 {
                "passes".to_string()
            } else {
                format!("rejected ({})", r.errors.keys().copied().collect::<Vec<_>>().join(", "))
            };
            report.split.insert(t.name.clone(), verdict);
        }
        for t in targets[1..].iter().filter(|_| idle_n > 0) {
            let p = t.proc.as_ref().unwrap();
            // Warm up: the first connections allocate what every later one reuses.
            backend.expect.store(allowed.len(), Ordering::Relaxed);
            load(t, &allowed, Expect::Response(RESPONSE), 4, Duration::from_secs(1), 200, tick).await;
            report.idle.insert(t.name.clone(), idle(t.addr, p, &allowed, idle_n, &backend).await);
        }

        for round in 0..rounds {
            for t in &targets {
                backend.expect.store(allowed.len(), Ordering::Relaxed);
                backend.respond.store(RESPONSE as u64, Ordering::Relaxed);
                let d = Duration::from_secs_f64(secs);
                for c in [1, 16, 256] {
                    let r = load(t, &allowed, Expect::Response(RESPONSE), c, d, MAX_CONNS, tick).await;
                    report.runs.entry((t.name.clone(), format!("c{c}"))).or_default().push(r);
                }
                if t.proc.is_some() && t.name != FLOOR {
                    let r = load(t, &denied, Expect::Denied, 16, d, MAX_CONNS, tick).await;
                    report.runs.entry((t.name.clone(), "deny".into())).or_default().push(r);
                }
                eprintln!("round {} {}: done", round + 1, t.name);
            }
        }
        // What the churn of the load runs left resident, their connections all closed.
        tokio::time::sleep(Duration::from_millis(500)).await;
        for t in targets[1..].iter().filter(|_| rounds > 0) {
            report.settled.insert(t.name.clone(), t.proc.as_ref().unwrap().memory("VmRSS:"));
        }

        backend.expect.store(allowed.len(), Ordering::Relaxed);
        backend.respond.store(bulk, Ordering::Relaxed);
        let mut bulk_targets: Vec<(String, SocketAddr, Option<Rc<Proc>>)> =
            targets.iter().map(|t| (t.name.clone(), t.addr, t.proc.clone())).collect();
        bulk_targets.insert(2, ("snigate (copy)".into(), copy_addr, Some(snigate.clone())));
        for _ in 0..if bulk > 0 { 3 } else { 0 } {
            for (name, addr, proc) in &bulk_targets {
                let t = Target { name: name.clone(), addr: *addr, proc: proc.clone() };
                let own = own_cpu_ticks();
                let r = load(&t, &allowed, Expect::Response(bulk as usize), 1, Duration::from_secs(60), 1, tick).await;
                let gbps = if r.ok == 1 { bulk as f64 * 8.0 / r.secs / 1e9 } else { f64::NAN };
                let load_cpu = (own_cpu_ticks() - own) as f64 / tick;
                report.bulk.entry(name.clone()).or_default().push(Bulk {
                    gbps,
                    proxy_busy: r.cpu / r.secs,
                    load_busy: load_cpu / r.secs,
                });
            }
        }
        if std::env::var_os("SNIGATE_E2E_STRACE").is_some() {
            backend.respond.store(RESPONSE as u64, Ordering::Relaxed);
            for t in &targets[1..] {
                for (kind, hello, expect) in
                    [("allow", &allowed, Expect::Response(RESPONSE)), ("deny", &denied, Expect::Denied)]
                {
                    if kind == "deny" && t.name == FLOOR {
                        continue;
                    }
                    backend.expect.store(allowed.len(), Ordering::Relaxed);
                    let p = t.proc.as_ref().unwrap();
                    let out = dir.path().join(format!("{}-{kind}.strace", t.name));
                    let mut strace = p.strace(out.to_str().unwrap());
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    let r = load(t, hello, expect, 16, Duration::from_secs(60), 2000, tick).await;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                    let _ = std::process::Command::new("kill").args(["-INT", &strace.id().to_string()]).status();
                    let _ = strace.wait();
                    let text = std::fs::read_to_string(&out).unwrap_or_default();
                    report.syscalls.insert((t.name.clone(), kind), (r.ok, parse_strace(&text)));
                }
            }
        }
        if let Ok(command) = std::env::var("SNIGATE_E2E_ATTACH") {
            let n = env("SNIGATE_E2E_ATTACH_CONNS").unwrap_or(20_000.0) as u64;
            backend.expect.store(allowed.len(), Ordering::Relaxed);
            backend.respond.store(RESPONSE as u64, Ordering::Relaxed);
            for t in &targets[1..] {
                let attached = t.proc.as_ref().unwrap().attach(&command);
                tokio::time::sleep(Duration::from_millis(1000)).await;
                let r = load(t, &allowed, Expect::Response(RESPONSE), 16, Duration::from_secs(300), n, tick).await;
                tokio::time::sleep(Duration::from_millis(200)).await;
                support::interrupt(attached);
                eprintln!("{}: {} allowed connections attached ({:.1} s, errors {:?})", t.name, r.ok, r.secs, r.errors);
            }
        }
        for t in &targets[1..] {
            report.peak.insert(t.name.clone(), t.proc.as_ref().unwrap().memory("VmHWM:"));
        }
        report
    });
    drop(targets);
    drop(snigate);

    println!(
        "\nsnigate {} | {workers} worker(s) per proxy | {} | {rounds} round(s) of {secs} s per load run, medians (min–max over rounds) | \
         idle: {idle_n} connections | bulk: {} MiB per transfer, median of 3\n",
        if benching { "release" } else { "debug (test mode)" },
        if pinned { "proxy on CPU 0, load + backend on CPU 1" } else { "not pinned" },
        bulk >> 20
    );
    report.print();
    if !benching {
        for ((name, kind), runs) in &report.runs {
            for r in runs {
                assert!(r.errors.is_empty(), "{name} {kind}: {:?}", r.errors);
                assert!(r.ok > 0, "{name} {kind}: no connection completed");
            }
        }
        assert_eq!(report.split["snigate"], "passes");
    }
}

/// snigate (`program`) with `workers` workers and two `upstream` listeners: `splice = "auto"`
/// (the measured one) and `copy` (bulk only). Returns the process, the auto listener and the
/// copy listener.
fn start_snigate(
    program: &str,
    name: &str,
    dir: &std::path::Path,
    backend: SocketAddr,
    pinned: bool,
    workers: usize,
) -> (Rc<Proc>, SocketAddr, SocketAddr) {
    let [auto, copy] = free_ports();
    std::fs::write(dir.join("allow.rules"), RULES).unwrap();
    let config = format!(
        "[[listener]]\nname = \"auto\"\nlisten = \"{auto}\"\nmode = \"upstream\"\nupstream = \"{backend}\"\n\
         [[listener]]\nname = \"copy\"\nlisten = \"{copy}\"\nmode = \"upstream\"\nupstream = \"{backend}\"\nsplice = \"copy\"\n\
         [rules]\nfiles = [\"{}\"]\ndefault = \"deny\"\n[log]\nformat = \"off\"\n[metrics]\nlisten = \"127.0.0.1:0\"\n\
         [runtime]\nthreads = {workers}\n{SOURCE_LIMITS}",
        dir.join("allow.rules").display()
    );
    let proc = Proc::snigate_binary(program, name, dir, &config, pinned, &[auto, copy]);
    (Rc::new(proc), auto, copy)
}

/// The peer that only forwards: this binary, run as [`support::floor`].
const FLOOR: &str = "floor";

/// Writes `peer`'s configuration ([`peers::configure`]: the same allowlist, `workers` workers,
/// no per-connection logging) and starts it (on CPU 0 when `pinned`). The floor has no
/// configuration, and one worker whatever `workers` says.
fn start_peer(
    peer: &str,
    dir: &std::path::Path,
    backend: SocketAddr,
    pinned: bool,
    nofile: u64,
    workers: usize,
) -> Option<(Proc, SocketAddr)> {
    let [addr, closed] = free_ports();
    let site = Site { dir, addr, backend, closed, nofile, deny: &[], generation: 0, reloadable: false, workers };
    let launch = match peer {
        FLOOR => peers::Launch {
            program: std::env::current_exe().ok()?.to_str()?.to_string(),
            args: vec!["--floor".into(), addr.to_string(), backend.to_string()],
        },
        _ => peers::configure(peer, &site)?,
    };
    let args: Vec<&str> = launch.args.iter().map(String::as_str).collect();
    let err = dir.join(format!("{peer}.err"));
    Some((Proc::start(peer, &launch.program, &args, pinned, &[addr], err.to_str().unwrap()), addr))
}

/// Idle memory: opens `n` connections through the proxy, each with the allowed hello, waits
/// until the backend holds all of them (so the proxy has connected and replayed), and returns
/// the proxy's resident-memory growth per connection in bytes.
async fn idle(addr: SocketAddr, p: &Proc, hello: &[u8], n: usize, b: &Backend) -> Option<f64> {
    b.hold.store(true, Ordering::Relaxed);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let before = p.memory("VmRSS:");
    let mut open = Vec::with_capacity(n);
    let deadline = Instant::now() + Duration::from_secs(120);
    for chunk in 0..n.div_ceil(256) {
        let k = 256.min(n - chunk * 256);
        let batch = futures_join((0..k).map(|_| async {
            let mut s = TcpStream::connect(addr).await.ok()?;
            s.write_all(hello).await.ok()?;
            Some(s)
        }))
        .await;
        open.extend(batch.into_iter().flatten());
        if Instant::now() > deadline {
            break;
        }
    }
    while b.held.load(Ordering::Relaxed) < open.len() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let held = b.held.load(Ordering::Relaxed);
    let after = p.memory("VmRSS:");
    let opened = open.len();
    drop(open);
    b.hold.store(false, Ordering::Relaxed);
    let quiet = Instant::now() + Duration::from_secs(30);
    while b.held.load(Ordering::Relaxed) > 0 && Instant::now() < quiet {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    if held < n || opened < n {
        eprintln!("{}: idle: {opened} opened, {held} reached the backend, of {n}", p.name);
        return None;
    }
    Some(after.saturating_sub(before) as f64 / n as f64)
}

/// Awaits every future of `futs` concurrently on this task.
async fn futures_join<F: std::future::Future>(futs: impl Iterator<Item = F>) -> Vec<F::Output> {
    use std::task::Poll;
    let mut futs: Vec<std::pin::Pin<Box<F>>> = futs.map(Box::pin).collect();
    let mut out: Vec<Option<F::Output>> = futs.iter().map(|_| None).collect();
    std::future::poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
            if o.is_none() {
                match f.as_mut().poll(cx) {
                    Poll::Ready(v) => *o = Some(v),
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending { Poll::Pending } else { Poll::Ready(()) }
    })
    .await;
    out.into_iter().map(Option::unwrap).collect()
}

/// Everything measured, per target.
#[derive(Default)]
struct Report {
    /// (target, run kind: c1, c16, c256, deny) → one run per round.
    runs: BTreeMap<(String, String), Vec<Run>>,
    /// Bulk, per repetition.
    bulk: BTreeMap<String, Vec<Bulk>>,
    /// Resident bytes per idle connection.
    idle: BTreeMap<String, Option<f64>>,
    /// Peak resident bytes.
    peak: BTreeMap<String, u64>,
    /// Resident bytes once the load runs have ended.
    settled: BTreeMap<String, u64>,
    /// Split-hello probe verdict.
    split: BTreeMap<String, String>,
    /// (target, allow | deny) → (connections, calls per system call) under strace.
    syscalls: BTreeMap<(String, &'static str), (u64, Calls)>,
}

impl Bulk {
    /// The proxy's CPU seconds per GiB moved.
    fn cpu_per_gib(&self) -> f64 {
        self.proxy_busy / (self.gbps * 1e9 / 8.0 / (1u64 << 30) as f64)
    }
}

/// One bulk transfer.
struct Bulk {
    /// Throughput.
    gbps: f64,
    /// The proxy's CPU time over the transfer's time (1.0: one core busy throughout).
    proxy_busy: f64,
    /// This process's (load generator and backend) CPU time over the transfer's time.
    load_busy: f64,
}

/// Calls per system call.
type Calls = BTreeMap<String, u64>;

/// The calls column of `strace -c` output, by system call.
fn parse_strace(text: &str) -> Calls {
    let mut calls = BTreeMap::new();
    for line in text.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        // % time, seconds, usecs/call, calls, [errors,] syscall
        if f.len() >= 5
            && f[0].parse::<f64>().is_ok()
            && f[f.len() - 1] != "total"
            && let Ok(n) = f[3].parse::<u64>()
        {
            calls.insert(f[f.len() - 1].to_string(), n);
        }
    }
    calls
}

/// A figure's values for one proxy: one per round, or one for the single measurements.
type Values<'a> = Box<dyn Fn(&Report, &str) -> Vec<f64> + 'a>;

/// A row of the ratio table: name, values, higher is better.
type Figure<'a> = (&'a str, Values<'a>, bool);

/// `median (min–max)` of per-round ratios; the median alone for one value; `-` for none.
fn summary(ratios: &[f64]) -> String {
    let ratios: Vec<f64> = ratios.iter().copied().filter(|r| r.is_finite()).collect();
    if ratios.is_empty() {
        return "-".into();
    }
    let m = median(ratios.clone());
    let (lo, hi) = ratios.iter().fold((f64::MAX, f64::MIN), |(l, h), &x| (l.min(x), h.max(x)));
    if ratios.len() < 2 { format!("{m:.2}x") } else { format!("{m:.2}x ({lo:.2}–{hi:.2})") }
}

/// `v` rounded to a whole number; `-` when not measured.
fn whole(v: f64) -> String {
    if v.is_finite() { format!("{v:.0}") } else { "-".into() }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

impl Report {
    fn runs(&self, name: &str, kind: &str) -> &[Run] {
        self.runs.get(&(name.to_string(), kind.to_string())).map_or(&[], |v| v)
    }

    /// The median over rounds of `f`.
    fn med(&self, name: &str, kind: &str, f: impl Fn(&Run) -> f64) -> f64 {
        median(self.runs(name, kind).iter().map(f).collect())
    }

    fn spread(&self, name: &str, kind: &str, f: impl Fn(&Run) -> f64) -> String {
        let v: Vec<f64> = self.runs(name, kind).iter().map(f).collect();
        let (lo, hi) = v.iter().fold((f64::MAX, f64::MIN), |(l, h), &x| (l.min(x), h.max(x)));
        if v.len() < 2 { String::new() } else { format!(" ({lo:.0}–{hi:.0})") }
    }

    /// Medians of the bulk transfers: Gbit/s, the proxy's CPU and the load side's CPU (share
    /// of one core).
    fn bulk(&self, name: &str) -> (f64, f64, f64) {
        let v = self.bulk.get(name).map_or(&[][..], |v| v);
        let med = |f: fn(&Bulk) -> f64| median(v.iter().map(f).collect());
        (med(|b| b.gbps), med(|b| b.proxy_busy), med(|b| b.load_busy))
    }

    /// The ratio table's figures: name, values per round (one value for the single
    /// measurements), and whether higher is better.
    fn figures(&self) -> Vec<Figure<'_>> {
        let per_round = |kind: &'static str, f: fn(&Run) -> f64| -> Values<'_> {
            Box::new(move |r, n| r.runs(n, kind).iter().map(f).collect())
        };
        vec![
            ("conns/s c1", per_round("c1", Run::rate), true),
            ("conns/s c16", per_round("c16", Run::rate), true),
            ("conns/s c256", per_round("c256", Run::rate), true),
            ("p50 latency c1", per_round("c1", |x| x.pct(0.5)), false),
            ("p99 latency c1", per_round("c1", |x| x.pct(0.99)), false),
            ("p99 latency c16", per_round("c16", |x| x.pct(0.99)), false),
            ("CPU per 1k conns c16", per_round("c16", Run::cpu_per_k), false),
            ("CPU per 1k conns c256", per_round("c256", Run::cpu_per_k), false),
            ("denies/s c16", per_round("deny", Run::rate), true),
            ("CPU per 1k rejects", per_round("deny", Run::cpu_per_k), false),
            (
                "bulk Gbit/s (splice)",
                Box::new(|r, n| r.bulk.get(n).map_or(Vec::new(), |v| v.iter().map(|b| b.gbps).collect())),
                true,
            ),
            (
                "bulk CPU per GiB",
                Box::new(|r, n| r.bulk.get(n).map_or(Vec::new(), |v| v.iter().map(Bulk::cpu_per_gib).collect())),
                false,
            ),
            (
                "idle memory per conn",
                Box::new(|r, n| vec![r.idle.get(n).copied().flatten().unwrap_or(f64::NAN)]),
                false,
            ),
            ("RSS after the load", Box::new(|r, n| vec![r.settled.get(n).map_or(f64::NAN, |&b| b as f64)]), false),
            ("peak RSS", Box::new(|r, n| vec![r.peak.get(n).map_or(f64::NAN, |&b| b as f64)]), false),
        ]
    }

    fn print(&self) {
        let names: Vec<String> = {
            let mut n: Vec<String> = vec!["direct".into(), "snigate".into()];
            for (name, _) in self.runs.keys() {
                if !n.contains(name) {
                    n.push(name.clone());
                }
            }
            n
        };
        println!(
            "| proxy | conns/s c1 | conns/s c16 | conns/s c256 | p50 / p99 ms c1 | p50 / p99 ms c16 | p99 ms c256 | \
             CPU ms / 1k conns c16 | CPU ms / 1k conns c256 | denies/s c16 | CPU ms / 1k rejects | bulk Gbit/s | \
             bulk CPU % proxy / load | idle B / conn | RSS after load / peak MiB | split hello |"
        );
        println!(
            "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
        );
        let mut rows = names.clone();
        rows.insert(2.min(rows.len()), "snigate (copy)".into());
        for name in &rows {
            let (gbps, proxy_busy, load_busy) = self.bulk(name);
            let proxy = name != "direct";
            let busy = if proxy { format!("{:.0}", proxy_busy * 100.0) } else { "-".into() };
            let busy = format!("{busy} / {:.0}", load_busy * 100.0);
            if name == "snigate (copy)" {
                println!("| {name} | | | | | | | | | | | {gbps:.2} | {busy} | | | |");
                continue;
            }
            let dash = |s: String| if proxy { s } else { "-".into() };
            println!(
                "| {name} | {:.0}{} | {:.0}{} | {:.0}{} | {:.2} / {:.2} | {:.2} / {:.2} | {:.2} | {} | {} | {} | {} | {gbps:.2} | {busy} | {} | {} | {} |",
                self.med(name, "c1", Run::rate),
                self.spread(name, "c1", Run::rate),
                self.med(name, "c16", Run::rate),
                self.spread(name, "c16", Run::rate),
                self.med(name, "c256", Run::rate),
                self.spread(name, "c256", Run::rate),
                self.med(name, "c1", |r| r.pct(0.5)),
                self.med(name, "c1", |r| r.pct(0.99)),
                self.med(name, "c16", |r| r.pct(0.5)),
                self.med(name, "c16", |r| r.pct(0.99)),
                self.med(name, "c256", |r| r.pct(0.99)),
                dash(format!("{:.0}", self.med(name, "c16", Run::cpu_per_k))),
                dash(format!("{:.0}", self.med(name, "c256", Run::cpu_per_k))),
                dash(whole(self.med(name, "deny", Run::rate))),
                dash(whole(self.med(name, "deny", Run::cpu_per_k))),
                dash(self.idle.get(name).copied().flatten().map_or("-".into(), |b| format!("{b:.0}"))),
                dash(format!(
                    "{} / {}",
                    self.settled.get(name).map_or("-".into(), |b| format!("{:.1}", *b as f64 / (1 << 20) as f64)),
                    self.peak.get(name).map_or("-".into(), |b| format!("{:.1}", *b as f64 / (1 << 20) as f64))
                )),
                self.split.get(name).map_or("-", |s| s.as_str()),
            );
        }

        // snigate against each peer: >1 is better for snigate on every row. Ratios are taken
        // within each round (the proxies of a round run back to back, under the same load from
        // neighbours), then summarised: median (min–max) over the rounds.
        let peers: Vec<&String> =
            names.iter().filter(|n| !["direct", "snigate", FLOOR].contains(&n.as_str())).collect();
        if !peers.is_empty() {
            println!(
                "\nsnigate's advantage over each peer and over the best peer of each round (> 1: snigate better; \
                 rates are snigate/peer, costs peer/snigate; ratio per round, median (min–max))\n"
            );
            let head: Vec<&str> = peers.iter().map(|p| p.as_str()).collect();
            println!("| figure | {} | best peer |", head.join(" | "));
            println!("| --- |{}", " ---: |".repeat(peers.len() + 1));
            for (label, f, higher) in &self.figures() {
                let s = f(self, "snigate");
                if !s.iter().any(|v| v.is_finite()) {
                    continue; // not measured in this run (idle, bulk)
                }
                let values: Vec<Vec<f64>> = peers.iter().map(|p| f(self, p)).collect();
                let ratio = |v: f64, s: f64| if *higher { s / v } else { v / s };
                let mut cells: Vec<String> = values
                    .iter()
                    .map(|v| summary(&s.iter().zip(v).map(|(&s, &v)| ratio(v, s)).collect::<Vec<_>>()))
                    .collect();
                // The best peer: other builds and settings of snigate are columns, not peers.
                let best: Vec<f64> = (0..s.len())
                    .map(|i| {
                        let round = values
                            .iter()
                            .zip(&peers)
                            .filter(|(_, p)| !p.starts_with("snigate"))
                            .filter_map(|(v, _)| v.get(i).copied())
                            .filter(|v| v.is_finite());
                        let best =
                            if *higher { round.fold(f64::NAN, f64::max) } else { round.fold(f64::NAN, f64::min) };
                        ratio(best, s[i])
                    })
                    .collect();
                cells.push(summary(&best));
                println!("| {label} | {} |", cells.join(" | "));
            }
        }

        // Plain ratios against the floor, beside the same against each peer: what snigate spends
        // beyond the least a proxy does.
        let others: Vec<&String> = names.iter().filter(|n| *n != "direct" && *n != "snigate").collect();
        if others.iter().any(|n| *n == FLOOR) {
            println!(
                "\nsnigate ÷ the floor and ÷ each peer (plain ratios snigate/other: costs, latencies and memory > 1 \
                 are what snigate spends beyond the other, rates > 1 are snigate faster; ratio per round, median \
                 (min–max); the floor has no rules, hence no denials)\n"
            );
            let head: Vec<&str> = others.iter().map(|p| p.as_str()).collect();
            println!("| figure | {} |", head.join(" | "));
            println!("| --- |{}", " ---: |".repeat(others.len()));
            for (label, f, _) in &self.figures() {
                let s = f(self, "snigate");
                if !s.iter().any(|v| v.is_finite()) {
                    continue;
                }
                let cells: Vec<String> = others
                    .iter()
                    .map(|p| summary(&s.iter().zip(f(self, p)).map(|(&s, v)| s / v).collect::<Vec<_>>()))
                    .collect();
                println!("| {label} | {} |", cells.join(" | "));
            }
        }

        if !self.syscalls.is_empty() {
            println!("\nsystem calls per connection (strace -c -f, 2,000 connections at concurrency 16)\n");
            let cols: Vec<&(String, &str)> = self.syscalls.keys().collect();
            let mut names: Vec<&String> = self.syscalls.values().flat_map(|(_, c)| c.keys()).collect();
            names.sort();
            names.dedup();
            println!("| syscall | {} |", cols.iter().map(|(n, k)| format!("{n} {k}")).collect::<Vec<_>>().join(" | "));
            println!("| --- |{}", " ---: |".repeat(cols.len()));
            let per = |col: &(String, &'static str), name: Option<&String>| {
                let (conns, calls) = &self.syscalls[col];
                let n: u64 = match name {
                    Some(name) => calls.get(name).copied().unwrap_or(0),
                    None => calls.values().sum(),
                };
                n as f64 / (*conns).max(1) as f64
            };
            for name in names {
                if cols.iter().all(|c| per(c, Some(name)) < 0.05) {
                    continue;
                }
                println!(
                    "| {name} | {} |",
                    cols.iter().map(|c| format!("{:.1}", per(c, Some(name)))).collect::<Vec<_>>().join(" | ")
                );
            }
            println!(
                "| **total** | {} |",
                cols.iter().map(|c| format!("**{:.1}**", per(c, None))).collect::<Vec<_>>().join(" | ")
            );
        }

        println!("\nerrors and deny endings (all rounds):\n");
        for ((name, kind), runs) in &self.runs {
            let mut errors: BTreeMap<&str, u64> = BTreeMap::new();
            let mut endings: BTreeMap<&str, u64> = BTreeMap::new();
            for r in runs {
                for (k, v) in &r.errors {
                    *errors.entry(k).or_default() += v;
                }
                for (k, v) in &r.endings {
                    *endings.entry(k).or_default() += v;
                }
            }
            if !errors.is_empty() || !endings.is_empty() {
                println!("- {name} {kind}: errors {errors:?}, endings {endings:?}");
            }
        }
    }
}
