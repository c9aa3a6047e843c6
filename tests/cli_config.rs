//! `snigate check --config`, `match --config`, `hello --config`, the exit codes and the
//! generated documentation, through the real binary.

use std::path::Path;
use std::process::{Command, Output};

fn snigate(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_snigate")).args(args).current_dir(env!("CARGO_MANIFEST_DIR")).output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn write(dir: &Path, name: &str, text: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path.to_str().unwrap().to_string()
}

#[test]
fn check_config_prints_every_error_at_once_with_a_did_you_mean() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "bad.toml",
        "[[listener]]\nlisten = \"127.0.0.1:8443\"\nmode = \"connect\"\nupstrem_port = 443\nports = [443, 0]\n\n\
         [limits]\nmax_connections = \"many\"\nhello_timeout = \"soon\"\n",
    );
    let out = snigate(&["check", "--config", &config]);
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("bad.toml:4: unknown key `upstrem_port` in [[listener]] (did you mean `upstream_port`?)"),
        "{text}"
    );
    assert!(text.contains("bad.toml:5: ports: 0 is not a port"), "{text}");
    assert!(text.contains("bad.toml:8: invalid type: string \"many\""), "{text}");
    assert!(text.contains("bad.toml:9: invalid type: string \"soon\""), "{text}");
    assert!(text.contains("invalid: 4 error(s)"), "{text}");

    let out = snigate(&["check", "--config", &config, "--json"]);
    let lines: Vec<serde_json::Value> = stdout(&out).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4, "{lines:?}");
    assert_eq!(lines[0]["code"], "unknown_key");
    assert_eq!(lines[0]["severity"], "error");
    assert_eq!(lines[0]["line"], 4);
    assert!(lines.iter().all(|l| l["file"].as_str().unwrap().ends_with("bad.toml") && l["message"].is_string()));
}

