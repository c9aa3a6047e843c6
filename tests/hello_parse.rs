//! The ClientHello parser against recorded real hellos and a table of hostile inputs.

mod common;

use common::*;
use snigate::Reason;
use snigate::hello::ClientHello;
use snigate::hello::{HelloLimits, HelloParser, Parse, parse};

fn complete(bytes: &[u8]) -> ClientHello {
    match parse(bytes, HelloLimits::default()) {
        Parse::Complete(h) => h,
        other => panic!("expected a complete hello, got {other:?}"),
    }
}

fn reason(bytes: &[u8], limits: HelloLimits) -> Option<Reason> {
    match parse(bytes, limits) {
        Parse::Complete(_) => None,
        Parse::Incomplete { .. } => Some(Reason::Malformed), // a capture that ends early is truncated
        Parse::Invalid(e) => Some(e.reason()),
    }
}

#[test]
fn at_least_five_stacks_are_recorded() {
    let stacks: std::collections::BTreeSet<String> =
        recorded().iter().map(|r| r.client.split_whitespace().next().unwrap().to_string()).collect();
    assert!(stacks.len() >= 5, "{stacks:?}");
    assert!(recorded().iter().any(|r| r.bytes.len() > 1500), "a browser-sized hello is recorded");
}

#[test]
fn recorded_hellos_parse_to_their_sni() {
    for r in recorded() {
        let h = complete(&r.bytes);
        assert_eq!(h.sni.as_ref().map(|n| n.as_str()), r.sni.as_deref(), "{}", r.file);
        assert_eq!(h.alpn.escaped(), r.alpn, "{}", r.file);
        assert_eq!(h.ech, r.ech, "{}", r.file);
        assert_eq!(h.carried, snigate::hello::Carried::Records(r.records), "{}", r.file);
        assert_eq!(h.wire_bytes, r.bytes.len(), "{}", r.file);
    }
}

#[test]
fn chromium_hello_is_post_quantum_sized_and_carries_ech() {
    let r = recording("chromium.bin");
    let h = complete(&r.bytes);
    assert!(h.wire_bytes > 1500);
    assert!(h.ech);
    assert!(h.supported_versions.iter().any(|v| v == 0x0304));
}

/// linkerd's check_all_prefixes: every strict prefix is "need more", the whole is the answer,
/// for every record splitting, both parsed afresh and fed to one incremental parser.
#[test]
fn every_prefix_of_every_splitting_is_incomplete() {
    for r in recorded() {
        for (split, wire) in splittings(&r.bytes) {
            let whole = complete(&wire);
            assert_eq!(whole.sni.as_ref().map(|n| n.as_str()), r.sni.as_deref(), "{} {split}", r.file);
            let mut incremental = HelloParser::new(HelloLimits::default());
            for end in 0..wire.len() {
                let fresh = parse(&wire[..end], HelloLimits::default());
                assert!(
                    matches!(fresh, Parse::Incomplete { needed } if needed > end),
                    "{} {split} at {end}: {fresh:?}",
                    r.file
                );
                assert_eq!(incremental.parse(&wire[..end]), fresh, "{} {split} at {end}", r.file);
            }
            assert_eq!(incremental.parse(&wire), Parse::Complete(whole.clone()), "{} {split}", r.file);
            // Bytes after the hello (early data, the next flight) do not change the answer.
            let mut more = wire.clone();
            more.extend(record(0x17, TLS12, b"early"));
            assert_eq!(parse(&more, HelloLimits::default()), Parse::Complete(whole), "{} {split}", r.file);
        }
    }
}

#[test]
fn hand_made_hello_parses() {
    let h = complete(&hello(&[sni(b"Acme.My.Salesforce.com."), alpn(&[b"h2", b"http/1.1"])]));
    assert_eq!(h.sni.unwrap().as_str(), "acme.my.salesforce.com");
    assert_eq!(h.alpn.escaped(), ["h2", "http/1.1"]);
    assert_eq!(h.alpn.names().collect::<Vec<_>>(), [b"h2".as_slice(), b"http/1.1"]);
    assert_eq!(h.extensions[..], [0, 16]);
    assert_eq!(h.legacy_version, 0x0303);
}

