//! Observability on real sockets: every outcome reason counted exactly, byte totals, the
//! histograms, reloads, bounded cardinality under random SNIs, `promtool check metrics`,
//! `/readyz` during drain, and the access log under a denial flood.

mod common;
mod harness;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use harness::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

const RULES: &str = "allow a.example.com\ndeny  b.example.com\nallow localhost\n";

/// Writes `bytes` (closing the write half when `close` is set) and reads until snigate closes.
async fn exchange(addr: SocketAddr, bytes: &[u8], close: bool) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    if close {
        s.shutdown().await.unwrap();
    }
    let mut got = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got)).await.expect("snigate closes");
    got
}

/// An address nothing listens on.
async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    l.local_addr().unwrap()
}

/// Sum of every sample of `name` (any labels).
fn total(s: &BTreeMap<String, f64>, name: &str) -> f64 {
    s.iter().filter(|(k, _)| *k == name || k.starts_with(&format!("{name}{{"))).map(|(_, v)| v).sum()
}

/// Six listeners, one per way a connection ends: `edge` (to the echo backend), `sink` (to a
/// backend that answers), `dead` (to nothing), `pp` (expects a PROXY header from elsewhere),
/// `proxy` and `auth` (CONNECT, the second with credentials).
fn config(dir: &Path, echo: SocketAddr, sink: SocketAddr, dead: SocketAddr) -> TestConfig {
    let credentials = dir.join("credentials");
    std::fs::write(&credentials, "user:secret\n").unwrap();
    TestConfig::upstream(echo)
        .name("edge")
        .and(Listener::upstream(sink).name("sink"))
        .and(Listener::upstream(dead).name("dead"))
        .and(Listener::upstream(echo).name("pp").set("proxy_protocol_trusted = [\"10.0.0.0/8\"]"))
        .and(Listener::connect(&[]).name("proxy"))
        .and(Listener::connect(&[]).name("auth").set(format!("credentials = \"{}\"", credentials.display())))
        .rules(RULES)
        .rules_setting("ech = \"deny\"")
        .limit("hello_timeout", 0.5)
        .limit("max_hello_bytes", 1024)
}

