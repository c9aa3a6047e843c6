//! Report scopes end to end: a listener that reports lets through what the policy would deny
//! and says so in its log line and `snigate_would_deny_total`; `[[report]]` source scopes,
//! expired scopes, safety checks and always-enforced rules keep denying.

mod common;
mod harness;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use common::*;
use harness::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const RULES: &str = "allow acme.my.salesforce.com\ndeny evil.example.com\n";

/// The access log's lines, once there are `n`.
async fn log_lines(dir: &Path, n: usize) -> Vec<serde_json::Value> {
    let read = || -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(dir.join("access.log")).unwrap_or_default();
        text.lines().map(|l| serde_json::from_str(l).unwrap()).collect()
    };
    eventually(Duration::from_secs(5), &format!("{n} access-log lines"), async || read().len() >= n).await;
    let lines = read();
    assert_eq!(lines.len(), n, "{lines:?}");
    lines
}

/// The line whose `sni` is `name`.
fn line_for<'a>(lines: &'a [serde_json::Value], name: &str) -> &'a serde_json::Value {
    lines.iter().find(|l| l["sni"] == name).unwrap_or_else(|| panic!("no line for {name}: {lines:?}"))
}

/// Sends a hello naming `name` from `source` to `proxy`; whether the echo backend's answer
/// came back (allowed) rather than a close (denied). The client then closes.
async fn passes(source: &str, proxy: SocketAddr, name: &str) -> bool {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(format!("{source}:0").parse().unwrap()).unwrap();
    let mut s = socket.connect(proxy).await.unwrap();
    let h = hello(&[sni(name.as_bytes())]);
    s.write_all(&h).await.unwrap();
    let mut back = vec![0; h.len()];
    let echoed = tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back)).await.expect("an answer");
    echoed.is_ok() && back == h
}

fn would_deny(listener: &str, reason: &str) -> String {
    key("snigate_would_deny_total", &[("listener", listener), ("reason", reason)])
}

fn connections(listener: &str, verdict: &str, reason: &str) -> String {
    key("snigate_connections_total", &[("listener", listener), ("verdict", verdict), ("reason", reason)])
}

/// One listener reports, the other enforces, under the same rules: the reporting one lets
/// through a name a rule denies and one the default denies, each logged as `allow`/`report`
/// with the reason it would have been denied and the rule; the enforcing one denies them.
#[tokio::test]
async fn a_reporting_listener_lets_through_what_an_enforcing_one_denies() {
    let dir = tempfile::tempdir().unwrap();
    let echo = echo_backend().await;
    let proxy = TestConfig::upstream(echo)
        .listener("enforce = \"report\"\nreport_until = \"2099-12-31\"")
        .and(Listener::upstream(echo).name("strict"))
        .rules(RULES)
        .log_json(&dir.path().join("access.log"))
        .start(dir.path())
        .await;
    let (report, strict) = (proxy.addrs[0], proxy.addrs[1]);
    assert!(passes("127.0.0.1", report, "evil.example.com").await, "a rule's denial is reported");
    assert!(passes("127.0.0.1", report, "other.example.com").await, "the default's denial is reported");
    assert!(passes("127.0.0.1", report, "acme.my.salesforce.com").await, "an allowed name is allowed");
    assert!(!passes("127.0.0.1", strict, "evil.example.com").await, "the enforcing listener denies");

    let lines = log_lines(dir.path(), 4).await;
    let rules_file = dir.path().join("test.rules").display().to_string();
    let evil = lines.iter().find(|l| l["sni"] == "evil.example.com" && l["listener"] == "test").unwrap();
    assert_eq!(
        (&evil["verdict"], &evil["reason"], &evil["would_reason"], &evil["rule"]),
        (&"allow".into(), &"report".into(), &"rule".into(), &format!("{rules_file}:2").into()),
        "{evil}"
    );
    let other = line_for(&lines, "other.example.com");
    assert_eq!(
        (&other["verdict"], &other["reason"], &other["would_reason"]),
        (&"allow".into(), &"report".into(), &"default".into())
    );
    assert!(other["rule"].is_null(), "{other}");
    let acme = line_for(&lines, "acme.my.salesforce.com");
    assert_eq!((&acme["reason"], acme.get("would_reason")), (&"rule".into(), None), "{acme}");
    let denied = lines.iter().find(|l| l["listener"] == "strict").unwrap();
    assert_eq!((&denied["verdict"], &denied["reason"]), (&"deny".into(), &"rule".into()));
    assert!(denied.get("would_reason").is_none(), "{denied}");

    let m = settle(&proxy, |s| {
        s.get(&connections("strict", "deny", "rule")) == Some(&1.0)
            && s.get(&connections("test", "allow", "report")) == Some(&2.0)
    })
    .await;
    assert_eq!(m[&would_deny("test", "rule")], 1.0);
    assert_eq!(m[&would_deny("test", "default")], 1.0);
    assert_eq!(m[&would_deny("strict", "rule")], 0.0);
    assert_eq!(m[&connections("test", "allow", "report")], 2.0);
    assert_eq!(m[&key("snigate_report_until_timestamp_seconds", &[("scope", "test")])], 4_102_444_800.0);
    assert_eq!(m[&key("snigate_report_scope_info", &[("listener", "test"), ("enforce", "report")])], 1.0);
    assert_eq!(m[&key("snigate_report_scope_info", &[("listener", "strict"), ("enforce", "enforce")])], 1.0);
}

