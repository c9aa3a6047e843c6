//! Malformed rule files: every problem is reported at once, each with the file, the line,
//! the column and the reason.

use std::path::PathBuf;

use snigate::{ListSpec, RuleErrorKind, Verdict, load_rules, parse_list, parse_rules};

#[test]
fn each_malformed_line_names_file_line_column_and_reason() {
    let text = "\
# comment, then a blank line

allow good.example.com
permit x.com
allow
deny a.*.com
allow *.ok.com from 10.0.0.0/33
allow *.ok.com from 10.0.0.1/8
allow ok.com from 10.0.0.0/8,
allow ok.com to 10.0.0.0/8
deny ip nonsense
deny ip
allow 10.0.0.1
allow a..com
allow bü*.example
allow foo*
  deny   -bad.com   # indented
allow a.com port 0
allow a.com port 443, 8443, 443
allow a.com port 8000-8999, 8443
allow a.com port https
allow a.com port 65536
allow a.com port 9000-8000
allow a.com port 8000-
allow a.com port 443 8443
allow a.com port
allow a.com port 443,
allow a.com port 443 port 8443
allow a.com from 10.0.0.0/8 port 443 from 10.1.0.0/16
allow a.com from 10.0.0.0/8, port 443
allow a.com port 443 from 10.0.0.1/8
";
    let err = parse_rules("bad.rules", text).unwrap_err();
    let got: Vec<String> = err.0.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [
            "bad.rules:4:1: unknown keyword `permit` (expected `allow` or `deny`)",
            "bad.rules:5:6: missing pattern after `allow`",
            "bad.rules:6:6: bad pattern `a.*.com`: '*' is allowed only once, in the leftmost label",
            "bad.rules:7:21: bad CIDR `10.0.0.0/33`: invalid IP address syntax",
            "bad.rules:8:21: bad CIDR `10.0.0.1/8`: host bits set (did you mean 10.0.0.0/8?)",
            "bad.rules:9:30: missing CIDR after `from`",
            "bad.rules:10:14: unexpected `to` (expected `from`, `port` or end of line)",
            "bad.rules:11:9: bad CIDR `nonsense`: invalid IP address syntax",
            "bad.rules:12:8: missing CIDR after `ip`",
            "bad.rules:13:7: bad pattern `10.0.0.1`: invalid name: IP literal",
            "bad.rules:14:7: bad pattern `a..com`: invalid name: empty label",
            "bad.rules:15:7: bad pattern `bü*.example`: a glob label must be ASCII (write its punycode form)",
            "bad.rules:16:7: bad pattern `foo*`: a glob needs a parent domain (pre*suf.example.com)",
            "bad.rules:17:10: bad pattern `-bad.com`: invalid name: label starts or ends with '-'",
            "bad.rules:18:18: bad port `0`: ports are 1 to 65535",
            "bad.rules:19:29: duplicate port `443`: `443` already names it",
            "bad.rules:20:29: duplicate port `8443`: `8000-8999` already names it",
            "bad.rules:21:18: bad port `https`: not a port number or a range FIRST-LAST",
            "bad.rules:22:18: bad port `65536`: ports are 1 to 65535",
            "bad.rules:23:18: bad port `9000-8000`: the range ends before it starts",
            "bad.rules:24:18: bad port `8000-`: not a port number or a range FIRST-LAST",
            "bad.rules:25:18: bad port `443 8443`: not a port number or a range FIRST-LAST",
            "bad.rules:26:17: missing port after `port`",
            "bad.rules:27:22: missing port after `port`",
            "bad.rules:28:22: second `port` clause (write one list: `port A, B`)",
            "bad.rules:29:38: second `from` clause (write one list: `from A, B`)",
            "bad.rules:30:30: missing CIDR after `from`",
            "bad.rules:31:27: bad CIDR `10.0.0.1/8`: host bits set (did you mean 10.0.0.0/8?)",
        ]
    );
}