/// Every reason reachable on real sockets, each counted exactly once under its listener, with
/// exact byte totals, histogram counts and sums, rule hits and reload counters.
#[tokio::test]
async fn every_outcome_is_counted_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let echo = echo_backend().await;
    let reply = pseudo_random(5000);
    let (sink, received) = recording_backend(reply.clone()).await;
    let proxy = config(dir.path(), echo, sink, closed_port().await).start(dir.path()).await;
    let rules_file = proxy.rules_file.clone();
    let [edge, sink_l, dead, pp, connect, auth] = proxy.addrs[..] else { panic!("six listeners") };
    let ruleset = rules_file.display().to_string();

    let before = samples(&scrape(&proxy).await);
    assert_eq!(before[&key("snigate_rules_loaded", &[])], 3.0);
    assert_eq!(before[&key("snigate_ready", &[])], 1.0);
    assert_eq!(before[&key("snigate_rule_hits_total", &[("ruleset", &ruleset)])], 0.0, "created at 0");
    let started = before[&key("snigate_rules_last_reload_success_timestamp_seconds", &[])];

    // Allowed, byte-moving: two through the echo backend, one to a backend that answers 5000 B.
    let mut hellos = Vec::new(); // every hello that parsed, for the size histogram
    let mut up = 0;
    let mut down = 0;
    for size in [1000, 70_000] {
        let h = hello(&[sni(b"a.example.com")]);
        let mut sent = h.clone();
        sent.extend(pseudo_random(size));
        let back = exchange(edge, &sent, true).await;
        assert_eq!(back, sent, "echoed, hello included");
        up += sent.len();
        down += sent.len();
        hellos.push(h);
    }
    let h = hello(&[sni(b"a.example.com")]);
    let mut sent = h.clone();
    sent.extend(pseudo_random(3000));
    assert_eq!(exchange(sink_l, &sent, true).await, reply);
    assert_eq!(received.await.unwrap(), sent);
    up += sent.len();
    down += reply.len();
    hellos.push(h);

    // Denied, one per reason.
    let alert = |d: u8| vec![0x15, 0x03, 0x01, 0x00, 0x02, 0x02, d];
    let h = hello(&[sni(b"b.example.com")]);
    assert_eq!(exchange(edge, &h, false).await, alert(49), "rule");
    hellos.push(h);
    let h = hello(&[sni(b"c.example.com")]);
    assert_eq!(exchange(edge, &h, false).await, alert(49), "default");
    hellos.push(h);
    let h = hello(&[alpn(&[b"h2"])]);
    assert_eq!(exchange(edge, &h, false).await, alert(49), "no_sni");
    hellos.push(h);
    assert!(exchange(edge, b"GET / HTTP/1.1\r\nHost: a.example.com\r\n\r\n", false).await.is_empty(), "not_tls");
    let h = hello(&[sni(b"a.example.com")]);
    assert_eq!(exchange(edge, &h[..20], true).await, alert(50), "malformed: truncated, then FIN");
    assert_eq!(exchange(edge, &hello(&[sni(b"bad_name.example.com")]), false).await, alert(112), "invalid_sni");
    let h = hello(&[sni(b"a.example.com"), ext(0xfe0d, &[0; 8])]);
    assert_eq!(exchange(edge, &h, false).await, alert(49), "ech");
    hellos.push(h);
    let h = hello(&[sni(b"a.example.com")]);
    exchange(edge, &h[..h.len() - 1], false).await; // hello_timeout: one byte short
    assert_eq!(exchange(edge, &hello(&[sni(b"a.example.com"), ext(21, &[0; 2000])]), false).await, alert(50));
    assert!(exchange(edge, b"", true).await.is_empty(), "client_closed");
    let h = hello(&[sni(b"a.example.com")]);
    assert_eq!(exchange(dead, &h, false).await, alert(112), "upstream_error");
    hellos.push(h);
    assert!(exchange(pp, &hello(&[sni(b"a.example.com")]), false).await.is_empty(), "proxy_protocol");
    let status = |r: Vec<u8>| String::from_utf8_lossy(&r[..12.min(r.len())]).into_owned();
    let get = exchange(connect, b"GET http://a.example.com/ HTTP/1.1\r\nHost: a.example.com\r\n\r\n", false).await;
    assert_eq!(status(get), "HTTP/1.1 405", "bad_request");
    let request = b"CONNECT localhost:443 HTTP/1.1\r\nHost: localhost:443\r\n\r\n";
    let h = hello(&[sni(b"c.example.com")]);
    let answer = exchange(connect, &[&request[..], &h].concat(), false).await;
    assert!(answer.starts_with(b"HTTP/1.1 200"), "sni_mismatch: the CONNECT is allowed, its hello is not");
    hellos.push(h);
    assert_eq!(status(exchange(auth, request, false).await), "HTTP/1.1 407", "proxy_auth");

    let expected: BTreeMap<String, f64> = [
        ("edge", "allow", "rule", 2.0),
        ("edge", "deny", "rule", 1.0),
        ("edge", "deny", "default", 1.0),
        ("edge", "deny", "no_sni", 1.0),
        ("edge", "deny", "not_tls", 1.0),
        ("edge", "deny", "malformed", 1.0),
        ("edge", "deny", "invalid_sni", 1.0),
        ("edge", "deny", "ech", 1.0),
        ("edge", "deny", "hello_timeout", 1.0),
        ("edge", "deny", "hello_too_large", 1.0),
        ("edge", "deny", "client_closed", 1.0),
        ("sink", "allow", "rule", 1.0),
        ("dead", "error", "upstream_error", 1.0),
        ("pp", "deny", "proxy_protocol", 1.0),
        ("proxy", "deny", "bad_request", 1.0),
        ("proxy", "deny", "sni_mismatch", 1.0),
        ("auth", "deny", "proxy_auth", 1.0),
    ]
    .into_iter()
    .map(|(l, v, r, n)| (key("snigate_connections_total", &[("listener", l), ("verdict", v), ("reason", r)]), n))
    .collect();
    let want: f64 = expected.values().sum();
    let s = settle(&proxy, |s| {
        total(s, "snigate_connections_total") >= want && total(s, "snigate_active_connections") == 0.0
    })
    .await;
    let counted: BTreeMap<String, f64> =
        s.iter().filter(|(k, _)| k.starts_with("snigate_connections_total{")).map(|(k, v)| (k.clone(), *v)).collect();
    for (series, value) in &counted {
        assert_eq!(*value, expected.get(series).copied().unwrap_or(0.0), "{series}");
    }
    for series in expected.keys() {
        assert!(counted.contains_key(series), "missing {series}");
    }
    // Every listener has all its deny series, both allow series and the error series, and
    // nothing else.
    assert_eq!(counted.len(), 6 * (2 + snigate::Reason::ALL.len() + 1));

    assert_eq!(s[&key("snigate_bytes_total", &[("direction", "upstream")])], up as f64);
    assert_eq!(s[&key("snigate_bytes_total", &[("direction", "downstream")])], down as f64);
    // Allowed by a rule (3), denied by one (1), allowed then unreachable (1), a CONNECT allowed
    // before its hello named another host (1).
    assert_eq!(s[&key("snigate_rule_hits_total", &[("ruleset", &ruleset)])], 6.0);
    assert_eq!(total(&s, "snigate_rule_hits_total"), 6.0);
    assert_eq!(s[&key("snigate_client_hello_bytes_count", &[])], hellos.len() as f64);
    let hello_bytes: usize = hellos.iter().map(Vec::len).sum();
    assert_eq!(s[&key("snigate_client_hello_bytes_sum", &[])], hello_bytes as f64);
    assert_eq!(s[&key("snigate_client_hello_seconds_count", &[])], hellos.len() as f64);
    let small = hellos.iter().filter(|h| h.len() <= 128).count();
    assert!(small > 0 && small < hellos.len() || hellos.iter().all(|h| h.len() <= 128));
    assert_eq!(s[&key("snigate_client_hello_bytes_bucket", &[("le", "128")])], small as f64);
    assert_eq!(s[&key("snigate_client_hello_bytes_bucket", &[("le", "+Inf")])], hellos.len() as f64);
    assert_eq!(s[&key("snigate_upstream_connect_seconds_count", &[])], 3.0);
    assert_eq!(s[&key("snigate_connection_duration_seconds_count", &[("verdict", "allow")])], 3.0);
    assert_eq!(s[&key("snigate_connection_duration_seconds_count", &[("verdict", "error")])], 1.0);
    assert_eq!(s[&key("snigate_connection_duration_seconds_count", &[("verdict", "deny")])], want - 4.0);
    assert_eq!(s[&key("snigate_ech_hellos_total", &[("listener", "edge")])], 1.0);
    assert_eq!(total(&s, "snigate_ech_hellos_total"), 1.0);
    assert_eq!(total(&s, "snigate_accept_errors_total"), 0.0);

    // A reload that succeeds, and one that fails.
    std::fs::write(&rules_file, "allow a.example.com\nallow c.example.com\ndeny b.example.com\n").unwrap();
    snigate::reload_rules(&proxy.config, &proxy.live, &proxy.metrics).await.unwrap();
    std::fs::write(&rules_file, "allow\n").unwrap();
    snigate::reload_rules(&proxy.config, &proxy.live, &proxy.metrics).await.unwrap_err();
    let s = samples(&scrape(&proxy).await);
    assert_eq!(s[&key("snigate_rules_reloads_total", &[("result", "success")])], 1.0);
    assert_eq!(s[&key("snigate_rules_reloads_total", &[("result", "failure")])], 1.0);
    assert_eq!(s[&key("snigate_rules_loaded", &[])], 3.0, "the successful reload's rules stay");
    assert!(s[&key("snigate_rules_last_reload_success_timestamp_seconds", &[])] >= started);
}

