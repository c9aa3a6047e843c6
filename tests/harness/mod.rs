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

/// Starts snigate in `upstream` mode in front of `upstream`, with `rules` written to
/// `dir/test.rules`. `listener` and `limits` are extra TOML lines for those sections.
pub async fn start_proxy(dir: &Path, upstream: SocketAddr, rules: &str, listener: &str, limits: &str) -> Proxy {
    start_listener(dir, &format!("mode = \"upstream\"\nupstream = \"{upstream}\"\n{listener}"), rules, limits).await
}

/// Starts snigate with one listener on 127.0.0.1:0 configured by `listener` (TOML lines: the
/// mode and its settings), `rules` written to `dir/test.rules`, and `limits`. The backends are
/// local, so loopback is carved out of the destination guard's denied set.
pub async fn start_listener(dir: &Path, listener: &str, rules: &str, limits: &str) -> Proxy {
    let rules_file = dir.join("test.rules");
    std::fs::write(&rules_file, rules).unwrap();
    let text = format!(
        "[[listener]]\nname = \"test\"\nlisten = \"127.0.0.1:0\"\n{listener}\n\
         [rules]\nfiles = [\"{}\"]\n[limits]\n{limits}\n[log]\nformat = \"off\"\n\
         [destinations]\nallow = [\"127.0.0.0/8\", \"::1/128\"]\n",
        rules_file.display()
    );
    start_config(&text, rules_file).await
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
    let metrics = Arc::new(Metrics::new());
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
