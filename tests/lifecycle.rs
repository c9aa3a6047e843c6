//! Limits and lifecycle on real sockets: hostile clients, the connection limit, reloads under
//! traffic, and draining on shutdown.

mod common;
mod harness;

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use common::*;
use harness::*;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

/// Reads until EOF (or a reset), at most `limit`; returns the bytes and how long it took.
async fn read_until_closed(s: &mut TcpStream, limit: Duration) -> (Vec<u8>, Duration) {
    let start = Instant::now();
    let mut got = Vec::new();
    let _ = tokio::time::timeout(limit, s.read_to_end(&mut got)).await.expect("snigate closes the connection");
    (got, start.elapsed())
}

/// Sends `msg` on an allowed, spliced connection and expects it echoed.
async fn echoes(s: &mut TcpStream, msg: &[u8]) {
    s.write_all(msg).await.unwrap();
    let mut back = vec![0; msg.len()];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back)).await.unwrap().unwrap();
    assert_eq!(back, msg);
}

/// Opens a connection with `name` as SNI through `proxy` to the echo backend, and checks it
/// is spliced (the hello comes back first).
async fn spliced(proxy: std::net::SocketAddr, name: &[u8]) -> TcpStream {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let h = hello(&[sni(name)]);
    s.write_all(&h).await.unwrap();
    let mut back = vec![0; h.len()];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back)).await.unwrap().unwrap();
    assert_eq!(back, h);
    s
}

/// A connection with `name` as SNI, spliced through `proxy` to the echo backend (its hello
/// came back) within `patience`; `None` when refused, cut or slower.
async fn try_spliced(proxy: std::net::SocketAddr, name: &[u8], patience: Duration) -> Option<TcpStream> {
    let attempt = async {
        let mut s = TcpStream::connect(proxy).await.ok()?;
        let h = hello(&[sni(name)]);
        s.write_all(&h).await.ok()?;
        let mut back = vec![0; h.len()];
        s.read_exact(&mut back).await.ok()?;
        (back == h).then_some(s)
    };
    tokio::time::timeout(patience, attempt).await.ok().flatten()
}

/// Whether a connection with `name` as SNI is spliced through `proxy` rather than refused,
/// within 3 s.
async fn is_allowed(proxy: std::net::SocketAddr, name: &[u8]) -> bool {
    try_spliced(proxy, name, Duration::from_secs(3)).await.is_some()
}

async fn is_denied(proxy: std::net::SocketAddr, name: &[u8]) -> bool {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(&hello(&[sni(name)])).await.unwrap();
    let (got, _) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    got == [0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 49]
}

#[tokio::test]
async fn silent_and_trickling_clients_are_cut_at_hello_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = TestConfig::upstream(echo_backend().await).limit("hello_timeout", 0.5).start(dir.path()).await;
    let mut silent = TcpStream::connect(proxy.addr).await.unwrap();
    let (got, took) = read_until_closed(&mut silent, Duration::from_secs(5)).await;
    assert!(got.is_empty() && took >= Duration::from_millis(400) && took < Duration::from_secs(3), "{took:?}");

    // One byte every 100 ms: each read is "progress", but the deadline is for the whole hello.
    let mut slow = TcpStream::connect(proxy.addr).await.unwrap();
    slow.set_nodelay(true).unwrap();
    let h = hello(&[sni(b"acme.my.salesforce.com")]);
    let start = Instant::now();
    let mut cut = false;
    for b in &h {
        if slow.write_all(std::slice::from_ref(b)).await.is_err() {
            cut = true;
            break;
        }
        // The trickle itself: the client's pace is what is tested.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut probe = [0u8; 1];
        if let Ok(Ok(0) | Err(_)) = tokio::time::timeout(Duration::from_millis(1), slow.read(&mut probe)).await {
            cut = true;
            break;
        }
    }
    assert!(cut, "a trickling client must be cut");
    assert!(start.elapsed() < Duration::from_secs(3), "cut after {:?}", start.elapsed());
}

#[tokio::test]
async fn oversized_hello_is_denied_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = TestConfig::upstream(echo_backend().await).limit("max_hello_bytes", 1024).start(dir.path()).await;
    let mut s = TcpStream::connect(proxy.addr).await.unwrap();
    let big = hello(&[sni(b"acme.my.salesforce.com"), ext(21, &[0; 2000])]);
    s.write_all(&big).await.unwrap();
    let (got, took) = read_until_closed(&mut s, Duration::from_secs(5)).await;
    assert_eq!(got, [0x15, 0x03, 0x01, 0x00, 0x02, 0x02, 50], "decode_error");
    assert!(took < Duration::from_secs(2));
}

/// Beyond max_connections, new connections wait in the accept queue; they are served as soon
/// as a slot frees, and nothing fails.
#[tokio::test]
async fn connections_beyond_the_limit_wait_for_a_slot() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = TestConfig::upstream(echo_backend().await).limit("max_connections", 2).start(dir.path()).await;
    let first = spliced(proxy.addr, b"a.my.salesforce.com").await;
    let _second = spliced(proxy.addr, b"b.my.salesforce.com").await;
    let mut third = TcpStream::connect(proxy.addr).await.unwrap();
    let h = hello(&[sni(b"c.my.salesforce.com")]);
    third.write_all(&h).await.unwrap();
    let mut back = vec![0; h.len()];
    let waited = tokio::time::timeout(Duration::from_millis(500), third.read_exact(&mut back)).await;
    assert!(waited.is_err(), "the third connection must wait while two are open");
    drop(first);
    tokio::time::timeout(Duration::from_secs(5), third.read_exact(&mut back)).await.unwrap().unwrap();
    assert_eq!(back, h);
}

/// A rule change flips verdicts for new connections only; a broken file keeps the old rules.
#[tokio::test]
async fn reload_under_traffic() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = TestConfig::upstream(echo_backend().await).rules("allow a.example.com\n").start(dir.path()).await;
    let mut open = spliced(proxy.addr, b"a.example.com").await;
    assert!(is_denied(proxy.addr, b"b.example.com").await);

    std::fs::write(&proxy.rules_file, "allow b.example.com\n").unwrap();
    snigate::reload_rules(&proxy.config, &proxy.live, &proxy.metrics).await.unwrap();
    assert!(is_denied(proxy.addr, b"a.example.com").await);
    let _b = spliced(proxy.addr, b"b.example.com").await;
    echoes(&mut open, b"still spliced after the reload").await;

    std::fs::write(&proxy.rules_file, "allow b.example.com\nallow c.example.com from 10.0.0.0/33\nbogus\n").unwrap();
    let errors = snigate::reload_rules(&proxy.config, &proxy.live, &proxy.metrics).await.unwrap_err();
    assert_eq!(errors.0.len(), 2, "{errors}");
    assert!(errors.0.iter().all(|e| e.line == 2 || e.line == 3), "{errors}");
    let _still = spliced(proxy.addr, b"b.example.com").await;
    echoes(&mut open, b"and after a failed one").await;
}

/// Editing the rule file is enough: the watcher reloads it.
#[tokio::test]
async fn rule_file_changes_are_picked_up() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = TestConfig::upstream(echo_backend().await).rules("allow a.example.com\n").start(dir.path()).await;
    let (tx, mut triggers) = tokio::sync::mpsc::channel(4);
    let _watcher = snigate::watch_rules(&proxy.config, tx).unwrap().expect("a rule file to watch");
    // Another file in the same directory, written on and on (a log), triggers nothing.
    let other = dir.path().join("unrelated.log");
    for i in 0..20 {
        std::fs::write(&other, format!("line {i}\n")).unwrap();
        // A log's pace: writes spread over longer than the debounce, which is what is tested.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let quiet = tokio::time::timeout(snigate::DEBOUNCE * 2, triggers.recv()).await;
    assert!(quiet.is_err(), "an unrelated file triggered a reload: {quiet:?}");
    // Replace by rename, as editors and ConfigMap updates do.
    let tmp = dir.path().join(".test.rules.tmp");
    std::fs::write(&tmp, "allow b.example.com\n").unwrap();
    std::fs::rename(&tmp, &proxy.rules_file).unwrap();
    let trigger = tokio::time::timeout(Duration::from_secs(5), triggers.recv()).await.expect("a reload trigger");
    assert_eq!(trigger, Some(snigate::ReloadTrigger::FileChange));
    snigate::reload_rules(&proxy.config, &proxy.live, &proxy.metrics).await.unwrap();
    assert!(is_denied(proxy.addr, b"a.example.com").await);
}