/// A `[[report]]` scope reports for its sources on an enforcing listener, and only for them.
#[tokio::test]
async fn a_source_scope_reports_for_its_sources_only() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = TestConfig::upstream(echo_backend().await)
        .rules(RULES)
        .table("[[report]]\nfrom = [\"127.0.0.2/32\"]\nuntil = \"2099-12-31\"")
        .start(dir.path())
        .await;
    assert!(passes("127.0.0.2", proxy.addr, "evil.example.com").await, "127.0.0.2 is in the scope");
    assert!(!passes("127.0.0.3", proxy.addr, "evil.example.com").await, "127.0.0.3 is not");
    let m = settle(&proxy, |s| {
        s.get(&connections("test", "deny", "rule")) == Some(&1.0)
            && s.get(&connections("test", "allow", "report")) == Some(&1.0)
    })
    .await;
    assert_eq!(m[&would_deny("test", "rule")], 1.0);
    let scope = key("snigate_report_until_timestamp_seconds", &[("scope", "report:127.0.0.2/32")]);
    assert_eq!(m[&scope], 4_102_444_800.0);
}

/// A scope past its date enforces by itself.
#[tokio::test]
async fn an_expired_scope_enforces() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = TestConfig::upstream(echo_backend().await)
        .listener("enforce = \"report\"\nreport_until = \"2020-01-01\"")
        .rules(RULES)
        .table("[[report]]\nfrom = [\"127.0.0.0/8\"]\nuntil = \"2020-01-01\"")
        .start(dir.path())
        .await;
    assert!(!passes("127.0.0.1", proxy.addr, "evil.example.com").await);
    assert!(passes("127.0.0.1", proxy.addr, "acme.my.salesforce.com").await);
    let m = settle(&proxy, |s| s.get(&connections("test", "deny", "rule")) == Some(&1.0)).await;
    assert_eq!(m[&would_deny("test", "rule")], 0.0);
    assert_eq!(m[&key("snigate_report_until_timestamp_seconds", &[("scope", "test")])], 1_577_923_200.0);
}

/// Report never relaxes the destination guard: a reported name that leads to loopback is
/// still refused (`dst_denied`), its line saying what the policy would have said too.
#[tokio::test]
async fn the_destination_guard_still_denies_in_a_report_scope() {
    let dir = tempfile::tempdir().unwrap();
    let backend = echo_backend().await;
    let proxy = TestConfig::new(Listener::sni(backend.port()))
        .listener("enforce = \"report\"")
        .rules(RULES)
        .log_json(&dir.path().join("access.log"))
        .default_guard()
        .start(dir.path())
        .await;
    assert!(!passes("127.0.0.1", proxy.addr, "localhost").await);
    let line = &log_lines(dir.path(), 1).await[0];
    assert_eq!(
        (&line["verdict"], &line["reason"], &line["would_reason"]),
        (&"deny".into(), &"dst_denied".into(), &"default".into()),
        "{line}"
    );
}

/// Report never relaxes the per-source limits: a source beyond `max_hellos_per_source` is
/// refused at once.
#[tokio::test]
async fn source_limits_still_deny_in_a_report_scope() {
    let dir = tempfile::tempdir().unwrap();
    let proxy = TestConfig::upstream(echo_backend().await)
        .listener("enforce = \"report\"")
        .rules(RULES)
        .limit("max_hellos_per_source", 1)
        .start(dir.path())
        .await;
    let partial = &hello(&[sni(b"evil.example.com")])[..9];
    let mut held = TcpStream::connect(proxy.addr).await.unwrap();
    held.write_all(partial).await.unwrap();
    let active = key("snigate_active_connections", &[("listener", "test")]);
    settle(&proxy, |s| s.get(&active) == Some(&1.0)).await;
    assert!(!passes("127.0.0.1", proxy.addr, "evil.example.com").await, "refused: the source is at its limit");
    let m = settle(&proxy, |s| s.get(&connections("test", "deny", "source_limit")) == Some(&1.0)).await;
    assert_eq!(m[&would_deny("test", "rule")], 0.0);
    drop(held);
}