/// 10,000 connections, each with a distinct random SNI, some decided by a rule and some by the
/// default: the set of exposed series does not change, and no SNI reaches the exposition.
#[tokio::test]
async fn random_snis_do_not_grow_the_series() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = TestConfig::upstream(closed_port().await)
        .listener("reject = \"close\"")
        .rules("deny *.blocked.test\n")
        .start(dir.path())
        .await;
    let names = |text: &str| -> Vec<String> {
        let mut series: Vec<String> = samples(text).into_keys().filter(|k| !k.starts_with("process_")).collect();
        series.sort();
        series
    };
    // Warm up: one connection of each kind, so every histogram and series has been touched.
    for name in [&b"x.blocked.test"[..], b"x.other.test"] {
        exchange(proxy.addr, &hello(&[sni(name)]), false).await;
    }
    settle(&proxy, |s| total(s, "snigate_connections_total") == 2.0).await;
    let before = scrape(&proxy).await;

    const N: usize = 10_000;
    let mut seed = 0x2545_f491_4f6c_dd1du64;
    let mut random_name = move |i: usize| {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let parent = if i.is_multiple_of(2) { "blocked.test" } else { "other.test" };
        format!("r{seed:016x}.{parent}")
    };
    let names_sent: Vec<String> = (0..N).map(&mut random_name).collect();
    let started = Instant::now();
    let addr = proxy.addr;
    let slots = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = tokio::task::JoinSet::new();
    for name in names_sent.clone() {
        let permit = slots.clone().acquire_owned().await.unwrap();
        tasks.spawn(async move {
            exchange(addr, &hello(&[sni(name.as_bytes())]), false).await;
            drop(permit);
        });
    }
    while let Some(r) = tasks.join_next().await {
        r.unwrap();
    }
    assert!(started.elapsed() < Duration::from_secs(60), "took {:?}", started.elapsed());
    let s = settle(&proxy, |s| total(s, "snigate_connections_total") == (N + 2) as f64).await;
    let k = |reason| key("snigate_connections_total", &[("listener", "test"), ("verdict", "deny"), ("reason", reason)]);
    assert_eq!(s[&k("rule")], (N / 2 + 1) as f64);
    assert_eq!(s[&k("default")], (N / 2 + 1) as f64);
    let after = scrape(&proxy).await;
    let (before, after_names) = (names(&before), names(&after));
    let new: Vec<&String> = after_names.iter().filter(|n| !before.contains(n)).take(5).collect();
    assert!(new.is_empty(), "{} series appeared, e.g. {new:?}", after_names.len() - before.len());
    assert_eq!(before, after_names, "the same series before and after");
    for name in names_sent.iter().step_by(97) {
        assert!(!after.contains(name.as_str()), "{name} leaked into the exposition");
    }
}