/// Shutdown stops accepting, lets the open connection finish, then returns.
#[tokio::test]
async fn shutdown_drains_open_connections() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = TestConfig::upstream(echo_backend().await).limit("drain_timeout", 10).start(dir.path()).await;
    let mut open = spliced(proxy.addr, b"acme.my.salesforce.com").await;
    proxy.stop.send(()).unwrap();
    let mut done = proxy.done;
    let refused = async || TcpStream::connect(proxy.addr).await.is_err();
    eventually(Duration::from_secs(5), "no new connections once draining", refused).await;
    echoes(&mut open, b"spliced during the drain").await;
    assert!(done.try_recv().is_err(), "still draining while a connection is open");
    open.shutdown().await.unwrap();
    let (rest, _) = read_until_closed(&mut open, Duration::from_secs(5)).await;
    assert!(rest.is_empty());
    tokio::time::timeout(Duration::from_secs(5), done).await.expect("drained").unwrap();
}

/// The binary: SIGTERM with a spliced connection open; the connection keeps working until
/// the drain deadline while `/readyz` says not ready, then the process exits 0.
#[tokio::test]
async fn sigterm_drains_until_the_deadline_then_exits_0() {
    let dir = tempfile::tempdir().unwrap();
    let config =
        TestConfig::upstream(echo_backend().await).limit("drain_timeout", 1.5).write(&dir.path().join("snigate.toml"));
    let (mut child, mut stderr) = run_binary(&config);
    let mut metrics = None;
    let addr: std::net::SocketAddr = loop {
        let line = tokio::time::timeout(Duration::from_secs(10), stderr.next_line()).await.unwrap().unwrap().unwrap();
        let field =
            |name: &str| line.split(name).nth(1).map(|rest| rest.split_whitespace().next().unwrap().to_string());
        if let Some(m) = field("metrics=") {
            metrics = Some(m.parse::<std::net::SocketAddr>().unwrap());
        }
        if let Some(listen) = field("listen=") {
            break listen.parse().unwrap();
        }
    };
    let metrics = metrics.expect("the metrics address is logged before the listeners");
    // Ready once the accept loops run, just after the listeners are logged.
    let ready = async || http_get(metrics, "/readyz").await == (200, "ready\n".to_string());
    eventually(Duration::from_secs(5), "ready", ready).await;
    tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });
    let mut open = spliced(addr, b"acme.my.salesforce.com").await;
    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let signalled = Instant::now();
    let draining = async || http_get(metrics, "/readyz").await.0 == 503;
    eventually(Duration::from_secs(5), "the drain starts", draining).await;
    echoes(&mut open, b"alive after SIGTERM").await;
    assert_eq!(http_get(metrics, "/readyz").await.0, 503, "not ready while draining");
    assert_eq!(http_get(metrics, "/healthz").await.0, 200, "alive while draining");
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await.expect("exits").unwrap();
    assert_eq!(status.code(), Some(0));
    let took = signalled.elapsed();
    assert!(took >= Duration::from_millis(1400) && took < Duration::from_secs(5), "exited after {took:?}");
}

/// At the drain deadline the connections still open are cut, and each still writes its log
/// line and counts in the metrics: one spliced, one still in its hello.
#[tokio::test]
async fn connections_cut_at_the_drain_deadline_are_logged_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let log_file = dir.path().join("access.log");
    let proxy = TestConfig::upstream(echo_backend().await)
        .limit("drain_timeout", 0.5)
        .limit("hello_timeout", 30)
        .log_json(&log_file)
        .start(dir.path())
        .await;
    let mut open = spliced(proxy.addr, b"acme.my.salesforce.com").await;
    echoes(&mut open, b"before the drain").await;
    let mut slow = TcpStream::connect(proxy.addr).await.unwrap();
    slow.write_all(&hello(&[sni(b"acme.my.salesforce.com")])[..20]).await.unwrap();
    settle(&proxy, |s| s.get(&key("snigate_active_connections", &[("listener", "test")])) == Some(&2.0)).await;
    proxy.stop.send(()).unwrap();
    tokio::time::timeout(Duration::from_secs(5), proxy.done).await.expect("drained").unwrap();
    for s in [&mut open, &mut slow] {
        let (_, took) = read_until_closed(s, Duration::from_secs(2)).await;
        assert!(took < Duration::from_secs(2));
    }
    proxy.log.finish(Duration::from_secs(2));
    let lines: Vec<serde_json::Value> =
        std::fs::read_to_string(&log_file).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    let cut = |stage: &str| {
        lines.iter().find(|l| l["stage"] == stage).unwrap_or_else(|| panic!("no {stage} line in {lines:?}"))
    };
    let spliced = cut("splice");
    assert_eq!(spliced["error"], "cut at the drain deadline");
    assert_eq!((spliced["verdict"].as_str(), spliced["reason"].as_str()), (Some("allow"), Some("rule")));
    let hello_len = hello(&[sni(b"acme.my.salesforce.com")]).len() as u64;
    assert_eq!(spliced["bytes_up"], hello_len + b"before the drain".len() as u64, "bytes counted up to the cut");
    assert_eq!(cut("hello")["error"], "cut at the drain deadline");
    let metrics = samples(&http_get(proxy.metrics_addr, "/metrics").await.1);
    let allowed = key("snigate_connections_total", &[("listener", "test"), ("verdict", "allow"), ("reason", "rule")]);
    assert_eq!(metrics[&allowed], 1.0);
    assert_eq!(metrics[&key("snigate_active_connections", &[("listener", "test")])], 0.0);
}

/// Connects to `addr` every 20 ms for `lasting`, each time sending a hello for `name` and
/// reading it echoed within `patience`; returns how many connections were served and how many
/// were refused, cut or too slow. Counts the served ones in `progress` as it goes.
async fn probe(
    addr: std::net::SocketAddr,
    name: &'static [u8],
    lasting: Duration,
    patience: Duration,
    progress: Arc<AtomicU32>,
) -> (u32, u32) {
    let (mut served, mut refused) = (0, 0);
    let until = Instant::now() + lasting;
    while Instant::now() < until {
        let answered = tokio::time::timeout(patience, async {
            let mut s = TcpStream::connect(addr).await.ok()?;
            let h = hello(&[sni(name)]);
            s.write_all(&h).await.ok()?;
            let mut back = vec![0; h.len()];
            s.read_exact(&mut back).await.ok()
        })
        .await;
        if matches!(answered, Ok(Some(_))) {
            served += 1;
            progress.fetch_add(1, Ordering::SeqCst);
        } else {
            refused += 1
        }
        // The stream's pace: one new connection every 20 ms, throughout what is tested.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    (served, refused)
}

/// Starts [`probe`] and returns once it has been served a few times: the stream of connections
/// is flowing before what the test does next.
async fn probe_flowing(
    addr: std::net::SocketAddr,
    name: &'static [u8],
    lasting: Duration,
    patience: Duration,
) -> tokio::task::JoinHandle<(u32, u32)> {
    let progress = Arc::new(AtomicU32::new(0));
    let prober = tokio::spawn(probe(addr, name, lasting, patience, progress.clone()));
    let flowing = async || progress.load(Ordering::SeqCst) >= 5;
    eventually(Duration::from_secs(5), "the probing connections are served", flowing).await;
    prober
}

/// A connection from `source` (a 127.0.0.0/8 address) to `proxy` that sends `bytes`.
async fn from(source: &str, proxy: std::net::SocketAddr, bytes: &[u8]) -> TcpStream {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut s = socket.connect(proxy).await.unwrap();
    s.write_all(bytes).await.unwrap();
    s
}

/// Whether snigate closes `s` within `limit`.
async fn closed_within(s: &mut TcpStream, limit: Duration) -> bool {
    let mut buf = [0u8; 64];
    loop {
        match tokio::time::timeout(limit, s.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return true,
            Ok(Ok(_)) => {}
            Err(_) => return false,
        }
    }
}

/// One source holding its maximum of undecided connections is refused more at once, and
/// another source is served as if nothing happened; a source's open connections are bounded
/// too. Both limits count in `source_limit`.
#[tokio::test]
async fn per_source_limits_refuse_at_once_and_spare_other_sources() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = TestConfig::upstream(echo_backend().await)
        .limit("max_hellos_per_source", 5)
        .limit("max_connections_per_source", 8)
        .start(dir.path())
        .await;
    let active = key("snigate_active_connections", &[("listener", "test")]);
    let partial = &hello(&[sni(b"acme.my.salesforce.com")])[..9];
    let mut held = Vec::new();
    for _ in 0..5 {
        held.push(from("127.0.0.1", proxy.addr, partial).await);
    }
    settle(&proxy, |s| s.get(&active) == Some(&5.0)).await;
    let mut refused = from("127.0.0.1", proxy.addr, partial).await;
    assert!(closed_within(&mut refused, Duration::from_secs(1)).await, "refused at once");

    let started = Instant::now();
    let mut other = from("127.0.0.2", proxy.addr, &hello(&[sni(b"acme.my.salesforce.com")])).await;
    let mut back = vec![0; hello(&[sni(b"acme.my.salesforce.com")]).len()];
    tokio::time::timeout(Duration::from_secs(2), other.read_exact(&mut back)).await.unwrap().unwrap();
    assert!(started.elapsed() < Duration::from_millis(500), "another source waited {:?}", started.elapsed());

    let h = hello(&[sni(b"acme.my.salesforce.com")]);
    let mut open = Vec::new();
    for _ in 0..8 {
        let mut s = from("127.0.0.3", proxy.addr, &h).await;
        let mut back = vec![0; h.len()];
        s.read_exact(&mut back).await.unwrap();
        open.push(s);
    }
    let mut ninth = from("127.0.0.3", proxy.addr, &h).await;
    assert!(closed_within(&mut ninth, Duration::from_secs(1)).await, "the ninth connection is refused");

    let limited =
        key("snigate_connections_total", &[("listener", "test"), ("verdict", "deny"), ("reason", "source_limit")]);
    let metrics = settle(&proxy, |s| s.get(&limited) == Some(&2.0)).await;
    assert_eq!(metrics[&limited], 2.0);
    assert_eq!(metrics[&key("snigate_sources_tracked", &[])], 3.0, "three sources hold connections");
    drop((held, other, open));
}

