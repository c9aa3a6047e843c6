//! Fuzzes the QUIC Initial inspector (`snigate::hello::quic`). The first byte picks how the rest
//! becomes datagrams:
//!
//! - even: raw datagrams, each prefixed by a 2-byte length (packet framing, header protection,
//!   versions, connection IDs, undersized and truncated datagrams);
//! - odd: frame payloads, each prefixed by a 2-byte length and sealed into a valid, padded
//!   client Initial, so that what is fuzzed is past the decryption: frame parsing and CRYPTO
//!   reassembly (order, overlaps, conflicts, offsets, the size cap).
//!
//! For any input: no panic; a verdict is final (after `Complete` or `Invalid` nothing more is
//! pushed, and a fresh inspector fed the same datagrams answers the same); a `Complete` hello is
//! sane (its SNI lowercase ASCII without a trailing dot, at most 253 bytes; its size within
//! the cap); after `Complete`, the flow's `Follower` checks the remaining datagrams without
//! panicking, and passes every datagram of the decided hello when it is sent again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snigate::hello::HelloLimits;
use snigate::hello::quic::{Inspect, Inspector, QuicLimits, Side, Version};
use snigate::internal::{padded, seal_initial};

const DCID: &[u8] = &[0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08];
const LIMITS: QuicLimits = QuicLimits { hello: HelloLimits { max_hello_bytes: 4096, allow_underscore: false }, max_datagrams: 8 };

fn pieces(mut data: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    while data.len() >= 2 && out.len() < 16 {
        let len = usize::from(u16::from_be_bytes([data[0], data[1]])) % 1500;
        let end = (2 + len).min(data.len());
        out.push(&data[2..end]);
        data = &data[end..];
    }
    out
}

fn run(datagrams: &[Vec<u8>]) -> (Inspect, usize, Option<Inspector>) {
    let mut inspector = Inspector::new(LIMITS);
    for (i, d) in datagrams.iter().enumerate() {
        match inspector.push(d) {
            Inspect::Incomplete => {}
            done => return (done, i + 1, Some(inspector)),
        }
    }
    (Inspect::Incomplete, datagrams.len(), None)
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let version = if mode & 2 == 0 { Version::V1 } else { Version::V2 };
    let datagrams: Vec<Vec<u8>> = match mode % 2 {
        0 => pieces(rest).into_iter().map(<[u8]>::to_vec).collect(),
        _ => pieces(rest)
            .into_iter()
            .enumerate()
            .map(|(pn, frames)| seal_initial(version, DCID, Side::Client, (DCID, &[]), pn as u32, &padded(frames, DCID, &[])))
            .collect(),
    };
    let (answer, used, inspector) = run(&datagrams);
    assert_eq!(run(&datagrams[..used]).0, answer, "the same datagrams, the same answer");
    if let (Inspect::Complete(_), Some(inspector)) = (&answer, inspector) {
        let mut follower = inspector.into_follower().expect("a complete hello gives a follower");
        for d in &datagrams[..used] {
            assert!(follower.check(d, &[]).is_ok(), "a datagram of the decided hello, sent again");
        }
        for d in &datagrams[used..] {
            let _ = follower.check(d, &[]);
        }
    }
    if let Inspect::Complete(hello) = &answer {
        assert!(hello.hello_bytes <= LIMITS.hello.max_hello_bytes);
        if let Some(name) = &hello.sni {
            let s = name.as_str();
            assert!(!s.is_empty() && s.len() <= 253 && s.is_ascii() && !s.ends_with('.'), "SNI {s:?}");
            assert!(!s.bytes().any(|b| b.is_ascii_uppercase()), "SNI {s:?}");
        }
    }
});
