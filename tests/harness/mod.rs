//! A snigate listener on 127.0.0.1:0 in front of local backends, for the proxy tests.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use snigate::AccessLog;
use snigate::Config;
use snigate::{Endpoint, Metrics};
use snigate::{LiveSettings, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

/// The rules most proxy tests use.
pub const RULES: &str = "\
allow *.my.salesforce.com
deny  evil.my.salesforce.com
allow login.salesforce.com
";

/// A running snigate.
pub struct Proxy {
    /// Where it listens (the first listener).
    pub addr: SocketAddr,
    /// Every listener's address, in configuration order.
    pub addrs: Vec<SocketAddr>,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub metrics_addr: SocketAddr,
    /// Its metrics (for reloads).
    pub metrics: Arc<Metrics>,
    /// Its access log (to flush it).
    pub log: AccessLog,
    /// Its configuration.
    pub config: Config,
    /// Its live settings (rules, limits, credentials), to reload.
    pub live: LiveSettings,
    /// The rule file it loaded.
    pub rules_file: PathBuf,
    /// Dropping this (or sending) shuts it down.
    pub stop: oneshot::Sender<()>,
    /// Resolves when `run` has returned (drain finished).
    pub done: oneshot::Receiver<()>,
}

/// One `[[listener]]` of a [`TestConfig`]: named `test`, on 127.0.0.1:0 unless set otherwise,
/// with its mode and settings as TOML lines.
#[derive(Clone, Debug)]
pub struct Listener {
    name: String,
    listen: String,
    lines: Vec<String>,
}

impl Listener {
    /// A listener whose mode and settings are the TOML `lines` (`mode = "..."` and the rest).
    pub fn mode(lines: impl Into<String>) -> Listener {
        Listener { name: "test".into(), listen: "127.0.0.1:0".into(), lines: vec![lines.into()] }
    }

    /// `mode = "upstream"` to `addr`.
    pub fn upstream(addr: SocketAddr) -> Listener {
        Listener::mode(format!("mode = \"upstream\"\nupstream = \"{addr}\""))
    }

    /// `mode = "sni"`, reaching allowed names on `upstream_port`.
    pub fn sni(upstream_port: u16) -> Listener {
        Listener::mode(format!("mode = \"sni\"\nupstream_port = {upstream_port}"))
    }

    /// `mode = "connect"`, allowing `ports` (none: the mode's default).
    pub fn connect(ports: &[u16]) -> Listener {
        Listener::mode("mode = \"connect\"").ports(ports)
    }

    /// `mode = "http"`, allowing `ports` (none: the mode's default).
    pub fn http(ports: &[u16]) -> Listener {
        Listener::mode("mode = \"http\"").ports(ports)
    }

    /// `mode = "transparent"`.
    pub fn transparent() -> Listener {
        Listener::mode("mode = \"transparent\"")
    }

    /// Its name (default `test`).
    pub fn name(mut self, name: &str) -> Listener {
        self.name = name.into();
        self
    }

    /// Where it listens (default 127.0.0.1:0).
    pub fn listen(mut self, addr: impl std::fmt::Display) -> Listener {
        self.listen = addr.to_string();
        self
    }

    /// `protocol = "quic"`.
    pub fn quic(self) -> Listener {
        self.set("protocol = \"quic\"")
    }

    /// More TOML lines for this listener, e.g. `reject = "rst"`.
    pub fn set(mut self, lines: impl Into<String>) -> Listener {
        self.lines.push(lines.into());
        self
    }

    fn ports(self, ports: &[u16]) -> Listener {
        if ports.is_empty() {
            return self;
        }
        let list: Vec<String> = ports.iter().map(u16::to_string).collect();
        self.set(format!("ports = [{}]", list.join(", ")))
    }

    fn toml(&self) -> String {
        format!("[[listener]]\nname = \"{}\"\nlisten = \"{}\"\n{}\n", self.name, self.listen, self.lines.join("\n"))
    }
}

/// Where the rules come from: text written next to the configuration, or a file already there.
#[derive(Clone, Debug)]
enum RulesSource {
    Text(String),
    File(PathBuf),
}

/// A snigate configuration for a test, section by section; every part has the default the
/// proxy tests want, so that a test names only what it is about:
///
/// - listeners: the one given, named `test`, on 127.0.0.1:0;
/// - rules: [`RULES`], written to `test.rules` in the test's directory;
/// - `[limits]`: none set;
/// - `[log]`: `format = "off"`;
/// - `[destinations]`: loopback allowed (the backends are local);
/// - `[metrics]`: on 127.0.0.1:0;
/// - `[runtime]`: none set.
///
/// ```ignore
/// let proxy = TestConfig::upstream(backend).rules("allow a.example.com\n").listener("reject = \"rst\"")
///     .limit("hello_timeout", 0.5).start(dir.path()).await;
/// ```
#[derive(Clone, Debug)]
pub struct TestConfig {
    listeners: Vec<Listener>,
    rules: RulesSource,
    rules_settings: Vec<String>,
    limits: Vec<String>,
    log: String,
    destinations: Option<String>,
    metrics: String,
    runtime: Vec<String>,
    tables: Vec<String>,
}

impl TestConfig {
    /// A configuration with `listener` as its only listener.
    pub fn new(listener: Listener) -> TestConfig {
        TestConfig {
            listeners: vec![listener],
            rules: RulesSource::Text(RULES.into()),
            rules_settings: Vec::new(),
            limits: Vec::new(),
            log: "format = \"off\"".into(),
            destinations: Some("allow = [\"127.0.0.0/8\", \"::1/128\"]".into()),
            metrics: "listen = \"127.0.0.1:0\"".into(),
            runtime: Vec::new(),
            tables: Vec::new(),
        }
    }

    /// One listener in `upstream` mode in front of `addr`.
    pub fn upstream(addr: SocketAddr) -> TestConfig {
        TestConfig::new(Listener::upstream(addr))
    }

    /// One listener in `sni` mode, reaching allowed names on `upstream_port`.
    pub fn sni(upstream_port: u16) -> TestConfig {
        TestConfig::new(Listener::sni(upstream_port))
    }

    /// One listener in `connect` mode, allowing `ports`.
    pub fn connect(ports: &[u16]) -> TestConfig {
        TestConfig::new(Listener::connect(ports))
    }

    /// One listener in `http` mode, allowing `ports`.
    pub fn http(ports: &[u16]) -> TestConfig {
        TestConfig::new(Listener::http(ports))
    }

    /// One listener whose mode and settings are the TOML `lines`.
    pub fn mode(lines: impl Into<String>) -> TestConfig {
        TestConfig::new(Listener::mode(lines))
    }

    /// Another listener, after the others; [`TestConfig::listener`], `name` and `listen` then
    /// apply to it.
    pub fn and(mut self, listener: Listener) -> TestConfig {
        self.listeners.push(listener);
        self
    }

    /// More TOML lines for the last listener, e.g. `reject = "rst"`.
    pub fn listener(self, lines: impl Into<String>) -> TestConfig {
        self.last(|l| l.set(lines))
    }

    /// The last listener's name.
    pub fn name(self, name: &str) -> TestConfig {
        self.last(|l| l.name(name))
    }

    /// Where the last listener listens.
    pub fn listen(self, addr: impl std::fmt::Display) -> TestConfig {
        self.last(|l| l.listen(addr))
    }

    /// The rules, written to a file beside the configuration.
    pub fn rules(mut self, text: impl Into<String>) -> TestConfig {
        self.rules = RulesSource::Text(text.into());
        self
    }

    /// A rule file that is already there, instead of rules to write.
    pub fn rules_file(mut self, path: impl Into<PathBuf>) -> TestConfig {
        self.rules = RulesSource::File(path.into());
        self
    }

    /// Another key of `[rules]`, e.g. `ech = "deny"`.
    pub fn rules_setting(mut self, line: impl Into<String>) -> TestConfig {
        self.rules_settings.push(line.into());
        self
    }

    /// More `[limits]` lines, e.g. `hello_timeout = 0.5`.
    pub fn limits(mut self, lines: impl Into<String>) -> TestConfig {
        self.limits.push(lines.into());
        self
    }

    /// One `[limits]` key.
    pub fn limit(self, key: &str, value: impl std::fmt::Display) -> TestConfig {
        self.limits(format!("{key} = {value}"))
    }

    /// The whole `[log]` section's lines (default `format = "off"`).
    pub fn log(mut self, lines: impl Into<String>) -> TestConfig {
        self.log = lines.into();
        self
    }

    /// A JSON access log written to `path`.
    pub fn log_json(self, path: &Path) -> TestConfig {
        self.log(format!("format = \"json\"\npath = \"{}\"", path.display()))
    }

    /// The whole `[destinations]` section's lines (default: loopback allowed).
    pub fn destinations(mut self, lines: impl Into<String>) -> TestConfig {
        self.destinations = Some(lines.into());
        self
    }

    /// No `[destinations]` section: the destination guard as it is by default.
    pub fn default_guard(mut self) -> TestConfig {
        self.destinations = None;
        self
    }

    /// The whole `[metrics]` section's lines (default: on 127.0.0.1:0).
    pub fn metrics(mut self, lines: impl Into<String>) -> TestConfig {
        self.metrics = lines.into();
        self
    }

    /// No metrics endpoint.
    pub fn metrics_off(self) -> TestConfig {
        self.metrics("enabled = false")
    }

    /// More `[runtime]` lines, e.g. `threads = 3`.
    pub fn runtime(mut self, lines: impl Into<String>) -> TestConfig {
        self.runtime.push(lines.into());
        self
    }

    /// A top-level table, written last, e.g. `[[report]]` with its keys.
    pub fn table(mut self, lines: impl Into<String>) -> TestConfig {
        self.tables.push(lines.into());
        self
    }

    /// The configuration's text, its rules in `rules_file` unless it names a rule file.
    pub fn toml(&self, rules_file: &Path) -> String {
        let rules_file = match &self.rules {
            RulesSource::Text(_) => rules_file,
            RulesSource::File(path) => path,
        };
        let mut text: String = self.listeners.iter().map(Listener::toml).collect();
        text += &format!("[rules]\nfiles = [\"{}\"]\n", rules_file.display());
        text += &self.rules_settings.iter().map(|l| format!("{l}\n")).collect::<String>();
        text += &format!("[limits]\n{}\n", self.limits.join("\n"));
        text += &format!("[log]\n{}\n", self.log);
        if let Some(destinations) = &self.destinations {
            text += &format!("[destinations]\n{destinations}\n");
        }
        text += &format!("[metrics]\n{}\n", self.metrics);
        if !self.runtime.is_empty() {
            text += &format!("[runtime]\n{}\n", self.runtime.join("\n"));
        }
        text += &self.tables.iter().map(|t| format!("{t}\n")).collect::<String>();
        text
    }

    /// Writes the configuration to `path` (its rules, if given as text, beside it with the
    /// extension `rules`), for the binary; returns `path`.
    pub fn write(&self, path: &Path) -> PathBuf {
        let rules_file = self.write_rules(&path.with_extension("rules"));
        std::fs::write(path, self.toml(&rules_file)).unwrap();
        path.to_path_buf()
    }

    /// Starts snigate in this process on the configuration, its rules, if given as text,
    /// written to `dir/test.rules`.
    pub async fn start(&self, dir: &Path) -> Proxy {
        let rules_file = self.write_rules(&dir.join("test.rules"));
        start_config(&self.toml(&rules_file), rules_file).await
    }

    /// Writes the rules to `path` if they are text; the rule file either way.
    fn write_rules(&self, path: &Path) -> PathBuf {
        match &self.rules {
            RulesSource::Text(text) => {
                std::fs::write(path, text).unwrap();
                path.to_path_buf()
            }
            RulesSource::File(file) => file.clone(),
        }
    }

    fn last(mut self, change: impl FnOnce(Listener) -> Listener) -> TestConfig {
        let last = self.listeners.pop().expect("a listener");
        self.listeners.push(change(last));
        self
    }
}

/// Starts snigate in `upstream` mode in front of `upstream`, with `rules`, and `listener` and
/// `limits` as extra TOML lines for those sections. New tests say it with [`TestConfig`].
pub async fn start_proxy(dir: &Path, upstream: SocketAddr, rules: &str, listener: &str, limits: &str) -> Proxy {
    TestConfig::upstream(upstream).rules(rules).listener(listener).limits(limits).start(dir).await
}

/// Starts snigate with one listener configured by `listener` (TOML lines: the mode and its
/// settings), `rules` and `limits`. New tests say it with [`TestConfig`].
pub async fn start_listener(dir: &Path, listener: &str, rules: &str, limits: &str) -> Proxy {
    TestConfig::mode(listener).rules(rules).limits(limits).start(dir).await
}

/// Starts snigate on the configuration `text` (listeners on port 0), with its metrics
/// endpoint on 127.0.0.1:0 unless `text` has a `[metrics]` section. `rules_file` is recorded
/// for tests that rewrite it.
pub async fn start_config(text: &str, rules_file: PathBuf) -> Proxy {
    let text = if text.contains("[metrics]") {
        text.to_string()
    } else {
        format!("{text}\n[metrics]\nlisten = \"127.0.0.1:0\"\n")
    };
    let config = Config::parse("test.toml", &text).unwrap();
    // One set of per-worker counters per worker, as `snigate run` makes them.
    let metrics = Arc::new(Metrics::with_workers(config.runtime.worker_threads().max(1)));
    let endpoint = Endpoint::bind(config.metrics.listen, metrics.clone()).await.unwrap();
    let metrics_addr = endpoint.local_addr().unwrap();
    tokio::spawn(endpoint.serve());
    let log = AccessLog::open(&config.log).unwrap();
    let server = Server::bind(&config, config.compile_rules().unwrap(), metrics.clone(), &log).await.unwrap();
    let addrs = server.local_addrs();
    let addr = addrs[0];
    let live = server.live();
    let (stop, stopped) = oneshot::channel::<()>();
    let (finished, done) = oneshot::channel();
    tokio::spawn(async move {
        server
            .run(async {
                let _ = stopped.await;
            })
            .await;
        let _ = finished.send(());
    });
    Proxy { addr, addrs, metrics_addr, metrics, log, config, live, rules_file, stop, done }
}

/// One HTTP/1.1 GET: the status code and the body.
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    s.write_all(request.as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut response)).await.unwrap().unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_string())
}