/// A full listener closes the connection that has waited longest for its hello, so that a
/// client with a hello is served at once, not after `hello_timeout`.
#[tokio::test]
async fn a_full_listener_evicts_the_longest_waiting_hello() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = TestConfig::upstream(echo_backend().await)
        .limit("max_connections", 3)
        .limit("hello_timeout", 30)
        .start(dir.path())
        .await;
    let active = key("snigate_active_connections", &[("listener", "test")]);
    let partial = &hello(&[sni(b"acme.my.salesforce.com")])[..9];
    let mut waiting = Vec::new();
    for source in ["127.0.0.1", "127.0.0.2", "127.0.0.3"] {
        waiting.push(from(source, proxy.addr, partial).await);
        // Accepted before the next, so that the first has waited longest.
        let accepted = waiting.len() as f64;
        settle(&proxy, |s| s.get(&active) == Some(&accepted)).await;
    }
    let h = hello(&[sni(b"acme.my.salesforce.com")]);
    let started = Instant::now();
    let mut served = from("127.0.0.4", proxy.addr, &h).await;
    let mut back = vec![0; h.len()];
    tokio::time::timeout(Duration::from_secs(2), served.read_exact(&mut back)).await.expect("served").unwrap();
    assert!(started.elapsed() < Duration::from_secs(1), "waited {:?}", started.elapsed());
    assert!(closed_within(&mut waiting[0], Duration::from_secs(1)).await, "the oldest was evicted");
    let evicted =
        key("snigate_connections_total", &[("listener", "test"), ("verdict", "deny"), ("reason", "hello_timeout")]);
    settle(&proxy, |s| s.get(&evicted) == Some(&1.0)).await;
}

/// The binary on `config`, its log lines (stderr) to read.
fn run_binary(
    config: &std::path::Path,
) -> (tokio::process::Child, tokio::io::Lines<BufReader<tokio::process::ChildStderr>>) {
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_snigate"))
        .args(["run", "--config"])
        .arg(config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    (child, stderr)
}

/// A listening socket on 127.0.0.1 that children inherit, as a service manager holds one, and
/// a configuration whose one listener (`passed`, in `upstream` mode to `backend`) is on it, with
/// `limits`.
fn held_socket(
    dir: &std::path::Path,
    backend: std::net::SocketAddr,
    limits: &str,
) -> (socket2::Socket, std::path::PathBuf) {
    let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
    socket.bind(&"127.0.0.1:0".parse::<std::net::SocketAddr>().unwrap().into()).unwrap();
    socket.listen(1024).unwrap();
    socket.set_cloexec(false).unwrap();
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let config = TestConfig::upstream(backend)
        .name("passed")
        .listen(addr)
        .limits(limits)
        .metrics_off()
        .write(&dir.join("snigate.toml"));
    (socket, config)
}

/// The binary on `config`, passed `socket` as systemd passes it: bash puts it on descriptor 3
/// and names itself in LISTEN_PID, then becomes snigate (exec keeps the pid).
fn start_activated(socket: &socket2::Socket, config: &std::path::Path) -> tokio::process::Child {
    start_activated_with(socket, config, "")
}

/// [`start_activated`], with more arguments to `snigate run`.
fn start_activated_with(socket: &socket2::Socket, config: &std::path::Path, more: &str) -> tokio::process::Child {
    use std::os::fd::AsRawFd;
    let script = format!(
        "exec 3<&{fd}; LISTEN_PID=$$ LISTEN_FDS=1 LISTEN_FDNAMES=passed exec {bin} run {more} --config {cfg}",
        fd = socket.as_raw_fd(),
        bin = env!("CARGO_BIN_EXE_snigate"),
        cfg = config.display()
    );
    tokio::process::Command::new("bash")
        .args(["-c", &script])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// Socket activation: the binary adopts a listening socket passed as systemd passes it
/// (descriptor 3, `LISTEN_FDS`, `LISTEN_PID`), instead of binding its address, which this test
/// keeps bound, so that binding it again would fail.
#[tokio::test]
async fn a_passed_listening_socket_is_adopted() {
    adopts_the_passed_socket("").await;
}

/// Under `--master`, the service manager's sockets go to the master, which leaves them to its
/// first worker: the worker serves on them (it could not bind the address itself).
#[tokio::test]
async fn a_master_passes_the_activated_socket_to_its_worker() {
    adopts_the_passed_socket("--master").await;
}

async fn adopts_the_passed_socket(more: &str) {
    let dir = tempfile::tempdir().unwrap();
    let (socket, config) = held_socket(dir.path(), echo_backend().await, "");
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let mut child = start_activated_with(&socket, &config, more);
    let mut open = eventually_some(Duration::from_secs(10), "spliced through the passed socket", async || {
        assert!(child.try_wait().unwrap().is_none(), "snigate exited: it did not adopt the socket");
        try_spliced(addr, b"acme.my.salesforce.com", Duration::from_secs(1)).await
    })
    .await;
    echoes(&mut open, b"through the adopted socket").await;
    drop(open);
    // SIGTERM, not SIGKILL: a master stops its worker before it exits.
    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await.expect("it stops").unwrap();
    assert_eq!(status.code(), Some(0));
}

/// A CONNECT tunnel that has its `200` but not yet its hello still counts as waiting for its
/// hello: `max_hellos_per_source` bounds tunnels opened and left silent.
#[tokio::test]
async fn silent_tunnels_count_against_the_hello_limit() {
    let dir = tempfile::tempdir().unwrap();
    let backend = echo_backend().await;
    let proxy = TestConfig::connect(&[backend.port()])
        .rules("allow localhost\n")
        .limit("max_hellos_per_source", 2)
        .start(dir.path())
        .await;
    let request = format!("CONNECT localhost:{} HTTP/1.1\r\n\r\n", backend.port());
    let mut open = Vec::new();
    for _ in 0..2 {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        let mut head = [0u8; 39];
        s.read_exact(&mut head).await.unwrap();
        assert!(head.starts_with(b"HTTP/1.1 200 "));
        open.push(s);
    }
    let mut third = TcpStream::connect(proxy.addr).await.unwrap();
    third.write_all(request.as_bytes()).await.unwrap();
    let (got, took) = read_until_closed(&mut third, Duration::from_secs(2)).await;
    assert!(got.is_empty() && took < Duration::from_secs(1), "refused at once: {got:?} after {took:?}");
}

/// SIGUSR2: the process starts its binary again with the same arguments, hands it the
/// listening sockets (the metrics endpoint's too), and drains. A client connecting all along
/// is never refused, an open connection keeps working until the old process's drain ends, and
/// a new process whose configuration is invalid never takes over.
#[tokio::test]
async fn sigusr2_hands_the_listening_sockets_to_a_new_process() {
    let dir = tempfile::tempdir().unwrap();
    let backend = echo_backend().await;
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (addr, metrics) = (free(), free());
    let handover = dir.path().join("handover.sock");
    let config = TestConfig::upstream(backend)
        .name("edge")
        .listen(addr)
        .limit("drain_timeout", 1.5)
        .metrics(format!("listen = \"{metrics}\""))
        .runtime(format!("handover_socket = \"{}\"", handover.display()))
        .write(&dir.path().join("snigate.toml"));
    let (mut old, mut stderr) = run_binary(&config);
    let ready = async || {
        TcpStream::connect(metrics).await.is_ok() && http_get(metrics, "/readyz").await == (200, "ready\n".to_string())
    };
    eventually(Duration::from_secs(10), "ready", ready).await;

    // A new process with an invalid configuration is refused before it takes anything over.
    let bad = dir.path().join("bad.toml");
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(&bad, text.replace("mode = \"upstream\"", "mode = \"bogus\"")).unwrap();
    let status = Command::new(env!("CARGO_BIN_EXE_snigate"))
        .args(["run", "--config"])
        .arg(&bad)
        .arg("--takeover")
        .arg(&handover)
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert_eq!(status.code(), Some(64));

    let mut open = spliced(addr, b"acme.my.salesforce.com").await;
    let prober = probe_flowing(addr, b"acme.my.salesforce.com", Duration::from_secs(4), Duration::from_secs(2)).await;
    let pid = old.id().unwrap().to_string();
    assert!(Command::new("kill").args(["-USR2", &pid]).status().unwrap().success());
    let new_pid = loop {
        let line = tokio::time::timeout(Duration::from_secs(10), stderr.next_line()).await.unwrap().unwrap().unwrap();
        if line.contains("the new process is taking over") {
            break line
                .split("pid=")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .trim_matches(|c: char| !c.is_ascii_digit())
                .to_string();
        }
    };
    tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });
    echoes(&mut open, b"still served by the old process while it drains").await;
    let status =
        tokio::time::timeout(Duration::from_secs(10), old.wait()).await.expect("the old process exits").unwrap();
    assert_eq!(status.code(), Some(0));
    let (served, refused) = prober.await.unwrap();
    assert!(served > 20 && refused == 0, "served {served}, refused {refused}");
    let _ = spliced(addr, b"acme.my.salesforce.com").await;
    assert_eq!(http_get(metrics, "/healthz").await.0, 200, "the new process serves the metrics endpoint");
    let _ = Command::new("kill").arg(&new_pid).status();
}

