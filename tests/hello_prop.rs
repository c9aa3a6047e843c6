//! Property tests: the parser never panics, and how bytes are split (into TCP reads or into
//! TLS records) never changes its answer.

mod common;

use common::*;
use proptest::prelude::*;
use snigate::hello::{HelloLimits, HelloParser, Parse, parse};

fn any_limits() -> impl Strategy<Value = HelloLimits> {
    (1usize..70_000, any::<bool>())
        .prop_map(|(max_hello_bytes, allow_underscore)| HelloLimits { max_hello_bytes, allow_underscore })
}

/// Feeds `bytes` to one incremental parser in chunks cut at `cuts`, and returns its last answer.
fn feed(bytes: &[u8], cuts: &[usize], limits: HelloLimits) -> Parse {
    let mut parser = HelloParser::new(limits);
    let mut ends: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    ends.push(bytes.len());
    ends.sort_unstable();
    let mut last = parser.parse(&[]);
    for end in ends {
        if let Parse::Incomplete { needed } = last
            && end >= needed.min(bytes.len())
        {
            last = parser.parse(&bytes[..end]);
        }
    }
    last
}

/// The answer with the framing-dependent fields cleared, to compare across record splittings.
fn unframed(p: Parse) -> Parse {
    match p {
        Parse::Complete(mut h) => {
            h.carried = snigate::hello::Carried::Records(0);
            h.wire_bytes = 0;
            Parse::Complete(h)
        }
        other => other,
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..4096), limits in any_limits()) {
        let _ = parse(&bytes, limits);
    }

    #[test]
    fn handshake_records_of_arbitrary_content_never_panic(payload in proptest::collection::vec(any::<u8>(), 0..2048), sizes in proptest::collection::vec(1usize..600, 1..8)) {
        let mut hs = vec![0x01, 0x00];
        hs.extend(u16::try_from(payload.len()).unwrap().to_be_bytes());
        hs.extend(&payload);
        let _ = parse(&frame(&hs, TLS10, &sizes), HelloLimits::default());
    }

    #[test]
    fn read_splits_do_not_change_the_answer(index in 0usize..64, cuts in proptest::collection::vec(any::<usize>(), 0..12)) {
        let all = recorded();
        let r = &all[index % all.len()];
        prop_assert_eq!(feed(&r.bytes, &cuts, HelloLimits::default()), parse(&r.bytes, HelloLimits::default()));
    }

    #[test]
    fn record_splits_do_not_change_the_answer(index in 0usize..64, sizes in proptest::collection::vec(1usize..3000, 1..6), cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
        let all = recorded();
        let r = &all[index % all.len()];
        let (payload, version) = unframe(&r.bytes);
        let wire = frame(&payload, version, &sizes);
        let want = unframed(parse(&r.bytes, HelloLimits::default()));
        prop_assert!(matches!(want, Parse::Complete(_)));
        prop_assert_eq!(unframed(parse(&wire, HelloLimits::default())), want.clone());
        prop_assert_eq!(unframed(feed(&wire, &cuts, HelloLimits::default())), want);
    }

    #[test]
    fn mutated_hellos_never_panic_and_splits_agree(index in 0usize..64, flips in proptest::collection::vec((any::<usize>(), any::<u8>()), 1..6), cuts in proptest::collection::vec(any::<usize>(), 0..8)) {
        let all = recorded();
        let mut bytes = all[index % all.len()].bytes.clone();
        let len = bytes.len();
        for (at, value) in flips {
            bytes[at % len] = value;
        }
        let whole = parse(&bytes, HelloLimits::default());
        let pieces = feed(&bytes, &cuts, HelloLimits::default());
        prop_assert_eq!(reason_of(&pieces), reason_of(&whole));
    }
}

fn reason_of(p: &Parse) -> Option<snigate::Reason> {
    match p {
        Parse::Invalid(e) => Some(e.reason()),
        _ => None,
    }
}

/// tls-parser's reading of an ALPN extension body, with the parser's exact-length checks: the
/// reference the in-place reader is held to.
fn reference_alpn(data: &[u8]) -> Option<Vec<String>> {
    let (rest, tls_parser::TlsExtension::ALPN(protos)) = tls_parser::parse_tls_extension_alpn_content(data).ok()?
    else {
        return None;
    };
    let listed: usize = protos.iter().map(|p| 1 + p.len()).sum();
    if !rest.is_empty() || data.len() < 2 || listed != data.len() - 2 || protos.iter().any(|p| p.is_empty()) {
        return None;
    }
    Some(protos.iter().map(|p| snigate::hello::escape(p)).collect())
}

