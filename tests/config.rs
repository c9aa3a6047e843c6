//! Configuration errors: every problem reported with its file and line, exit 64, nothing bound.

use std::process::Command;

use snigate::Config;

#[test]
fn every_problem_is_reported_with_its_line() {
    let text = "\
[[listener]]
listen = \"127.0.0.1:8443\"
mode = \"upstream\"

[[listener]]
listen = \"127.0.0.1:8443\"
mode = \"sni\"
upstream = \"10.0.0.1:443\"

[limits]
hello_timeout = -1
max_hello_bytes = 10
";
    let errors = Config::parse("bad.toml", text).unwrap_err().0;
    let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "bad.toml:1: mode = \"upstream\" needs `upstream`",
            "bad.toml:5: `upstream` is only used in mode = \"upstream\" (this listener is \"sni\")",
            "bad.toml:5: listen address 127.0.0.1:8443 is also used by listener \"127.0.0.1:8443\"",
            "bad.toml:11: limits.hello_timeout must be a positive number of seconds",
            "bad.toml:12: limits.max_hello_bytes must be at least 512",
        ]
    );
}

#[test]
fn syntax_and_unknown_keys_name_the_line() {
    let e = Config::parse("x.toml", "[[listener]]\nlisten = \"127.0.0.1:1\"\nmode = \"sni\"\nbogus = 1\n").unwrap_err();
    assert_eq!(e.0.len(), 1);
    assert_eq!(e.0[0].line, Some(4), "{e}");
    assert!(e.0[0].reason.contains("bogus"), "{e}");
    let e = Config::parse("x.toml", "[[listener]]\nlisten = \"nowhere\"\nmode = \"sni\"\n").unwrap_err();
    assert_eq!(e.0[0].line, Some(2), "{e}");
}

/// An upstream that is snigate's own listener would loop: a configuration error, on the line of
/// the listener. So are ports on a listener whose mode names no port.
#[test]
fn loops_and_misplaced_destination_settings_are_configuration_errors() {
    let text = "[[listener]]\nname = \"a\"\nlisten = \"0.0.0.0:9443\"\nmode = \"sni\"\n\
                [[listener]]\nlisten = \"127.0.0.1:9444\"\nmode = \"upstream\"\nupstream = \"127.0.0.1:9443\"\n";
    let e = Config::parse("x.toml", text).unwrap_err();
    assert_eq!(e.0.len(), 1, "{e}");
    assert_eq!(e.0[0].line, Some(5), "{e}");
    assert!(e.0[0].reason.contains("would loop"), "{e}");
    let text = "[[listener]]\nlisten = \"127.0.0.1:9443\"\nmode = \"sni\"\nports = [443]\n";
    let e = Config::parse("x.toml", text).unwrap_err();
    assert!(e.0[0].reason.contains("`ports` is only used"), "{e}");
    let text = "[[listener]]\nlisten = \"127.0.0.1:9443\"\nmode = \"connect\"\n\
                [destinations]\nallow = [\"10.20.0.0/16\"]\ndeny = [\"203.0.113.0/24\"]\nports = [443, 8443]\n";
    let c = Config::parse("x.toml", text).unwrap();
    assert_eq!(c.destination_ports(c.listeners[0].get_ref()), [443, 8443]);
    let text = "[[listener]]\nlisten = \"127.0.0.1:9443\"\nmode = \"sni\"\n[destinations]\nallow = [\"10.0.0.1/8\"]\n";
    let e = Config::parse("x.toml", text).unwrap_err();
    assert!(e.0[0].reason.contains("did you mean 10.0.0.0/8"), "{e}");
}

#[test]
fn runtime_threads_default_to_the_available_cpus() {
    let base = "[[listener]]\nlisten = \"127.0.0.1:1\"\nmode = \"sni\"\n";
    let c = Config::parse("x.toml", base).unwrap();
    assert_eq!(c.runtime.threads, 0);
    assert_eq!(c.runtime.worker_threads(), std::thread::available_parallelism().unwrap().get());
    let c = Config::parse("x.toml", &format!("{base}[runtime]\nthreads = 1\n")).unwrap();
    assert_eq!(c.runtime.worker_threads(), 1);
    assert!(Config::parse("x.toml", &format!("{base}[runtime]\nworkers = 2\n")).is_err());
}

#[test]
fn the_embedded_default_is_valid() {
    let c = Config::embedded();
    assert_eq!(c.listeners.len(), 1);
    assert_eq!(c.listeners[0].get_ref().listen.to_string(), "127.0.0.1:8443");
    assert!(c.compile_rules().is_ok());
}

#[test]
fn bad_config_or_rules_exit_64_before_binding() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("bad.rules");
    std::fs::write(&rules, "allow ok.example.com\npermit x.example.com\nallow *.x.com from 10.0.0.0/99\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_snigate"))
        .args(["run", "--listen", "127.0.0.1:0", "--mode", "upstream", "--upstream", "127.0.0.1:9", "--rules"])
        .arg(&rules)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(64));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("bad.rules:2"), "{err}");
    assert!(err.contains("bad.rules:3"), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_snigate")).args(["run", "--mode", "upstream"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(String::from_utf8_lossy(&out.stderr).contains("needs `upstream`"));
}