/// A real scrape, after traffic, passes `promtool check metrics` (when promtool is installed).
#[tokio::test]
async fn the_exposition_passes_promtool() {
    let Ok(version) = std::process::Command::new("promtool").arg("--version").output() else {
        println!("SKIPPED: promtool not installed");
        return;
    };
    assert!(version.status.success());
    let dir = tempfile::tempdir().unwrap();
    let proxy = TestConfig::upstream(echo_backend().await).rules(RULES).start(dir.path()).await;
    let h = hello(&[sni(b"a.example.com")]);
    assert_eq!(exchange(proxy.addr, &h, true).await, h);
    exchange(proxy.addr, &hello(&[sni(b"b.example.com")]), false).await;
    let s = settle(&proxy, |s| total(s, "snigate_connections_total") == 2.0).await;
    assert!(s.keys().any(|k| k.starts_with("process_resident_memory_bytes")), "process metrics");
    let text = scrape(&proxy).await;
    let mut check = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    check.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    let out = check.wait_with_output().unwrap();
    let report = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    println!("promtool check metrics: exit {:?}, output: {report:?}", out.status.code());
    assert!(out.status.success(), "{report}\n{text}");
    assert!(report.trim().is_empty(), "promtool found problems (lint):\n{report}");
}

/// `snigate healthcheck URL`'s exit code.
async fn healthcheck(url: &str) -> Option<i32> {
    let out =
        tokio::process::Command::new(env!("CARGO_BIN_EXE_snigate")).args(["healthcheck", url]).output().await.unwrap();
    out.status.code()
}