/// tls-parser's reading of a supported_versions extension body.
fn reference_versions(data: &[u8]) -> Option<Vec<u16>> {
    let ext = ext(0x002b, data);
    match tls_parser::parse_tls_client_hello_extension(&ext) {
        Ok((_, tls_parser::TlsExtension::SupportedVersions(v))) if !v.is_empty() => {
            Some(v.iter().map(|v| v.0).collect())
        }
        _ => None,
    }
}

/// Short bodies, biased towards well-formed ones: a 2-byte list length then length-prefixed
/// entries, mutated.
fn ext_body() -> impl Strategy<Value = Vec<u8>> {
    let framed = prop::collection::vec(prop::collection::vec(any::<u8>(), 0..6), 0..4).prop_map(|entries| {
        let list: Vec<u8> =
            entries.iter().flat_map(|e| std::iter::once(e.len() as u8).chain(e.iter().copied())).collect();
        let mut body = (list.len() as u16).to_be_bytes().to_vec();
        body.extend(list);
        body
    });
    prop_oneof![
        framed.clone(),
        (framed, any::<usize>(), any::<u8>()).prop_map(|(mut b, at, v)| {
            if !b.is_empty() {
                let at = at % b.len();
                b[at] = v;
            }
            b
        }),
        prop::collection::vec(any::<u8>(), 0..12)
    ]
}

proptest! {
    /// The ALPN and supported_versions readers accept and reject exactly what tls-parser's
    /// parsers (which they replaced, to allocate less) did, with the same result.
    #[test]
    fn alpn_and_versions_read_as_tls_parser_did(body in ext_body()) {
        let limits = HelloLimits::default();
        let got = match parse(&hello(&[ext(0x0010, &body)]), limits) {
            Parse::Complete(h) => Some(h.alpn.escaped()),
            _ => None,
        };
        prop_assert_eq!(got, reference_alpn(&body));
        let got = match parse(&hello(&[ext(0x002b, &body)]), limits) {
            Parse::Complete(h) => Some(h.supported_versions.iter().collect()),
            _ => None,
        };
        prop_assert_eq!(got, reference_versions(&body));
    }

    /// The server_name reader accepts and rejects exactly what tls-parser's parser (which it
    /// replaced, to allocate nothing) did, with the same name or the same error.
    #[test]
    fn server_name_reads_as_tls_parser_did(body in sni_body()) {
        let got = match parse(&hello(&[ext(0x0000, &body)]), HelloLimits::default()) {
            Parse::Complete(h) => Ok(h.sni.map(|n| n.as_str().to_string())),
            Parse::Invalid(e) => Err(e.to_string()),
            Parse::Incomplete { .. } => Err("incomplete".into()),
        };
        prop_assert_eq!(got, reference_server_name(&body));
    }
}

/// tls-parser's reading of a server_name extension body, with the parser's exact-length and
/// one-host_name checks, then the name rules: the reference the in-place reader is held to.
fn reference_server_name(data: &[u8]) -> Result<Option<String>, String> {
    let bad = || Err("malformed ClientHello: server_name extension encoding".to_string());
    let Ok((rest, tls_parser::TlsExtension::SNI(entries))) = tls_parser::parse_tls_extension_sni_content(data) else {
        return bad();
    };
    let listed: usize = entries.iter().map(|(_, name)| 3 + name.len()).sum();
    if !rest.is_empty() || data.len() < 2 || listed != data.len() - 2 {
        return bad();
    }
    let name = match entries.as_slice() {
        [(tls_parser::SNIType::HostName, name)] => name,
        [_] => return Err("malformed ClientHello: server_name entry is not a host_name".into()),
        [] => return Err("malformed ClientHello: server_name extension is empty".into()),
        _ => return Err("malformed ClientHello: server_name extension lists several names".into()),
    };
    match snigate::Name::parse(name, false) {
        Ok(n) => Ok(Some(n.as_str().to_string())),
        Err(e) => Err(format!("invalid server name: {e}")),
    }
}

