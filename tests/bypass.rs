//! The bypass matrix: what a client behind a gateway that runs snigate and the nftables kit
//! (`deploy/nftables/tproxy.sh`, QUIC on) can reach, each way tried for real over IPv4 and IPv6.
//!
//! Three namespaces, created and removed by the test: client C, gateway G (forwarding, the kit,
//! snigate with a transparent TCP listener and a QUIC listener per address family) and an
//! "internet" I with real servers: `openssl s_server` on 443 and 4443, HTTP on 80, a TCP echo on
//! 22, a server-first service on 25, a UDP echo on 9999, a DNS stand-in (a UDP echo on 53) on a
//! configured and on an unconfigured resolver address, and the aioquic echo server on UDP 443.
//! Every attempt runs from C with a bounded client. The test prints the matrix, built from what
//! the clients saw and what snigate logged, writes it to `target/bypass-matrix.md`, and then
//! asserts every row; docs/deploy.md carries the table.
//!
//! Needs root, iproute2, nftables, openssl, curl and Python with aioquic; CI has them. Elsewhere
//! it skips, saying why.

mod common;
mod harness;
mod netns;

use std::fmt;
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use Kind::{Denied, Dropped, Passes};
use common::wait_until;
use harness::{Listener, TestConfig};
use netns::{Namespaces, Subnet, run};
use serde_json::Value;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The transparent TCP listener's port, the QUIC listener's, and the TPROXY mark.
const TCP_PORT: &str = "15002";
const QUIC_PORT: &str = "15443";
const TPROXY_MARK: &str = "0x1";

/// The name the rules allow on 443, and one they do not list.
const ALLOWED: &str = "acme.my.salesforce.com";
const UNLISTED: &str = "other.my.salesforce.com";
/// The Host the rules allow on 80, and one they do not list.
const ALLOWED_HOST: &str = "www.example.com";
const UNLISTED_HOST: &str = "www.example.org";

/// What the HTTP server answers.
const BODY: &str = "reached the internet\n";

/// How long a datagram's answer is waited for before it counts as dropped.
const UDP_WAIT: &str = "1";

/// I's addresses in one family.
struct Family {
    /// The family's name, for failures.
    label: &'static str,
    /// TLS on 443 and 4443, HTTP on 80, TCP echo on 22, QUIC on UDP 443, UDP echo on 9999.
    main: IpAddr,
    /// The server-first service on 25, which an `allow ip … port 25` rule lets through.
    banner: IpAddr,
    /// TLS on 443, which an `allow ip` rule without port decides for hellos without SNI.
    ip_only: IpAddr,
    /// TLS on 443, which an `allow ip … port 443` rule lets through.
    ip_port: IpAddr,
    /// The resolver the kit lets DNS through to.
    resolver: IpAddr,
    /// A resolver the kit does not list.
    other_resolver: IpAddr,
}

const fn v4(last: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(203, 0, 113, last))
}

const fn v6(last: u16) -> IpAddr {
    IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0x113, 0, 0, 0, 0, last))
}

const FAMILIES: [Family; 2] = [
    Family {
        label: "IPv4",
        main: v4(10),
        banner: v4(25),
        ip_only: v4(44),
        ip_port: v4(45),
        resolver: v4(53),
        other_resolver: v4(54),
    },
    Family {
        label: "IPv6",
        main: v6(0x10),
        banner: v6(0x25),
        ip_only: v6(0x44),
        ip_port: v6(0x45),
        resolver: v6(0x53),
        other_resolver: v6(0x54),
    },
];

/// G's rules: everything else is denied by default.
fn rules() -> String {
    let [a, b] = &FAMILIES;
    let mut text = format!("allow {ALLOWED} port 443\nallow {ALLOWED_HOST} port 80\n");
    for (f, bits) in [(a, 32), (b, 128)] {
        text += &format!("allow ip {}/{bits} port 25\n", f.banner);
        text += &format!("allow ip {}/{bits}\n", f.ip_only);
        text += &format!("allow ip {}/{bits} port 443\n", f.ip_port);
    }
    text
}