#[test]
fn errors_from_every_file_are_reported_together() {
    let dir = std::env::temp_dir().join(format!("snigate-rules-errors-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("a.rules"), "allow ok.com\nallow bad_*x*.com\n").unwrap();
    std::fs::write(dir.join("b.rules"), "deny\nallow fine.com\n").unwrap();
    std::fs::write(dir.join("ignored.txt"), "not a rule file\n").unwrap();
    let missing = dir.join("missing.rules");
    let err = load_rules(&[dir.clone(), missing]).unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    let got: Vec<(String, u32, u32)> = err
        .0
        .iter()
        .map(|e| (PathBuf::from(&*e.file).file_name().unwrap().to_string_lossy().into_owned(), e.line, e.column))
        .collect();
    assert_eq!(got, [("a.rules".into(), 2, 7), ("b.rules".into(), 1, 5), ("missing.rules".into(), 0, 0)]);
    assert!(matches!(err.0[2].kind, RuleErrorKind::Io(_)));
}

#[test]
fn list_errors_name_the_list_and_line() {
    let spec = ListSpec { name: "ads".into(), verdict: Verdict::Deny, lenient: false };
    let err = parse_list(&spec, "ok.example\n\n0.0.0.0\nbad name here\n").unwrap_err();
    let got: Vec<String> = err.0.iter().map(ToString::to_string).collect();
    assert_eq!(
        got,
        [
            "ads:3: malformed list line: `0.0.0.0`: hosts line without a name",
            "ads:4: malformed list line: `bad name here`: one domain a line expected",
        ]
    );
}

/// An `allow` wildcard or suffix rule over a whole public suffix (either section of the list)
/// is refused; `deny`, names below a suffix, exact names and `*` are not.
#[test]
fn allow_over_a_public_suffix_is_refused_naming_file_line_and_suffix() {
    let refused = [
        ("allow *.github.io", "github.io"),
        ("allow .co.uk", "co.uk"),
        ("allow *.com", "com"),
        ("allow *.s3.amazonaws.com", "s3.amazonaws.com"),
        ("allow *.GitHub.IO.", "github.io"),
        ("allow .com port 443", "com"),
        ("allow *.xn--p1ai", "xn--p1ai"),
        ("allow *.рф", "xn--p1ai"),
    ];
    for (rule, suffix) in refused {
        let err = parse_rules("wide.rules", &format!("# first line\n{rule}\n")).unwrap_err();
        assert_eq!(err.0.len(), 1, "{rule}");
        let e = &err.0[0];
        assert_eq!((&*e.file, e.line, e.column), ("wide.rules", 2, 7), "{rule}");
        assert!(
            matches!(&e.kind, RuleErrorKind::PublicSuffix { suffix: s, .. } if s == suffix),
            "{rule}: {:?}",
            e.kind
        );
        let shown = e.to_string();
        assert!(shown.starts_with("wide.rules:2:7: `allow "), "{shown}");
        assert!(shown.contains(&format!("covers the public suffix `{suffix}`")), "{shown}");
        assert!(shown.contains("public_suffix_wildcards = \"allow\""), "{shown}");
    }
    let accepted = [
        "deny *.github.io",
        "deny .co.uk",
        "deny *.com",
        "allow acme.github.io",
        "allow *.acme.github.io",
        "allow .acme.github.io",
        "allow github.io",
        "allow com",
        "allow *",
        "allow acme-*.github.io",
        "allow *.example.com",
        "allow *.force.com",
        "allow *.internal",
        "allow ip 10.0.0.0/8",
    ];
    for rule in accepted {
        assert!(parse_rules("ok.rules", rule).is_ok(), "{rule}");
    }
}

/// Files on disk are guarded as text is: `snigate check` and the server read them this way.
#[test]
fn loading_files_reports_every_public_suffix_rule() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("wide.rules");
    std::fs::write(&path, "allow ok.example.com\nallow *.github.io\ndeny *.com\nallow .co.uk\n").unwrap();
    let err = load_rules(std::slice::from_ref(&path)).unwrap_err();
    let got: Vec<(u32, String)> = err
        .0
        .iter()
        .map(|e| match &e.kind {
            RuleErrorKind::PublicSuffix { suffix, .. } => (e.line, suffix.clone()),
            other => panic!("{other:?}"),
        })
        .collect();
    assert_eq!(got, [(2, "github.io".to_string()), (4, "co.uk".to_string())]);
    assert!(err.0.iter().all(|e| *e.file == *path.display().to_string()));
}

/// `[rules] public_suffix_wildcards = "allow"` opts out; the default refuses, at start and at
/// every reload alike (both compile through `Config::compile_rules`).
#[test]
fn the_configuration_opts_out_of_the_public_suffix_guard() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("wide.rules"), "allow *.github.io\n").unwrap();
    let config = |extra: &str| {
        let text = format!(
            "[[listener]]\nlisten = \"127.0.0.1:0\"\nmode = \"sni\"\n[rules]\nfiles = [\"wide.rules\"]\n{extra}"
        );
        snigate::Config::parse_in("snigate.toml", &text, dir.path()).unwrap()
    };
    let err = config("").compile_rules().err().unwrap();
    assert!(
        err.to_string().contains("wide.rules:1:7: `allow *.github.io` covers the public suffix `github.io`"),
        "{err}"
    );
    let err = config("public_suffix_wildcards = \"deny\"\n").compile_rules().err().unwrap();
    assert!(matches!(err.0[0].kind, RuleErrorKind::PublicSuffix { .. }), "{err}");
    let set = config("public_suffix_wildcards = \"allow\"\n").compile_rules().unwrap();
    assert_eq!(set.len(), 1);
    let bad = snigate::Config::parse("x.toml", "[rules]\npublic_suffix_wildcards = \"maybe\"\n").unwrap_err();
    assert!(bad.to_string().contains("x.toml:2: unknown variant `maybe`"), "{bad}");
}