/// A list marked `enforce = "always"` and a rule file that starts with `#! enforce always`
/// keep their denials in a report scope; other rules' denials are reported.
#[tokio::test]
async fn always_enforced_lists_and_files_still_deny() {
    let dir = tempfile::tempdir().unwrap();
    let list = dir.path().join("malware.txt");
    std::fs::write(&list, "malware.example.com\n").unwrap();
    let strict = dir.path().join("strict.rules");
    std::fs::write(&strict, "#! enforce always\ndeny blocked.example.com\n").unwrap();
    let rules = dir.path().join("rules");
    std::fs::create_dir(&rules).unwrap();
    std::fs::write(rules.join("a.rules"), RULES).unwrap();
    std::fs::write(rules.join("b.rules"), std::fs::read_to_string(&strict).unwrap()).unwrap();
    let proxy = TestConfig::upstream(echo_backend().await)
        .listener("enforce = \"report\"")
        .rules_file(&rules)
        .rules_setting(format!(
            "[[rules.list]]\npath = \"{}\"\naction = \"deny\"\nenforce = \"always\"",
            list.display()
        ))
        .start(dir.path())
        .await;
    assert!(!passes("127.0.0.1", proxy.addr, "malware.example.com").await, "the always-enforced list denies");
    assert!(!passes("127.0.0.1", proxy.addr, "blocked.example.com").await, "the always-enforced file denies");
    assert!(passes("127.0.0.1", proxy.addr, "evil.example.com").await, "another file's denial is reported");
    let m = settle(&proxy, |s| s.get(&connections("test", "allow", "report")) == Some(&1.0)).await;
    assert_eq!(m[&connections("test", "deny", "rule")], 2.0);
    assert_eq!(m[&would_deny("test", "rule")], 1.0);
}

/// `snigate replay` on what a listener in report mode recorded: the same rules flip nothing;
/// stricter rules give the exact allow-to-deny flips, exit 1 and the rule no connection used;
/// looser ones the deny-to-allow flips of what was reported, exit 0.
#[tokio::test]
async fn replay_decides_recorded_traffic_again() {
    let dir = tempfile::tempdir().unwrap();
    let echo = echo_backend().await;
    let log = dir.path().join("access.log");
    let proxy = TestConfig::upstream(echo)
        .listener("enforce = \"report\"")
        .rules("allow a.example.com\nallow b.example.com\n")
        .log_json(&log)
        .start(dir.path())
        .await;
    for name in ["a.example.com", "b.example.com", "b.example.com", "c.example.com"] {
        assert!(passes("127.0.0.1", proxy.addr, name).await, "{name}: allowed or reported");
    }
    log_lines(dir.path(), 4).await;
    let replay = |rules: &str, file: &str| {
        let path = dir.path().join(file);
        std::fs::write(&path, rules).unwrap();
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_snigate"))
            .args(["replay", "--json", "--log"])
            .arg(&log)
            .arg("--rules")
            .arg(&path)
            .output()
            .unwrap();
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
        (out.status.code(), v, path.display().to_string())
    };
    let (code, same, _) = replay("allow a.example.com\nallow b.example.com\n", "same.rules");
    assert_eq!((code, &same["records"], &same["same"]), (Some(0), &4.into(), &4.into()), "{same}");

    let (code, stricter, path) = replay("allow a.example.com\nallow z.example.com\n", "stricter.rules");
    assert_eq!(code, Some(1), "something allowed would be denied: {stricter}");
    assert_eq!((&stricter["allow_to_deny"], &stricter["same"]), (&2.into(), &2.into()), "{stricter}");
    let flip = &stricter["flips"][0];
    assert_eq!(
        (&flip["name"], &flip["direction"], &flip["count"]),
        (&"b.example.com".into(), &"allow_to_deny".into(), &2.into())
    );
    assert_eq!(flip["rule"], "default", "{flip}");
    assert_eq!(stricter["unused_rules"], serde_json::json!([format!("{path}:2")]));

    let (code, looser, _) = replay("allow *.example.com\n", "looser.rules");
    assert_eq!((code, &looser["deny_to_allow"], &looser["allow_to_deny"]), (Some(0), &1.into(), &0.into()), "{looser}");
    assert_eq!(looser["flips"][0]["name"], "c.example.com");
}
