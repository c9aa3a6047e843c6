//! The QUIC Initial inspector: real captures, the hostile table, and a property test that any
//! split and order of the hello's CRYPTO frames reads the same hello.

use proptest::prelude::*;
use snigate::Reason;
use snigate::hello::quic::{
    Cid, DEFAULT_MAX_DATAGRAMS, Inspect, Inspector, QuicError, QuicLimits, Side, Version, close_datagram, long_header,
    version_negotiation,
};
use snigate::hello::{HelloLimits, Parse, parse};
use snigate::internal::{crypto_frame, padded, seal_initial};

const DCID: &[u8] = &[0x83, 0x94, 0xc8, 0xf0, 0x3e, 0x51, 0x57, 0x08];
const SCID: &[u8] = &[1, 2, 3, 4];

fn limits() -> QuicLimits {
    QuicLimits { hello: HelloLimits::default(), max_datagrams: DEFAULT_MAX_DATAGRAMS }
}

/// The ClientHello handshake message of a recorded TCP capture (its TLS records removed).
fn hello_message(file: &str) -> Vec<u8> {
    let wire = std::fs::read(format!("tests/data/hellos/{file}")).unwrap();
    let Parse::Complete(hello) = parse(&wire, HelloLimits::default()) else { panic!("{file} parses") };
    let mut msg = Vec::new();
    let mut rest = &wire[..hello.wire_bytes];
    while rest.len() >= 5 {
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        msg.extend_from_slice(&rest[5..5 + len]);
        rest = &rest[5 + len..];
    }
    msg
}

/// A client Initial datagram carrying `frames`, padded to 1,200 bytes.
fn datagram(version: Version, pn: u32, frames: &[u8]) -> Vec<u8> {
    seal_initial(version, DCID, Side::Client, (DCID, SCID), pn, &padded(frames, DCID, SCID))
}

/// Pushes datagrams until an answer other than `Incomplete`, or the end.
fn inspect(datagrams: &[Vec<u8>]) -> Inspect {
    let mut inspector = Inspector::new(limits());
    let mut last = Inspect::Incomplete;
    for d in datagrams {
        last = inspector.push(d);
        if last != Inspect::Incomplete {
            break;
        }
    }
    last
}

fn sni(answer: &Inspect) -> String {
    match answer {
        Inspect::Complete(hello) => hello.sni.as_ref().map(|n| n.as_str().to_string()).unwrap_or_default(),
        other => panic!("expected a complete hello, got {other:?}"),
    }
}

fn reason(answer: &Inspect) -> Reason {
    match answer {
        Inspect::Invalid(e) => e.reason(),
        other => panic!("expected invalid, got {other:?}"),
    }
}

/// The hello in CRYPTO frames of at most `chunk` bytes, in order.
fn frames_of(msg: &[u8], chunk: usize) -> Vec<Vec<u8>> {
    msg.chunks(chunk).enumerate().map(|(i, c)| crypto_frame((i * chunk) as u64, c)).collect()
}

/// Recorded captures under tests/data/quic/ (hex, one datagram per line, `#` comments) and
/// the SNI each carries (from the README's table).
#[test]
fn recorded_initials_read_their_sni() {
    let dir = std::path::Path::new("tests/data/quic");
    let mut read = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_none_or(|e| e != "hex") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let datagrams: Vec<Vec<u8>> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .map(|l| hex::decode(l).unwrap())
            .collect();
        let answer = inspect(&datagrams);
        assert_eq!(sni(&answer), "acme.my.salesforce.com", "{}", path.display());
        read += 1;
    }
    assert!(read >= 2, "the recorded captures are there ({read} read)");
}

#[test]
fn a_hello_in_one_initial_reads_in_v1_and_v2() {
    let msg = hello_message("curl.bin");
    for version in [Version::V1, Version::V2] {
        let answer = inspect(&[datagram(version, 0, &crypto_frame(0, &msg))]);
        assert!(!sni(&answer).is_empty(), "{version:?}");
    }
}

/// Chromium's post-quantum hello (about 1.8 KB) over two datagrams, its CRYPTO frames in
/// reverse order, with PING and PADDING between them, and the SNI cut across the datagrams.
#[test]
fn a_large_hello_reordered_across_datagrams() {
    let msg = hello_message("chromium.bin");
    assert!(msg.len() > 1200, "the post-quantum hello needs two datagrams");
    let frames = frames_of(&msg, 97);
    let half = frames.len() / 2;
    let interleave = |fs: &[Vec<u8>]| {
        fs.iter().rev().flat_map(|f| [f.clone(), vec![0x01, 0x00, 0x00]].concat()).collect::<Vec<u8>>()
    };
    let late = datagram(Version::V1, 0, &interleave(&frames[half..]));
    let early = datagram(Version::V1, 1, &interleave(&frames[..half]));
    let mut inspector = Inspector::new(limits());
    assert_eq!(inspector.push(&late), Inspect::Incomplete);
    let answer = inspector.push(&early);
    assert_eq!(sni(&answer), "acme--dev.sandbox.lightning.force.com");
}