/// Which of I's addresses an attempt goes to.
#[derive(Clone, Copy)]
enum Host {
    Main,
    Banner,
    IpOnly,
    IpPort,
    Resolver,
    OtherResolver,
}

impl Family {
    fn addr(&self, host: Host) -> IpAddr {
        match host {
            Host::Main => self.main,
            Host::Banner => self.banner,
            Host::IpOnly => self.ip_only,
            Host::IpPort => self.ip_port,
            Host::Resolver => self.resolver,
            Host::OtherResolver => self.other_resolver,
        }
    }
}

/// How an attempt is made.
#[derive(Clone, Copy)]
enum Probe {
    /// `openssl s_client` to this address and port, with this SNI or none.
    Tls(Host, u16, Option<&'static str>),
    /// curl to the main address on 80 with this Host.
    Http(&'static str),
    /// A TCP client that speaks first (an SSH greeting) and expects its bytes echoed.
    Raw(Host, u16),
    /// A TCP client that waits for the server's banner.
    Banner(Host, u16),
    /// tests/quic/quic_client.py to the main address on UDP 443, with this SNI.
    Quic(&'static str),
    /// A DNS query in one datagram, expected back from an echo.
    Udp(Host, u16),
}

impl Probe {
    /// What snigate logs about it: its original destination, SNI (or Host) and whether it is
    /// QUIC. `None`: it does not go through snigate.
    fn log_key(self, family: &Family) -> Option<(SocketAddr, Option<&'static str>, bool)> {
        let main = family.main;
        match self {
            // Spliced at accept: snigate never reads the hello, so it logs no name.
            Probe::Tls(Host::IpPort, port, _) => Some((SocketAddr::new(family.ip_port, port), None, false)),
            Probe::Tls(host, port, sni) => Some((SocketAddr::new(family.addr(host), port), sni, false)),
            Probe::Http(host) => Some((SocketAddr::new(main, 80), Some(host), false)),
            Probe::Raw(host, port) | Probe::Banner(host, port) => {
                Some((SocketAddr::new(family.addr(host), port), None, false))
            }
            Probe::Quic(sni) => Some((SocketAddr::new(main, 443), Some(sni), true)),
            Probe::Udp(..) => None,
        }
    }
}

/// An attempt's result, as its client saw it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Passes,
    Denied,
    Dropped,
    /// Anything else (a timeout, an unexpected answer): never expected.
    Broken,
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Passes => "passes",
            Kind::Denied => "denied",
            Kind::Dropped => "dropped",
            Kind::Broken => "broken",
        })
    }
}

/// What a row expects in both families.
struct Expect {
    kind: Kind,
    /// The access log's `protocol` and `reason`; `None`: snigate logs nothing (not its traffic).
    log: Option<(&'static str, &'static str)>,
    /// What the client must see beyond that, as the table says it.
    note: &'static str,
}

struct Row {
    /// The attempt, as the table names it.
    attempt: &'static str,
    /// How it is made.
    probe: Probe,
    /// What must happen, over IPv4 and IPv6 alike.
    expect: Expect,
}

const fn expect(kind: Kind, log: Option<(&'static str, &'static str)>, note: &'static str) -> Expect {
    Expect { kind, log, note }
}

