//! What hostile clients can make snigate hold, measured on a running snigate:
//! - resident memory per connection that sent 9 bytes (a record header announcing 16 KiB, the
//!   start of a hello) and then nothing;
//! - resident memory per connection that sent a whole browser hello and waits at the upstream
//!   connect (an upstream whose accept queue is full answers no SYN);
//! - the delay one source's flood of silent connections adds to another source's allowed
//!   connections, with the default per-source limits.
//!
//! Run: `cargo bench --bench hostile` (release build). `SNIGATE_HOSTILE_CONNS` (default 10000,
//! lowered to what `ulimit -n` allows) sets the connections held for memory. Without `--bench`
//! (as `cargo test --all-targets` runs it, debug build) a short smoke run with 200.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "../tests/harness/mod.rs"]
mod harness;
mod support;

use support::{Proc, fd_budget, free_port};

/// The start of a hello that announces a 16 KiB record: a record header and four bytes.
const NINE_BYTES: [u8; 9] = [0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0xff, 0xf0];

fn main() {
    let bench = std::env::args().any(|a| a == "--bench");
    let wanted: usize = std::env::var("SNIGATE_HOSTILE_CONNS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let conns = if bench { wanted.min(fd_budget() / 3) } else { 200 };
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let hello = common::recording("chromium.bin").bytes;

        // Memory: a snigate whose per-source limits do not stop one source.
        let blackhole = harness::Blackhole::new();
        let (proc, addr) = start(
            dir.path(),
            "mem",
            blackhole.addr,
            "max_hellos_per_source = 1000000\n\
            max_connections_per_source = 1000000\nhello_timeout = 120\nconnect_timeout = 120\n",
        );
        settle().await;
        let idle = proc.memory("VmRSS:");
        let nine = hold(addr, &NINE_BYTES, conns).await;
        settle().await;
        let after_nine = proc.memory("VmRSS:");
        let whole = hold(addr, &hello, conns).await;
        settle().await;
        let after_whole = proc.memory("VmRSS:");
        drop((nine, whole, proc));

        // Delay: default limits; one source floods, another connects.
        let echo = harness::echo_backend().await;
        let (_proc, addr) = start(dir.path(), "delay", echo, "hello_timeout = 120\n");
        let rounds = if bench { 500 } else { 50 };
        let quiet = latencies(addr, &hello, rounds).await;
        let flood = hold_from("127.0.0.1", addr, &NINE_BYTES, if bench { 2_000 } else { 200 }).await;
        settle().await;
        let flooded = latencies(addr, &hello, rounds).await;
        drop(flood);

        let per = |before: u64, after: u64| after.saturating_sub(before) as f64 / conns as f64;
        println!(
            "hostile clients: {conns} connections each (the build: {})",
            if bench { "release" } else { "debug, smoke run" }
        );
        println!("| what a connection sent | RSS per connection |");
        println!("| --- | ---: |");
        println!("| 9 bytes, then nothing (waiting for its hello) | {:.0} B |", per(idle, after_nine));
        println!("| a {} B browser hello, waiting at connect | {:.0} B |", hello.len(), per(after_nine, after_whole));
        println!();
        println!("| another source's allowed connections ({rounds}) | p50 | p99 |");
        println!("| --- | ---: | ---: |");
        println!("| quiet | {:.2} ms | {:.2} ms |", pct(&quiet, 50), pct(&quiet, 99));
        println!(
            "| one source holding its maximum of undecided connections | {:.2} ms | {:.2} ms |",
            pct(&flooded, 50),
            pct(&flooded, 99)
        );
    });
}

/// snigate in `upstream` mode to `upstream`, with `limits`; its listener.
fn start(dir: &std::path::Path, name: &str, upstream: SocketAddr, limits: &str) -> (Proc, SocketAddr) {
    let listen = free_port();
    // The recorded hello names acme--dev.sandbox.lightning.force.com.
    std::fs::write(dir.join("allow.rules"), "allow *.lightning.force.com\n").unwrap();
    let config = format!(
        "[[listener]]\nlisten = \"{listen}\"\nmode = \"upstream\"\nupstream = \"{upstream}\"\n\
         [rules]\nfiles = [\"{}\"]\n[limits]\n{limits}[log]\nformat = \"off\"\n[metrics]\nenabled = false\n",
        dir.join("allow.rules").display()
    );
    let proc = Proc::snigate(name, dir, &config, false, &[listen]);
    (proc, listen)
}

/// Lets snigate take what was sent.
async fn settle() {
    tokio::time::sleep(Duration::from_millis(1500)).await;
}

/// `n` connections that each sent `bytes`, held open.
async fn hold(addr: SocketAddr, bytes: &[u8], n: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let Ok(mut s) = TcpStream::connect(addr).await else { break };
        if s.write_all(bytes).await.is_ok() {
            held.push(s);
        }
    }
    held
}

/// `n` connections from `source` that each sent `bytes`; those snigate refused included.
async fn hold_from(source: &str, addr: SocketAddr, bytes: &[u8], n: usize) -> Vec<TcpStream> {
    let mut held = Vec::with_capacity(n);
    for _ in 0..n {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
        let Ok(mut s) = socket.connect(addr).await else { break };
        let _ = s.write_all(bytes).await;
        held.push(s);
    }
    held
}

/// Latencies (ms) of `n` allowed connections from 127.0.0.2, one after another: connect, send
/// the hello, read it echoed.
async fn latencies(addr: SocketAddr, hello: &[u8], n: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(n);
    let mut back = vec![0u8; hello.len()];
    for _ in 0..n {
        let started = Instant::now();
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut s = socket.connect(addr).await.unwrap();
        s.write_all(hello).await.unwrap();
        tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut back)).await.expect("echoed").unwrap();
        out.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    out.sort_by(f64::total_cmp);
    out
}

fn pct(sorted: &[f64], p: usize) -> f64 {
    sorted[(sorted.len() * p / 100).min(sorted.len() - 1)]
}
