//! QUIC listeners measured on a running snigate (`protocol = "quic"`, `upstream` mode, in front
//! of a local UDP sink that echoes every datagram back to its sender):
//! - `forward`: forwarding throughput of one allowed flow against the same load sent straight
//!   to the sink, alternating, in one run. The flow opens with the recorded aioquic v1 Initial
//!   (SNI acme.my.salesforce.com, allowed); 1,200-byte short-header datagrams follow, at most
//!   `SNIGATE_QUIC_WINDOW` of them in flight (sent and not echoed back yet), so that no socket
//!   buffer overflows. When nothing is echoed for 100 ms, what is in flight is given up (lost;
//!   late if its echo comes after all). snigate's CPU is counted per datagram it forwarded,
//!   either way.
//! - `memory`: resident memory per flow (VmRSS growth over the flows held): allowed flows (the
//!   aioquic Initial, forwarded and echoed) and flows still deciding (an Initial with the first
//!   half of a hello), each from its own client socket.
//! - `deny`: denied Initials per CPU-second. Initials naming evil.my.salesforce.com, each a new
//!   flow (its own source address and port), are sent as fast as one loop can for
//!   `SNIGATE_QUIC_SECS`; snigate decides what its socket buffer takes
//!   (`snigate_connections_total{verdict="deny"}`), against its CPU time. Once with the
//!   default limits (a table of 10,000 flows, a denied flow remembered for 60 s), once with
//!   `max_flows` large enough that the table never fills.
//!
//! snigate runs pinned to CPU 0 (one thread), this process (load and sink) to CPU 1, when
//! `taskset` and two CPUs exist. snigate's CPU is utime + stime from `/proc/PID/stat`.
//!
//! Run: `cargo bench --bench quic` (release build). `SNIGATE_QUIC_SECS` (default 2) is the
//! length of each forwarding run and of each denied flood, `SNIGATE_QUIC_ROUNDS` (default 3)
//! the forwarding rounds (medians are reported), `SNIGATE_QUIC_WINDOW` (default 32) the
//! datagrams in flight, `SNIGATE_QUIC_FLOWS` (default 5000, lowered to what `ulimit -n`
//! allows) the flows held for each memory figure, `SNIGATE_QUIC_PARTS` (default
//! `forward,memory,deny`) the parts run. Without `--bench` (as `cargo test --all-targets` runs
//! it, debug build) a short smoke run of every part.

use std::collections::{BTreeMap, VecDeque};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use snigate::hello::quic::{Side, Version};
use snigate::internal::{crypto_frame, padded, seal_initial};

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/harness/mod.rs"]
mod harness;
mod support;

use support::{Proc, clock_ticks, fd_budget, free_port, free_udp_port, own_cpu_ticks, pin_self};

/// Bytes per datagram of the forwarding load: a client's Initial datagram size.
const DATAGRAM: usize = 1200;
/// The first byte of the load's datagrams: a short-header packet, which an allowed flow
/// forwards as it is.
const SHORT_HEADER: u8 = 0x40;
/// When nothing is echoed for this long, the datagrams in flight are given up.
const LOST_AFTER: Duration = Duration::from_millis(100);
/// Most datagrams one load run sends, whatever its length.
const MAX_SENT: u64 = 50_000_000;
/// The rules: the recorded Initials' name is allowed, everything else denied by default.
const RULES: &str = "allow acme.my.salesforce.com\n";
/// The denied flood's name (the length of the allowed one, see `common::hello_message_for`).
const DENIED_SNI: &str = "evil.my.salesforce.com";
/// Limits under which one source (127.0.0.1) may hold every flow of the memory figures.
const ROOMY: &str = "max_flows = 1000000\nmax_connections = 1000000\nmax_connections_per_source = 1000000\n\
                     max_hellos_per_source = 1000000\nmax_quic_flows_per_source = 1000000\nhello_timeout = 300\n\
                     flow_idle_timeout = 300\n";