/// The matrix.
const ROWS: &[Row] = &[
    Row {
        attempt: "TLS 443, allowed name",
        probe: Probe::Tls(Host::Main, 443, Some(ALLOWED)),
        expect: expect(Passes, Some(("tls", "rule")), "handshake"),
    },
    Row {
        attempt: "TLS 443, unlisted name",
        probe: Probe::Tls(Host::Main, 443, Some(UNLISTED)),
        expect: expect(Denied, Some(("tls", "default")), "access_denied alert"),
    },
    Row {
        attempt: "TLS 4443, allowed name (its rule lists 443 only)",
        probe: Probe::Tls(Host::Main, 4443, Some(ALLOWED)),
        expect: expect(Denied, Some(("tls", "default")), "access_denied alert"),
    },
    Row {
        attempt: "TLS 4443, unlisted name",
        probe: Probe::Tls(Host::Main, 4443, Some(UNLISTED)),
        expect: expect(Denied, Some(("tls", "default")), "access_denied alert"),
    },
    Row {
        attempt: "HTTP 80, allowed Host",
        probe: Probe::Http(ALLOWED_HOST),
        expect: expect(Passes, Some(("http", "rule")), "HTTP 200 from the server"),
    },
    Row {
        attempt: "HTTP 80, unlisted Host",
        probe: Probe::Http(UNLISTED_HOST),
        expect: expect(Denied, Some(("http", "default")), "HTTP 403"),
    },
    Row {
        attempt: "raw TCP 22 (client speaks first)",
        probe: Probe::Raw(Host::Main, 22),
        expect: expect(Denied, Some(("other", "unknown_protocol")), "not echoed"),
    },
    Row {
        attempt: "server-first TCP 25, allowed by `ip … port 25`",
        probe: Probe::Banner(Host::Banner, 25),
        expect: expect(Passes, Some(("other", "rule")), "banner in < 1 s"),
    },
    Row {
        attempt: "QUIC 443, allowed name",
        probe: Probe::Quic(ALLOWED),
        expect: expect(Passes, Some(("quic", "rule")), "handshake and echo"),
    },
    Row {
        attempt: "QUIC 443, unlisted name",
        probe: Probe::Quic(UNLISTED),
        expect: expect(Denied, Some(("quic", "default")), "CONNECTION_CLOSE 0x131 in < 1 s"),
    },
    Row { attempt: "UDP 9999", probe: Probe::Udp(Host::Main, 9999), expect: expect(Dropped, None, "no answer") },
    Row {
        attempt: "DNS to a resolver not configured",
        probe: Probe::Udp(Host::OtherResolver, 53),
        expect: expect(Dropped, None, "no answer"),
    },
    Row {
        attempt: "DNS to the configured resolver",
        probe: Probe::Udp(Host::Resolver, 53),
        expect: expect(Passes, None, "answered"),
    },
    Row {
        attempt: "TLS 443 without SNI, to an address no `ip` rule lists",
        probe: Probe::Tls(Host::Main, 443, None),
        expect: expect(Denied, Some(("tls", "no_sni")), "access_denied alert"),
    },
    Row {
        attempt: "TLS 443 without SNI, to an address `allow ip` lists",
        probe: Probe::Tls(Host::IpOnly, 443, None),
        expect: expect(Passes, Some(("tls", "rule")), "handshake"),
    },
    Row {
        attempt: "TLS 443, unlisted name, to that address",
        probe: Probe::Tls(Host::IpOnly, 443, Some(UNLISTED)),
        expect: expect(Denied, Some(("tls", "default")), "access_denied alert"),
    },
    Row {
        attempt: "TLS 443, unlisted name, to an address `allow ip … port 443` lists",
        probe: Probe::Tls(Host::IpPort, 443, Some(UNLISTED)),
        expect: expect(Passes, Some(("other", "rule")), "handshake (spliced at accept)"),
    },
];

/// What happened to one attempt in one family.
struct Seen {
    kind: Kind,
    /// What the client saw, in a few words.
    detail: String,
    /// The access log's `protocol` and `reason`, when snigate logged the attempt.
    log: Option<(String, String)>,
}

impl fmt::Display for Seen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.detail)?;
        match &self.log {
            Some((protocol, reason)) => write!(f, " · {protocol} `{reason}`"),
            None => f.write_str(" · not logged"),
        }
    }
}

impl fmt::Display for Expect {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind, self.note)?;
        match self.log {
            Some((protocol, reason)) => write!(f, " · {protocol} `{reason}`"),
            None => f.write_str(" · not logged"),
        }
    }
}

/// The processes a run started, killed by pid and reaped on drop.
#[derive(Default)]
struct Processes(Vec<Child>);