/// `/metrics` of `proxy`, as text.
pub async fn scrape(proxy: &Proxy) -> String {
    let (status, body) = http_get(proxy.metrics_addr, "/metrics").await;
    assert_eq!(status, 200);
    body
}

/// Scrapes until `ready` holds for the samples (every connection recorded), at most 10 s. A
/// client sees its connection closed a moment before the worker that served it, on another
/// thread, has counted it.
pub async fn settle(proxy: &Proxy, ready: impl Fn(&BTreeMap<String, f64>) -> bool) -> BTreeMap<String, f64> {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = samples(&scrape(proxy).await);
        if ready(&s) {
            return s;
        }
        assert!(std::time::Instant::now() < deadline, "metrics did not settle:\n{s:#?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// The samples of an exposition, keyed `name{label="value",…}` with labels sorted by name.
pub fn samples(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (series, value) = l.rsplit_once(' ').unwrap();
            let key = match series.split_once('{') {
                Some((name, labels)) => {
                    let mut labels: Vec<&str> = labels.trim_end_matches('}').split(',').collect();
                    labels.sort();
                    format!("{name}{{{}}}", labels.join(","))
                }
                None => series.to_string(),
            };
            (key, value.parse().unwrap())
        })
        .collect()
}

/// The key [`samples`] uses for `name` with `labels` (in any order).
pub fn key(name: &str, labels: &[(&str, &str)]) -> String {
    if labels.is_empty() {
        return name.to_string();
    }
    let mut labels: Vec<String> = labels.iter().map(|(k, v)| format!("{k}=\"{v}\"")).collect();
    labels.sort();
    format!("{name}{{{}}}", labels.join(","))
}