/// SIGHUP reads the configuration again: its rule settings and limits apply at once, and a
/// change only a new process can apply is named in the log.
#[tokio::test]
async fn sighup_rereads_the_configuration() {
    let dir = tempfile::tempdir().unwrap();
    let backend = echo_backend().await;
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    std::fs::write(dir.path().join("a.rules"), "allow a.example.com\n").unwrap();
    std::fs::write(dir.path().join("b.rules"), "allow b.example.com\n").unwrap();
    let config = dir.path().join("snigate.toml");
    let write = |rules: &str, hello_timeout: f64, max_connections: u32, threads: u32| {
        TestConfig::upstream(backend)
            .listen(addr)
            .rules_file(dir.path().join(rules))
            .limit("hello_timeout", hello_timeout)
            .limit("max_connections", max_connections)
            .metrics_off()
            .runtime(format!("threads = {threads}"))
            .write(&config)
    };
    write("a.rules", 10.0, 1000, 1);
    let (mut child, mut stderr) = run_binary(&config);
    loop {
        let line = tokio::time::timeout(Duration::from_secs(10), stderr.next_line()).await.unwrap().unwrap().unwrap();
        if line.contains("listening") {
            break;
        }
    }
    assert!(is_denied(addr, b"b.example.com").await);
    write("b.rules", 0.5, 2000, 2);
    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let mut named = Vec::new();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(10), stderr.next_line()).await.unwrap().unwrap().unwrap();
        if line.contains("rules reloaded") {
            break;
        }
        if line.contains("changed in the configuration") {
            named.push(line);
        }
    }
    // [limits] are live, all of them; the workers need new sockets.
    assert!(named.len() == 1 && named[0].contains("[runtime]"), "{named:?}");
    let _allowed = spliced(addr, b"b.example.com").await;
    // The new hello_timeout applies to new connections.
    let mut slow = TcpStream::connect(addr).await.unwrap();
    slow.write_all(&hello(&[sni(b"b.example.com")])[..9]).await.unwrap();
    let (_, took) = read_until_closed(&mut slow, Duration::from_secs(5)).await;
    assert!(took < Duration::from_secs(2), "cut after {took:?}");
    let _ = child.kill().await;
}

/// `--takeover` with a changed configuration, under a steady stream of connections and with a
/// transfer open: no connection is refused, the open transfer completes byte for byte through
/// the old process, and new connections follow the new configuration. A QUIC listener shares
/// the TCP listener's address: each takes over its own socket.
#[tokio::test]
async fn a_takeover_with_a_new_configuration_refuses_nothing_and_cuts_nothing() {
    takeover_between(1, 1).await;
}

/// A listener has one socket per worker (SO_REUSEPORT): all of them are handed over, so that
/// no connection waiting in any of their accept queues is lost. Three workers hand over to
/// two (one serves two sockets); one worker's socket, without SO_REUSEPORT, to three (they
/// share it).
#[tokio::test]
async fn a_takeover_between_worker_counts_refuses_nothing() {
    takeover_between(3, 2).await;
    takeover_between(1, 3).await;
}

/// The takeover test, from a process with `old` workers to one with `new`.
async fn takeover_between(old_threads: usize, new_threads: usize) {
    let dir = tempfile::tempdir().unwrap();
    let backend = echo_backend().await;
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    std::fs::write(dir.path().join("a.rules"), "allow a.example.com\n").unwrap();
    std::fs::write(dir.path().join("b.rules"), "allow a.example.com\nallow b.example.com\n").unwrap();
    let handover = dir.path().join("handover.sock");
    let config = |rules: &str, threads: usize| {
        TestConfig::upstream(backend)
            .name("edge")
            .listen(addr)
            .and(Listener::upstream(backend).name("edge-quic").listen(addr).quic())
            .rules_file(dir.path().join(rules))
            .limit("drain_timeout", 5)
            .metrics_off()
            .runtime(format!("threads = {threads}\nhandover_socket = \"{}\"", handover.display()))
            .write(&dir.path().join(format!("{rules}.toml")))
    };
    let start = |config: std::path::PathBuf, takeover: bool| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_snigate"));
        cmd.args(["run", "--config"]).arg(config).stdout(Stdio::null()).stderr(Stdio::null()).kill_on_drop(true);
        if takeover {
            cmd.arg("--takeover").arg(&handover);
        }
        cmd.spawn().unwrap()
    };
    let mut old = start(config("a.rules", old_threads), false);
    let listening = async || handover.exists() && TcpStream::connect(addr).await.is_ok();
    eventually(Duration::from_secs(10), "the old process listens", listening).await;
    assert_eq!(listening_sockets(addr.port(), &mut old).await, old_threads, "one listening socket per worker");
    assert!(is_denied(addr, b"b.example.com").await, "the old rules deny b");

    // A transfer open across the handover: 4 MiB up, echoed back, byte for byte.
    let transfer = tokio::spawn(async move {
        let s = spliced(addr, b"a.example.com").await;
        let (mut r, mut w) = s.into_split();
        let data = pseudo_random(4 << 20);
        let sent = data.clone();
        let writer = tokio::spawn(async move {
            for chunk in sent.chunks(64 * 1024) {
                w.write_all(chunk).await.unwrap();
                // The writer's pace, so that the transfer spans the handover.
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            w
        });
        let mut back = vec![0; data.len()];
        tokio::time::timeout(Duration::from_secs(20), r.read_exact(&mut back)).await.unwrap().unwrap();
        drop(writer.await.unwrap());
        back == data
    });
    let prober = probe_flowing(addr, b"a.example.com", Duration::from_secs(3), Duration::from_secs(2)).await;
    let mut new = start(config("b.rules", new_threads), true);
    let (served, refused) = prober.await.unwrap();
    assert!(served > 20 && refused == 0, "served {served}, refused {refused}");
    assert!(transfer.await.unwrap(), "the open transfer completes byte for byte");
    let _b = spliced(addr, b"b.example.com").await;
    let status =
        tokio::time::timeout(Duration::from_secs(10), old.wait()).await.expect("the old process exits").unwrap();
    assert_eq!(status.code(), Some(0));
    let want = if old_threads > 1 { old_threads.max(new_threads) } else { old_threads };
    assert_eq!(listening_sockets(addr.port(), &mut new).await, want, "the new process's listening sockets");
    let _ = new.kill().await;
}

/// The listening TCP sockets on 127.0.0.1:`port` that `process` holds (from /proc/PID/fd
/// and /proc/net/tcp).
async fn listening_sockets(port: u16, process: &mut tokio::process::Child) -> usize {
    let pid = process.id().expect("running");
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    // local_address 0100007F:PORT, state 0A (LISTEN); the inode is the 10th field.
    let inodes: Vec<String> = table
        .lines()
        .skip(1)
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .filter(|f| f.len() > 9 && f[1] == format!("0100007F:{port:04X}") && f[3] == "0A")
        .map(|f| f[9].to_string())
        .collect();
    let mut held = std::collections::BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().flatten() {
        if let Ok(link) = std::fs::read_link(fd.path()) {
            let link = link.to_string_lossy().to_string();
            if let Some(inode) = link.strip_prefix("socket:[").and_then(|s| s.strip_suffix(']'))
                && inodes.iter().any(|i| i == inode)
            {
                held.insert(inode.to_string());
            }
        }
    }
    held.len()
}