impl Drop for Processes {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The Python interpreter itself (not a wrapper script, so that its pid is the process's), and
/// what the test needs besides: else why it cannot run.
fn prerequisites() -> Result<String, String> {
    for tool in [["nft", "--version"], ["openssl", "version"], ["curl", "--version"], ["timeout", "--version"]] {
        run(&tool).map_err(|e| format!("{} is missing: {e}", tool[0]))?;
    }
    common::aioquic_python()
}

/// C (192.168.50.2, fd00:50::2) routes everything through G, which routes I's addresses to I
/// (192.168.51.2, fd00:51::2); I routes back through G. G runs the kit, with I's configured
/// resolver as the only DNS server.
fn setup(tag: &str) -> Result<(Namespaces, [String; 3]), String> {
    let v4 = |prefix| Subnet { prefix, len: 24 };
    let v6 = |prefix| Subnet { prefix, len: 64 };
    let near = [v4("192.168.50."), v6("fd00:50::")];
    let far = [v4("192.168.51."), v6("fd00:51::")];
    let (guard, names) = netns::line("sgb", tag, &near, &far)?;
    let [_, g, i] = &names;
    // I holds every service address; G routes the test ranges to I.
    for a in FAMILIES.iter().flat_map(|f| [f.main, f.banner, f.ip_only, f.ip_port, f.resolver, f.other_resolver]) {
        let a = if a.is_ipv4() { format!("{a}/32") } else { format!("{a}/128") };
        run(&["ip", "-n", i, "addr", "add", &a, "dev", "r0"])?;
    }
    run(&["ip", "-n", g, "route", "add", "203.0.113.0/24", "via", "192.168.51.2"])?;
    run(&["ip", "-n", g, "-6", "route", "add", "2001:db8:113::/64", "via", "fd00:51::2"])?;
    let [f4, f6] = &FAMILIES;
    let kit = Command::new("ip")
        .args(["netns", "exec", g, "sh", &format!("{ROOT}/deploy/nftables/tproxy.sh")])
        .args(["up", TCP_PORT, TPROXY_MARK, QUIC_PORT])
        .env("SNIGATE_RESOLVERS_V4", f4.resolver.to_string())
        .env("SNIGATE_RESOLVERS_V6", f6.resolver.to_string())
        .output()
        .map_err(|e| format!("tproxy.sh: {e}"))?;
    if !kit.status.success() {
        return Err(format!("tproxy.sh up: {}", String::from_utf8_lossy(&kit.stderr).trim()));
    }
    Ok((guard, names))
}

/// I's plain services, from a JSON list of `[kind, address, port]`: `http` answers any request
/// with 200 and [`BODY`], `echo` echoes TCP, `banner` greets at once (SMTP-like), `udp` echoes
/// datagrams. Prints READY once every socket is bound.
const SERVICES: &str = r#"
import json, socket, sys, threading
BODY = sys.argv[2].encode()
def http(c):
    head = b""
    while b"\r\n\r\n" not in head and len(head) < 65536:
        b = c.recv(4096)
        if not b:
            return
        head += b
    c.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s" % (len(BODY), BODY))
def echo(c):
    while (b := c.recv(65536)):
        c.sendall(b)
def banner(c):
    c.sendall(b"220 banner.test ESMTP ready\r\n")
    while c.recv(4096):
        pass
def one(handler, c):
    try:
        c.settimeout(10)
        handler(c)
    except OSError:
        pass
    finally:
        c.close()
def tcp(s, handler):
    while True:
        c, _ = s.accept()
        threading.Thread(target=one, args=(handler, c), daemon=True).start()
def udp(s):
    while True:
        data, peer = s.recvfrom(65535)
        s.sendto(data, peer)
for kind, addr, port in json.loads(sys.argv[1]):
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    if kind == "udp":
        s = socket.socket(family, socket.SOCK_DGRAM)
        s.bind((addr, port))
        threading.Thread(target=udp, args=(s,), daemon=True).start()
    else:
        s = socket.create_server((addr, port), family=family)
        threading.Thread(target=tcp, args=(s, globals()[kind]), daemon=True).start()
print("READY", flush=True)
threading.Event().wait()
"#;

/// From G, which the kit does not filter: waits until every `[kind, address, port]` of a JSON
/// list answers (TCP accepts, UDP echoes), for at most 10 s.
const READY: &str = r#"
import json, socket, sys, time
deadline = time.monotonic() + 10
for kind, addr, port in json.loads(sys.argv[1]):
    family = socket.AF_INET6 if ":" in addr else socket.AF_INET
    while True:
        try:
            if kind == "udp":
                with socket.socket(family, socket.SOCK_DGRAM) as s:
                    s.settimeout(0.2)
                    s.sendto(b"ready?", (addr, port))
                    s.recv(64)
            else:
                socket.create_connection((addr, port), timeout=0.5).close()
            break
        except OSError:
            if time.monotonic() > deadline:
                sys.exit(f"{kind} {addr} {port} does not answer")
            time.sleep(0.05)
"#;

/// C's raw clients, `MODE ADDRESS PORT`, one JSON line out: `echo` sends an SSH greeting and
/// reports whether it came back, `banner` reports the server's first line and how long it
/// took from the connect, `udp` sends a DNS query and reports whether it came back within
/// [`UDP_WAIT`] seconds (argument 4).
const CLIENT: &str = r#"
import json, socket, sys, time
mode, addr, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
family = socket.AF_INET6 if ":" in addr else socket.AF_INET
out = {}
start = time.monotonic()
try:
    if mode == "udp":
        query = bytes.fromhex("123401000001000000000000076578616d706c6503636f6d0000010001")
        with socket.socket(family, socket.SOCK_DGRAM) as s:
            s.settimeout(float(sys.argv[4]))
            s.sendto(query, (addr, port))
            try:
                out["answered"] = s.recv(2048) == query
            except socket.timeout:
                out["answered"] = False
    else:
        s = socket.create_connection((addr, port), timeout=3)
        got = b""
        greeting = b"SSH-2.0-OpenSSH_9.6 bypass-test\r\n"
        if mode == "echo":
            s.sendall(greeting)
        # A reset after the connect is an answer too: the connection was refused.
        try:
            while len(got) < len(greeting) if mode == "echo" else not got.endswith(b"\n"):
                b = s.recv(4096)
                if not b:
                    break
                got += b
        except ConnectionError:
            pass
        if mode == "echo":
            out["echoed"] = got == greeting
        else:
            out["ms"] = round((time.monotonic() - start) * 1000, 1)
        out["got"] = got[:64].decode(errors="replace")
        s.close()
except OSError as e:
    out["error"] = str(e)
print(json.dumps(out))
"#;

/// Starts `args` in namespace `ns` (`ip netns exec` execs it: the child's pid is the
/// program's); returns the child and a channel of its output lines, stdout and stderr.
fn spawn_in(ns: &str, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = mpsc::channel();
    let (out, err) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    for stream in [Box::new(out) as Box<dyn std::io::Read + Send>, Box::new(err)] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stream).lines() {
                let Ok(line) = line else { break };
                // Read on after the receiver is gone, so that the program never blocks on a
                // full pipe.
                let _ = tx.send(line);
            }
        });
    }
    (child, rx)
}