/// `/readyz` answers 200 while serving, 503 as soon as the drain starts (while a spliced
/// connection keeps it going), and `/healthz` stays 200; unknown paths are 404. `snigate
/// healthcheck` (the container HEALTHCHECK) exits 0 and 1 accordingly.
#[tokio::test]
async fn readyz_flips_during_drain() {
    let dir = tempfile::tempdir().unwrap();
    let proxy =
        TestConfig::upstream(echo_backend().await).rules(RULES).limit("drain_timeout", 10).start(dir.path()).await;
    let m = proxy.metrics_addr;
    assert_eq!(http_get(m, "/readyz").await, (200, "ready\n".to_string()));
    assert_eq!(http_get(m, "/healthz").await.0, 200);
    assert_eq!(http_get(m, "/nope").await.0, 404);
    assert_eq!(healthcheck(&format!("http://{m}/readyz")).await, Some(0));
    assert_eq!(healthcheck(&format!("http://{}/healthz", closed_port().await)).await, Some(1), "nobody there");
    let mut open = TcpStream::connect(proxy.addr).await.unwrap();
    let h = hello(&[sni(b"a.example.com")]);
    open.write_all(&h).await.unwrap();
    let mut back = vec![0; h.len()];
    open.read_exact(&mut back).await.unwrap();
    settle(&proxy, |s| s[&key("snigate_active_connections", &[("listener", "test")])] == 1.0).await;

    proxy.stop.send(()).unwrap();
    eventually(Duration::from_secs(5), "/readyz flips to 503", async || http_get(m, "/readyz").await.0 == 503).await;
    assert_eq!(http_get(m, "/healthz").await.0, 200, "alive while draining");
    assert_eq!(healthcheck(&format!("http://{m}/readyz")).await, Some(1));
    assert_eq!(healthcheck(&format!("http://{m}/healthz")).await, Some(0));
    open.write_all(b"still here").await.unwrap();
    let mut back = [0; 10];
    open.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"still here", "the connection is still spliced");
    assert_eq!(http_get(m, "/readyz").await.0, 503);
    drop(open);
    tokio::time::timeout(Duration::from_secs(5), proxy.done).await.expect("drained").unwrap();
}

/// A flood of denials: every denial is either written or counted as suppressed, the summary
/// lines add up to the counter, and allowed connections are always written.
#[tokio::test]
async fn a_denial_flood_is_rate_limited_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let proxy = TestConfig::upstream(echo_backend().await)
        .name("edge")
        .listener("reject = \"close\"")
        .rules(RULES)
        .log(format!("format = \"json\"\npath = \"{}\"\ndeny_lines_per_second = 20", log.display()))
        .start(dir.path())
        .await;
    const DENIED: usize = 1000;
    let addr = proxy.addr;
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..DENIED {
        tasks.spawn(async move { exchange(addr, &hello(&[sni(format!("d{i}.example.com").as_bytes())]), false).await });
        if i % 64 == 63 {
            while tasks.join_next().await.is_some() {}
        }
    }
    while tasks.join_next().await.is_some() {}
    let h = hello(&[sni(b"a.example.com")]);
    for _ in 0..5 {
        assert_eq!(exchange(addr, &h, true).await, h);
    }
    let s = settle(&proxy, |s| total(s, "snigate_connections_total") == (DENIED + 5) as f64).await;
    let suppressed = s[&key("snigate_log_suppressed_total", &[("listener", "edge"), ("cause", "rate_limit")])];
    assert_eq!(s[&key("snigate_log_suppressed_total", &[("listener", "edge"), ("cause", "queue_full")])], 0.0);
    assert!(suppressed > 0.0, "a flood of {DENIED} in a few seconds must be limited");
    proxy.log.finish(Duration::from_secs(5));

    let text = std::fs::read_to_string(&log).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let connection = |verdict: &str| lines.iter().filter(|l| l["verdict"] == verdict).count();
    let summaries: Vec<&serde_json::Value> = lines.iter().filter(|l| l["event"] == "log_suppressed").collect();
    assert_eq!(connection("allow"), 5, "allowed connections are always logged");
    assert_eq!(connection("deny") as f64 + suppressed, DENIED as f64, "each denial written or counted");
    let summarised: u64 = summaries.iter().map(|l| l["suppressed"].as_u64().unwrap()).sum();
    assert_eq!(summarised as f64, suppressed, "the summary lines add up to the counter");
    assert!(summaries.iter().all(|l| l["message"].as_str().unwrap().starts_with("suppressed ")));
    let first = &lines.iter().find(|l| l["verdict"] == "allow").unwrap();
    for field in ["time", "listener", "client", "sni", "alpn", "tls_version", "verdict", "reason", "rule", "upstream"] {
        assert!(first.get(field).is_some(), "{field} in {first}");
    }
    assert_eq!(first["listener"], "edge");
    assert_eq!(first["bytes_up"], h.len());
    assert!(first["time"].as_str().unwrap().ends_with('Z'));
}