/// server_name bodies, biased towards well-formed ones: a 2-byte list length, then entries of a
/// type (mostly host_name) and a name after its 2-byte length, mutated.
fn sni_body() -> impl Strategy<Value = Vec<u8>> {
    let name = prop::collection::vec(prop::sample::select(b"aZ0-._".to_vec()), 0..8);
    let entry = (prop_oneof![4 => Just(0u8), 1 => any::<u8>()], name);
    let framed = prop::collection::vec(entry, 0..3).prop_map(|entries| {
        let entries: Vec<(u8, &[u8])> = entries.iter().map(|(ty, name)| (*ty, name.as_slice())).collect();
        sni_data(&entries)
    });
    prop_oneof![
        framed.clone(),
        (framed, any::<usize>(), any::<u8>()).prop_map(|(mut b, at, v)| {
            if !b.is_empty() {
                let at = at % b.len();
                b[at] = v;
            }
            b
        }),
        prop::collection::vec(any::<u8>(), 0..12)
    ]
}

/// The name rules as they were written before the one-pass check: each label split off,
/// checked, then the whole name lowered. The reference the one-pass check is held to.
fn reference_name(raw: &[u8], allow_underscore: bool) -> Result<String, snigate::NameError> {
    use snigate::NameError;
    let raw = raw.strip_suffix(b".").unwrap_or(raw);
    if raw.is_empty() {
        return Err(NameError::Empty);
    }
    if raw.len() > snigate::MAX_NAME_LEN {
        return Err(NameError::TooLong);
    }
    let mut last: &[u8] = &[];
    for label in raw.split(|&b| b == b'.') {
        match label {
            [] => return Err(NameError::EmptyLabel),
            l if l.len() > snigate::MAX_LABEL_LEN => return Err(NameError::LabelTooLong),
            [b'-', ..] | [.., b'-'] => return Err(NameError::Hyphen),
            _ => {}
        }
        if let Some(&b) =
            label.iter().find(|&&b| !(b.is_ascii_alphanumeric() || b == b'-' || (allow_underscore && b == b'_')))
        {
            return Err(NameError::Byte(b));
        }
        last = label;
    }
    let number = match last {
        [b'0', b'x' | b'X', hex @ ..] => hex.iter().all(u8::is_ascii_hexdigit),
        digits => digits.iter().all(u8::is_ascii_digit),
    };
    if number {
        return Err(NameError::IpLiteral);
    }
    Ok(String::from_utf8(raw.to_ascii_lowercase()).unwrap())
}

/// Names, biased towards the edges the rules have: labels of every length around 63, names
/// around 253 bytes, hyphens at the ends, capitals, numbers and hex, and bytes no label may hold.
fn name_bytes() -> impl Strategy<Value = Vec<u8>> {
    let alphabet = b"aZz09-x_.Xq\x00 :@[`{\x7f\x80\xc3\xff/".to_vec();
    let label = prop_oneof![
        4 => prop::collection::vec(prop::sample::select(b"abcXYZ019-".to_vec()), 0..8),
        1 => prop::collection::vec(prop::sample::select(alphabet.clone()), 0..8),
        1 => (60usize..66).prop_map(|n| vec![b'a'; n]),
        1 => prop::sample::select(vec![b"0x1f".to_vec(), b"0X".to_vec(), b"127".to_vec(), b"0xg".to_vec()]),
    ];
    prop_oneof![
        3 => prop::collection::vec(label, 1..6).prop_map(|labels| labels.join(&b'.')),
        1 => prop::collection::vec(prop::sample::select(alphabet), 0..24),
        1 => (240usize..260, any::<bool>()).prop_map(|(n, dot)| {
            let mut name: Vec<u8> = (0..n).map(|i| if i % 50 == 49 { b'.' } else { b'k' }).collect();
            if dot {
                name.push(b'.');
            }
            name
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2048, ..ProptestConfig::default() })]

    /// The one-pass name check gives what the label-by-label rules give: the same name, or the
    /// same first error.
    #[test]
    fn names_check_as_the_label_by_label_rules_do(raw in name_bytes(), underscore in any::<bool>()) {
        let got = snigate::Name::parse(&raw, underscore).map(|n| n.as_str().to_string());
        prop_assert_eq!(got, reference_name(&raw, underscore));
    }
}