/// Waits up to `limit` for a line containing `word`.
fn wait_for(lines: &mpsc::Receiver<String>, word: &str, limit: Duration, what: &str) {
    let deadline = Instant::now() + limit;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) if line.contains(word) => return,
            Ok(_) => {}
            Err(e) => panic!("{what} did not say {word:?} within {limit:?}: {e}"),
        }
    }
}

/// Starts I's servers and snigate in G, and waits until all of them answer.
fn start(ns: &[String; 3], python: &str, dir: &Path, log: &Path) -> Processes {
    let [_, g, i] = ns;
    let mut procs = Processes::default();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=bypass.test", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(made.status.success(), "openssl req: {}", String::from_utf8_lossy(&made.stderr));
    let mut tls = Vec::new();
    let mut plain = Vec::new();
    for f in &FAMILIES {
        for (addr, port) in [(f.main, 443), (f.main, 4443), (f.ip_only, 443), (f.ip_port, 443)] {
            tls.push(SocketAddr::new(addr, port));
        }
        plain.extend([
            ("http", f.main, 80),
            ("echo", f.main, 22),
            ("banner", f.banner, 25),
            ("udp", f.main, 9999),
            ("udp", f.resolver, 53),
            ("udp", f.other_resolver, 53),
        ]);
    }
    for addr in &tls {
        let (cert, key) = (cert.to_str().unwrap(), key.to_str().unwrap());
        let accept = addr.to_string();
        let args = ["openssl", "s_server", "-accept", &accept, "-cert", cert, "-key", key, "-www", "-quiet"];
        procs.0.push(spawn_in(i, &args).0);
    }
    let plain_json = serde_json::to_string(
        &plain.iter().map(|(kind, addr, port)| (kind, addr.to_string(), port)).collect::<Vec<_>>(),
    )
    .unwrap();
    let (services, lines) = spawn_in(i, &[python, "-c", SERVICES, &plain_json, BODY]);
    procs.0.push(services);
    wait_for(&lines, "READY", Duration::from_secs(10), "the services");
    let server = format!("{ROOT}/tests/quic/quic_server.py");
    for f in &FAMILIES {
        let (quic, lines) = spawn_in(i, &[python, &server, &f.main.to_string(), "443"]);
        procs.0.push(quic);
        wait_for(&lines, "READY", Duration::from_secs(10), "the QUIC server");
    }
    let mut probes: Vec<(&str, String, u16)> = tls.iter().map(|a| ("tcp", a.ip().to_string(), a.port())).collect();
    probes.extend(
        plain.iter().map(|(kind, addr, port)| (if *kind == "udp" { "udp" } else { "tcp" }, addr.to_string(), *port)),
    );
    let ready = Command::new("ip")
        .args(["netns", "exec", g, "timeout", "15", python, "-c", READY])
        .arg(serde_json::to_string(&probes).unwrap())
        .output()
        .unwrap();
    assert!(ready.status.success(), "I's servers: {}", String::from_utf8_lossy(&ready.stderr));

    // A transparent TCP and QUIC listener per address family, each named by its address.
    let listener = |protocol: &str, listen: String| {
        Listener::transparent()
            .name(&listen)
            .listen(&listen)
            .set(format!("protocol = \"{protocol}\"\ntproxy = true\nmark = 0x100"))
    };
    let config = TestConfig::new(listener("tcp", format!("0.0.0.0:{TCP_PORT}")))
        .and(listener("tcp", format!("[::]:{TCP_PORT}")))
        .and(listener("quic", format!("0.0.0.0:{QUIC_PORT}")))
        .and(listener("quic", format!("[::]:{QUIC_PORT}")));
    let config_path = config
        .rules(rules())
        .limit("flow_idle_timeout", 1)
        .log_json(log)
        .default_guard()
        .metrics_off()
        .write(&dir.join("snigate.toml"));
    let (snigate, lines) =
        spawn_in(g, &[env!("CARGO_BIN_EXE_snigate"), "run", "--config", config_path.to_str().unwrap()]);
    procs.0.push(snigate);
    wait_for(&lines, "listening", Duration::from_secs(10), "snigate");
    procs
}

