//! Transparent mode end to end, in network namespaces this test creates and removes: a client
//! connects to a "remote" address, nftables REDIRECT (deploy/nftables/local-egress.nft) sends
//! the connection into snigate, and snigate connects to the original destination.
//!
//! A second test does the same on a gateway with TPROXY (deploy/nftables/tproxy.sh): the client
//! is another host routed through the gateway, and no NAT is involved.
//!
//! Needs root, `ip` (iproute2) and `nft` (nftables); CI has them. Elsewhere they skip, saying why.

mod common;
mod harness;
mod netns;

use std::process::Stdio;
use std::time::Duration;

use common::*;
use harness::{Listener, TestConfig};
use netns::{Namespaces, Subnet, run};
use tokio::io::{AsyncBufReadExt, BufReader};

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// Client namespace C (10.99.0.1, snigate and the nftables redirect) and "remote" namespace R
/// (10.99.0.2), joined by a veth pair.
fn setup(tag: &str) -> Result<(Namespaces, String, String), String> {
    let (c, r) = (format!("sgc-{tag}"), format!("sgr-{tag}"));
    let mut guard = Namespaces(Vec::new());
    for ns in [&c, &r] {
        run(&["ip", "netns", "add", ns])?;
        guard.0.push(ns.clone());
    }
    for cmd in [
        vec!["ip", "-n", &c, "link", "add", "v0", "type", "veth", "peer", "name", "v1", "netns", &r],
        vec!["ip", "-n", &c, "addr", "add", "10.99.0.1/24", "dev", "v0"],
        vec!["ip", "-n", &r, "addr", "add", "10.99.0.2/24", "dev", "v1"],
        vec!["ip", "-n", &c, "link", "set", "v0", "up"],
        vec!["ip", "-n", &r, "link", "set", "v1", "up"],
        vec!["ip", "-n", &c, "link", "set", "lo", "up"],
        vec!["ip", "-n", &r, "link", "set", "lo", "up"],
    ] {
        run(&cmd)?;
    }
    run(&["ip", "netns", "exec", &c, "nft", "-f", &format!("{ROOT}/deploy/nftables/local-egress.nft")])?;
    Ok((guard, c, r))
}

const ECHO: &str = r#"
import socket, threading
srv = socket.create_server(("10.99.0.2", 443))
def echo(c):
    while (b := c.recv(65536)):
        c.sendall(b)
    c.close()
while True:
    c, _ = srv.accept()
    threading.Thread(target=echo, args=(c,), daemon=True).start()
"#;

const CLIENT: &str = r#"
import socket, sys
s = socket.create_connection(("10.99.0.2", 443), timeout=10)
hello = bytes.fromhex(sys.argv[1])
s.sendall(hello)
got = b""
while len(got) < len(hello):
    b = s.recv(65536)
    if not b:
        break
    got += b
print(got.hex())
"#;

/// What a client in namespace `ns` reads back after sending a hello for `name` to 10.99.0.2:443.
async fn connect_through(ns: &str, name: &str) -> Vec<u8> {
    let h = hex::encode(hello(&[sni(name.as_bytes())]));
    let out = tokio::process::Command::new("ip")
        .args(["netns", "exec", ns, "timeout", "15", "python3", "-c", CLIENT, &h])
        .output()
        .await
        .unwrap();
    assert!(out.status.success(), "client: {}", String::from_utf8_lossy(&out.stderr));
    hex::decode(String::from_utf8(out.stdout).unwrap().trim()).unwrap()
}

#[tokio::test]
async fn redirected_connections_reach_their_original_destination() {
    let tag = std::process::id().to_string();
    let (_guard, c, r) = match setup(&tag) {
        Ok(ns) => ns,
        Err(why) => {
            eprintln!("SKIPPED: transparent mode needs root, iproute2 and nftables to build namespaces: {why}");
            return;
        }
    };
    let listener = Listener::transparent().listen("0.0.0.0:15001").set("mark = 0x100");
    let (ok, no) = allowed_and_denied(&c, &c, &r, listener).await;
    assert_eq!(ok["original_dst"], "10.99.0.2:443");
    assert_eq!(ok["upstream"], "10.99.0.2:443");
    assert_eq!(no["verdict"], "deny");
    assert_eq!(no["reason"], "rule");
}

