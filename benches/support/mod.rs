//! Helpers shared by the benches: CPU pinning, the process under test started on CPU 0, its
//! CPU time and memory read from `/proc`, a command's CPU time and peak memory, deterministic
//! synthetic names ([`names`]), the connection load and its backend ([`load`]), the peers'
//! configurations ([`peers`]) and the floor proxy they are all measured against ([`floor`]).
#![allow(dead_code)]

pub mod floor;
pub mod load;
pub mod names;
pub mod peers;

use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A port that was free a moment ago.
pub fn free_port() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// `N` distinct ports that were free a moment ago: all bound before any is let go, so that the
/// kernel cannot hand the same one out twice (as two calls of [`free_port`] may).
pub fn free_ports<const N: usize>() -> [SocketAddr; N] {
    let held: [TcpListener; N] = std::array::from_fn(|_| TcpListener::bind("127.0.0.1:0").unwrap());
    held.map(|l| l.local_addr().unwrap())
}

/// A UDP port that was free a moment ago.
pub fn free_udp_port() -> SocketAddr {
    UdpSocket::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// Pins this process (its threads to come included) to CPU 1, when `taskset` and a second
/// CPU exist. The process under test then gets CPU 0 to itself (see [`Proc::start`]).
pub fn pin_self() -> bool {
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    cpus >= 2
        && Command::new("taskset")
            .args(["-a", "-p", "-c", "1", &std::process::id().to_string()])
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
}

/// File descriptors this process may open (its soft limit, raised to the hard one).
pub fn fd_budget() -> usize {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit only read and write the struct passed.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) != 0 {
            return 1024;
        }
        limit.rlim_cur = limit.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &limit);
    }
    limit.rlim_cur.min(1 << 20) as usize
}

/// The soft descriptor limit this process runs under, as the shell reports it.
pub fn nofile_limit() -> u64 {
    let out = Command::new("sh").args(["-c", "ulimit -n"]).output().expect("sh");
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(1024)
}

/// The first of `names` found in /usr/sbin, /usr/bin or /usr/local.
pub fn find_program(names: &[&str]) -> Option<String> {
    for name in names {
        for dir in ["/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"] {
            let p = format!("{dir}/{name}");
            if std::path::Path::new(&p).exists() {
                return Some(p);
            }
        }
    }
    None
}

/// `/proc/PID/stat` ticks per second.
pub fn clock_ticks() -> f64 {
    let out = Command::new("getconf").arg("CLK_TCK").output().expect("getconf");
    String::from_utf8_lossy(&out.stdout).trim().parse().expect("CLK_TCK")
}

/// A process under test, pinned to CPU 0 when `pinned`. Its CPU time and memory are those of
/// its whole process tree (nginx's master and worker, sniproxy's binder), read from `/proc`.
pub struct Proc {
    /// The started process (the tree's root).
    child: Child,
    /// For messages.
    pub name: String,
}

impl Proc {
    /// The release snigate on `config` (written to `dir/NAME.toml`, its stderr to
    /// `dir/NAME.err`), started as [`start`](Self::start) does.
    pub fn snigate(name: &str, dir: &std::path::Path, config: &str, pinned: bool, addrs: &[SocketAddr]) -> Proc {
        Proc::snigate_binary(env!("CARGO_BIN_EXE_snigate"), name, dir, config, pinned, addrs)
    }

    /// [`snigate`](Self::snigate), with another snigate binary (an earlier build, to compare).
    pub fn snigate_binary(
        program: &str,
        name: &str,
        dir: &std::path::Path,
        config: &str,
        pinned: bool,
        addrs: &[SocketAddr],
    ) -> Proc {
        let path = dir.join(format!("{}.toml", name.replace(' ', "-")));
        std::fs::write(&path, config).expect("the configuration file");
        let err = dir.join(format!("{}.err", name.replace(' ', "-")));
        let args = ["run", "--config", path.to_str().expect("a UTF-8 path")];
        Proc::start(name, program, &args, pinned, addrs, err.to_str().expect("a UTF-8 path"))
    }

