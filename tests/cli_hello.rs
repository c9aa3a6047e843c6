//! `snigate hello` as a user runs it: recorded captures, hex input, invalid input, verdicts.

mod common;

use std::process::Output;

use common::snigate_with as snigate;

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn chromium_capture_prints_its_sni() {
    let out = snigate(&["hello", "tests/data/hellos/chromium.bin"], b"");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("sni:            acme--dev.sandbox.lightning.force.com"), "{text}");
    assert!(text.contains("ech:            present"), "{text}");
}

#[test]
fn json_fields_and_verdict() {
    let out = snigate(&["hello", "--json", "tests/data/hellos/java17.bin", "--rules", "rules/salesforce.rules"], b"");
    assert!(out.status.success());
    let v = json(&out);
    assert_eq!(v["sni"], "acme.my.site.com");
    assert_eq!(v["alpn"], serde_json::json!(["h2", "http/1.1"]));
    assert_eq!(v["ech"], false);
    assert_eq!(v["versions"], serde_json::json!(["TLS1.3", "TLS1.2"]));
    assert_eq!(v["records"], 1);
    assert_eq!(v["bytes"], 483);
    assert_eq!(v["verdict"], "allow");
    assert_eq!(v["reason"], "rule");
    let no_sni = json(&snigate(&["hello", "--json", "tests/data/hellos/openssl-nosni.bin", "--rules", "rules/"], b""));
    assert_eq!(no_sni["sni"], serde_json::Value::Null);
    assert_eq!(no_sni["verdict"], "deny");
    assert_eq!(no_sni["reason"], "no_sni");
}

#[test]
fn hex_on_stdin_is_detected() {
    let raw = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/hellos/curl.bin")).unwrap();
    let hex: String = raw.chunks(30).map(|c| hex::encode(c) + "\n").collect();
    let v = json(&snigate(&["hello", "--json", "-"], hex.as_bytes()));
    assert_eq!(v["sni"], "acme--uat.sandbox.my.salesforce.com");
}

#[test]
fn invalid_input_exits_1_with_its_reason() {
    let out = snigate(&["hello", "--json", "-"], b"GET / HTTP/1.1\r\n\r\n");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json(&out)["error"], "not_tls");
    let raw = std::fs::read(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/hellos/curl.bin")).unwrap();
    let out = snigate(&["hello", "--json", "-"], &raw[..100]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(json(&out)["error"], "malformed");
    assert_eq!(snigate(&["hello", "does-not-exist.bin"], b"").status.code(), Some(1));
}

/// QUIC captures (hex, one datagram per line, `#` comments) are detected and read like TCP
/// ones; a datagram cut short is refused with its reason.
#[test]
fn quic_captures_print_the_same_fields() {
    let out = snigate(&["hello", "--json", "tests/data/quic/chromium.hex", "--rules", "rules/salesforce.rules"], b"");
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v = json(&out);
    assert_eq!(v["sni"], "acme.my.salesforce.com");
    assert_eq!(v["transport"], "quic");
    assert_eq!(v["crypto_frames"], 15, "the CRYPTO frames Chromium scattered");
    assert_eq!(v["alpn"], serde_json::json!(["h3"]));
    assert!(v["verdict"].is_string());
    let text = std::fs::read_to_string("tests/data/quic/aioquic-v2.hex").unwrap();
    let first = text.lines().find(|l| !l.starts_with('#')).unwrap();
    let cut = &first[..1000];
    let out = snigate(&["hello", "--json", "--quic", "-"], cut.as_bytes());
    assert!(!out.status.success());
    assert_eq!(json(&out)["error"], "malformed");
}
