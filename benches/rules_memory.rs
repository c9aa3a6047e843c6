//! Rules at scale: what a running snigate holds for a million rules, how fast it starts and
//! what a reload peaks at, and what `snigate match` and `snigate check` cost on the same input.
//!
//! Two inputs of N entries, generated deterministically with the matcher bench's names
//! (`support::names`: 50% exact, 30% `.name`, 20% `*.name`):
//! - `rule file`: N lines `deny PATTERN` in one rule file;
//! - `list`: N domains, one a line, loaded as a `[[rules.list]]` (no rule file).
//!
//! For each, a `snigate run` (one `sni` listener on 127.0.0.1:0, metrics on 127.0.0.1:0,
//! `[log] format = "off"`) is measured:
//! - start: wall time from spawn until its listener accepts a connection (the port comes from
//!   the `listening` log line), and the CPU it used until then;
//! - steady memory: `VmRSS` from `/proc/PID/status` 1 s after the start, and bytes of it per
//!   entry; `VmHWM`, the start's peak;
//! - reload: `VmHWM` reset to the current `VmRSS` (`clear_refs` 5), SIGHUP, then `VmHWM` once
//!   `rules reloaded` is logged: the reload's peak, against the steady `VmRSS`; `VmRSS` after.
//!
//! Then `snigate match NAME --rules FILE` and `snigate check FILE` (with `--list deny=FILE` for
//! the list): their CPU time (utime + stime) and peak resident memory, from `wait4`.
//!
//! Run: `cargo bench --bench rules_memory` (release). N is 1,000,000 (`SNIGATE_BENCH_RULES`
//! changes it); `SNIGATE_BENCH_ROUNDS` (default 3) rounds, medians reported.
//! `SNIGATE_BENCH_BASELINE=PATH` measures another snigate binary too (an earlier build), in
//! the same rounds, alternating with this build, so that the two compare side by side. Without
//! `--bench` (as `cargo test --all-targets` runs it, debug build) one round at N = 1,000.

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

mod support;

use support::names::{self, Form, Rng};
use support::{Proc, Usage, clock_ticks, measured};

/// How long a start or a reload may take before the run is declared stuck.
const STUCK: Duration = Duration::from_secs(300);

/// What was loaded.
#[derive(Clone, Copy, PartialEq)]
enum Input {
    /// N `deny` lines in one rule file.
    RuleFile,
    /// N domains in one list.
    List,
}

impl Input {
    fn as_str(self) -> &'static str {
        match self {
            Input::RuleFile => "rule file",
            Input::List => "list",
        }
    }
}

/// The files one run reads.
struct Files {
    rules: PathBuf,
    list: PathBuf,
    empty: PathBuf,
    /// A name the rules decide (the last entry's).
    name: String,
    dir: PathBuf,
}

/// One round's figures for one binary and input.
#[derive(Default, Clone)]
struct Sample {
    start: f64,
    start_cpu: f64,
    rss: f64,
    start_hwm: f64,
    reload: f64,
    reload_hwm: f64,
    rss_after: f64,
    match_cpu: f64,
    match_rss: f64,
    check_cpu: f64,
    check_rss: f64,
}

