//! The rollout loop end to end: a listener in report mode records mixed traffic, `snigate learn`
//! turns its log into rules that `snigate check` accepts and that replay to no allow-to-deny
//! flip, and a stricter file flips exactly what it drops. A property test holds `snigate replay`
//! to what a running listener decides for the same connections.

mod common;
mod harness;

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::process::Output;
use std::time::Duration;

use common::snigate_with as snigate;
use common::*;
use harness::*;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Sends a hello naming `name` (none: a hello without SNI) to `proxy`; whether the echo
/// backend's answer came back (allowed or reported) rather than a close (denied).
async fn passes(proxy: SocketAddr, name: Option<&str>) -> bool {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    let h = match name {
        Some(name) => hello(&[sni(name.as_bytes())]),
        None => hello(&[]),
    };
    s.write_all(&h).await.unwrap();
    let mut back = vec![0; h.len()];
    let echoed = tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut back)).await.expect("an answer");
    echoed.is_ok() && back == h
}

/// Waits for `n` lines in the access log at `path`.
async fn logged(path: &Path, n: usize) {
    let count = || std::fs::read_to_string(path).unwrap_or_default().lines().count();
    eventually(Duration::from_secs(5), &format!("{n} access-log lines"), async || count() >= n).await;
    assert_eq!(count(), n);
}

/// `snigate replay --json` of `log` under `rules`: the exit code and the report.
fn replay(log: &Path, rules: &Path) -> (Option<i32>, serde_json::Value) {
    let out = snigate(
        &["replay", "--json", "--log", &log.display().to_string(), "--rules", &rules.display().to_string()],
        b"",
    );
    let v = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), v)
}