/// Clients that hold the endpoint's connections, kept alive with a request now and then or
/// silent, do not keep the health probes out: each probe answers within a second.
#[tokio::test]
async fn health_answers_while_clients_hold_the_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = TestConfig::upstream(echo_backend().await).rules("allow a.example.com\n").start(dir.path()).await;
    let addr = proxy.metrics_addr;
    let until = Instant::now() + Duration::from_secs(3);
    // Holders that have made their first request (answered or not).
    let started = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut holders = Vec::new();
    for _ in 0..64 {
        let started = started.clone();
        holders.push(tokio::spawn(async move {
            let mut first = true;
            let mut begun = || {
                if std::mem::take(&mut first) {
                    started.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                }
            };
            let Ok(mut s) = TcpStream::connect(addr).await else { return begun() };
            let mut buf = vec![0u8; 1 << 16];
            while Instant::now() < until {
                if s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n").await.is_err() {
                    return begun();
                }
                let answered = matches!(s.read(&mut buf).await, Ok(n) if n > 0);
                begun();
                if !answered {
                    return;
                }
                // The holder's pace: a request now and then keeps its connection alive.
                tokio::time::sleep(Duration::from_millis(300)).await;
            }
        }));
    }
    let mut silent = Vec::new();
    for _ in 0..64 {
        silent.push(TcpStream::connect(addr).await.unwrap());
    }
    let holding = async || started.load(std::sync::atomic::Ordering::SeqCst) == 64;
    eventually(Duration::from_secs(5), "every holder has made its first request", holding).await;
    for _ in 0..10 {
        let started = Instant::now();
        let answer = tokio::time::timeout(Duration::from_secs(1), http_get(addr, "/healthz")).await;
        assert_eq!(answer.expect("healthz answers within a second"), (200, "ok\n".to_string()));
        assert!(started.elapsed() < Duration::from_secs(1));
        // Probes spread over the holders' three seconds, as a prober's interval would.
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(silent);
    for h in holders {
        let _ = h.await;
    }
}

/// An allowed connection whose upstream refuses is an error, not a denial: verdict `error` with
/// reason `upstream_error` in the log and in the metrics, and the log names the address tried.
#[tokio::test]
async fn an_unreachable_upstream_is_an_error_with_the_address_tried() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("access.log");
    let dead = closed_port().await;
    let proxy = TestConfig::upstream(dead).name("dead").rules(RULES).log_json(&log).start(dir.path()).await;
    exchange(proxy.addr, &hello(&[sni(b"a.example.com")]), false).await;
    let s = settle(&proxy, |s| total(s, "snigate_connections_total") == 1.0).await;
    let errors =
        key("snigate_connections_total", &[("listener", "dead"), ("verdict", "error"), ("reason", "upstream_error")]);
    assert_eq!(s[&errors], 1.0);
    let denials =
        key("snigate_connections_total", &[("listener", "dead"), ("verdict", "deny"), ("reason", "upstream_error")]);
    assert_eq!(s[&denials], 0.0, "not a denial");
    proxy.log.finish(Duration::from_secs(5));
    let text = std::fs::read_to_string(&log).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.lines().next().expect("a line")).unwrap();
    assert_eq!((line["verdict"].as_str(), line["reason"].as_str()), (Some("error"), Some("upstream_error")), "{line}");
    assert_eq!(line["upstream"], dead.to_string(), "the address tried: {line}");
    assert_eq!(line["stage"], "connect", "{line}");
    assert!(line["error"].as_str().is_some_and(|e| !e.is_empty()), "{line}");
}