/// Runs `args` in namespace `ns`, killed after 8 s (and 2 more if it ignores SIGTERM): its
/// stdout and its stderr.
fn exec(ns: &str, args: &[&str]) -> (String, String) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "timeout", "-k", "2", "8"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    (text(&out.stdout), text(&out.stderr))
}

/// The first line of `text` that says something, for a failure's detail.
fn first_line(text: &str) -> String {
    text.lines().map(str::trim).find(|l| !l.is_empty()).unwrap_or("no output").to_string()
}

/// Makes one attempt from namespace `c` in `family`: what the client saw.
fn attempt(c: &str, python: &str, family: &Family, probe: Probe) -> (Kind, String) {
    let json = |out: &str| serde_json::from_str::<Value>(out.trim()).unwrap_or(Value::Null);
    match probe {
        Probe::Tls(host, port, sni) => {
            let to = SocketAddr::new(family.addr(host), port).to_string();
            let mut args = vec!["openssl", "s_client", "-connect", &to];
            match sni {
                Some(name) => args.extend(["-servername", name]),
                None => args.push("-noservername"),
            }
            let (out, err) = exec(c, &args);
            if out.contains("Cipher is ") && !out.contains("Cipher is (NONE)") {
                (Kind::Passes, "handshake".into())
            } else if err.contains("alert access denied") {
                (Kind::Denied, "access_denied alert".into())
            } else {
                (Kind::Broken, first_line(&err))
            }
        }
        Probe::Http(host) => {
            let url = format!("http://{}/", SocketAddr::new(family.main, 80));
            let header = format!("Host: {host}");
            let args = ["curl", "-sS", "-g", "--max-time", "5", "-H", &header, "-w", "\n%{http_code}", &url];
            let (out, err) = exec(c, &args);
            match out.rsplit_once('\n') {
                Some((body, "200")) if body == BODY => (Kind::Passes, "HTTP 200 from the server".into()),
                Some((_, "403")) => (Kind::Denied, "HTTP 403".into()),
                _ => (Kind::Broken, format!("{} {}", first_line(&out), first_line(&err))),
            }
        }
        Probe::Raw(host, port) => {
            let (addr, port) = (family.addr(host).to_string(), port.to_string());
            let (out, err) = exec(c, &[python, "-c", CLIENT, "echo", &addr, &port]);
            let v = json(&out);
            match (&v["echoed"], &v["error"]) {
                (Value::Bool(true), _) => (Kind::Passes, "echoed".into()),
                (Value::Bool(false), _) => (Kind::Denied, "not echoed".into()),
                (_, Value::String(e)) => (Kind::Broken, e.clone()),
                _ => (Kind::Broken, first_line(&err)),
            }
        }
        Probe::Banner(host, port) => {
            let (addr, port) = (family.addr(host).to_string(), port.to_string());
            let (out, err) = exec(c, &[python, "-c", CLIENT, "banner", &addr, &port]);
            let v = json(&out);
            let greeted = v["got"].as_str().is_some_and(|g| g.starts_with("220 "));
            match (greeted, v["ms"].as_f64(), &v["error"]) {
                (true, Some(ms), _) if ms < 1000.0 => (Kind::Passes, format!("banner in {ms:.0} ms")),
                (true, Some(ms), _) => (Kind::Broken, format!("banner only after {ms:.0} ms")),
                (false, Some(_), _) => (Kind::Denied, "no banner".into()),
                (_, _, Value::String(e)) => (Kind::Broken, e.clone()),
                _ => (Kind::Broken, first_line(&err)),
            }
        }
        Probe::Quic(sni) => {
            let client = format!("{ROOT}/tests/quic/quic_client.py");
            let addr = family.main.to_string();
            let message = "through snigate";
            let args = [python, &client, &addr, "443", "--sni", sni, "--alpn", "echo", "--version", "1"];
            let (out, err) = exec(c, &[&args[..], &["--timeout", "5", "--message", message]].concat());
            let v = json(&out);
            let elapsed = v["elapsed"].as_f64().unwrap_or(f64::NAN);
            match v["result"].as_str() {
                Some("connected") if v["echo"] == message => (Kind::Passes, "handshake and echo".into()),
                Some("closed") if v["error_code"] == 0x100 + 49 && elapsed < 1.0 => {
                    (Kind::Denied, format!("CONNECTION_CLOSE 0x131 in {:.0} ms", elapsed * 1000.0))
                }
                Some(_) => (Kind::Broken, out.trim().to_string()),
                None => (Kind::Broken, first_line(&err)),
            }
        }
        Probe::Udp(host, port) => {
            let (addr, port) = (family.addr(host).to_string(), port.to_string());
            let (out, err) = exec(c, &[python, "-c", CLIENT, "udp", &addr, &port, UDP_WAIT]);
            match json(&out)["answered"] {
                Value::Bool(true) => (Kind::Passes, "answered".into()),
                Value::Bool(false) => (Kind::Dropped, format!("no answer in {UDP_WAIT} s")),
                _ => (Kind::Broken, first_line(&err)),
            }
        }
    }
}