#[tokio::test]
async fn learned_rules_pass_check_and_replay_without_a_flip_to_deny() {
    let dir = tempfile::tempdir().unwrap();
    let echo = echo_backend().await;
    let log = dir.path().join("access.log");
    let proxy = TestConfig::upstream(echo)
        .name("egress")
        .listener("enforce = \"report\"")
        .rules("allow acme.my.salesforce.com\ndeny evil.example.com\n")
        .log_json(&log)
        .start(dir.path())
        .await;
    // Six tenants of one parent (collapsed), an allowed name twice, a rule's denial and the
    // default's (both reported), and a hello without SNI (decided by the destination).
    let mut traffic: Vec<Option<String>> = (1..=6).map(|i| Some(format!("t{i}.apps.example.com"))).collect();
    traffic.extend(
        ["acme.my.salesforce.com", "acme.my.salesforce.com", "evil.example.com", "other.example.org"]
            .map(|n| Some(n.to_string())),
    );
    traffic.push(None);
    for name in &traffic {
        assert!(passes(proxy.addr, name.as_deref()).await, "{name:?}: allowed or reported");
    }
    logged(&log, traffic.len()).await;

    let out = snigate(&["learn", &log.display().to_string()], b"");
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let learned = String::from_utf8(out.stdout).unwrap();
    let port = echo.port();
    for line in [
        format!("allow acme.my.salesforce.com port {port}  # 2 connections, last seen 20"),
        format!("allow *.apps.example.com port {port}  # 6 names, 6 connections, last seen 20"),
        format!("allow evil.example.com port {port}"),
        format!("allow other.example.org port {port}"),
        "allow ip 127.0.0.1/32".to_string(),
    ] {
        assert!(
            learned.lines().any(|l| l
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
                .starts_with(&line.split_whitespace().collect::<Vec<_>>().join(" "))),
            "{line:?} in:\n{learned}"
        );
    }
    assert_eq!(learned.lines().filter(|l| l.starts_with("allow")).count(), 5, "{learned}");
    let rules = dir.path().join("learned.rules");
    std::fs::write(&rules, &learned).unwrap();
    let check = snigate(&["check", "--strict", &rules.display().to_string()], b"");
    assert_eq!(
        check.status.code(),
        Some(0),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    let (code, same) = replay(&log, &rules);
    assert_eq!(code, Some(0), "{same}");
    assert_eq!((&same["records"], &same["allow_to_deny"]), (&11.into(), &0.into()), "{same}");
    assert_eq!(
        same["deny_to_allow"], 9,
        "what was reported (the tenants, a rule's, the default's and no SNI's) is now allowed: {same}"
    );
    assert_eq!(same["unused_rules"], serde_json::json!([]), "{same}");

    // Stricter: without the allowed tenant, and with a rule nothing used.
    let strict = dir.path().join("strict.rules");
    let kept: String =
        learned.lines().filter(|l| !l.contains("acme.my.salesforce.com")).map(|l| format!("{l}\n")).collect();
    std::fs::write(&strict, format!("{kept}allow unused.example.net\n")).unwrap();
    let (code, stricter) = replay(&log, &strict);
    assert_eq!(code, Some(1), "something allowed would be denied: {stricter}");
    assert_eq!((&stricter["allow_to_deny"], &stricter["deny_to_allow"]), (&2.into(), &9.into()), "{stricter}");
    let flip = stricter["flips"].as_array().unwrap().iter().find(|f| f["direction"] == "allow_to_deny").unwrap();
    assert_eq!(
        (&flip["name"], &flip["count"], &flip["rule"]),
        (&"acme.my.salesforce.com".into(), &2.into(), &"default".into())
    );
    let unused = format!("{}:{}", strict.display(), kept.lines().count() + 1);
    assert_eq!(stricter["unused_rules"], serde_json::json!([unused]));

    // Under a configuration whose listener still reports, the flips to deny are reported, not
    // denied: the gate passes.
    let reporting = TestConfig::upstream(echo).name("egress").listener("enforce = \"report\"").rules_file(&strict);
    let reporting = reporting.write(&dir.path().join("reporting.toml")).display().to_string();
    let out = snigate(&["replay", "--json", "--log", &log.display().to_string(), "--config", &reporting], b"");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((out.status.code(), &v["allow_to_deny"], &v["reported"]), (Some(0), &2.into(), &2.into()), "{v}");

    // The same log, gzipped on standard input, filtered by listener.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&std::fs::read(&log).unwrap()).unwrap();
    let gz = gz.finish().unwrap();
    let json = |out: Output| serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap();
    let all = json(snigate(&["learn", "--json", "--listener", "egress", "-"], &gz));
    assert_eq!(
        (&all["records"], &all["learned"], all["rules"].as_array().unwrap().len()),
        (&11.into(), &11.into(), 5),
        "{all}"
    );
    let none = json(snigate(&["learn", "--json", "--listener", "other", "-"], &gz));
    assert_eq!((&none["records"], none["rules"].as_array().unwrap().len()), (&0.into(), 0), "{none}");
    let later = json(snigate(&["learn", "--json", "--since", "2999-01-01", "-"], &gz));
    assert_eq!(later["records"], 0, "{later}");
    let bad = snigate(&["learn", "--min-names", "1", "-"], b"");
    assert_eq!(bad.status.code(), Some(64), "a usage error");
}

#[tokio::test]
async fn unreadable_lines_are_counted_and_skipped() {
    let text = "{\"client\":\"10.0.0.1:1\",\"sni\":\"a.example.com\",\"verdict\":\"allow\",\"reason\":\"rule\",\"upstream\":\"192.0.2.1:443\"}\nnot json\n{\"verdict\":\"deny\"}\n";
    let out = snigate(&["learn", "--json", "-"], text.as_bytes());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!((out.status.code(), &v["learned"], &v["unreadable"]), (Some(0), &1.into(), &2.into()), "{v}");
    let out = snigate(&["learn", "-"], text.as_bytes());
    assert!(String::from_utf8_lossy(&out.stderr).contains("2 unreadable lines skipped"));
}

/// The names the property test's connections ask for, and the patterns its rules are made of.
const NAMES: &[&str] =
    &["a.example.com", "b.example.com", "x.a.example.com", "example.com", "api.test.org", "b.test.org"];
const PATTERNS: &[&str] = &[
    "a.example.com",
    "b.example.com",
    "*.example.com",
    ".example.com",
    "*.a.example.com",
    "a*.example.com",
    "*.test.org",
    ".test.org",
    "api.test.org",
];

/// A rule: a pattern, allow or deny, and a scope that the connections (from 127.0.0.1, to the
/// echo backend's port) meet or not.
fn rule_line(pattern: usize, allow: bool, scope: u8, port: u16) -> String {
    let scope = match scope {
        1 => format!(" port {port}"),
        2 => format!(" port {}", if port == 1 { 2 } else { 1 }),
        3 => " from 127.0.0.0/8".to_string(),
        4 => " from 10.0.0.0/8".to_string(),
        _ => String::new(),
    };
    format!("{} {}{scope}\n", if allow { "allow" } else { "deny" }, PATTERNS[pattern])
}

fn rules_text(rules: &[(usize, bool, u8)], port: u16) -> String {
    let mut seen = std::collections::BTreeSet::new();
    rules.iter().filter(|(p, _, s)| seen.insert((*p, *s))).map(|&(p, a, s)| rule_line(p, a, s, port)).collect()
}

/// Runs `names` through a listener with `rules` and `default`, logging to `log`: which passed.
async fn live(dir: &Path, echo: SocketAddr, rules: &str, default: &str, names: &[usize], log: &Path) -> Vec<bool> {
    let proxy = TestConfig::upstream(echo)
        .rules(rules)
        .rules_setting(format!("default = \"{default}\""))
        .log_json(log)
        .start(dir)
        .await;
    let mut passed = Vec::new();
    for &n in names {
        passed.push(passes(proxy.addr, Some(NAMES[n])).await);
    }
    logged(log, names.len()).await;
    passed
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 12, failure_persistence: None, ..ProptestConfig::default() })]

    /// Connections recorded under rules A, replayed under rules B, are decided as a listener
    /// running B decides them.
    #[test]
    fn replay_decides_as_a_running_listener(
        a in prop::collection::vec((0..PATTERNS.len(), any::<bool>(), 0u8..5), 1..6),
        b in prop::collection::vec((0..PATTERNS.len(), any::<bool>(), 0u8..5), 1..6),
        defaults in (any::<bool>(), any::<bool>()),
        names in prop::collection::vec(0..NAMES.len(), 1..8),
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let echo = echo_backend().await;
            let default = |allow: bool| if allow { "allow" } else { "deny" };
            let (a, b) = (rules_text(&a, echo.port()), rules_text(&b, echo.port()));
            let (log_a, log_b) = (dir.path().join("a.log"), dir.path().join("b.log"));
            let (dir_a, dir_b) = (dir.path().join("a"), dir.path().join("b"));
            std::fs::create_dir_all(&dir_a).unwrap();
            std::fs::create_dir_all(&dir_b).unwrap();
            let recorded = live(&dir_a, echo, &a, default(defaults.0), &names, &log_a).await;
            let under_b = live(&dir_b, echo, &b, default(defaults.1), &names, &log_b).await;
            let config = TestConfig::upstream(echo).rules(b.clone()).rules_setting(format!("default = \"{}\"", default(defaults.1)));
            let config = config.write(&dir.path().join("b.toml"));
            let out = snigate(&["replay", "--json", "--log", &log_a.display().to_string(), "--config", &config.display().to_string()], b"");
            let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| panic!("{}", String::from_utf8_lossy(&out.stderr)));
            let flipped: BTreeMap<&str, &str> = report["flips"].as_array().unwrap().iter()
                .map(|f| (f["name"].as_str().unwrap(), f["direction"].as_str().unwrap())).collect();
            for (i, &n) in names.iter().enumerate() {
                let replayed = recorded[i] != flipped.contains_key(NAMES[n]);
                assert_eq!(replayed, under_b[i], "{}: recorded under\n{a}default {}\nreplayed under\n{b}default {}\n{report}", NAMES[n], default(defaults.0), default(defaults.1));
            }
            assert_eq!(out.status.code(), Some(i32::from(flipped.values().any(|d| *d == "allow_to_deny"))), "{report}");
        });
    }
}
