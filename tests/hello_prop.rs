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
            h.records = 0;
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