/// Hostile inputs and their reasons, as a table. `None` means a valid hello.
#[test]
fn hostile_table() {
    let long_label = [b'a'; 64];
    let long_name = [&[b'a'; 63][..], b".", &[b'b'; 63], b".", &[b'c'; 63], b".", &[b'd'; 63]].concat();
    let valid = hello(&[sni(b"acme.my.salesforce.com")]);
    let mut wrong_record_len = valid.clone();
    wrong_record_len[4] += 3; // record claims 3 bytes more than the handshake message
    wrong_record_len.extend([0, 0, 0]);
    let mut short_handshake_len = valid.clone();
    short_handshake_len[8] -= 1; // handshake claims one byte less than the record carries
    let mut ext_overflow = hello_body(Some(&sni(b"acme.my.salesforce.com")));
    let at = ext_overflow.len() - sni(b"acme.my.salesforce.com").len() - 2;
    ext_overflow[at + 1] += 9; // extensions length runs past the message
    let mut sni_list_overflow = sni_data(&[(0, b"acme.my.salesforce.com")]);
    sni_list_overflow[1] += 1; // server_name list one byte longer than its entries
    let (payload, _) = unframe(&valid);
    let mut ccs_inside = record(0x16, TLS10, &payload[..20]);
    ccs_inside.extend(record(0x14, TLS12, &[0x01])); // change_cipher_spec between fragments
    ccs_inside.extend(record(0x16, TLS10, &payload[20..]));
    let mut server_hello = valid.clone();
    server_hello[5] = 0x02;
    let mut ssl3_record = valid.clone();
    ssl3_record[1..3].copy_from_slice(&[0x03, 0x00]);
    let mut tls12_record = valid.clone();
    tls12_record[1..3].copy_from_slice(&[0x03, 0x03]);
    let mut record_v4 = valid.clone();
    record_v4[1..3].copy_from_slice(&[0x04, 0x01]);
    let mut huge_record = record(0x16, TLS10, &[0; 8]);
    huge_record[3..5].copy_from_slice(&0x4001u16.to_be_bytes()); // 2^14 + 1

    let cases: Vec<(&str, Vec<u8>, Option<Reason>)> = vec![
        ("valid, TLS 1.0 record version", valid.clone(), None),
        ("record version SSL 3.0 (0x0300) is legitimate", ssl3_record, None),
        ("record version TLS 1.2", tls12_record, None),
        ("no extensions field (SSL 3.0-style hello)", record(0x16, TLS10, &handshake(&hello_body(None))), None),
        ("no SNI", hello(&[alpn(&[b"h2"])]), None),
        ("ECH present", hello(&[sni(b"cloudflare-ech.com"), ext(0xfe0d, &[0; 8])]), None),
        ("truncated in the record header", valid[..3].to_vec(), Some(Reason::Malformed)),
        ("truncated in the body", valid[..valid.len() - 7].to_vec(), Some(Reason::Malformed)),
        ("record length longer than the message", wrong_record_len, Some(Reason::Malformed)),
        ("handshake length shorter than the record", short_handshake_len, Some(Reason::Malformed)),
        ("extensions length past the message", record(0x16, TLS10, &handshake(&ext_overflow)), Some(Reason::Malformed)),
        ("server_name list length wrong", hello(&[ext(0, &sni_list_overflow)]), Some(Reason::Malformed)),
        ("two server_name extensions", hello(&[sni(b"a.example.com"), sni(b"b.example.com")]), Some(Reason::Malformed)),
        (
            "two identical server_name extensions",
            hello(&[sni(b"a.example.com"), sni(b"a.example.com")]),
            Some(Reason::Malformed),
        ),
        (
            "two host_name entries",
            hello(&[ext(0, &sni_data(&[(0, b"a.example.com"), (0, b"b.example.com")]))]),
            Some(Reason::Malformed),
        ),
        ("entry type is not host_name", hello(&[ext(0, &sni_data(&[(1, b"a.example.com")]))]), Some(Reason::Malformed)),
        ("empty server_name list", hello(&[ext(0, &[0, 0])]), Some(Reason::Malformed)),
        ("empty server_name extension", hello(&[ext(0, &[])]), Some(Reason::Malformed)),
        ("duplicate ALPN extension", hello(&[alpn(&[b"h2"]), alpn(&[b"h2"])]), Some(Reason::Malformed)),
        ("empty ALPN protocol name", hello(&[alpn(&[b""])]), Some(Reason::Malformed)),
        ("empty name", hello(&[sni(b"")]), Some(Reason::InvalidSni)),
        ("lone dot", hello(&[sni(b".")]), Some(Reason::InvalidSni)),
        ("empty label", hello(&[sni(b"a..example.com")]), Some(Reason::InvalidSni)),
        ("NUL inside the name", hello(&[sni(b"acme.my.salesforce.com\0.evil.com")]), Some(Reason::InvalidSni)),
        ("space inside the name", hello(&[sni(b"acme .com")]), Some(Reason::InvalidSni)),
        ("control byte", hello(&[sni(b"acme\x1b.com")]), Some(Reason::InvalidSni)),
        ("non-ASCII (UTF-8) name", hello(&[sni("bücher.example".as_bytes())]), Some(Reason::InvalidSni)),
        ("underscore (off by default)", hello(&[sni(b"_dmarc.example.com")]), Some(Reason::InvalidSni)),
        ("name longer than 253 bytes", hello(&[sni(&long_name)]), Some(Reason::InvalidSni)),
        ("label longer than 63 bytes", hello(&[sni(&[&long_label[..], b".com"].concat())]), Some(Reason::InvalidSni)),
        ("IPv4 literal", hello(&[sni(b"13.108.0.1")]), Some(Reason::InvalidSni)),
        ("IPv6 literal", hello(&[sni(b"::1")]), Some(Reason::InvalidSni)),
        ("bracketed IPv6 literal", hello(&[sni(b"[2001:db8::1]")]), Some(Reason::InvalidSni)),
        (
            "SSLv2-compatible hello",
            vec![0x80, 0x2e, 0x01, 0x03, 0x01, 0x00, 0x15, 0x00, 0x00, 0x00, 0x10],
            Some(Reason::NotTls),
        ),
        ("alert record", record(0x15, TLS12, &[0x02, 0x28]), Some(Reason::NotTls)),
        ("application data record", record(0x17, TLS12, b"hello"), Some(Reason::NotTls)),
        ("record version 4.1", record_v4, Some(Reason::NotTls)),
        ("HTTP request", b"GET / HTTP/1.1\r\nHost: acme.my.salesforce.com\r\n\r\n".to_vec(), Some(Reason::NotTls)),
        ("SSH banner", b"SSH-2.0-OpenSSH_9.2\r\n".to_vec(), Some(Reason::NotTls)),
        ("random bytes", vec![0x5a, 0xc3, 0x11, 0x07, 0xfe, 0x00, 0x42], Some(Reason::NotTls)),
        ("zero bytes", vec![0; 16], Some(Reason::NotTls)),
        ("empty handshake record", record(0x16, TLS10, &[]), Some(Reason::Malformed)),
        ("record longer than 2^14", huge_record, Some(Reason::Malformed)),
        ("first message is a ServerHello", server_hello, Some(Reason::Malformed)),
        ("change_cipher_spec between fragments", ccs_inside, Some(Reason::Malformed)),
        ("hello declares 16 MiB", record(0x16, TLS10, &[0x01, 0xff, 0xff, 0xff]), Some(Reason::HelloTooLarge)),
    ];
    for (name, bytes, want) in cases {
        assert_eq!(reason(&bytes, HelloLimits::default()), want, "{name}");
    }
}