/// `/rules` as a map from `file:line` to (hits, whether it has a last hit).
async fn rule_usage(proxy: &Proxy) -> BTreeMap<String, (u64, bool)> {
    let (status, body) = http_get(proxy.metrics_addr, "/rules").await;
    assert_eq!(status, 200, "{body}");
    let rules: Vec<serde_json::Value> = serde_json::from_str(&body).unwrap();
    rules
        .iter()
        .map(|r| {
            let last = &r["last_hit"];
            assert!(last.is_null() || last.as_str().is_some_and(|t| t.ends_with('Z')), "{r}");
            (r["rule"].as_str().unwrap().to_string(), (r["hits"].as_u64().unwrap(), !last.is_null()))
        })
        .collect()
}

/// Connections spread over two workers and several rules are counted exactly at `/rules`, by
/// `file:line`; a reload that changes another rule (and moves every line) keeps the counts of
/// the rules that did not change, and nothing of it becomes a Prometheus label.
#[tokio::test]
async fn rules_usage_is_exact_across_workers_and_survives_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let echo = echo_backend().await;
    let rules = "allow a.example.com\nallow b.example.com\ndeny  c.example.com\ndeny  d.example.com\n";
    let proxy = TestConfig::upstream(echo).rules(rules).runtime("threads = 2").start(dir.path()).await;
    let file = proxy.rules_file.display().to_string();
    let at = |line: u32| format!("{file}:{line}");
    let before = rule_usage(&proxy).await;
    assert_eq!(before.len(), 4);
    assert!(before.values().all(|&(hits, last)| hits == 0 && !last), "{before:?}");

    // a: 60 allowed, b: 40 allowed, c: 30 denied, d: none, e: 20 by the default (no rule).
    let plan = [("a", 60), ("b", 40), ("c", 30), ("e", 20)];
    let mut tasks = tokio::task::JoinSet::new();
    for (host, n) in plan {
        for i in 0..n {
            let addr = proxy.addr;
            tasks.spawn(async move {
                let h = hello(&[sni(format!("{host}.example.com").as_bytes())]);
                let mut sent = h.clone();
                sent.extend(pseudo_random(100 + i));
                let back = exchange(addr, &sent, matches!(host, "a" | "b")).await;
                (host, back == sent)
            });
        }
    }
    while let Some(done) = tasks.join_next().await {
        let (host, echoed) = done.unwrap();
        assert_eq!(echoed, matches!(host, "a" | "b"), "{host}");
    }
    let s = settle(&proxy, |s| total(s, "snigate_connections_total") >= 150.0).await;
    assert_eq!(total(&s, "snigate_rule_hits_total"), 130.0);
    let usage = rule_usage(&proxy).await;
    let want = BTreeMap::from([(at(1), (60, true)), (at(2), (40, true)), (at(3), (30, true)), (at(4), (0, false))]);
    assert_eq!(usage, want);

    // Another rule changes (d becomes f), a line is inserted above: a, b and c keep theirs.
    std::fs::write(
        &proxy.rules_file,
        "# moved\nallow a.example.com\nallow b.example.com   # same rule, new comment\ndeny c.example.com\nallow f.example.com\n",
    )
    .unwrap();
    snigate::reload_rules(&proxy.config, &proxy.live, &proxy.metrics).await.unwrap();
    let h = hello(&[sni(b"a.example.com")]);
    assert_eq!(exchange(proxy.addr, &h, true).await, h, "allowed after the reload");
    let usage = rule_usage(&proxy).await;
    let want = BTreeMap::from([(at(2), (61, true)), (at(3), (40, true)), (at(4), (30, true)), (at(5), (0, false))]);
    assert_eq!(usage, want);
    // No rule's place is a label.
    let exposition = scrape(&proxy).await;
    assert!(!exposition.contains(&format!("{file}:")), "{exposition}");
}