    /// Starts `program args…` (on CPU 0 when `pinned`) and waits until every address in `addrs`
    /// accepts connections. Its stderr goes to `stderr` (a file path), stdout is dropped.
    pub fn start(name: &str, program: &str, args: &[&str], pinned: bool, addrs: &[SocketAddr], stderr: &str) -> Proc {
        // Under a wrapper such as valgrind a program takes much longer to start.
        let patience = Duration::from_secs(if wrapper().is_empty() { 10 } else { 120 });
        match Proc::launch(name, program, args, pinned, addrs, stderr, patience) {
            Ok((proc, _)) => proc,
            Err(e) => panic!("{e}"),
        }
    }

    /// [`start`](Self::start) with a bound on the wait: the process and the time from spawn until
    /// every address accepted, or why it did not start (it exited, or `within` passed; it is
    /// stopped then).
    pub fn launch(
        name: &str,
        program: &str,
        args: &[&str],
        pinned: bool,
        addrs: &[SocketAddr],
        stderr: &str,
        within: Duration,
    ) -> Result<(Proc, Duration), String> {
        let log = std::fs::File::create(stderr).expect("stderr file");
        let t0 = Instant::now();
        let mut proc = Proc::spawn(name, program, args, pinned, log.into());
        for addr in addrs {
            while TcpStream::connect(addr).is_err() {
                let exited = proc.child.try_wait().ok().flatten().is_some();
                if exited || t0.elapsed() >= within {
                    proc.stop();
                    let err = std::fs::read_to_string(stderr).unwrap_or_default();
                    let why = if exited { "exited".to_string() } else { format!("did not start within {within:?}") };
                    return Err(format!("{name} is not listening on {addr}: {why}\n{err}"));
                }
                std::thread::sleep(Duration::from_millis(5));
            }
        }
        Ok((proc, t0.elapsed()))
    }

    /// Starts `program args…` (on CPU 0 when `pinned`; under the [`wrapper`] when one is set)
    /// without waiting for anything. Its stderr goes to `stderr`, stdout is dropped.
    pub fn spawn(name: &str, program: &str, args: &[&str], pinned: bool, stderr: Stdio) -> Proc {
        let mut line: Vec<String> = if pinned { vec!["taskset".into(), "-c".into(), "0".into()] } else { Vec::new() };
        line.extend(wrapper());
        line.push(program.into());
        let child = Command::new(&line[0])
            .args(&line[1..])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(stderr)
            .spawn()
            .unwrap_or_else(|e| panic!("{name}: cannot start {program}: {e}"));
        Proc { child, name: name.to_string() }
    }

    /// The process's stderr, when it was spawned with `Stdio::piped()`.
    pub fn stderr(&mut self) -> Option<std::process::ChildStderr> {
        self.child.stderr.take()
    }

    /// Resets the tree's `VmHWM` to its current `VmRSS` (`clear_refs` 5), so that a later
    /// `VmHWM` is the peak since now.
    pub fn reset_peak(&self) {
        for pid in tree(self.pid()) {
            std::fs::write(format!("/proc/{pid}/clear_refs"), "5").expect("clear_refs");
        }
    }

    /// The pid of the tree's root.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends `signal` (a name: `HUP`, `USR2`) to the tree's root.
    pub fn signal(&self, signal: &str) {
        let sent = Command::new("kill").args([&format!("-{signal}"), &self.pid().to_string()]).status();
        assert!(sent.is_ok_and(|s| s.success()), "{}: kill -{signal} failed", self.name);
    }

    /// utime + stime of every thread of the tree, in clock ticks.
    pub fn cpu_ticks(&self) -> u64 {
        tree(self.pid()).iter().filter_map(|pid| ticks(&pid.to_string())).sum()
    }

    /// Resident memory of the tree, in bytes: `VmRSS` (now) or `VmHWM` (peak) summed.
    pub fn memory(&self, field: &str) -> u64 {
        memory_of(self.pid(), "status", field)
    }

    /// Proportional set size of the tree, in bytes: pages shared between its processes (a
    /// master and the workers it forked) count once, split between them.
    pub fn pss(&self) -> u64 {
        memory_of(self.pid(), "smaps_rollup", "Pss:")
    }

    /// `strace -c -f` attached to every process of the tree, writing its summary to `out` when
    /// it gets SIGINT.
    pub fn strace(&self, out: &str) -> Child {
        let mut cmd = Command::new("strace");
        cmd.args(["-c", "-f", "-q", "-o", out]);
        for pid in tree(self.pid()) {
            cmd.args(["-p", &pid.to_string()]);
        }
        cmd.stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("strace")
    }