#[test]
fn metrics_default_flags_and_clashes() {
    use snigate::cli::{MetricsFlag, RunArgs, configuration};
    let listener = "[[listener]]\nlisten = \"127.0.0.1:8443\"\nmode = \"sni\"\n";
    let absent = Config::parse("m.toml", listener).unwrap();
    assert_eq!(absent.metrics.address(), Some("127.0.0.1:9464".parse().unwrap()), "on by default");
    assert_eq!(Config::embedded().metrics.address(), Some("127.0.0.1:9464".parse().unwrap()));
    let off = Config::parse("m.toml", &format!("{listener}[metrics]\nenabled = false\n")).unwrap();
    assert_eq!(off.metrics.address(), None);
    let clash = Config::parse("m.toml", &format!("{listener}[metrics]\nlisten = \"127.0.0.1:8443\"\n")).unwrap_err();
    assert_eq!(
        clash.to_string(),
        "m.toml:1: metrics listen address 127.0.0.1:8443 is also used by listener \"127.0.0.1:8443\"\n"
    );

    let args = |m| RunArgs { metrics: Some(m), ..RunArgs::default() };
    let c = configuration(&args(MetricsFlag::Listen("127.0.0.1:19464".parse().unwrap()))).unwrap();
    assert_eq!(c.metrics.address(), Some("127.0.0.1:19464".parse().unwrap()));
    assert_eq!(configuration(&args(MetricsFlag::Off)).unwrap().metrics.address(), None);
}

/// A metrics port that is taken is unavailable (69), like a taken listener port.
#[test]
fn a_taken_metrics_port_exits_69() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = Command::new(env!("CARGO_BIN_EXE_snigate"))
        .args(["run", "--listen", "127.0.0.1:0", "--mode", "upstream", "--upstream", "127.0.0.1:9", "--metrics", &addr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(69));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("metrics endpoint: another process listens on {addr}")), "{err}");
    let out = Command::new(env!("CARGO_BIN_EXE_snigate")).args(["run", "--metrics", "nowhere"]).output().unwrap();
    assert_eq!(out.status.code(), Some(64), "a bad --metrics value is a usage error");
}