#[test]
fn size_cap_applies_to_bytes_held() {
    let r = recording("chromium.bin");
    let tight = |max| HelloLimits { max_hello_bytes: max, ..HelloLimits::default() };
    assert_eq!(reason(&r.bytes, tight(r.bytes.len())), None);
    assert_eq!(reason(&r.bytes, tight(r.bytes.len() - 1)), Some(Reason::HelloTooLarge));
    // Refused on the first bytes, before the body is buffered.
    assert_eq!(reason(&r.bytes[..9], tight(1024)), Some(Reason::HelloTooLarge));
    // Tiny records inflate what is held: the cap counts record headers too.
    let (payload, version) = unframe(&r.bytes);
    let one_byte_records = frame(&payload, version, &[1]);
    assert_eq!(reason(&one_byte_records, tight(one_byte_records.len())), None);
    assert_eq!(reason(&one_byte_records, tight(one_byte_records.len() - 1)), Some(Reason::HelloTooLarge));
}

#[test]
fn underscore_is_accepted_when_enabled() {
    let limits = HelloLimits { allow_underscore: true, ..HelloLimits::default() };
    let Parse::Complete(h) = parse(&hello(&[sni(b"_dmarc.Example.com")]), limits) else { panic!() };
    assert_eq!(h.sni.unwrap().as_str(), "_dmarc.example.com");
}

#[test]
fn non_tls_is_refused_on_the_first_byte() {
    for first in [b'G', b'P', b'S', 0x80, 0x00, 0x17] {
        assert!(matches!(parse(&[first], HelloLimits::default()), Parse::Invalid(_)), "0x{first:02x}");
    }
    assert!(matches!(parse(&[0x16], HelloLimits::default()), Parse::Incomplete { needed: 5 }));
}

#[test]
fn alpn_bytes_are_escaped() {
    let h = complete(&hello(&[alpn(&[b"h2", b"\x00x\\\n"])]));
    assert_eq!(h.alpn.escaped(), ["h2", "\\x00x\\x5c\\x0a"]);
}