/// Socket activation across a restart, with the test standing in for systemd: it holds the
/// listening socket, stops one process and starts the next on the same socket while clients
/// keep connecting; none is refused.
#[tokio::test]
async fn a_restart_on_a_held_socket_refuses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (socket, config) = held_socket(dir.path(), echo_backend().await, "drain_timeout = 0.3");
    let addr = socket.local_addr().unwrap().as_socket().unwrap();
    let start = || start_activated(&socket, &config);
    let mut first = start();
    let _ = spliced(addr, b"acme.my.salesforce.com").await;
    let prober = probe_flowing(addr, b"acme.my.salesforce.com", Duration::from_secs(3), Duration::from_secs(3)).await;
    // systemctl restart: stop (SIGTERM, wait for the exit), then start on the same socket.
    assert!(Command::new("kill").args(["-TERM", &first.id().unwrap().to_string()]).status().unwrap().success());
    let _ = tokio::time::timeout(Duration::from_secs(5), first.wait()).await.expect("the first process exits");
    let mut second = start();
    let (served, refused) = prober.await.unwrap();
    assert!(served > 20 && refused == 0, "served {served}, refused {refused}");
    let _ = second.kill().await;
}

/// A client that sends its hello and resets the connection while the upstream does not answer
/// frees its slot at once, not at `connect_timeout`; the connection is logged allowed, with the
/// reason. (A FIN is a half-close, passed on: that waits for the connect.)
#[tokio::test]
async fn a_client_that_leaves_during_the_connect_frees_its_slot_at_once() {
    let blackhole = Blackhole::new();
    let addr = blackhole.addr;
    let dir = tempfile::tempdir().unwrap();
    let proxy = TestConfig::upstream(addr).limit("connect_timeout", 30).start(dir.path()).await;
    let active = key("snigate_active_connections", &[("listener", "test")]);
    for _ in 0..2 {
        let mut client = TcpStream::connect(proxy.addr).await.unwrap();
        client.write_all(&hello(&[sni(b"acme.my.salesforce.com")])).await.unwrap();
        // Waiting at the connect (an upstream that answers would have ended it allowed, one that
        // refuses denied: the count at the end tells).
        settle(&proxy, |s| s.get(&active) == Some(&1.0)).await;
        socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO)).unwrap();
        drop(client);
        let started = Instant::now();
        settle(&proxy, |s| s.get(&active) == Some(&0.0)).await;
        assert!(started.elapsed() < Duration::from_secs(2), "freed in {:?}", started.elapsed());
    }
    let series = key("snigate_connections_total", &[("listener", "test"), ("reason", "rule"), ("verdict", "allow")]);
    settle(&proxy, |s| s.get(&series) == Some(&2.0)).await;
}

/// With `[runtime] threads = 3`, every worker serves connections: each worker thread is woken
/// (a voluntary context switch out of its epoll wait) for the connections the kernel spreads
/// to its socket.
#[tokio::test]
async fn every_worker_serves_connections() {
    let dir = tempfile::tempdir().unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = TestConfig::upstream(echo_backend().await)
        .listen(addr)
        .metrics_off()
        .runtime("threads = 3")
        .write(&dir.path().join("snigate.toml"));
    let (mut child, mut stderr) = run_binary(&config);
    loop {
        let line = tokio::time::timeout(Duration::from_secs(10), stderr.next_line()).await.unwrap().unwrap().unwrap();
        if line.contains("listening") {
            break;
        }
    }
    let pid = child.id().unwrap();
    // Each thread's voluntary context switches, by thread id: the main thread is the first
    // worker, the others are named snigate-worker-N.
    let switches = || -> std::collections::BTreeMap<String, u64> {
        std::fs::read_dir(format!("/proc/{pid}/task"))
            .unwrap()
            .flatten()
            .filter_map(|task| {
                let tid = task.file_name().to_string_lossy().to_string();
                let comm = std::fs::read_to_string(task.path().join("comm")).ok()?;
                let worker = tid == pid.to_string() || comm.starts_with("snigate-worker");
                let status = std::fs::read_to_string(task.path().join("status")).ok()?;
                let n = status.lines().find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))?.trim().parse().ok()?;
                worker.then_some((tid, n))
            })
            .collect()
    };
    // The workers start as the server runs, a moment after the listening line.
    eventually(Duration::from_secs(5), "three workers", async || switches().len() >= 3).await;
    let before = switches();
    assert_eq!(before.len(), 3, "three workers: {before:?}");
    for _ in 0..300 {
        drop(spliced(addr, b"acme.my.salesforce.com").await);
    }
    let after = switches();
    for (tid, n) in &before {
        let woken = after[tid] - n;
        assert!(woken >= 10, "worker thread {tid} was woken {woken} times for 300 connections: {before:?} {after:?}");
    }
    let _ = child.kill().await;
}

/// Whether this test may run here: it needs root (to make a user, or to run as root). In CI a
/// missing prerequisite fails the test; elsewhere the test skips, saying why.
fn needs_root(what: &str) -> bool {
    let root = Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.trim_ascii() == b"0");
    if !root {
        assert!(std::env::var_os("CI").is_none(), "{what} needs root, and CI runs as root");
        eprintln!("SKIPPED: {what} needs root");
    }
    root
}

/// An unprivileged user, made for the test if it is not there, to run a process as.
fn unprivileged_user() -> &'static str {
    const USER: &str = "snigate-probe";
    if !Command::new("id").arg(USER).stdout(Stdio::null()).stderr(Stdio::null()).status().unwrap().success() {
        let made = Command::new("useradd")
            .args(["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", USER])
            .status()
            .unwrap();
        assert!(made.success(), "useradd {USER}");
    }
    USER
}

/// Reads `stderr` until a line contains `what`, within 10 s; returns that line.
async fn line_with(stderr: &mut tokio::io::Lines<BufReader<tokio::process::ChildStderr>>, what: &str) -> String {
    loop {
        let line = tokio::time::timeout(Duration::from_secs(10), stderr.next_line()).await.unwrap().unwrap();
        let line = line.unwrap_or_else(|| panic!("stderr ended before {what:?}"));
        if line.contains(what) {
            return line;
        }
    }
}