/// A hostile case: its name, its datagrams, and the answer (a hello, or the reason it is refused).
type Case = (&'static str, Vec<Vec<u8>>, Result<(), Reason>);

#[test]
fn the_hostile_table() {
    let msg = hello_message("curl.bin");
    let whole = crypto_frame(0, &msg);
    let v1 = |frames: &[u8]| datagram(Version::V1, 0, frames);
    let half = msg.len() / 2;
    let (a, b) = (crypto_frame(0, &msg[..half + 10]), crypto_frame(half as u64, &msg[half..]));
    let mut conflicting = msg[half..].to_vec();
    conflicting[5] ^= 1;
    let mut tampered = v1(&whole);
    tampered[100] ^= 1;
    let mut short_dcid =
        seal_initial(Version::V1, &DCID[..4], Side::Client, (&DCID[..4], SCID), 0, &padded(&whole, &DCID[..4], SCID));
    short_dcid.resize(1200, 0);
    let mut unknown = v1(&whole);
    unknown[1..5].copy_from_slice(&0x1a2a_3a4a_u32.to_be_bytes());
    let mut short_header = v1(&whole);
    short_header[0] = 0x40;
    let unpadded = seal_initial(Version::V1, DCID, Side::Client, (DCID, SCID), 0, &whole);
    let mut stream = whole.clone();
    stream.extend_from_slice(&[0x08, 0x00, 0x01, 0x61]);
    let mut after = crypto_frame(0, &msg);
    after.extend_from_slice(&crypto_frame(msg.len() as u64, b"extra"));
    let cases: Vec<Case> = vec![
        ("duplicate identical frames", vec![v1(&[a.clone(), a.clone(), b.clone()].concat())], Ok(())),
        ("overlap, identical bytes", vec![v1(&[b.clone(), a.clone()].concat())], Ok(())),
        (
            "overlap, conflicting bytes",
            vec![v1(&[a.clone(), crypto_frame(half as u64, &conflicting)].concat())],
            Err(Reason::Malformed),
        ),
        ("the rest in a later datagram", vec![v1(&a), datagram(Version::V1, 1, &b)], Ok(())),
        ("a truncated datagram", vec![v1(&whole)[..1100].to_vec()], Err(Reason::Malformed)),
        ("an undersized datagram", vec![unpadded], Err(Reason::Malformed)),
        ("a DCID under 8 bytes", vec![short_dcid], Err(Reason::Malformed)),
        ("a short header first", vec![short_header], Err(Reason::Malformed)),
        ("an unknown version", vec![unknown], Err(Reason::QuicVersion)),
        ("a tampered packet", vec![tampered], Err(Reason::Malformed)),
        ("a huge CRYPTO offset", vec![v1(&crypto_frame(1 << 40, b"x"))], Err(Reason::HelloTooLarge)),
        ("a STREAM frame", vec![v1(&stream)], Err(Reason::Malformed)),
        ("CONNECTION_CLOSE", vec![v1(&[0x1c, 0x00, 0x00, 0x00])], Err(Reason::ClientClosed)),
        ("CRYPTO data after the hello", vec![v1(&after)], Err(Reason::Malformed)),
        (
            "only PING, forever",
            (0..20).map(|pn| datagram(Version::V1, pn, &[0x01])).collect(),
            Err(Reason::HelloTooLarge),
        ),
        ("an empty datagram", vec![Vec::new()], Err(Reason::Malformed)),
    ];
    for (name, datagrams, expected) in cases {
        let answer = inspect(&datagrams);
        match expected {
            Ok(()) => assert!(matches!(answer, Inspect::Complete(_)), "{name}: {answer:?}"),
            Err(r) => assert_eq!(reason(&answer), r, "{name}: {answer:?}"),
        }
    }
}

/// A datagram's later packet with another connection's IDs is not read as this one's.
#[test]
fn another_connections_initial_on_the_flow_is_refused() {
    let msg = hello_message("curl.bin");
    let other = [9u8; 8];
    let first = datagram(Version::V1, 0, &crypto_frame(0, &msg[..100]));
    let second = seal_initial(
        Version::V1,
        &other,
        Side::Client,
        (&other, SCID),
        1,
        &padded(&crypto_frame(100, &msg[100..]), &other, SCID),
    );
    let answer = inspect(&[first, second]);
    assert!(matches!(answer, Inspect::Invalid(QuicError::Malformed(_))), "{answer:?}");
}

/// The denial the client receives: a server Initial that its own keys open, carrying
/// CONNECTION_CLOSE with access_denied.
#[test]
fn the_close_datagram_is_a_server_initial() {
    for version in [Version::V1, Version::V2] {
        let packet = close_datagram(version, DCID, SCID, 0x131, "denied");
        let header = long_header(&packet).unwrap();
        assert_eq!((header.dcid, header.scid, header.version), (SCID, DCID, version.wire()));
        assert!(header.is_initial());
        assert_eq!(header.end, packet.len());
    }
}

proptest! {
    /// Any chunking and any order of the hello's CRYPTO frames, over any number of datagrams
    /// up to the limit, reads the same hello as the TCP parser.
    #[test]
    fn any_split_and_order_reads_the_same_hello(
        chunk in 20usize..600,
        seed in any::<u64>(),
        per_datagram in 1usize..4,
    ) {
        let msg = hello_message("chromium.bin");
        let mut frames = frames_of(&msg, chunk);
        // A deterministic shuffle from the seed.
        let mut s = seed | 1;
        for i in (1..frames.len()).rev() {
            s ^= s << 13; s ^= s >> 7; s ^= s << 17;
            frames.swap(i, (s % (i as u64 + 1)) as usize);
        }
        let datagrams: Vec<Vec<u8>> = frames
            .chunks(per_datagram.max(frames.len().div_ceil(DEFAULT_MAX_DATAGRAMS)))
            .enumerate()
            .map(|(pn, fs)| datagram(Version::V1, pn as u32, &fs.concat()))
            .collect();
        prop_assume!(datagrams.iter().all(|d| d.len() < 1500));
        prop_assert_eq!(sni(&inspect(&datagrams)), "acme--dev.sandbox.lightning.force.com");
    }
}

/// Once a flow is allowed, its client's later Initials may only carry the decided hello again:
/// a second hello, another connection's Initial or another version would reach the server
/// unread.
#[test]
fn an_allowed_flow_carries_no_second_hello() {
    let msg = hello_message("curl.bin");
    let mut inspector = Inspector::new(limits());
    assert!(matches!(inspector.push(&datagram(Version::V1, 0, &crypto_frame(0, &msg))), Inspect::Complete(_)));
    let mut follower = inspector.into_follower().expect("a complete hello");
    let server_cid = [0x5e; 8];
    let server: Vec<Cid> = vec![Cid::new(&server_cid).unwrap()];
    let mut other = hello_message("openssl-tls13.bin");
    other.truncate(msg.len().min(other.len()));
    let to = |dcid: &[u8], keys: &[u8], frames: &[u8]| {
        seal_initial(Version::V1, keys, Side::Client, (dcid, SCID), 7, &padded(frames, dcid, SCID))
    };
    let ack = [0x02, 0x00, 0x00, 0x00, 0x00];
    let mut wrong_version = datagram(Version::V1, 1, &ack);
    wrong_version[1..5].copy_from_slice(&Version::V2.wire().to_be_bytes());
    let cases: Vec<(&str, Vec<u8>, bool)> = vec![
        ("the hello retransmitted", datagram(Version::V1, 1, &crypto_frame(0, &msg)), true),
        ("part of it again", datagram(Version::V1, 2, &crypto_frame(10, &msg[10..40])), true),
        ("an acknowledgement", datagram(Version::V1, 3, &ack), true),
        ("to the server's connection ID", to(&server_cid, DCID, &crypto_frame(0, &msg)), true),
        ("after a Retry, with its keys", to(&server_cid, &server_cid, &crypto_frame(0, &msg)), true),
        ("a 1-RTT packet", [&[0x40u8][..], &[0u8; 60]].concat(), true),
        ("another hello, same DCID", datagram(Version::V1, 4, &crypto_frame(0, &other)), false),
        ("bytes past the hello", datagram(Version::V1, 5, &crypto_frame(msg.len() as u64, b"more")), false),
        ("another connection's Initial", to(&[9; 8], &[9; 8], &crypto_frame(0, &msg)), false),
        ("another hello after a Retry", to(&server_cid, &server_cid, &crypto_frame(0, &other)), false),
        ("another version", wrong_version, false),
        ("garbage with the long-header bit", vec![0xc0, 1, 2], false),
    ];
    for (name, d, passes) in cases {
        assert_eq!(follower.check(&d, &server).is_ok(), passes, "{name}");
    }
}

/// Datagrams that only name a version snigate cannot read get the versions it can.
#[test]
fn version_negotiation_names_v1_and_v2() {
    let vn = version_negotiation(DCID, SCID);
    let header = long_header(&vn).unwrap();
    assert_eq!((header.version, header.dcid, header.scid), (0, SCID, DCID));
    let versions = &vn[vn.len() - 8..];
    assert_eq!(versions, [0, 0, 0, 1, 0x6b, 0x33, 0x43, 0xcf]);
}