/// The run's sizes: the knobs with `--bench`, a smoke run's without.
struct Settings {
    /// A release run (`--bench`), not the test suite's smoke run.
    bench: bool,
    /// Each forwarding run's and each flood's length.
    secs: f64,
    /// Forwarding rounds.
    rounds: usize,
    /// Forwarded datagrams in flight.
    window: usize,
    /// Flows held for each memory figure.
    flows: usize,
    /// Distinct Initials (DCIDs) the denied flood cycles through.
    pool: usize,
}

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<f64>().ok());
    let s = if bench {
        Settings {
            bench,
            secs: env("SNIGATE_QUIC_SECS").unwrap_or(2.0),
            rounds: env("SNIGATE_QUIC_ROUNDS").unwrap_or(3.0) as usize,
            window: env("SNIGATE_QUIC_WINDOW").unwrap_or(32.0) as usize,
            // Client sockets: one per flow held, two figures; snigate: one per allowed flow.
            flows: (env("SNIGATE_QUIC_FLOWS").unwrap_or(5000.0) as usize).min(fd_budget().saturating_sub(256) / 2),
            pool: 4096,
        }
    } else {
        Settings { bench, secs: 0.2, rounds: 1, window: 8, flows: 50, pool: 16 }
    };
    assert!(s.secs > 0.0 && s.rounds > 0 && s.window > 0 && s.flows > 0);
    let parts = std::env::var("SNIGATE_QUIC_PARTS").unwrap_or_else(|_| "forward,memory,deny".into());
    let pinned = pin_self();
    let sink = Sink::start();
    let dir = tempfile::tempdir().unwrap();
    let mut report = vec![format!(
        "QUIC through snigate ({}) | snigate {}",
        if s.bench { "release" } else { "debug, smoke run" },
        if pinned { "on CPU 0 (one thread), load and sink on CPU 1" } else { "not pinned" }
    )];
    for part in parts.split(',') {
        report.push(match part.trim() {
            "forward" => forwarding(dir.path(), &sink, &s, pinned),
            "memory" => memory(dir.path(), &sink, &s, pinned),
            "deny" => denying(dir.path(), &sink, &s, pinned),
            other => panic!("SNIGATE_QUIC_PARTS: no part {other:?} (forward, memory, deny)"),
        });
    }
    drop(sink);
    println!("{}", report.join("\n\n"));
}

/// Forwarding: direct and through snigate, alternating; the section of the report.
fn forwarding(dir: &Path, sink: &Sink, s: &Settings, pinned: bool) -> String {
    let initial = common::quic_capture("aioquic-v1.hex");
    let tick = clock_ticks();
    let snigate = Snigate::start(dir, "forward", sink.addr, "", pinned);
    let mut direct = Vec::new();
    let mut through = Vec::new();
    for _ in 0..s.rounds {
        direct.push(forward(None, sink.addr, sink, &initial, s, tick));
        through.push(forward(Some(&snigate.proc), snigate.listen, sink, &initial, s, tick));
    }
    let mut out = vec![
        format!(
            "forwarding one allowed flow: {DATAGRAM}-byte datagrams echoed by a UDP sink, at most {} in flight, \
             {} round(s) of {:.1} s, medians",
            s.window, s.rounds, s.secs
        ),
        "| path | datagrams/s each way | lost | late (> 100 ms) | snigate CPU µs per datagram forwarded | load CPU % |"
            .into(),
        "| --- | ---: | ---: | ---: | ---: | ---: |".into(),
    ];
    for (name, runs) in [("direct", &direct), ("snigate", &through)] {
        let sum = |f: fn(&Run) -> u64| runs.iter().map(f).sum::<u64>();
        let cpu = match name {
            "direct" => "-".to_string(),
            _ => format!("{:.2}", median(runs.iter().map(|r| r.snigate_cpu / r.forwarded as f64 * 1e6).collect())),
        };
        out.push(format!(
            "| {name} | {:.0} | {} of {} | {} | {cpu} | {:.0} |",
            median(runs.iter().map(Run::rate).collect()),
            sum(|r| r.sent - r.echoed - r.late),
            sum(|r| r.sent),
            sum(|r| r.late),
            median(runs.iter().map(|r| r.load_cpu / r.secs * 100.0).collect()),
        ));
    }
    let ratios: Vec<f64> = direct.iter().zip(&through).map(|(d, t)| t.rate() / d.rate()).collect();
    let listed: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    out.push(format!("snigate ÷ direct, datagrams/s: {:.2}x (per round: {})", median(ratios), listed.join(", ")));
    out.join("\n")
}