/// The handover channel hands over the egress itself, so only this user or root may use it:
/// started at umask 0000, the socket is still 0600, and an unprivileged user can neither
/// connect to it nor take the listener over; snigate serves on.
#[tokio::test]
async fn an_unprivileged_user_cannot_take_over() {
    if !needs_root("the handover permission test") {
        return;
    }
    let user = unprivileged_user();
    let dir = tempfile::tempdir().unwrap();
    // Others may enter and read (not write): the user can reach the socket's name.
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let backend = echo_backend().await;
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let handover = dir.path().join("handover.sock");
    let config = TestConfig::upstream(backend)
        .listen(addr)
        .metrics_off()
        .runtime(format!("handover_socket = \"{}\"", handover.display()))
        .write(&dir.path().join("snigate.toml"));
    for file in [&config, &dir.path().join("snigate.rules")] {
        std::fs::set_permissions(file, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    }
    let mut old = tokio::process::Command::new("sh")
        .arg("-c")
        .arg("umask 0000 && exec \"$0\" run --config \"$1\"")
        .arg(env!("CARGO_BIN_EXE_snigate"))
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(old.stderr.take().unwrap()).lines();
    line_with(&mut stderr, "listening").await;
    let said_by_old = Arc::new(std::sync::Mutex::new(String::new()));
    let collected = said_by_old.clone();
    tokio::spawn(async move {
        while let Ok(Some(line)) = stderr.next_line().await {
            collected.lock().unwrap().push_str(&line);
        }
    });
    eventually(Duration::from_secs(10), "the handover socket", async || handover.exists()).await;
    let mode = std::os::unix::fs::PermissionsExt::mode(&std::fs::metadata(&handover).unwrap().permissions());
    assert_eq!(mode & 0o777, 0o600, "the handover socket is private whatever the umask");

    // A takeover attempted by the unprivileged user: its exit status and what it said.
    let take_over_as_user = || {
        let out = Command::new("runuser")
            .args(["-u", user, "--"])
            .arg(env!("CARGO_BIN_EXE_snigate"))
            .args(["run", "--config"])
            .arg(&config)
            .arg("--takeover")
            .arg(&handover)
            .output()
            .unwrap();
        (out.status, String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let (status, said) = take_over_as_user();
    assert!(!status.success(), "an unprivileged takeover must fail: {said}");
    assert!(said.contains("ermission denied"), "{said}");
    assert!(old.try_wait().unwrap().is_none(), "the running snigate serves on");

    // Were the socket's mode loosened, the credentials check still refuses the user.
    std::fs::set_permissions(&handover, std::os::unix::fs::PermissionsExt::from_mode(0o666)).unwrap();
    let (status, said) = take_over_as_user();
    assert!(!status.success(), "an unprivileged takeover must fail: {said}");
    assert!(said.contains("closed the handover without sending"), "{said}");
    let refused = async || said_by_old.lock().unwrap().contains("handover refused: the peer runs as uid");
    eventually(Duration::from_secs(10), "the old side's refusal", refused).await;
    assert!(old.try_wait().unwrap().is_none(), "the running snigate serves on");
    let _ = spliced(addr, b"acme.my.salesforce.com").await;
}

/// A handover socket configured in a directory others can write (a shared temporary directory)
/// is refused, loudly; an upgrade by SIGUSR2 still goes through a private directory of its own.
#[tokio::test]
async fn a_shared_handover_directory_is_refused_and_sigusr2_still_upgrades() {
    let dir = tempfile::tempdir().unwrap();
    let shared = dir.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    let backend = echo_backend().await;
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = TestConfig::upstream(backend)
        .listen(addr)
        .metrics_off()
        .limit("drain_timeout", 1)
        .runtime(format!("handover_socket = \"{}\"", shared.join("handover.sock").display()))
        .write(&dir.path().join("snigate.toml"));
    let (mut old, mut stderr) = run_binary(&config);
    // Logged once the listeners accept.
    let refused = line_with(&mut stderr, "cannot serve the handover socket").await;
    assert!(refused.contains("writable by others"), "{refused}");
    assert!(!shared.join("handover.sock").exists(), "nothing is bound in the shared directory");
    let pid = old.id().unwrap().to_string();
    assert!(Command::new("kill").args(["-USR2", &pid]).status().unwrap().success());
    let taking = line_with(&mut stderr, "the new process is taking over").await;
    let new_pid: String = taking.split("pid=").nth(1).unwrap().chars().filter(char::is_ascii_digit).collect();
    tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });
    let status =
        tokio::time::timeout(Duration::from_secs(10), old.wait()).await.expect("the old process exits").unwrap();
    assert_eq!(status.code(), Some(0));
    let _ = spliced(addr, b"acme.my.salesforce.com").await;
    let _ = Command::new("kill").arg(&new_pid).status();
}

/// Starts `command` with its stderr piped, and waits until it says it is listening.
async fn started(
    mut command: tokio::process::Command,
) -> (tokio::process::Child, tokio::io::Lines<BufReader<tokio::process::ChildStderr>>) {
    let mut child = command.stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true).spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    line_with(&mut stderr, "listening").await;
    (child, stderr)
}

/// Reads the rest of `stderr` in the background, so that the process never blocks on it.
fn drain_stderr(mut stderr: tokio::io::Lines<BufReader<tokio::process::ChildStderr>>) {
    tokio::spawn(async move { while let Ok(Some(_)) = stderr.next_line().await {} });
}

/// As PID 1 of its own PID namespace (a container's entry point), snigate is a master that
/// never exits during an upgrade: SIGUSR2 leaves a listener, refuses nothing and cuts nothing,
/// and SIGTERM then stops everything with exit code 0.
#[tokio::test]
async fn as_pid_1_an_upgrade_keeps_the_namespace_alive() {
    if !needs_root("the PID 1 test (unshare --pid)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let backend = echo_backend().await;
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = TestConfig::upstream(backend)
        .listen(addr)
        .metrics_off()
        .limit("drain_timeout", 20)
        .runtime("threads = 1")
        .write(&dir.path().join("snigate.toml"));
    let mut unshare = tokio::process::Command::new("unshare");
    unshare
        .args(["--pid", "--fork", "--kill-child"])
        .arg(env!("CARGO_BIN_EXE_snigate"))
        .args(["run", "--config"])
        .arg(&config);
    let (mut outer, stderr) = started(unshare).await;
    let mut stderr = stderr;
    // The namespace's PID 1, as this namespace sees it: unshare's only child.
    let children = std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", outer.id().unwrap())).unwrap();
    let init = children.split_whitespace().next().expect("unshare's child").to_string();
    let mut open = spliced(addr, b"acme.my.salesforce.com").await;
    let prober = probe_flowing(addr, b"acme.my.salesforce.com", Duration::from_secs(3), Duration::from_secs(2)).await;
    assert!(Command::new("kill").args(["-USR2", &init]).status().unwrap().success());
    line_with(&mut stderr, "took over the listening sockets").await;
    echoes(&mut open, b"the connection opened before the upgrade is not cut").await;
    drop(open);
    // The previous worker exits once its last connection has closed, well before its deadline.
    line_with(&mut stderr, "the previous worker has drained").await;
    drain_stderr(stderr);
    let (served, refused) = prober.await.unwrap();
    assert!(served > 20 && refused == 0, "served {served}, refused {refused}");
    assert!(outer.try_wait().unwrap().is_none(), "the namespace lives on");
    let _ = spliced(addr, b"acme.my.salesforce.com").await;
    assert!(Command::new("kill").args(["-TERM", &init]).status().unwrap().success());
    let status = tokio::time::timeout(Duration::from_secs(10), outer.wait()).await.expect("it stops").unwrap();
    assert_eq!(status.code(), Some(0));
}

/// Under systemd (`Type=notify`), the service manager hears READY=1 once snigate serves,
/// RELOADING=1 and READY=1 around a SIGHUP, and after an upgrade by SIGUSR2 the new process's
/// MAINPID with its READY=1, then STOPPING=1 from the old one.
#[tokio::test]
async fn the_service_manager_is_notified_and_follows_an_upgrade() {
    let dir = tempfile::tempdir().unwrap();
    let notify_path = dir.path().join("notify.sock");
    let notify = tokio::net::UnixDatagram::bind(&notify_path).unwrap();
    let next = async || {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(10), notify.recv(&mut buf)).await.unwrap().unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    };
    let backend = echo_backend().await;
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = TestConfig::upstream(backend)
        .listen(addr)
        .metrics_off()
        .limit("drain_timeout", 1)
        .write(&dir.path().join("snigate.toml"));
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_snigate"));
    command.args(["run", "--config"]).arg(&config).env("NOTIFY_SOCKET", &notify_path);
    let (mut old, stderr) = started(command).await;
    let mut stderr = stderr;
    let ready = next().await;
    assert!(ready.contains("READY=1") && !ready.contains("MAINPID"), "{ready}");
    let pid = old.id().unwrap().to_string();
    assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    let reloading = next().await;
    assert!(reloading.contains("RELOADING=1") && reloading.contains("MONOTONIC_USEC="), "{reloading}");
    assert!(next().await.contains("READY=1"), "ready again after the reload");

    assert!(Command::new("kill").args(["-USR2", &pid]).status().unwrap().success());
    let taking = line_with(&mut stderr, "the new process is taking over").await;
    let new_pid: String = taking.split("pid=").nth(1).unwrap().chars().filter(char::is_ascii_digit).collect();
    drain_stderr(stderr);
    let mut heard = Vec::new();
    while !heard.iter().any(|m: &String| m.contains("MAINPID=")) || !heard.iter().any(|m| m.contains("STOPPING=1")) {
        heard.push(next().await);
    }
    let main = heard.iter().find(|m| m.contains("MAINPID=")).unwrap();
    assert!(main.contains(&format!("MAINPID={new_pid}")) && main.contains("READY=1"), "{heard:?}");
    let status =
        tokio::time::timeout(Duration::from_secs(10), old.wait()).await.expect("the old process exits").unwrap();
    assert_eq!(status.code(), Some(0));
    let _ = spliced(addr, b"acme.my.salesforce.com").await;
    let _ = Command::new("kill").arg(&new_pid).status();
}

/// SIGTERM closes every copy of the listening sockets (those kept for a handover too) before
/// the drain: a new client is refused at once instead of waiting in a queue nobody accepts from.
#[tokio::test]
async fn a_client_during_the_drain_is_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let backend = echo_backend().await;
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = TestConfig::upstream(backend)
        .listen(addr)
        .metrics_off()
        .limit("drain_timeout", 10)
        .write(&dir.path().join("snigate.toml"));
    let (mut child, mut stderr) = run_binary(&config);
    line_with(&mut stderr, "listening").await;
    let mut open = spliced(addr, b"acme.my.salesforce.com").await;
    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    line_with(&mut stderr, "draining open connections").await;
    drain_stderr(stderr);
    let began = Instant::now();
    let refused = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(addr)).await.unwrap();
    let took = began.elapsed();
    assert!(refused.is_err(), "a new client is refused during the drain");
    assert!(took < Duration::from_millis(100), "refused within 100 ms, not after {took:?}");
    echoes(&mut open, b"the open connection still finishes").await;
    drop(open);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(0));
}