    /// `sh -c command`, in a process group of its own, with `{pids}` in `command` replaced by the
    /// tree's pids joined by commas and `{name}` by this process's name: a profiler to attach
    /// (`perf record -p {pids}`). Stop it with [`interrupt`].
    pub fn attach(&self, command: &str) -> Child {
        let pids: Vec<String> = tree(self.pid()).iter().map(u32::to_string).collect();
        let command = command.replace("{pids}", &pids.join(",")).replace("{name}", &self.name);
        use std::os::unix::process::CommandExt;
        Command::new("sh").args(["-c", &command]).process_group(0).spawn().expect("sh")
    }

    /// SIGTERM, then SIGKILL after 5 s; only this process (the tree's root reaps its own).
    pub fn stop(&mut self) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        let _ = Command::new("kill").args(["-TERM", &self.pid().to_string()]).status();
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `field` (in KiB) of `/proc/PID/FILE` summed over `root`'s tree, in bytes. Takes a pid so that
/// a sampling thread can read it while the [`Proc`] stays where it is.
pub fn memory_of(root: u32, file: &str, field: &str) -> u64 {
    tree(root)
        .iter()
        .filter_map(|pid| {
            let text = std::fs::read_to_string(format!("/proc/{pid}/{file}")).ok()?;
            let line = text.lines().find(|l| l.starts_with(field))?;
            line.split_whitespace().nth(1)?.parse::<u64>().ok().map(|kib| kib * 1024)
        })
        .sum()
}

/// SIGINT to `child`'s process group (one [`Proc::attach`] started), then waits for it.
pub fn interrupt(mut child: Child) {
    let _ = Command::new("kill").args(["-INT", "--", &format!("-{}", child.id())]).status();
    let _ = child.wait();
}

/// The command every process under test is started under, from `SNIGATE_BENCH_WRAP`, split at
/// whitespace (for example `valgrind --tool=callgrind --instr-atstart=no`); none by default.
/// The process keeps its pid (taskset and valgrind exec or run in place), so its CPU time and
/// memory are still read from `/proc`, though they then include the wrapper's.
pub fn wrapper() -> Vec<String> {
    std::env::var("SNIGATE_BENCH_WRAP").unwrap_or_default().split_whitespace().map(str::to_string).collect()
}

/// `root` and its descendants, from the parent pids in `/proc/*/stat`.
fn tree(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|s| s.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let Some(close) = stat.rfind(')') else { continue };
        if let Some(ppid) = stat[close + 2..].split_whitespace().nth(1).and_then(|p| p.parse::<u32>().ok()) {
            parents.push((pid, ppid));
        }
    }
    let mut found = vec![root];
    let mut i = 0;
    while i < found.len() {
        let p = found[i];
        found.extend(parents.iter().filter(|&&(_, pp)| pp == p).map(|&(c, _)| c));
        i += 1;
    }
    found
}

/// utime + stime of this process (every thread), in clock ticks.
pub fn own_cpu_ticks() -> u64 {
    ticks("self").unwrap_or(0)
}

/// utime + stime of `/proc/{pid}`, in clock ticks.
fn ticks(pid: &str) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Some(f[11].parse::<u64>().ok()? + f[12].parse::<u64>().ok()?)
}

/// What a finished command used: its exit status, CPU time and peak resident memory.
pub struct Usage {
    /// Whether it exited with status 0.
    pub success: bool,
    /// utime + stime, in seconds.
    pub cpu: f64,
    /// Peak resident memory (`ru_maxrss`), in bytes.
    pub max_rss: u64,
}

/// Runs `cmd` to completion (stdout and stderr dropped) and reports its own rusage, from
/// `wait4` on its pid.
pub fn measured(cmd: &mut Command) -> Usage {
    let child = cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::null()).spawn().expect("spawn");
    let pid = child.id() as libc::pid_t;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid (plain integers).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: `pid` is our unwaited child; both pointers are to live locals. The `Child` is
    // dropped without a wait, so it never reaps the pid a second time.
    let reaped = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
    assert_eq!(reaped, pid, "wait4: {}", std::io::Error::last_os_error());
    drop(child);
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Usage {
        success: libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
        cpu: secs(usage.ru_utime) + secs(usage.ru_stime),
        max_rss: usage.ru_maxrss as u64 * 1024,
    }
}
