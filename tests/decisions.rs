//! `/decisions` and the page at `/` on real sockets: allowed, denied and report-scope
//! connections made by `openssl s_client` through real listeners, then `/decisions` read back
//! (names, counts, sources, rules); the page and its Content-Security-Policy; and the page in
//! headless Chromium, whose script must run under that policy for a denied name to show.
//!
//! The browser test needs Debian's `chromium`; CI installs it. Elsewhere it skips, saying why.

mod common;
mod harness;

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use harness::*;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const RULES: &str = "allow acme.my.salesforce.com\ndeny evil.example.com\n";

/// `openssl s_client` to `proxy` for `name`: whether the handshake completed (allowed), else
/// that snigate answered access_denied.
async fn handshakes(proxy: SocketAddr, name: &str) -> bool {
    let name = name.to_string();
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new("timeout")
            .args(["10", "openssl", "s_client", "-brief", "-connect", &proxy.to_string(), "-servername", &name])
            .stdin(Stdio::null())
            .output()
            .expect("openssl s_client")
    })
    .await
    .unwrap();
    let said = String::from_utf8_lossy(&out.stderr).to_lowercase();
    let established = said.contains("connection established");
    assert!(established || said.contains("access denied"), "s_client said: {said}");
    established
}

/// A hand-made hello with `extensions` from `source` to `proxy`; returns once snigate closes.
async fn hello_from(source: &str, proxy: SocketAddr, extensions: &[Vec<u8>]) {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut s = socket.connect(proxy).await.unwrap();
    s.write_all(&hello(extensions)).await.unwrap();
    let mut rest = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await.expect("snigate closes");
}

/// One GET: the status, the head's lines in lowercase, and the body.
async fn get(addr: SocketAddr, path: &str) -> (u16, String, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut response = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut response)).await.unwrap().unwrap();
    let response = String::from_utf8(response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").expect("an HTTP response");
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head.to_lowercase(), body.to_string())
}

/// The row of `outcome` for `name` (`null`: the one without a name, by its destination).
fn row<'a>(decisions: &'a Value, outcome: &str, name: Option<&str>) -> &'a Value {
    let rows = decisions[outcome].as_array().unwrap_or_else(|| panic!("no {outcome} in {decisions}"));
    rows.iter()
        .find(|r| r["name"].as_str() == name)
        .unwrap_or_else(|| panic!("no {name:?} in {outcome}: {decisions:#}"))
}

/// What a row says: count, error, sources, rule, rule line.
fn summary(row: &Value) -> (u64, u64, u64, String, String) {
    let text = |k: &str| row[k].as_str().unwrap_or("null").to_string();
    (
        row["count"].as_u64().unwrap(),
        row["error"].as_u64().unwrap(),
        row["sources"].as_u64().unwrap(),
        text("rule"),
        text("rule_line"),
    )
}

