//! `snigate check` and `snigate match` as operators run them, on the shipped rules and on
//! small rule files of their own.

use std::process::Command;

fn snigate(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_snigate"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn check_accepts_the_shipped_rules_and_the_embedded_preset() {
    for args in [&["check", "rules/"][..], &["check"][..], &["check", "rules/salesforce-tenant.rules.example"][..]] {
        let (code, out) = snigate(args);
        assert_eq!(code, 0, "{args:?}: {out}");
        assert!(out.ends_with("valid\n"), "{out}");
    }
}

#[test]
fn check_lists_every_error_and_exits_1() {
    let dir = std::env::temp_dir().join(format!("snigate-cli-check-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("bad.rules");
    std::fs::write(&bad, "allow ok.com\nallow a.*.com\nblock x.com\n").unwrap();
    let (code, out) = snigate(&["check", bad.to_str().unwrap()]);
    std::fs::remove_dir_all(&dir).unwrap();
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("bad.rules:2:7: bad pattern `a.*.com`"), "{out}");
    assert!(out.contains("bad.rules:3:1: unknown keyword `block`"), "{out}");
    assert!(out.contains("invalid: 2 error(s)"), "{out}");
}

#[test]
fn match_json_names_the_deciding_rule() {
    let (code, out) = snigate(&["match", "acme.my.salesforce.com", "--rules", "rules/", "--json"]);
    assert_eq!(code, 0, "{out}");
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["verdict"], "allow");
    assert_eq!(v["reason"], "rule");
    let rule = v["rule"].as_str().unwrap();
    assert!(rule.starts_with("rules/salesforce.rules:"), "{rule}");
    let line: usize = rule.rsplit(':').next().unwrap().parse().unwrap();
    let text = std::fs::read_to_string("rules/salesforce.rules").unwrap();
    assert!(text.lines().nth(line - 1).unwrap().starts_with("allow *.my.salesforce.com"));
}

#[test]
fn match_tenant_example_and_defaults() {
    let dir = std::env::temp_dir().join(format!("snigate-cli-match-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let tenant = dir.join("tenant.rules");
    std::fs::copy("rules/salesforce-tenant.rules.example", &tenant).unwrap();
    let t = tenant.to_str().unwrap();
    let cases = [
        ("acme.my.salesforce.com", "allow"),
        ("acme--uat.sandbox.my.salesforce.com", "allow"),
        ("acme--uat--c.sandbox.vf.force.com", "allow"),
        ("acme.lightning.force.com", "allow"),
        ("other.my.salesforce.com", "deny"),
        ("other--uat.sandbox.my.salesforce.com", "deny"),
        ("other.my.site.com", "deny"),
        ("login.salesforce.com", "allow"),
    ];
    for (name, want) in cases {
        let (_, out) = snigate(&["match", name, "--rules", "rules/", "--rules", t, "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(v["verdict"], want, "{name}: {out}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
    let (code, out) = snigate(&["match", "example.com", "--json"]);
    assert_eq!(code, 0);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (v["verdict"].as_str(), v["reason"].as_str(), v["rule"].is_null()),
        (Some("deny"), Some("default"), true)
    );
    let (code, out) = snigate(&["match", "--no-sni", "--dst", "192.0.2.1:443", "--json"]);
    assert_eq!(code, 0);
    assert!(out.contains("\"reason\":\"no_sni\""), "{out}");
}

#[test]
fn match_port_decides_port_scoped_rules() {
    let dir = std::env::temp_dir().join(format!("snigate-cli-port-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("ports.rules");
    std::fs::write(&file, "allow *.p.example port 443, 8443\nallow ip 192.0.2.0/24 port 443\n").unwrap();
    let f = file.to_str().unwrap();
    let verdict = |args: &[&str]| {
        let (code, out) = snigate(&[&["match", "--rules", f, "--json"][..], args].concat());
        assert_eq!(code, 0, "{args:?}: {out}");
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        (v["verdict"].as_str().unwrap().to_string(), v["reason"].as_str().unwrap().to_string(), v["port"].clone())
    };
    let got = verdict(&["a.p.example", "--port", "8443"]);
    assert_eq!(got, ("allow".into(), "rule".into(), serde_json::json!(8443)));
    let got = verdict(&["a.p.example"]);
    assert_eq!(got, ("deny".into(), "default".into(), serde_json::Value::Null), "no port");
    assert_eq!(verdict(&["a.p.example", "--port", "80"]).0, "deny");
    assert_eq!(verdict(&["--no-sni", "--dst", "192.0.2.1:443"]).0, "allow", "the port of --dst");
    assert_eq!(verdict(&["--no-sni", "--dst", "192.0.2.1", "--port", "443"]).0, "allow");
    assert_eq!(verdict(&["--no-sni", "--dst", "192.0.2.1"]).1, "no_sni", "a bare address has no port");
    let (code, out) = snigate(&["match", "a.p.example", "--rules", f]);
    assert_eq!(code, 0);
    assert!(out.contains("note:   no --port: rules with `port` do not apply"), "{out}");
    let (code, _) = snigate(&["match", "--no-sni", "--rules", f, "--dst", "192.0.2.1:443", "--port", "80"]);
    assert_eq!(code, 64, "--port and --dst disagree");
    let (code, _) = snigate(&["match", "a.p.example", "--rules", f, "--port", "0"]);
    assert_eq!(code, 64, "port 0 is a usage error");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn check_refuses_an_allow_over_a_public_suffix_and_version_names_the_list() {
    let dir = tempfile::tempdir().unwrap();
    let wide = dir.path().join("wide.rules");
    std::fs::write(&wide, "allow acme.github.io\nallow *.github.io\n").unwrap();
    let (code, out) = snigate(&["check", wide.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("wide.rules:2:7: `allow *.github.io` covers the public suffix `github.io`"), "{out}");
    let (code, out) = snigate(&["--version"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains(snigate::PUBLIC_SUFFIX_LIST), "{out}");
}