/// Memory per flow, allowed and deciding; the section of the report.
fn memory(dir: &Path, sink: &Sink, s: &Settings, pinned: bool) -> String {
    let initial = common::quic_capture("aioquic-v1.hex");
    let snigate = Snigate::start(dir, "memory", sink.addr, ROOMY, pinned);
    open_flow(&UdpSocket::bind("127.0.0.1:0").unwrap(), snigate.listen, &initial);
    settle();
    let idle = snigate.proc.memory("VmRSS:");
    let allowed = allowed_flows(snigate.listen, &initial, s.flows);
    settle();
    let after_allowed = snigate.proc.memory("VmRSS:");
    let (deciding, held) = deciding_flows(&snigate, s.flows, 1 + allowed.len());
    settle();
    let after_deciding = snigate.proc.memory("VmRSS:");
    let opened = allowed.len();
    drop((allowed, deciding, snigate));
    let per = |before: u64, after: u64, n: usize| after.saturating_sub(before) as f64 / n.max(1) as f64;
    [
        format!("memory: flows held, each from its own client socket ({} asked for each)", s.flows),
        "| flow | held | RSS per flow |".into(),
        "| --- | ---: | ---: |".into(),
        format!(
            "| allowed: the aioquic Initial forwarded and echoed | {} | {:.0} B |",
            opened,
            per(idle, after_allowed, opened)
        ),
        format!(
            "| deciding: an Initial with half a hello | {held} | {:.0} B |",
            per(after_allowed, after_deciding, held)
        ),
    ]
    .join("\n")
}

/// Denied Initials per CPU-second, with the default limits and with a table that never fills;
/// the section of the report.
fn denying(dir: &Path, sink: &Sink, s: &Settings, pinned: bool) -> String {
    let pool = denied_initials(s.pool);
    let tick = clock_ticks();
    let mut out = vec![
        format!(
            "denied Initials ({DENIED_SNI}), each a new flow and DCID ({} DCIDs cycled), {:.1} s each",
            s.pool, s.secs
        ),
        "| limits | sent | denied by snigate | dropped by snigate | dropped by the kernel | snigate CPU s | \
         Initials per CPU-second | Initials/s |"
            .into(),
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |".into(),
    ];
    for (label, limits) in [("default", ""), ("max_flows = 1000000", "max_flows = 1000000\n")] {
        let snigate = Snigate::start(dir, "deny", sink.addr, limits, pinned);
        let f = flood(&snigate, &pool, s.secs, tick);
        out.push(format!(
            "| {label} | {} | {} | {} | {} | {:.2} | {:.0} | {:.0} |",
            f.sent,
            f.denied,
            f.dropped,
            f.kernel,
            f.cpu,
            f.denied as f64 / f.cpu,
            f.denied as f64 / f.secs
        ));
    }
    out.join("\n")
}

/// A release snigate with one QUIC listener in `upstream` mode to `upstream`, and its metrics
/// endpoint.
struct Snigate {
    /// The process: its CPU time and memory.
    proc: Proc,
    /// The QUIC listener.
    listen: SocketAddr,
    /// `/metrics`: the flows it decided and dropped.
    metrics: SocketAddr,
}

impl Snigate {
    fn start(dir: &Path, name: &str, upstream: SocketAddr, limits: &str, pinned: bool) -> Snigate {
        let (listen, metrics) = (free_udp_port(), free_port());
        let rules = dir.join("quic.rules");
        std::fs::write(&rules, RULES).unwrap();
        let config = format!(
            "[[listener]]\nname = \"quic\"\nlisten = \"{listen}\"\nprotocol = \"quic\"\nmode = \"upstream\"\n\
             upstream = \"{upstream}\"\n[rules]\nfiles = [\"{}\"]\n[limits]\n{limits}[log]\nformat = \"off\"\n\
             [metrics]\nlisten = \"{metrics}\"\n",
            rules.display()
        );
        let proc = Proc::snigate(name, dir, &config, pinned, &[metrics]);
        Snigate { proc, listen, metrics }
    }