/// An access-log file that cannot be opened is a startup error.
#[test]
fn an_unwritable_access_log_exits_64() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("snigate.toml");
    let log = dir.path().join("missing-dir").join("access.log");
    std::fs::write(
        &config,
        format!(
            "[[listener]]\nlisten = \"127.0.0.1:0\"\nmode = \"upstream\"\nupstream = \"127.0.0.1:9\"\n\
             [log]\npath = \"{}\"\n[metrics]\nenabled = false\n",
            log.display()
        ),
    )
    .unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_snigate")).args(["run", "--config"]).arg(&config).output().unwrap();
    assert_eq!(out.status.code(), Some(64));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("open access log"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// QUIC listeners: a TCP and a QUIC listener may share an address; a QUIC listener takes
/// modes upstream, sni and transparent (the last with TPROXY only), and no PROXY protocol.
#[test]
fn quic_listener_settings_are_checked() {
    let shared = "[[listener]]\nlisten = \"127.0.0.1:9443\"\nmode = \"sni\"\n\
                  [[listener]]\nlisten = \"127.0.0.1:9443\"\nprotocol = \"quic\"\nmode = \"sni\"\n";
    assert!(Config::parse("x.toml", shared).is_ok(), "TCP and UDP on one port");
    let cases = [
        ("mode = \"connect\"", "takes mode upstream, sni or transparent"),
        ("mode = \"transparent\"", "needs tproxy = true"),
        ("mode = \"sni\"\nproxy_protocol_trusted = [\"10.0.0.0/8\"]", "PROXY protocol is for TCP listeners"),
    ];
    for (lines, expected) in cases {
        let text = format!("[[listener]]\nlisten = \"127.0.0.1:9443\"\nprotocol = \"quic\"\n{lines}\n");
        let e = Config::parse("x.toml", &text).unwrap_err();
        assert_eq!(e.0[0].line, Some(1), "{e}");
        assert!(e.0[0].reason.contains(expected), "{lines}: {e}");
    }
    let text = "[[listener]]\nlisten = \"0.0.0.0:15443\"\nprotocol = \"quic\"\nmode = \"transparent\"\ntproxy = true\n";
    assert!(Config::parse("x.toml", text).is_ok());
}

/// Whether a reload needs new sockets is derived from the static part of the configuration:
/// rules, limits, credentials and the name and ECH policies change in place; listeners,
/// `[runtime]`, `[metrics]`, `[destinations]` and the log's output need a handover.
#[test]
fn what_needs_a_handover_is_the_static_part() {
    let base = "[[listener]]\nlisten = \"127.0.0.1:9443\"\nmode = \"sni\"\n";
    let config = |extra: &str| Config::parse("x.toml", &format!("{base}{extra}")).unwrap();
    let running = config("");
    let live_changes = [
        "[limits]\nmax_connections = 10\ndrain_timeout = 1\nhello_timeout = 2\n",
        "[rules]\ndefault = \"allow\"\nech = \"deny\"\nsni_allow_underscore = true\nno_sni = \"deny\"\n",
        "[log]\ndeny_lines_per_second = 5\n",
    ];
    for extra in live_changes {
        assert!(running.needs_handover(&config(extra)).is_empty(), "{extra}");
    }
    assert_eq!(running.needs_handover(&config("[runtime]\nthreads = 3\n")), ["[runtime]"]);
    assert_eq!(running.needs_handover(&config("[destinations]\ndeny = [\"10.0.0.0/8\"]\n")), ["[destinations]"]);
    assert_eq!(
        running.needs_handover(&config("[log]\nformat = \"text\"\n")),
        ["[log] format, path, level and operational"]
    );
    let other_mode = Config::parse("x.toml", "[[listener]]\nlisten = \"127.0.0.1:9443\"\nmode = \"http\"\n").unwrap();
    assert_eq!(running.needs_handover(&other_mode), ["[[listener]]"]);
}

/// A setting of another mode is refused, naming the modes that take it; the flags of the
/// command line follow the same rule.
#[test]
fn settings_belong_to_their_mode() {
    let e = Config::parse(
        "x.toml",
        "[[listener]]\nlisten = \"127.0.0.1:1\"\nmode = \"http\"\ncredentials = \"/nonexistent\"\n",
    );
    assert!(e.is_err());
    let text = "[[listener]]\nlisten = \"127.0.0.1:1\"\nmode = \"sni\"\ntproxy = true\nverify_destination = \"dns\"\n";
    let e = Config::parse("x.toml", text).unwrap_err();
    let shown: Vec<String> = e.0.iter().map(ToString::to_string).collect();
    assert_eq!(
        shown,
        [
            "x.toml:1: `tproxy` is only used in mode = \"transparent\" (this listener is \"sni\")",
            "x.toml:1: `verify_destination` is only used in mode = \"transparent\" (this listener is \"sni\")",
        ]
    );
    let c = Config::parse("x.toml", "[[listener]]\nlisten = \"127.0.0.1:1\"\nmode = \"sni\"\nupstream_port = 8443\n")
        .unwrap();
    let mode = &c.listeners[0].get_ref().mode;
    assert_eq!(*mode, snigate::ModeConfig::Sni { upstream_port: Some(8443) });
    assert!(mode.with_flags(None, Some("10.0.0.1:443".into()), None).unwrap_err().contains("`upstream` is only used"));
    assert_eq!(
        mode.with_flags(Some(snigate::Mode::Upstream), Some("10.0.0.1:443".into()), None).unwrap(),
        snigate::ModeConfig::Upstream { upstream: "10.0.0.1:443".into() }
    );
    assert!(mode.with_flags(Some(snigate::Mode::Upstream), None, None).unwrap_err().contains("needs `upstream`"));
}

/// Report scopes: dates must parse, `[[report]]` needs `until` and `from`, `report_until`
/// goes with `enforce = "report"`; each error names the file and the table's line. Changing
/// them needs no handover.
#[test]
fn report_scopes_are_checked_and_live() {
    let listener = "[[listener]]\nlisten = \"127.0.0.1:9443\"\nmode = \"sni\"\n";
    let cases = [
        ("enforce = \"report\"\nreport_until = \"2027-02-30\"", 1, "report_until: \"2027-02-30\" is not a date"),
        ("report_until = \"2027-01-31\"", 1, "`report_until` is only used with enforce = \"report\""),
        ("[[report]]\nfrom = [\"10.0.0.0/8\"]", 4, "[[report]] needs `until`"),
        ("[[report]]\nuntil = \"2027-01-31\"", 4, "[[report]] needs `from`"),
        ("[[report]]\nfrom = [\"10.0.0.0/8\"]\nuntil = \"31/01/2027\"", 4, "is not a date"),
    ];
    for (lines, line, expected) in cases {
        let e = Config::parse("snigate.toml", &format!("{listener}{lines}\n")).unwrap_err();
        assert_eq!((e.0[0].file.as_str(), e.0[0].line), ("snigate.toml", Some(line)), "{lines}: {e}");
        assert!(e.0[0].reason.contains(expected), "{lines}: {e}");
    }
    let enforcing = Config::parse("a.toml", listener).unwrap();
    let reporting =
        format!("{listener}enforce = \"report\"\n[[report]]\nfrom = [\"10.0.0.0/8\"]\nuntil = \"2027-01-31\"\n");
    let reporting = Config::parse("a.toml", &reporting).unwrap();
    assert!(enforcing.needs_handover(&reporting).is_empty(), "report scopes are live");
    assert_eq!(reporting.report.len(), 1);
}
