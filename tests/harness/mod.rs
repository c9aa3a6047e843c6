//! A snigate listener on 127.0.0.1:0 in front of local backends, for the proxy tests.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use snigate::config::Config;
use snigate::proxy::{Rules, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// The rules most proxy tests use.
pub const RULES: &str = "\
allow *.my.salesforce.com
deny  evil.my.salesforce.com
allow login.salesforce.com
";

/// A running snigate.
pub struct Proxy {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its configuration.
    pub config: Config,
    /// Its rule snapshot.
    pub rules: Rules,
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
/// mode and its settings), `rules` written to `dir/test.rules`, and `limits`.
pub async fn start_listener(dir: &Path, listener: &str, rules: &str, limits: &str) -> Proxy {
    let rules_file = dir.join("test.rules");
    std::fs::write(&rules_file, rules).unwrap();
    let text = format!(
        "[[listener]]\nname = \"test\"\nlisten = \"127.0.0.1:0\"\n{listener}\n\
         [rules]\nfiles = [\"{}\"]\n[limits]\n{limits}\n[log]\nformat = \"off\"\n",
        rules_file.display()
    );
    let config = Config::parse("test.toml", &text).unwrap();
    let server = Server::bind(&config, config.compile_rules().unwrap()).await.unwrap();
    let addr = server.local_addrs()[0];
    let rules = server.rules();
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
    Proxy { addr, config, rules, rules_file, stop, done }
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