    /// The sum of `name`'s samples whose labels include every one of `labels`.
    fn metric(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        let mut s = TcpStream::connect_timeout(&self.metrics, Duration::from_secs(5)).expect("metrics endpoint");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let request = format!("GET /metrics HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n", self.metrics);
        s.write_all(request.as_bytes()).unwrap();
        let mut response = String::new();
        s.read_to_string(&mut response).unwrap();
        let (_, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
        let wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
        let samples: BTreeMap<String, f64> = harness::samples(body);
        samples
            .iter()
            .filter(|(key, _)| {
                key.strip_prefix(name).is_some_and(|rest| {
                    rest.starts_with('{') && wanted.iter().all(|w| rest[1..rest.len() - 1].split(',').any(|l| l == w))
                })
            })
            .map(|(_, v)| v)
            .sum()
    }
}

/// A UDP socket on 127.0.0.1 that echoes every datagram to its sender, on its own thread.
struct Sink {
    /// Where the flows' upstream is.
    addr: SocketAddr,
    /// Datagrams received: what reached the sink, against what was sent.
    received: Arc<AtomicU64>,
    /// Set when dropped: the thread ends within `LOST_AFTER`.
    stop: Arc<AtomicBool>,
    /// Joined when dropped.
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Sink {
    fn start() -> Sink {
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket.set_read_timeout(Some(LOST_AFTER)).unwrap();
        roomy(&socket);
        let addr = socket.local_addr().unwrap();
        let (received, stop) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicBool::new(false)));
        let (count, stopped) = (received.clone(), stop.clone());
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 2048];
            while !stopped.load(Ordering::Relaxed) {
                if let Ok((n, from)) = socket.recv_from(&mut buf) {
                    count.fetch_add(1, Ordering::Relaxed);
                    let _ = socket.send_to(&buf[..n], from);
                }
            }
        });
        Sink { addr, received, stop, thread: Some(thread) }
    }

    fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One forwarding run.
struct Run {
    /// Datagrams sent after the Initial.
    sent: u64,
    /// Echoed within `LOST_AFTER`.
    echoed: u64,
    /// Echoed, but after its window was given up as lost.
    late: u64,
    /// Seconds from the first datagram sent to the last one echoed.
    secs: f64,
    /// Datagrams snigate forwarded, both ways (what the sink received, and what came back).
    forwarded: u64,
    /// snigate's CPU seconds over the run (0 for the direct path).
    snigate_cpu: f64,
    /// This process's CPU seconds (load and sink): whether the load core was the limit.
    load_cpu: f64,
}

impl Run {
    fn rate(&self) -> f64 {
        self.echoed as f64 / self.secs
    }
}

/// Sends `initial`, waits for each datagram's echo, and resends it all until they come (the
/// proxy may not be reading yet): the flow is then open. Panics after 10 s.
fn open_flow(socket: &UdpSocket, to: SocketAddr, initial: &[Vec<u8>]) {
    socket.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
    let mut buf = vec![0u8; 2048];
    for _ in 0..50 {
        for d in initial {
            socket.send_to(d, to).unwrap();
        }
        if initial.iter().all(|_| socket.recv_from(&mut buf).is_ok()) {
            return;
        }
    }
    panic!("no echo of the Initial through {to}");
}