#[test]
fn check_config_reads_the_named_rules_and_leaves_out_what_the_configuration_resolves() {
    let dir = tempfile::tempdir().unwrap();
    let rules =
        "allow acme.my.salesforce.com\ndeny *.my.salesforce.com\nallow ip 13.108.0.0/14\nallow a.com\nallow a.com\n";
    write(dir.path(), "t.rules", rules);
    let base = "[[listener]]\nlisten = \"127.0.0.1:8443\"\nmode = \"sni\"\n[rules]\nfiles = [\"t.rules\"]\n";
    let config = write(dir.path(), "a.toml", base);
    let out = snigate(&["check", "--config", &config, "--json"]);
    let codes: Vec<String> = stdout(&out)
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["code"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(codes, ["duplicate", "no_sni_bypass"]);
    assert_eq!(snigate(&["check", "--config", &config, "--strict"]).status.code(), Some(1), "warnings fail --strict");
    let quiet = snigate(&["check", "--config", &config, "--quiet"]);
    assert_eq!((quiet.status.code(), stdout(&quiet)), (Some(0), String::new()), "--quiet prints errors only");

    let resolved = write(dir.path(), "b.toml", &format!("{base}no_sni = \"deny\"\n"));
    let out = snigate(&["check", "--config", &resolved]);
    assert!(!stdout(&out).contains("without SNI"), "no_sni = deny resolves it: {}", stdout(&out));

    // Acknowledged on the rule's line or right above it.
    write(
        dir.path(),
        "t.rules",
        &rules.replace("allow a.com\nallow a.com", "allow a.com\n# snigate: allow(duplicate)\nallow a.com"),
    );
    let out = snigate(&["check", "--config", &resolved, "--strict"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(stdout(&out).contains("1 finding(s) acknowledged"), "{}", stdout(&out));

    // A rule error in a named file is an error of the check.
    write(dir.path(), "t.rules", "allow a.*.com\n");
    let out = snigate(&["check", "--config", &resolved]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stdout(&out).contains("t.rules:1:7"), "{}", stdout(&out));
    // run --check: the same validation, without binding.
    assert_eq!(snigate(&["run", "--check", "--config", &resolved]).status.code(), Some(64));
    write(dir.path(), "t.rules", "allow a.com\n");
    assert_eq!(snigate(&["run", "--check", "--config", &resolved]).status.code(), Some(0));
}

#[test]
fn the_shipped_salesforce_layout_checks_clean_under_strict() {
    let out = snigate(&["check", "--strict", "rules/salesforce.rules", "rules/salesforce-tenant.rules.example"]);
    assert_eq!(out.status.code(), Some(0), "{}", stdout(&out));
    assert!(!stdout(&out).contains("shadowed:") && !stdout(&out).contains("duplicate:"), "{}", stdout(&out));
}

/// `match --config` decides as the configured listener does: default, no_sni, lists and ports.
#[test]
fn match_config_decides_as_the_listener() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "t.rules", "allow a.com port 8443\nallow b.com\nallow ip 10.0.0.0/8\n");
    write(dir.path(), "block.txt", "evil.com\n");
    let config = |name: &str, extra: &str, listener: &str| {
        let text = format!(
            "{listener}[rules]\nfiles = [\"t.rules\"]\n{extra}[[rules.list]]\npath = \"block.txt\"\naction = \"deny\"\n"
        );
        write(dir.path(), name, &text)
    };
    let sni = "[[listener]]\nlisten = \"127.0.0.1:8443\"\nmode = \"sni\"\n";
    let connect =
        "[[listener]]\nname = \"proxy\"\nlisten = \"127.0.0.1:3128\"\nmode = \"connect\"\nports = [443, 8443]\n";
    let plain = config("plain.toml", "", sni);
    let strict = config("strict.toml", "no_sni = \"deny\"\ndefault = \"allow\"\n", &format!("{sni}{connect}"));
    let cases: &[(&str, &[&str], &str, &str)] = &[
        // name, extra arguments, verdict, reason
        (
            "plain a.com: the listen port is the port names are reached on",
            &["a.com", "--config", &plain],
            "allow",
            "rule",
        ),
        ("plain c.com: the default", &["c.com", "--config", &plain], "deny", "default"),
        ("strict c.com: the configured default", &["c.com", "--config", &strict], "allow", "default"),
        ("evil.com: the list", &["evil.com", "--config", &strict], "deny", "rule"),
        (
            "no SNI in sni mode: no destination",
            &["--no-sni", "--dst", "10.1.1.1:443", "--config", &plain],
            "deny",
            "no_sni",
        ),
        (
            "no_sni = deny",
            &["--no-sni", "--dst", "10.1.1.1:443", "--config", &strict, "--listener", "proxy"],
            "deny",
            "no_sni",
        ),
        (
            "connect: a port of the listener",
            &["a.com", "--port", "8443", "--config", &strict, "--listener", "proxy"],
            "allow",
            "rule",
        ),
        ("connect: the default port 443", &["a.com", "--config", &strict, "--listener", "proxy"], "allow", "default"),
        (
            "connect: a port the listener refuses",
            &["b.com", "--port", "25", "--config", &strict, "--listener", "proxy"],
            "deny",
            "dst_denied",
        ),
    ];
    for (what, args, verdict, reason) in cases {
        let mut all = vec!["match", "--json"];
        all.extend_from_slice(args);
        let out = snigate(&all);
        assert_eq!(out.status.code(), Some(0), "{what}: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        assert_eq!((v["verdict"].as_str().unwrap(), v["reason"].as_str().unwrap()), (*verdict, *reason), "{what}: {v}");
    }
    let out = snigate(&["match", "a.com", "--config", &plain, "--listener", "nope"]);
    assert_eq!(out.status.code(), Some(64));
}

#[test]
fn hello_config_gives_the_listeners_verdict() {
    let dir = tempfile::tempdir().unwrap();
    let hello = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/hellos/chromium.bin");
    let out = snigate(&["hello", "--json", hello.to_str().unwrap()]);
    let sni = serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["sni"].as_str().unwrap().to_string();
    write(dir.path(), "t.rules", &format!("allow {sni} port 9443\n"));
    let listener = |port: u16| {
        format!("[[listener]]\nlisten = \"127.0.0.1:{port}\"\nmode = \"sni\"\n[rules]\nfiles = [\"t.rules\"]\n")
    };
    for (port, want) in [(9443, "allow"), (8443, "deny")] {
        let config = write(dir.path(), "c.toml", &listener(port));
        let out = snigate(&["hello", "--json", hello.to_str().unwrap(), "--config", &config]);
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["verdict"], want, "listening on {port}: {v}");
    }
}

#[test]
fn exit_codes_are_stable() {
    assert_eq!(snigate(&["check", "/nonexistent"]).status.code(), Some(1));
    assert_eq!(snigate(&["hello", "/nonexistent"]).status.code(), Some(1));
    assert_eq!(snigate(&["check", "--bogus"]).status.code(), Some(64));
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = snigate(&["run", "--listen", &addr, "--metrics", "off", "--log", "off"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(69), "{err}");
    assert!(
        err.contains(&format!("listener \"{addr}\": another process listens on {addr}")),
        "named after its address: {err}"
    );
    let help = stdout(&snigate(&["--help"]));
    for code in ["64", "69", "71", "77"] {
        assert!(help.contains(&format!("  {code}  ")), "--help lists {code}: {help}");
    }
}

#[test]
fn version_completions_and_man_page() {
    let version = stdout(&snigate(&["--version"]));
    assert!(version.starts_with(&format!("snigate {} (commit ", env!("CARGO_PKG_VERSION"))), "{version}");
    assert!(version.contains(", built 20"), "{version}");
    for shell in ["bash", "zsh", "fish"] {
        let out = snigate(&["completions", shell]);
        assert!(out.status.success() && stdout(&out).contains("run"), "{shell}");
    }
    let man = snigate(&["man"]);
    assert!(man.status.success());
    assert!(stdout(&man).starts_with(".ie") || stdout(&man).contains(".TH snigate"), "roff");
    assert!(stdout(&man).contains("run"));
}

/// `match --config --from` says when a denial would be reported rather than enforced: a
/// `[[report]]` scope covers the client, or the listener reports; not for another client, not
/// once the scope has ended, and never for a rule of an always-enforced list.
#[test]
fn match_says_when_a_denial_would_be_reported() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "t.rules", "allow a.com\ndeny d.com\n");
    write(dir.path(), "block.txt", "evil.com\n");
    let config = |name: &str, until: &str| {
        let text = format!(
            "[[listener]]\nlisten = \"127.0.0.1:8443\"\nmode = \"sni\"\n\
             [rules]\nfiles = [\"t.rules\"]\n[[rules.list]]\npath = \"block.txt\"\naction = \"deny\"\nenforce = \"always\"\n\
             [[report]]\nfrom = [\"10.1.0.0/16\"]\nuntil = \"{until}\"\n"
        );
        write(dir.path(), name, &text)
    };
    let open = config("open.toml", "2999-12-31");
    let ended = config("ended.toml", "2000-01-01");
    let ask = |args: &[&str]| {
        let mut all = vec!["match", "--json"];
        all.extend_from_slice(args);
        let out = snigate(&all);
        assert_eq!(out.status.code(), Some(0), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_str(&stdout(&out)).unwrap();
        (
            v["verdict"].as_str().unwrap().to_string(),
            v["reason"].as_str().unwrap().to_string(),
            v["would_reason"].clone(),
        )
    };
    let reported = ask(&["d.com", "--config", &open, "--from", "10.1.2.3"]);
    assert_eq!(reported, ("allow".into(), "report".into(), serde_json::json!("rule")));
    let reported = ask(&["c.com", "--config", &open, "--from", "10.1.2.3"]);
    assert_eq!(reported, ("allow".into(), "report".into(), serde_json::json!("default")));
    let other = ask(&["d.com", "--config", &open, "--from", "10.2.0.1"]);
    assert_eq!(other, ("deny".into(), "rule".into(), serde_json::Value::Null));
    let expired = ask(&["d.com", "--config", &ended, "--from", "10.1.2.3"]);
    assert_eq!(expired, ("deny".into(), "rule".into(), serde_json::Value::Null));
    let always = ask(&["evil.com", "--config", &open, "--from", "10.1.2.3"]);
    assert_eq!(always, ("deny".into(), "rule".into(), serde_json::Value::Null));
    let allowed = ask(&["a.com", "--config", &open, "--from", "10.1.2.3"]);
    assert_eq!(allowed, ("allow".into(), "rule".into(), serde_json::Value::Null));
}

/// `check --config` warns about report scopes that have ended (they enforce now) or end
/// within two weeks; `--strict` turns those into a failure, so a rollout keeps to its dates.
#[test]
fn check_warns_about_ended_and_ending_report_scopes() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path(), "t.rules", "allow a.com\n");
    let soon = {
        let days = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() / 86_400 + 3;
        // Civil date of `days` since 1970-01-01 (proleptic Gregorian).
        let z = days as i64 + 719_468;
        let era = z.div_euclid(146_097);
        let doe = z.rem_euclid(146_097);
        let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
        let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
        let mp = (5 * doy + 2) / 153;
        let d = doy - (153 * mp + 2) / 5 + 1;
        let m = if mp < 10 { mp + 3 } else { mp - 9 };
        let y = yoe + era * 400 + i64::from(m <= 2);
        format!("{y:04}-{m:02}-{d:02}")
    };
    let text = format!(
        "[[listener]]\nname = \"edge\"\nlisten = \"127.0.0.1:8443\"\nmode = \"sni\"\nenforce = \"report\"\nreport_until = \"2000-01-01\"\n\
         [rules]\nfiles = [\"t.rules\"]\n\
         [[report]]\nfrom = [\"10.1.0.0/16\"]\nuntil = \"{soon}\"\n\
         [[report]]\nfrom = [\"10.2.0.0/16\"]\nuntil = \"2999-12-31\"\n"
    );
    let config = write(dir.path(), "snigate.toml", &text);
    let out = snigate(&["check", "--json", "--config", &config]);
    let findings: Vec<serde_json::Value> = stdout(&out).lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
    let codes: Vec<&str> = findings.iter().filter_map(|f| f["code"].as_str()).collect();
    assert!(codes.contains(&"report_scope_ended"), "{findings:?}");
    assert!(codes.contains(&"report_scope_ending"), "{findings:?}");
    assert_eq!(codes.iter().filter(|c| c.starts_with("report_scope")).count(), 2, "not the far one: {findings:?}");
    assert_eq!(out.status.code(), Some(0), "warnings alone pass");
    let strict = snigate(&["check", "--strict", "--config", &config]);
    assert_eq!(strict.status.code(), Some(1), "{}", stdout(&strict));
}
