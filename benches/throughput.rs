//! Bulk throughput and CPU cost of splice(2) against the userspace copy, through a release
//! snigate process in `upstream` mode.
//!
//! Run: `cargo bench --bench throughput` (`SNIGATE_BENCH_GIB`, default 2, is the volume per
//! transfer; `SNIGATE_BENCH_ROUNDS`, default 3, how many times each is repeated, alternating
//! the paths; medians are reported).
//!
//! One snigate process has two listeners in front of the same backend, one with
//! `splice = "auto"` and one with `splice = "copy"`. Each transfer is one connection that sends
//! the volume up (client → backend, which discards) or down (backend → client). snigate's CPU
//! is its utime + stime from `/proc/PID/stat` across the transfer. With `taskset` and two or
//! more CPUs, snigate runs on CPU 0 and this process (client and backend) on CPU 1.
//! Without `--bench` (as `cargo test --all-targets` runs it, debug build) one 64 MiB round.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

#[path = "../tests/common/mod.rs"]
mod common;
mod support;

use support::{Proc, clock_ticks, free_ports, pin_self};

/// Bytes per write and per read on the load side.
const IO: usize = 1 << 20;
/// Longest any socket call of the load may block: bounds a stuck run.
const STALL: Duration = Duration::from_secs(30);

#[derive(Clone, Copy, PartialEq)]
enum Dir {
    Up,
    Down,
}

struct Sample {
    secs: f64,
    cpu: f64,
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<f64>().ok());
    let gib = if benching { env("SNIGATE_BENCH_GIB").unwrap_or(2.0) } else { 1.0 / 16.0 };
    let rounds = if benching { env("SNIGATE_BENCH_ROUNDS").unwrap_or(3.0) as usize } else { 1 };
    let bytes = (gib * (1u64 << 30) as f64) as u64 / IO as u64 * IO as u64;
    assert!(bytes > 0 && rounds > 0);

    let pinned = pin_self();
    let backend = TcpListener::bind("127.0.0.1:0").unwrap();
    let backend_addr = backend.local_addr().unwrap();
    let hello_len = hello().len();
    std::thread::spawn(move || serve(backend, hello_len));

    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("all.rules"), "allow *\n").unwrap();
    let [splice_addr, copy_addr] = free_ports();
    let config = format!(
        "[[listener]]\nname = \"splice\"\nlisten = \"{splice_addr}\"\nmode = \"upstream\"\nupstream = \"{backend_addr}\"\nsplice = \"auto\"\n\
         [[listener]]\nname = \"copy\"\nlisten = \"{copy_addr}\"\nmode = \"upstream\"\nupstream = \"{backend_addr}\"\nsplice = \"copy\"\n\
         [rules]\nfiles = [\"{}\"]\n[log]\nformat = \"off\"\n",
        dir.path().join("all.rules").display()
    );
    std::fs::write(dir.path().join("bench.toml"), config).unwrap();
    let config = dir.path().join("bench.toml");
    let stderr = dir.path().join("snigate.err");
    let mut snigate = Proc::start(
        "snigate",
        env!("CARGO_BIN_EXE_snigate"),
        &["run", "--config", config.to_str().unwrap()],
        pinned,
        &[splice_addr, copy_addr],
        stderr.to_str().unwrap(),
    );

    let tick = clock_ticks();
    let mut results: Vec<(&str, Dir, Vec<Sample>)> = Vec::new();
    for (name, dir) in [("splice", Dir::Up), ("copy", Dir::Up), ("splice", Dir::Down), ("copy", Dir::Down)] {
        results.push((name, dir, Vec::new()));
    }
    for _ in 0..rounds {
        for (name, dir, samples) in &mut results {
            let addr = if *name == "splice" { splice_addr } else { copy_addr };
            let cpu0 = snigate.cpu_ticks();
            let secs = transfer(addr, *dir, bytes);
            let cpu = (snigate.cpu_ticks() - cpu0) as f64 / tick;
            samples.push(Sample { secs, cpu });
        }
    }
    snigate.stop();

    let gib = bytes as f64 / (1u64 << 30) as f64;
    println!(
        "snigate {} | {rounds} round(s) of {gib:.3} GiB per transfer, medians | snigate {}",
        if benching { "release" } else { "debug (test mode)" },
        if pinned { "on CPU 0, load on CPU 1" } else { "not pinned" }
    );
    println!("| path | direction | Gbit/s | snigate CPU s/GiB |");
    println!("| --- | --- | ---: | ---: |");
    let mut medians = Vec::new();
    for (name, dir, samples) in &results {
        let gbps = median(samples.iter().map(|s| bytes as f64 * 8.0 / s.secs / 1e9).collect());
        let cpu = median(samples.iter().map(|s| s.cpu / gib).collect());
        let d = if *dir == Dir::Up { "up" } else { "down" };
        println!("| {name} | {d} | {gbps:.2} | {cpu:.3} |");
        medians.push((gbps, cpu));
    }
    for (i, d) in [(0, "up"), (2, "down")] {
        let ((sg, sc), (cg, cc)) = (medians[i], medians[i + 1]);
        println!("{d}: splice/copy throughput {:.2}x, CPU per GiB {:.2}x", sg / cg, sc / cc);
    }
}