/// One forwarding run to `to` (snigate's listener, or the sink itself), for `s.secs`.
fn forward(snigate: Option<&Proc>, to: SocketAddr, sink: &Sink, initial: &[Vec<u8>], s: &Settings, tick: f64) -> Run {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    roomy(&socket);
    open_flow(&socket, to, initial);
    socket.connect(to).unwrap();
    socket.set_read_timeout(Some(LOST_AFTER)).unwrap();
    let (sink0, cpu0, load0) = (sink.received(), snigate.map_or(0, Proc::cpu_ticks), own_cpu_ticks());
    let mut out = vec![0u8; DATAGRAM];
    out[0] = SHORT_HEADER;
    let mut buf = vec![0u8; 2048];
    // Sequence numbers below `floor` were given up as lost; their echoes count as late.
    let (mut sent, mut echoed, mut late, mut floor, mut in_flight) = (0u64, 0u64, 0u64, 0u64, 0usize);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(s.secs);
    let mut last = started;
    loop {
        let more = Instant::now() < deadline && sent < MAX_SENT;
        if !more && in_flight == 0 {
            break;
        }
        while more && in_flight < s.window {
            out[1..9].copy_from_slice(&sent.to_be_bytes());
            if socket.send(&out).is_ok() {
                in_flight += 1;
            }
            sent += 1;
        }
        match socket.recv(&mut buf) {
            Ok(n) if n == DATAGRAM && buf[0] == SHORT_HEADER => {
                if u64::from_be_bytes(buf[1..9].try_into().unwrap()) < floor {
                    late += 1;
                } else {
                    echoed += 1;
                    in_flight -= 1;
                    last = Instant::now();
                }
            }
            Ok(_) => {} // a late echo of the Initial
            Err(_) if more => (in_flight, floor) = (0, sent),
            Err(_) => break,
        }
    }
    // Echoes still on their way (the last window, if it was given up) are late; waiting for
    // them also lets the sink's count settle.
    while let Ok(n) = socket.recv(&mut buf) {
        late += u64::from(n == DATAGRAM && buf[0] == SHORT_HEADER);
    }
    let secs = (last - started).as_secs_f64().max(1e-9);
    Run {
        sent,
        echoed,
        late,
        secs,
        forwarded: sink.received() - sink0 + echoed + late,
        snigate_cpu: snigate.map_or(0, |p| p.cpu_ticks() - cpu0) as f64 / tick,
        load_cpu: (own_cpu_ticks() - load0) as f64 / tick,
    }
}

/// The load's sockets get large buffers (up to `net.core.rmem_max`): the queues that can
/// overflow are then snigate's own.
fn roomy(socket: &UdpSocket) {
    let _ = socket2::SockRef::from(socket).set_recv_buffer_size(4 << 20);
}

/// Lets snigate take what was sent, and its allocator settle.
fn settle() {
    std::thread::sleep(Duration::from_millis(1500));
}

/// Up to `n` allowed flows, each its own client socket that sent the Initial and got its echo,
/// opened 64 at a time (a burst larger than snigate's socket buffer would be dropped). A flow
/// whose echo has not come after a resend is left out. Bounded at 60 s.
fn allowed_flows(to: SocketAddr, initial: &[Vec<u8>], n: usize) -> Vec<UdpSocket> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut held = Vec::with_capacity(n);
    let mut buf = vec![0u8; 2048];
    while held.len() < n && Instant::now() < deadline {
        let batch: Vec<UdpSocket> =
            (0..64.min(n - held.len())).map(|_| UdpSocket::bind("127.0.0.1:0").unwrap()).collect();
        for socket in &batch {
            socket.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
            for d in initial {
                socket.send_to(d, to).unwrap();
            }
        }
        for socket in batch {
            let echoed = (0..2).any(|attempt| {
                if attempt > 0 {
                    initial.iter().for_each(|d| drop(socket.send_to(d, to)));
                }
                socket.recv_from(&mut buf).is_ok()
            });
            if echoed {
                held.push(socket);
            }
        }
    }
    held
}