/// `[runtime] shutdown_delay`: after SIGTERM readiness is off at once, but clients still
/// routed here meanwhile (the endpoints update late) are served until the delay has passed.
#[tokio::test]
async fn the_shutdown_delay_serves_late_clients() {
    let dir = tempfile::tempdir().unwrap();
    let backend = echo_backend().await;
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (addr, metrics) = (free(), free());
    let config = TestConfig::upstream(backend)
        .listen(addr)
        .metrics(format!("listen = \"{metrics}\""))
        .runtime("shutdown_delay = 2")
        .write(&dir.path().join("snigate.toml"));
    let (mut child, mut stderr) = run_binary(&config);
    line_with(&mut stderr, "listening").await;
    drain_stderr(stderr);
    eventually(Duration::from_secs(10), "ready", async || http_get(metrics, "/readyz").await.0 == 200).await;
    let pid = child.id().unwrap().to_string();
    let signalled = Instant::now();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    eventually(Duration::from_secs(1), "not ready", async || http_get(metrics, "/readyz").await.0 == 503).await;
    tokio::time::sleep_until((signalled + Duration::from_secs(1)).into()).await;
    // One second after SIGTERM: still served.
    let mut late = spliced(addr, b"acme.my.salesforce.com").await;
    echoes(&mut late, b"served during the shutdown delay").await;
    drop(late);
    let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(0));
    assert!(signalled.elapsed() >= Duration::from_secs(2), "the delay was kept");
}

/// A name added to /etc/hosts while snigate runs resolves, without a restart (the C library
/// reads the file on every lookup, and so must snigate). /etc/hosts is replaced by a file of the
/// test's own in a mount namespace of its own.
#[tokio::test]
async fn a_hosts_file_entry_added_at_run_time_resolves() {
    if !needs_root("the hosts-file test (unshare --mount)") {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let hosts = dir.path().join("hosts");
    std::fs::copy("/etc/hosts", &hosts).unwrap();
    let backend = echo_backend().await;
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = TestConfig::sni(backend.port())
        .listen(addr)
        .rules("allow added-at-run-time.example\n")
        .metrics_off()
        .write(&dir.path().join("snigate.toml"));
    let mut command = tokio::process::Command::new("unshare");
    command
        .args([
            "--mount",
            "--propagation",
            "private",
            "sh",
            "-c",
            "mount --bind \"$1\" /etc/hosts && exec \"$2\" run --config \"$3\"",
            "sh",
        ])
        .arg(&hosts)
        .arg(env!("CARGO_BIN_EXE_snigate"))
        .arg(&config);
    let (mut child, stderr) = started(command).await;
    drain_stderr(stderr);
    // Edited in place, as an operator's `echo >> /etc/hosts` does.
    let mut text = std::fs::read_to_string(&hosts).unwrap();
    text.push_str("127.0.0.1 added-at-run-time.example\n");
    std::fs::write(&hosts, text).unwrap();
    let served = async || try_spliced(addr, b"added-at-run-time.example", Duration::from_secs(2)).await;
    let mut s = eventually_some(Duration::from_secs(10), "the added name is served", served).await;
    echoes(&mut s, b"through the name added at run time").await;
    let _ = child.kill().await;
}

/// The limit on open files is raised to the hard limit at start, and a limit still below what
/// `max_connections` needs is said in the log.
#[tokio::test]
async fn too_few_file_descriptors_are_raised_and_reported() {
    let dir = tempfile::tempdir().unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = TestConfig::upstream(echo_backend().await)
        .listen(addr)
        .metrics_off()
        .limit("max_connections", 100_000)
        .write(&dir.path().join("snigate.toml"));
    let mut command = tokio::process::Command::new("sh");
    command
        .args(["-c", "ulimit -Sn 512 && ulimit -Hn 4096 && exec \"$0\" run --config \"$1\""])
        .arg(env!("CARGO_BIN_EXE_snigate"))
        .arg(&config);
    let mut child = command.stdout(Stdio::null()).stderr(Stdio::piped()).kill_on_drop(true).spawn().unwrap();
    let mut stderr = BufReader::new(child.stderr.take().unwrap()).lines();
    let warned = line_with(&mut stderr, "limit on open files").await;
    assert!(warned.contains("limit=4096") && warned.contains("needed=200064"), "{warned}");
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", child.id().unwrap())).unwrap();
    let files = limits.lines().find(|l| l.starts_with("Max open files")).unwrap().to_string();
    let soft: Vec<&str> = files.split_whitespace().collect();
    assert_eq!(soft[3], "4096", "the soft limit raised to the hard one: {files}");
    let _ = child.kill().await;
}

/// A configuration whose `[rules] files` is relative: the path is the configuration file's
/// folder's, whatever the working directory, and the rules reload when a file in it changes
/// or a new one appears.
#[tokio::test]
async fn relative_rule_paths_are_the_configuration_files_and_reload() {
    let dir = tempfile::tempdir().unwrap();
    let conf = dir.path().join("conf");
    std::fs::create_dir_all(conf.join("rules")).unwrap();
    std::fs::write(conf.join("rules/a.rules"), "allow a.example.com\n").unwrap();
    let backend = echo_backend().await;
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let text = format!(
        "[[listener]]\nlisten = \"{addr}\"\nmode = \"upstream\"\nupstream = \"{backend}\"\n\
         [rules]\nfiles = [\"rules/\"]\n[metrics]\nenabled = false\n[log]\nformat = \"off\"\n\
         [destinations]\nallow = [\"127.0.0.0/8\"]\n"
    );
    std::fs::write(conf.join("snigate.toml"), text).unwrap();
    let mut command = tokio::process::Command::new(env!("CARGO_BIN_EXE_snigate"));
    command.current_dir("/").args(["run", "--config"]).arg(conf.join("snigate.toml"));
    let (mut child, stderr) = started(command).await;
    drain_stderr(stderr);
    let _a = spliced(addr, b"a.example.com").await;
    assert!(is_denied(addr, b"b.example.com").await);
    std::fs::write(conf.join("rules/a.rules"), "allow b.example.com\n").unwrap();
    eventually(Duration::from_secs(10), "the edit reloads", async || is_allowed(addr, b"b.example.com").await).await;
    std::fs::write(conf.join("rules/c.rules"), "allow c.example.com\n").unwrap();
    eventually(Duration::from_secs(10), "a new file reloads", async || is_allowed(addr, b"c.example.com").await).await;
    let _ = child.kill().await;
}

/// A ruleset that would be empty is refused: at start (exit 64, naming why), and at reload,
/// where the running rules keep serving.
#[tokio::test]
async fn an_emptied_rules_folder_is_refused_and_the_old_rules_serve() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    let backend = echo_backend().await;
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let config = dir.path().join("snigate.toml");
    let text = format!(
        "[[listener]]\nlisten = \"{addr}\"\nmode = \"upstream\"\nupstream = \"{backend}\"\n\
         [rules]\nfiles = [\"rules/\"]\n[metrics]\nenabled = false\n[log]\nformat = \"off\"\n\
         [destinations]\nallow = [\"127.0.0.0/8\"]\n"
    );
    std::fs::write(&config, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_snigate")).args(["run", "--config"]).arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no rule"), "{}", String::from_utf8_lossy(&out.stderr));

    std::fs::write(rules.join("a.rules"), "allow a.example.com\n").unwrap();
    let (mut child, mut stderr) = run_binary(&config);
    line_with(&mut stderr, "listening").await;
    std::fs::remove_file(rules.join("a.rules")).unwrap();
    let failed = line_with(&mut stderr, "reload failed").await;
    assert!(failed.contains("no rule"), "{failed}");
    drain_stderr(stderr);
    let _still = spliced(addr, b"a.example.com").await;
    let _ = child.kill().await;
}