/// The ClientHello every transfer starts with.
fn hello() -> Vec<u8> {
    common::hello(&[common::sni(b"bench.example")])
}

/// One transfer through `addr`; returns the seconds from the first to the last payload byte.
/// The client sends the hello, then the byte count it wants back as 8 bytes.
fn transfer(addr: SocketAddr, dir: Dir, bytes: u64) -> f64 {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(STALL)).unwrap();
    c.set_write_timeout(Some(STALL)).unwrap();
    let down = if dir == Dir::Down { bytes } else { 0 };
    c.write_all(&[hello(), down.to_le_bytes().to_vec()].concat()).unwrap();
    let start = Instant::now();
    let mut buf = vec![0x42u8; IO];
    match dir {
        Dir::Up => {
            for _ in 0..bytes / IO as u64 {
                c.write_all(&buf).unwrap();
            }
            c.shutdown(Shutdown::Write).unwrap();
            // The backend's FIN comes after it has read everything.
            assert_eq!(c.read(&mut buf).unwrap(), 0);
        }
        Dir::Down => {
            c.shutdown(Shutdown::Write).unwrap();
            let mut got = 0u64;
            loop {
                match c.read(&mut buf).unwrap() {
                    0 => break,
                    n => got += n as u64,
                }
            }
            assert_eq!(got, bytes, "bytes down");
        }
    }
    start.elapsed().as_secs_f64()
}

/// The backend: per connection, skips the hello, reads how many bytes to send, sends them
/// while discarding whatever comes up, and closes after the client's FIN.
fn serve(listener: TcpListener, hello_len: usize) {
    for conn in listener.incoming() {
        let mut s = conn.unwrap();
        std::thread::spawn(move || {
            s.set_read_timeout(Some(STALL)).unwrap();
            s.set_write_timeout(Some(STALL)).unwrap();
            let mut head = vec![0u8; hello_len + 8];
            s.read_exact(&mut head).unwrap();
            let down = u64::from_le_bytes(head[hello_len..].try_into().unwrap());
            let mut w = s.try_clone().unwrap();
            let sender = std::thread::spawn(move || {
                let buf = vec![0x24u8; IO];
                for _ in 0..down / IO as u64 {
                    w.write_all(&buf).unwrap();
                }
            });
            let mut buf = vec![0u8; IO];
            let mut up = 0u64;
            loop {
                match s.read(&mut buf).unwrap() {
                    0 => break,
                    n => up += n as u64,
                }
            }
            sender.join().unwrap();
            std::hint::black_box(up);
            s.shutdown(Shutdown::Write).unwrap();
        });
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}