/// Connections allowed, denied (by a rule, by the default, without a name, from two sources)
/// and let through by a report scope, by real TLS clients through two real listeners: each
/// shows under its outcome with its count, sources, deciding rule and the rule line that
/// reverses it; a name that is markup never shows.
#[tokio::test]
async fn decisions_show_what_was_denied_would_be_denied_and_allowed() {
    let dir = tempfile::tempdir().unwrap();
    let (_server, backend) = tls_server(dir.path()).await;
    let proxy = TestConfig::upstream(backend)
        .name("enforcing")
        .and(Listener::upstream(backend).name("reporting").set("enforce = \"report\"\nreport_until = \"2099-12-31\""))
        .rules(RULES)
        .start(dir.path())
        .await;
    let (enforcing, reporting) = (proxy.addrs[0], proxy.addrs[1]);
    assert!(handshakes(enforcing, "acme.my.salesforce.com").await);
    assert!(handshakes(enforcing, "ACME.my.salesforce.com.").await, "the same name, normalised");
    assert!(!handshakes(enforcing, "evil.example.com").await);
    assert!(!handshakes(enforcing, "other.example.net").await);
    assert!(handshakes(reporting, "evil.example.com").await, "reported, not denied");
    assert!(handshakes(reporting, "unlisted.example.org").await);
    hello_from("127.0.0.2", enforcing, &[sni(b"evil.example.com")]).await;
    hello_from("127.0.0.1", enforcing, &[alpn(&[b"h2"])]).await;
    hello_from("127.0.0.1", enforcing, &[sni(b"<img src=x onerror=alert(1)>")]).await;

    let (status, head, body) = get(proxy.metrics_addr, "/decisions").await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: application/json") && head.contains("x-content-type-options: nosniff"));
    let d: Value = serde_json::from_str(&body).unwrap();
    let rules = proxy.rules_file.display().to_string();
    let line = |n: u32| format!("{rules}:{n}");
    let s = |v: &str| v.to_string();
    assert_eq!(
        summary(row(&d, "allow", Some("acme.my.salesforce.com"))),
        (2, 0, 1, line(1), s("deny acme.my.salesforce.com"))
    );
    assert_eq!(summary(row(&d, "deny", Some("evil.example.com"))), (2, 0, 2, line(2), s("allow evil.example.com")));
    assert_eq!(
        summary(row(&d, "deny", Some("other.example.net"))),
        (1, 0, 1, s("default"), s("allow other.example.net"))
    );
    let port = backend.port();
    let nameless = row(&d, "deny", None);
    assert_eq!(nameless["destination"], backend.to_string(), "listed by its destination");
    assert_eq!(summary(nameless), (1, 0, 1, s("no_sni"), format!("allow ip 127.0.0.1 port {port}")));
    assert_eq!(
        summary(row(&d, "would_deny", Some("evil.example.com"))),
        (1, 0, 1, line(2), s("allow evil.example.com"))
    );
    assert_eq!(
        summary(row(&d, "would_deny", Some("unlisted.example.org"))),
        (1, 0, 1, s("default"), s("allow unlisted.example.org"))
    );
    assert_eq!(d["deny"].as_array().unwrap().len(), 3, "the invalid name is not a decision: {d:#}");
    assert_eq!((d["allow"].as_array().unwrap().len(), d["would_deny"].as_array().unwrap().len()), (1, 2));
    assert_eq!(d["deny"][0]["name"], "evil.example.com", "most counted first");
    let last_seen = row(&d, "deny", Some("other.example.net"))["last_seen"].as_str().unwrap();
    assert!(last_seen.len() == 24 && last_seen.ends_with('Z') && last_seen.as_bytes()[10] == b'T', "{last_seen}");
    assert_eq!(d["window_seconds"], 3600);
    for markup in ["<", "img", "onerror"] {
        assert!(!body.contains(markup), "{markup} in {body}");
    }
}

/// A CONNECT is decided, then the hello in its tunnel again, under the same name: the
/// connection counts once. Another connection to the same name counts again.
#[tokio::test]
async fn a_tunnel_decided_twice_counts_once() {
    let dir = tempfile::tempdir().unwrap();
    let backend = echo_backend().await;
    let proxy = TestConfig::connect(&[backend.port()]).rules("allow localhost\n").start(dir.path()).await;
    for _ in 0..2 {
        let mut s = TcpStream::connect(proxy.addr).await.unwrap();
        let target = format!("localhost:{}", backend.port());
        s.write_all(format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n").as_bytes()).await.unwrap();
        let h = hello(&[sni(b"localhost")]);
        s.write_all(&h).await.unwrap();
        s.shutdown().await.unwrap();
        let mut back = Vec::new();
        tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut back)).await.unwrap().unwrap();
        assert!(back.starts_with(b"HTTP/1.1 200 ") && back.ends_with(&h), "{}", String::from_utf8_lossy(&back));
    }
    let d: Value = serde_json::from_str(&get(proxy.metrics_addr, "/decisions").await.2).unwrap();
    let rules = proxy.rules_file.display().to_string();
    assert_eq!(summary(row(&d, "allow", Some("localhost"))), (2, 0, 1, format!("{rules}:1"), "deny localhost".into()));
}