fn main() {
    let benching = std::env::args().any(|a| a == "--bench");
    let env = |k: &str| std::env::var(k).ok().and_then(|v| v.parse::<usize>().ok());
    let n = if benching { env("SNIGATE_BENCH_RULES").unwrap_or(1_000_000) } else { 1_000 };
    let rounds = if benching { env("SNIGATE_BENCH_ROUNDS").unwrap_or(3) } else { 1 };
    let mut binaries = vec![("this build".to_string(), env!("CARGO_BIN_EXE_snigate").to_string())];
    if let Ok(path) = std::env::var("SNIGATE_BENCH_BASELINE") {
        binaries.insert(0, ("baseline".to_string(), path));
    }
    let dir = tempfile::tempdir().unwrap();
    let files = generate(dir.path(), n);
    let inputs = [Input::RuleFile, Input::List];
    let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); inputs.len() * binaries.len()];
    for round in 0..rounds {
        for (i, &input) in inputs.iter().enumerate() {
            for (b, (label, bin)) in binaries.iter().enumerate() {
                let s = measure(bin, input, &files);
                eprintln!(
                    "round {}: {} {label}: start {:.2} s, VmRSS {:.1} MiB",
                    round + 1,
                    input.as_str(),
                    s.start,
                    s.rss / MIB
                );
                samples[i * binaries.len() + b].push(s);
            }
        }
    }
    println!("\n{n} entries, medians of {rounds} round(s)\n");
    println!(
        "| input | binary | start → listening | start CPU | VmRSS | B/entry | start VmHWM | reload | reload VmHWM | reload peak / steady | VmRSS after reload |"
    );
    println!("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for (i, &input) in inputs.iter().enumerate() {
        for (b, (label, _)) in binaries.iter().enumerate() {
            let m = median(&samples[i * binaries.len() + b]);
            println!(
                "| {} | {label} | {:.2} s | {:.2} s | {:.1} MiB | {:.0} | {:.1} MiB | {:.2} s | {:.1} MiB | {:.2}× | {:.1} MiB |",
                input.as_str(),
                m.start,
                m.start_cpu,
                m.rss / MIB,
                m.rss / n as f64,
                m.start_hwm / MIB,
                m.reload,
                m.reload_hwm / MIB,
                m.reload_hwm / m.rss,
                m.rss_after / MIB,
            );
        }
    }
    println!("\n| input | binary | match CPU | match peak RSS | check CPU | check peak RSS |");
    println!("| --- | --- | ---: | ---: | ---: | ---: |");
    for (i, &input) in inputs.iter().enumerate() {
        for (b, (label, _)) in binaries.iter().enumerate() {
            let m = median(&samples[i * binaries.len() + b]);
            println!(
                "| {} | {label} | {:.2} s | {:.1} MiB | {:.2} s | {:.1} MiB |",
                input.as_str(),
                m.match_cpu,
                m.match_rss / MIB,
                m.check_cpu,
                m.check_rss / MIB,
            );
        }
    }
    println!();
}

const MIB: f64 = (1 << 20) as f64;

/// Writes the rule file, the list and an empty rule file.
fn generate(dir: &Path, n: usize) -> Files {
    let mut rng = Rng(42);
    let (mut rules, mut list) = (String::new(), String::new());
    let mut name = String::new();
    for _ in 0..n {
        let (domain, form) = names::pattern(&mut rng);
        let (pattern, hit) = match form {
            Form::Exact => (domain.clone(), domain.clone()),
            Form::Apex => (format!(".{domain}"), format!("cdn.{domain}")),
            Form::Below => (format!("*.{domain}"), format!("www.{domain}")),
        };
        rules.push_str(&format!("deny {pattern}\n"));
        list.push_str(&format!("{domain}\n"));
        name = hit;
    }
    let files = Files {
        rules: dir.join("synthetic.rules"),
        list: dir.join("synthetic.txt"),
        empty: dir.join("empty.rules"),
        name,
        dir: dir.to_path_buf(),
    };
    std::fs::write(&files.rules, rules).unwrap();
    std::fs::write(&files.list, list).unwrap();
    std::fs::write(&files.empty, "").unwrap();
    files
}