/// The access log's lines so far.
fn logged(log: &Path) -> Vec<Value> {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// The `protocol` and `reason` of the last line logged for `key` (see [`Probe::log_key`]): the
/// name is the SNI, or an HTTP request's host (`host`, logged as `host:port`).
fn line_for(lines: &[Value], (dst, sni, quic): (SocketAddr, Option<&str>, bool)) -> Option<(String, String)> {
    fn name(l: &Value) -> Option<&str> {
        l["sni"].as_str().or_else(|| l["host"].as_str().map(|h| h.rsplit_once(':').map_or(h, |(name, _)| name)))
    }
    let line = lines
        .iter()
        .rev()
        .find(|l| l["original_dst"] == dst.to_string() && name(l) == sni && (l["protocol"] == "quic") == quic)?;
    let field = |k: &str| line[k].as_str().unwrap_or("?").to_string();
    Some((field("protocol"), field("reason")))
}

/// The matrix as a markdown table: attempt, one column per family, expected.
fn table(seen: &[[Seen; 2]]) -> String {
    let mut text = String::from("| attempt | IPv4 | IPv6 | expected |\n| --- | --- | --- | --- |\n");
    for (row, [four, six]) in ROWS.iter().zip(seen) {
        text += &format!("| {} | {four} | {six} | {} |\n", row.attempt, row.expect);
    }
    text
}

fn is_root() -> bool {
    Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0")
}

#[test]
fn nothing_gets_around_the_gateway_but_what_the_rules_allow() {
    let began = Instant::now();
    if !is_root() {
        return eprintln!("SKIPPED: the bypass matrix needs root to build network namespaces");
    }
    let python = match prerequisites() {
        Ok(python) => python,
        Err(why) => return eprintln!("SKIPPED: the bypass matrix cannot run: {why}"),
    };
    let (_namespaces, ns) = setup(&std::process::id().to_string()).expect("the namespaces and the kit");
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let processes = start(&ns, &python, dir.path(), &log);
    let c = &ns[0];

    let attempts: Vec<[(Kind, String); 2]> =
        ROWS.iter().map(|row| FAMILIES.each_ref().map(|f| attempt(c, &python, f, row.probe))).collect();
    // Allowed flows are logged when they end: QUIC ones after `flow_idle_timeout` (1 s).
    let keys: Vec<_> = ROWS.iter().flat_map(|r| FAMILIES.iter().filter_map(|f| r.probe.log_key(f))).collect();
    // Rows whose line never comes are reported with the others, below.
    wait_until(Duration::from_secs(5), || keys.iter().all(|&k| line_for(&logged(&log), k).is_some()));
    let lines = logged(&log);
    drop(processes);

    let seen: Vec<[Seen; 2]> = ROWS
        .iter()
        .zip(attempts)
        .map(|(row, pair)| {
            let mut families = FAMILIES.iter();
            pair.map(|(kind, detail)| {
                let family = families.next().unwrap();
                let log = row.probe.log_key(family).and_then(|k| line_for(&lines, k));
                Seen { kind, detail, log }
            })
        })
        .collect();
    let matrix = table(&seen);
    println!("\n{matrix}");
    let out = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().map_or_else(|| PathBuf::from("."), Path::to_path_buf);
    std::fs::write(out.join("bypass-matrix.md"), &matrix).unwrap();
    println!("written to {}; {:.1} s", out.join("bypass-matrix.md").display(), began.elapsed().as_secs_f64());

    let mut wrong = Vec::new();
    for (row, pair) in ROWS.iter().zip(&seen) {
        for (family, seen) in FAMILIES.iter().zip(pair) {
            let log = seen.log.as_ref().map(|(p, r)| (p.as_str(), r.as_str()));
            if seen.kind != row.expect.kind || log != row.expect.log {
                wrong.push(format!("{} over {}: {seen}, expected {}", row.attempt, family.label, row.expect));
            }
        }
    }
    assert!(wrong.is_empty(), "rows that did not go as expected:\n{}", wrong.join("\n"));
    // TPROXY, not NAT: the allowed QUIC flows come from the client's own address and go to
    // the address it sent to.
    for (family, client) in FAMILIES.iter().zip(["192.168.50.2:", "[fd00:50::2]:"]) {
        let dst = SocketAddr::new(family.main, 443).to_string();
        let flow =
            lines.iter().find(|l| l["protocol"] == "quic" && l["verdict"] == "allow" && l["original_dst"] == dst);
        let flow = flow.unwrap_or_else(|| panic!("no allowed QUIC flow to {dst} logged"));
        assert!(flow["client"].as_str().is_some_and(|c| c.starts_with(client)), "{flow}");
        assert_eq!(flow["upstream"], dst, "{flow}");
    }
}