/// A backend without cryptography: reads everything until the client's FIN, then answers
/// `reply` and closes. Sends what it received on the returned channel.
pub async fn recording_backend(reply: Vec<u8>) -> (SocketAddr, oneshot::Receiver<Vec<u8>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    tokio::spawn(async move {
        let (mut s, _) = listener.accept().await.unwrap();
        let mut got = Vec::new();
        s.read_to_end(&mut got).await.unwrap();
        s.write_all(&reply).await.unwrap();
        s.shutdown().await.unwrap();
        let _ = tx.send(got);
    });
    (addr, rx)
}

/// A backend that echoes every connection until EOF.
pub async fn echo_backend() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    addr
}

/// Deterministic bytes (xorshift), for payloads.
pub fn pseudo_random(n: usize) -> Vec<u8> {
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// A listening socket that answers no SYN: its accept queue is full and nothing accepts.
pub struct Blackhole {
    /// Where connects hang.
    pub addr: SocketAddr,
    /// The socket and the connections that filled its queue.
    _held: (socket2::Socket, Vec<std::net::TcpStream>),
}

impl Blackhole {
    pub fn new() -> Blackhole {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        socket.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into()).unwrap();
        socket.listen(0).unwrap();
        let addr = socket.local_addr().unwrap().as_socket().unwrap();
        let mut filled = Vec::new();
        while let Ok(s) = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            filled.push(s);
            assert!(filled.len() < 8, "the accept queue never filled");
        }
        Blackhole { addr, _held: (socket, filled) }
    }
}

/// `openssl s_server` with a fresh self-signed certificate for acme.my.salesforce.com (written
/// into `dir`), on 127.0.0.1, once it accepts.
pub async fn tls_server(dir: &Path) -> (tokio::process::Child, SocketAddr) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1"])
        .args(["-subj", "/CN=acme.my.salesforce.com", "-keyout"])
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl (apt-get install openssl)");
    assert!(status.success());
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let server = tokio::process::Command::new("openssl")
        .args(["s_server", "-accept", &format!("127.0.0.1:{port}"), "-quiet", "-cert"])
        .arg(&cert)
        .arg("-key")
        .arg(&key)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("openssl s_server");
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    super::common::eventually(Duration::from_secs(5), "openssl s_server accepts", async || {
        TcpStream::connect(addr).await.is_ok()
    })
    .await;
    (server, addr)
}