/// One round for one binary and input: the running process, then the two commands.
fn measure(bin: &str, input: Input, files: &Files) -> Sample {
    let mut s = Sample::default();
    let config = files.dir.join("bench.toml");
    let rules = match input {
        Input::RuleFile => format!("files = [\"{}\"]\n", files.rules.display()),
        Input::List => format!(
            "files = []\n[[rules.list]]\npath = \"{}\"\nname = \"synthetic\"\naction = \"deny\"\n",
            files.list.display()
        ),
    };
    std::fs::write(
        &config,
        format!(
            "[[listener]]\nlisten = \"127.0.0.1:0\"\nmode = \"sni\"\nupstream_port = 443\n\
             [rules]\n{rules}[metrics]\nlisten = \"127.0.0.1:0\"\n[log]\nformat = \"off\"\n"
        ),
    )
    .unwrap();
    let t = Instant::now();
    let mut proc = Proc::spawn("snigate", bin, &["run", "--config", config.to_str().unwrap()], false, Stdio::piped());
    let lines = lines(proc.stderr().expect("piped stderr"));
    let addr: SocketAddr = wait_for(&lines, "listening")
        .split("listen=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|a| a.parse().ok())
        .expect("the listening line names the address");
    while TcpStream::connect(addr).is_err() {
        assert!(t.elapsed() < STUCK, "snigate does not accept on {addr}");
        std::thread::sleep(Duration::from_millis(1));
    }
    s.start = t.elapsed().as_secs_f64();
    s.start_cpu = proc.cpu_ticks() as f64 / clock_ticks();
    std::thread::sleep(Duration::from_secs(1));
    s.rss = proc.memory("VmRSS:") as f64;
    s.start_hwm = proc.memory("VmHWM:") as f64;
    proc.reset_peak();
    let t = Instant::now();
    let hup = Command::new("kill").args(["-HUP", &proc.pid().to_string()]).status().unwrap();
    assert!(hup.success());
    wait_for(&lines, "rules reloaded");
    s.reload = t.elapsed().as_secs_f64();
    s.reload_hwm = proc.memory("VmHWM:") as f64;
    std::thread::sleep(Duration::from_secs(1));
    s.rss_after = proc.memory("VmRSS:") as f64;
    proc.stop();

    let (rules, lists): (&Path, Vec<String>) = match input {
        Input::RuleFile => (&files.rules, vec![]),
        Input::List => (&files.empty, vec!["--list".into(), format!("deny={}", files.list.display())]),
    };
    let usage = |args: &[&str]| -> Usage {
        let u = measured(Command::new(bin).args(args).args(&lists));
        assert!(u.success, "snigate {args:?} failed");
        u
    };
    let rules = rules.to_str().unwrap();
    let m = usage(&["match", &files.name, "--rules", rules]);
    (s.match_cpu, s.match_rss) = (m.cpu, m.max_rss as f64);
    let c = usage(&["check", rules]);
    (s.check_cpu, s.check_rss) = (c.cpu, c.max_rss as f64);
    s
}

/// The lines of `stderr`, each as it arrives, read on a thread of its own.
fn lines(stderr: std::process::ChildStderr) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// The first line containing `what`; panics with what was logged if it does not come.
fn wait_for(lines: &mpsc::Receiver<String>, what: &str) -> String {
    let mut seen = Vec::new();
    loop {
        match lines.recv_timeout(STUCK) {
            Ok(line) if line.contains(what) => return line,
            Ok(line) => seen.push(line),
            Err(_) => panic!("no `{what}` from snigate:\n{}", seen.join("\n")),
        }
    }
}

/// Each field's median over the rounds.
fn median(samples: &[Sample]) -> Sample {
    let of = |f: fn(&Sample) -> f64| {
        let mut v: Vec<f64> = samples.iter().map(f).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Sample {
        start: of(|s| s.start),
        start_cpu: of(|s| s.start_cpu),
        rss: of(|s| s.rss),
        start_hwm: of(|s| s.start_hwm),
        reload: of(|s| s.reload),
        reload_hwm: of(|s| s.reload_hwm),
        rss_after: of(|s| s.rss_after),
        match_cpu: of(|s| s.match_cpu),
        match_rss: of(|s| s.match_rss),
        check_cpu: of(|s| s.check_cpu),
        check_rss: of(|s| s.check_rss),
    }
}