/// `/` is one self-contained page under a strict policy; the 404 names every path.
#[tokio::test]
async fn the_page_is_served_under_a_strict_policy() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = TestConfig::upstream(echo_backend().await).rules(RULES).start(dir.path()).await;
    let (status, head, body) = get(proxy.metrics_addr, "/").await;
    assert_eq!(status, 200);
    assert!(head.contains("content-type: text/html; charset=utf-8"), "{head}");
    assert!(head.contains("x-content-type-options: nosniff"), "{head}");
    let policy = head.lines().find_map(|l| l.strip_prefix("content-security-policy: ")).expect("a CSP header");
    for directive in [
        "default-src 'none'",
        "script-src 'sha256-",
        "style-src 'sha256-",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'none'",
        "frame-ancestors 'none'",
        "require-trusted-types-for 'script'",
    ] {
        assert!(policy.contains(directive), "{directive} in {policy}");
    }
    assert!(!policy.contains("unsafe"), "{policy}");
    assert!(body.starts_with("<!doctype html>") && body.contains("fetch('/decisions'"));
    assert!(
        !body.contains("http://") && !body.contains("https://") && !body.contains(" src="),
        "nothing from elsewhere"
    );
    let (status, _, body) = get(proxy.metrics_addr, "/nowhere").await;
    assert_eq!((status, body.as_str()), (404, "not found: try /, /metrics, /rules, /decisions, /healthz or /readyz\n"));
}

/// The browser to run the page in, when there is one. In CI it must be there (CI installs
/// it); elsewhere the test skips, saying why.
fn chromium() -> Option<&'static str> {
    let found = ["chromium", "chromium-browser"]
        .into_iter()
        .find(|b| std::process::Command::new(b).arg("--version").output().is_ok_and(|o| o.status.success()));
    if found.is_none() {
        assert!(std::env::var_os("CI").is_none(), "chromium is missing, and CI installs it (.ci/run)");
        eprintln!("SKIPPED: the page's browser test needs chromium (apt-get install chromium)");
    }
    found
}

/// Headless Chromium loads `/`: the page's script runs under its policy, fetches
/// `/decisions` and shows a denied name in the table of denials, as text.
#[tokio::test]
async fn a_headless_browser_shows_a_denied_name() {
    let Some(browser) = chromium() else { return };
    let dir = tempfile::tempdir().unwrap();
    let proxy = TestConfig::upstream(echo_backend().await).rules(RULES).start(dir.path()).await;
    hello_from("127.0.0.1", proxy.addr, &[sni(b"shown-in-a-browser.example.com")]).await;
    let profile = dir.path().join("profile");
    let out = tokio::process::Command::new("timeout")
        .args(["60", browser, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
        .arg(format!("--user-data-dir={}", profile.display()))
        .args(["--virtual-time-budget=5000", "--dump-dom", &format!("http://{}/", proxy.metrics_addr)])
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .expect("chromium runs");
    let dom = String::from_utf8_lossy(&out.stdout);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "chromium: {said}");
    let denials =
        dom.split(r#"<section id="deny">"#).nth(1).unwrap_or_else(|| panic!("no table of denials: {dom}\n{said}"));
    let denials = denials.split("</section>").next().unwrap();
    assert!(denials.contains(r#"<td class="name">shown-in-a-browser.example.com</td>"#), "{dom}");
    assert!(denials.contains(r#"<td class="rule">default</td>"#), "{denials}");
    assert!(dom.contains("allow shown-in-a-browser.example.com"), "the row's rule line: {denials}");
    assert!(dom.contains(r#"<p id="status">Since "#), "the script ran to its end: {dom}");
}