/// Runs snigate in namespace `ns` with `listener` and the echo server in
/// `remote`; a client in `client` connecting to 10.99.0.2:443 must get its hello echoed back
/// for an allowed name and `access_denied` for a denied one. Returns the two access-log lines.
async fn allowed_and_denied(
    client: &str,
    ns: &str,
    remote: &str,
    listener: Listener,
) -> (serde_json::Value, serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    // The access log on stdout; the destination guard as it is by default.
    let config = TestConfig::new(listener)
        .rules("allow *.my.salesforce.com\ndeny evil.my.salesforce.com\n")
        .log("format = \"json\"")
        .default_guard()
        .write(&dir.path().join("snigate.toml"));
    let _backend = tokio::process::Command::new("ip")
        .args(["netns", "exec", remote, "python3", "-c", ECHO])
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let (mut snigate, mut log) = start_in(ns, &config).await;
    // The echo server may still be starting (snigate then answers upstream_error): retry the
    // first allowed connection briefly.
    let want = hello(&[sni(b"acme.my.salesforce.com")]);
    let echoed = async || connect_through(client, "acme.my.salesforce.com").await == want;
    eventually(Duration::from_secs(5), "the remote echoed the hello through snigate", echoed).await;
    let denied = connect_through(client, "evil.my.salesforce.com").await;
    assert_eq!(denied, [0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 49], "access_denied from snigate");
    let (mut ok, mut no) = (None, None);
    while ok.is_none() || no.is_none() {
        let line = tokio::time::timeout(Duration::from_secs(5), log.next_line()).await.unwrap().unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["verdict"] == "allow" {
            ok = Some(v);
        } else if v["sni"] == "evil.my.salesforce.com" {
            no = Some(v);
        }
    }
    let _ = snigate.kill().await;
    (ok.unwrap(), no.unwrap())
}

/// Starts snigate in namespace `ns` with `config`, and waits until it listens; its stdout is
/// the access log.
async fn start_in(
    ns: &str,
    config: &std::path::Path,
) -> (tokio::process::Child, tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) {
    let mut snigate = tokio::process::Command::new("ip")
        .args(["netns", "exec", ns, env!("CARGO_BIN_EXE_snigate"), "run", "--config"])
        .arg(config)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(snigate.stderr.take().unwrap()).lines();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(10), stderr.next_line()).await.unwrap().unwrap();
        let Some(line) = line else {
            let status = snigate.wait().await.unwrap();
            panic!("snigate exited before listening: {status}");
        };
        if line.contains("listening") {
            break;
        }
    }
    let log = BufReader::new(snigate.stdout.take().unwrap()).lines();
    (snigate, log)
}

/// Client C (10.98.0.2) routes through gateway G (10.98.0.1, 10.99.0.1) to remote R
/// (10.99.0.2). G runs snigate with `tproxy = true` behind deploy/nftables/tproxy.sh.
fn setup_gateway(tag: &str) -> Result<(Namespaces, [String; 3]), String> {
    let near = [Subnet { prefix: "10.98.0.", len: 24 }];
    let far = [Subnet { prefix: "10.99.0.", len: 24 }];
    let (guard, names) = netns::line("sgt", tag, &near, &far)?;
    let g = &names[1];
    run(&["ip", "netns", "exec", g, "sh", &format!("{ROOT}/deploy/nftables/tproxy.sh"), "up", "15002"])?;
    Ok((guard, names))
}

#[tokio::test]
async fn tproxy_on_a_gateway_reaches_the_original_destination() {
    let tag = std::process::id().to_string();
    let (_guard, [c, g, r]) = match setup_gateway(&tag) {
        Ok(ns) => ns,
        Err(why) => {
            eprintln!("SKIPPED: TPROXY needs root, iproute2 and nftables to build namespaces: {why}");
            return;
        }
    };
    let listener = Listener::transparent().listen("0.0.0.0:15002").set("tproxy = true");
    let (ok, no) = allowed_and_denied(&c, &g, &r, listener).await;
    assert_eq!(ok["client"].as_str().unwrap().split(':').next(), Some("10.98.0.2"), "the real client, no NAT");
    assert_eq!(ok["original_dst"], "10.99.0.2:443");
    assert_eq!(no["reason"], "rule");
}