/// `n` flows still deciding: each its own client socket that sent an Initial (its own DCID)
/// carrying the first half of a hello. Paced 64 at a time; the flows held are counted by
/// snigate's `active` gauge less `before` (bounded at 10 s).
fn deciding_flows(snigate: &Snigate, n: usize, before: usize) -> (Vec<UdpSocket>, usize) {
    let hello = common::hello_message_for("acme.my.salesforce.com");
    let half = &hello[..hello.len() / 2];
    let mut held = Vec::with_capacity(n);
    for i in 0..n {
        let dcid = (0x5eed_0000_0000_0000u64 + i as u64).to_be_bytes();
        let frames = padded(&crypto_frame(0, half), &dcid, &[]);
        let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
        socket
            .send_to(&seal_initial(Version::V1, &dcid, Side::Client, (&dcid, &[]), 0, &frames), snigate.listen)
            .unwrap();
        held.push(socket);
        if i % 64 == 63 {
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut active = 0;
    while Instant::now() < deadline {
        active = snigate.metric("snigate_active_connections", &[("listener", "quic")]) as usize;
        if active >= before + n {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    (held, active.saturating_sub(before))
}

/// `n` client Initials naming the denied name, each with its own DCID.
fn denied_initials(n: usize) -> Vec<Vec<u8>> {
    let hello = common::hello_message_for(DENIED_SNI);
    (0..n)
        .map(|i| {
            let dcid = (0xde1e_0000_0000_0000u64 + i as u64).to_be_bytes();
            let scid = [7u8; 8];
            let frames = padded(&crypto_frame(0, &hello), &dcid, &scid);
            seal_initial(Version::V1, &dcid, Side::Client, (&dcid, &scid), 0, &frames)
        })
        .collect()
}

/// One denied flood's counts.
struct Flood {
    /// Initials sent.
    sent: u64,
    /// Flows snigate decided and denied.
    denied: u64,
    /// Datagrams snigate read and dropped without deciding (a remembered flow, a full table).
    dropped: u64,
    /// Datagrams the kernel dropped for a full socket buffer or input queue (all of this
    /// network namespace's, in fact; nothing else runs here during the flood).
    kernel: u64,
    /// snigate's CPU seconds over the flood.
    cpu: f64,
    /// The flood's length.
    secs: f64,
}

/// Sends `pool`'s Initials round and round for `secs`, each from a new socket on its own
/// loopback address (127.1.0.0 upwards), so that each starts a new flow. The last 1,024
/// sockets stay open, so that snigate's CONNECTION_CLOSE finds its client.
fn flood(snigate: &Snigate, pool: &[Vec<u8>], secs: f64, tick: f64) -> Flood {
    // Ready once a denied Initial is answered.
    let mut buf = vec![0u8; 2048];
    let ready = (0..50).any(|_| {
        let probe = UdpSocket::bind("127.0.0.1:0").unwrap();
        probe.set_read_timeout(Some(Duration::from_millis(200))).unwrap();
        probe.send_to(&pool[0], snigate.listen).unwrap();
        probe.recv_from(&mut buf).is_ok()
    });
    assert!(ready, "snigate does not answer a denied Initial");
    let count = |s: &Snigate| {
        let denied = s.metric("snigate_connections_total", &[("listener", "quic"), ("verdict", "deny")]);
        let dropped = s.metric("snigate_quic_datagrams_dropped_total", &[("listener", "quic")]);
        (denied as u64, dropped as u64)
    };
    let ((denied0, dropped0), kernel0) = (count(snigate), kernel_drops());
    let cpu0 = snigate.proc.cpu_ticks();
    let mut recent = VecDeque::with_capacity(1024);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(secs);
    let mut sent = 0u64;
    while Instant::now() < deadline && sent < MAX_SENT {
        let source = Ipv4Addr::from(0x7f01_0000u32 + (sent % 0x00fe_0000) as u32);
        let Ok(socket) = UdpSocket::bind((source, 0)) else { break };
        if socket.send_to(&pool[sent as usize % pool.len()], snigate.listen).is_ok() {
            sent += 1;
        }
        if recent.len() == 1024 {
            recent.pop_front();
        }
        recent.push_back(socket);
    }
    let secs = started.elapsed().as_secs_f64();
    // What snigate's socket buffer holds is read within a few milliseconds.
    std::thread::sleep(Duration::from_millis(300));
    let cpu = (snigate.proc.cpu_ticks() - cpu0) as f64 / tick;
    let ((denied, dropped), kernel) = (count(snigate), kernel_drops());
    Flood { sent, denied: denied - denied0, dropped: dropped - dropped0, kernel: kernel - kernel0, cpu, secs }
}

/// UDP datagrams the kernel has dropped: `RcvbufErrors` in `/proc/net/snmp` (a full socket
/// buffer) and the input queues' drops in `/proc/net/softnet_stat`.
fn kernel_drops() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let mut udp = snmp.lines().filter(|l| l.starts_with("Udp: "));
    let rcvbuf = match (udp.next(), udp.next()) {
        (Some(names), Some(values)) => names
            .split_whitespace()
            .zip(values.split_whitespace())
            .find(|(n, _)| *n == "RcvbufErrors")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0),
        _ => 0,
    };
    let softnet = std::fs::read_to_string("/proc/net/softnet_stat").unwrap_or_default();
    let backlog: u64 =
        softnet.lines().filter_map(|l| l.split_whitespace().nth(1).and_then(|v| u64::from_str_radix(v, 16).ok())).sum();
    rcvbuf + backlog
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