/// A reload says what it changed, file by file, and the metrics say which ruleset runs and
/// whether the last reload succeeded.
#[tokio::test]
async fn a_reload_says_what_changed_and_which_ruleset_runs() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(rules.join("a.rules"), "allow a.example.com\nallow b.example.com\n").unwrap();
    let free = || std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (addr, metrics) = (free(), free());
    let config = TestConfig::upstream(echo_backend().await)
        .listen(addr)
        .rules_file(rules.clone())
        .metrics(format!("listen = \"{metrics}\""))
        .write(&dir.path().join("snigate.toml"));
    let (mut child, mut stderr) = run_binary(&config);
    line_with(&mut stderr, "listening").await;
    let info = async || {
        let (_, body) = http_get(metrics, "/metrics").await;
        let line = body.lines().find(|l| l.starts_with("snigate_rules_info{"))?.to_string();
        let ok = body.lines().find(|l| l.starts_with("snigate_config_last_reload_successful "))?.to_string();
        Some((line, ok))
    };
    let (first, ok) = eventually_some(Duration::from_secs(10), "the ruleset's identity", info).await;
    assert!(ok.ends_with(" 1"), "{ok}");
    std::fs::write(rules.join("a.rules"), "allow b.example.com\nallow c.example.com\n").unwrap();
    let changed = line_with(&mut stderr, "rules changed").await;
    assert!(changed.contains("a.rules") && changed.contains("added=1") && changed.contains("removed=1"), "{changed}");
    assert!(changed.contains("allow c.example.com") && changed.contains("allow a.example.com"), "{changed}");
    let (second, _) = eventually_some(Duration::from_secs(10), "a new identity", async || {
        info().await.filter(|(line, _)| *line != first)
    })
    .await;
    assert!(second.ends_with(" 1") && second.contains("sha256=\""), "{second}");
    std::fs::write(rules.join("a.rules"), "bogus line\n").unwrap();
    line_with(&mut stderr, "reload failed").await;
    drain_stderr(stderr);
    let failed = async || info().await.filter(|(_, ok)| ok.ends_with(" 0"));
    let (still, _) = eventually_some(Duration::from_secs(10), "the failure in the metrics", failed).await;
    assert_eq!(still, second, "the running ruleset is still the one reported");
    let _ = child.kill().await;
}

/// A reload that finds every rule file with the bytes it had, and the same `[rules]` settings,
/// keeps the running snapshot (no second copy compiled beside it); a changed setting compiles
/// anew, and so does a changed file.
#[tokio::test]
async fn a_reload_of_unchanged_rules_keeps_the_running_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    // In a folder of their own, so that writing the configuration wakes no file watch.
    std::fs::create_dir(dir.path().join("rules")).unwrap();
    let rules = dir.path().join("rules/a.rules");
    std::fs::write(&rules, "allow a.example.com\n").unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let backend = echo_backend().await;
    let write = |default: &str| {
        TestConfig::upstream(backend)
            .listen(addr)
            .rules_file(rules.clone())
            .rules_setting(format!("default = \"{default}\""))
            .metrics_off()
            .write(&dir.path().join("snigate.toml"))
    };
    let config = write("deny");
    let (mut child, mut stderr) = run_binary(&config);
    line_with(&mut stderr, "listening").await;
    let pid = child.id().unwrap().to_string();
    let hup = || assert!(Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    hup();
    let kept = line_with(&mut stderr, "rules reloaded").await;
    assert!(kept.contains("unchanged=true"), "{kept}");
    write("allow");
    hup();
    let compiled = line_with(&mut stderr, "rules reloaded").await;
    assert!(!compiled.contains("unchanged"), "a changed default compiles anew: {compiled}");
    std::fs::write(&rules, "allow b.example.com\n").unwrap();
    hup();
    let changed = line_with(&mut stderr, "rules reloaded").await;
    assert!(!changed.contains("unchanged"), "a changed file compiles anew: {changed}");
    // A large file's changes are counted from the two snapshots.
    let large = |extra: &str| (0..20_000).map(|i| format!("deny n{i}.example.com\n")).collect::<String>() + extra;
    std::fs::write(&rules, large("")).unwrap();
    hup();
    line_with(&mut stderr, "rules reloaded").await;
    std::fs::write(&rules, large("allow c.example.com\nallow d.example.com\n")).unwrap();
    hup();
    let counted = line_with(&mut stderr, "rules changed").await;
    assert!(counted.contains("added=2") && counted.contains("removed=0"), "{counted}");
    drain_stderr(stderr);
    let _ = child.kill().await;
}

/// One snigate owns an address: a second one with another policy on the same address is
/// refused, naming the address, instead of silently taking half the traffic; the first serves
/// on, and a handover (which passes the ownership on) still works.
#[tokio::test]
async fn a_second_instance_on_the_same_address_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let backend = echo_backend().await;
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let first = TestConfig::upstream(backend).listen(addr).metrics_off().write(&dir.path().join("first.toml"));
    let (mut child, mut stderr) = run_binary(&first);
    line_with(&mut stderr, "listening").await;
    let second = TestConfig::upstream(backend)
        .listen(addr)
        .rules("allow *\n")
        .metrics_off()
        .write(&dir.path().join("second.toml"));
    let out = Command::new(env!("CARGO_BIN_EXE_snigate")).args(["run", "--config"]).arg(&second).output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "the second instance must not start (unavailable): {said}");
    assert!(said.contains(&addr.to_string()) && said.contains("already served by another snigate"), "{said}");
    assert!(child.try_wait().unwrap().is_none(), "the first serves on");
    let _ = spliced(addr, b"acme.my.salesforce.com").await;

    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill").args(["-USR2", &pid]).status().unwrap().success());
    let taking = line_with(&mut stderr, "the new process is taking over").await;
    let new_pid: String = taking.split("pid=").nth(1).unwrap().chars().filter(char::is_ascii_digit).collect();
    drain_stderr(stderr);
    let status = tokio::time::timeout(Duration::from_secs(40), child.wait()).await.expect("the old one exits").unwrap();
    assert_eq!(status.code(), Some(0));
    // The new process owns the address now: a third is refused too.
    let out = Command::new(env!("CARGO_BIN_EXE_snigate")).args(["run", "--config"]).arg(&second).output().unwrap();
    assert!(!out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let _ = spliced(addr, b"acme.my.salesforce.com").await;
    let _ = Command::new("kill").arg(&new_pid).status();
}

/// logrotate's habit: the access log is renamed, SIGUSR1 is sent, and the next line lands in a
/// new file at the configured path while the renamed file keeps the lines before it. The
/// operational log is JSON (`[log] operational`), one object a line, and says so.
#[tokio::test]
async fn sigusr1_reopens_the_access_log() {
    let dir = tempfile::tempdir().unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let log = dir.path().join("access.log");
    let config = TestConfig::upstream(echo_backend().await)
        .listen(addr)
        .metrics_off()
        .log(format!("format = \"json\"\npath = \"{}\"\noperational = \"json\"", log.display()))
        .write(&dir.path().join("snigate.toml"));
    let (mut child, mut stderr) = run_binary(&config);
    let listening: serde_json::Value = serde_json::from_str(&line_with(&mut stderr, "listening").await).unwrap();
    assert_eq!((listening["level"].as_str(), listening["message"].as_str()), (Some("INFO"), Some("listening")));
    let lines = |path: &std::path::Path| std::fs::read_to_string(path).unwrap_or_default().lines().count();
    drop(spliced(addr, b"acme.my.salesforce.com").await);
    eventually(Duration::from_secs(5), "the first line", async || lines(&log) == 1).await;

    let rotated = dir.path().join("access.log.1");
    std::fs::rename(&log, &rotated).unwrap();
    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill").args(["-USR1", &pid]).status().unwrap().success());
    let reopened: serde_json::Value =
        serde_json::from_str(&line_with(&mut stderr, "access log reopened").await).unwrap();
    assert_eq!(reopened["path"], log.display().to_string(), "{reopened}");
    drop(spliced(addr, b"acme.my.salesforce.com").await);
    eventually(Duration::from_secs(5), "a line in the new file", async || lines(&log) == 1).await;
    assert_eq!(lines(&rotated), 1, "the renamed file keeps only the line before the signal");
    let line: serde_json::Value = serde_json::from_str(std::fs::read_to_string(&log).unwrap().trim()).unwrap();
    assert_eq!(line["verdict"], "allow", "{line}");
    let _ = child.kill().await;
}

/// `--log-level error` keeps the start's info lines out of the operational log; the access log
/// is not the operational log and is not affected.
#[tokio::test]
async fn the_log_level_flag_filters_the_operational_log() {
    let dir = tempfile::tempdir().unwrap();
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let log = dir.path().join("access.log");
    let config = TestConfig::upstream(echo_backend().await)
        .listen(addr)
        .metrics_off()
        .log_json(&log)
        .write(&dir.path().join("snigate.toml"));
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_snigate"))
        .args(["run", "--log-level", "error", "--config"])
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(10), "snigate accepting", async || {
        tokio::time::timeout(Duration::from_secs(1), TcpStream::connect(addr)).await.is_ok_and(|c| c.is_ok())
    })
    .await;
    drop(spliced(addr, b"acme.my.salesforce.com").await);
    let written = || std::fs::read_to_string(&log).unwrap_or_default().lines().count();
    eventually(Duration::from_secs(5), "the access-log line", async || written() >= 1).await;
    let pid = child.id().unwrap().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let mut stderr = String::new();
    let mut pipe = child.stderr.take().unwrap();
    tokio::time::timeout(Duration::from_secs(10), pipe.read_to_string(&mut stderr)).await.unwrap().unwrap();
    assert!(!stderr.contains("listening") && !stderr.contains("INFO"), "{stderr}");
}
