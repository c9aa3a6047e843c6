//! Fuzzes the ClientHello parser (`snigate::hello`). For any input it checks that:
//!
//! - `parse` (one-shot) does not panic;
//! - one `HelloParser` fed the input in growing prefixes answers, after every chunk, exactly
//!   what `parse` answers for that prefix (same hello, same `needed`, same error reason);
//! - a verdict is final: a prefix that is `Complete` means the whole input parses to the same
//!   hello, a prefix that is `Invalid` means the whole input is `Invalid`, and `Incomplete`
//!   always asks for more bytes than it was given;
//! - a `Complete` hello is sane: `hello_bytes <= wire_bytes <= min(input length, cap)`, at least
//!   one record, and the SNI (if any) is non-empty lowercase ASCII, no trailing dot, <= 253 bytes.
//!
//! Chunk sizes come from the input itself (1 + the byte at each split point, mod 64) rather than
//! from a prefix, so the recorded hellos in `tests/data/hellos` are valid seeds as they are.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snigate::Reason;
use snigate::hello::{ClientHello, HelloLimits, HelloParser, Parse, parse};

/// `Parse` with errors reduced to their reason: the messages are diagnostics, not contract.
#[derive(Debug, PartialEq)]
enum Verdict {
    Complete(ClientHello),
    Incomplete(usize),
    Invalid(Reason),
}

fn verdict(p: Parse) -> Verdict {
    match p {
        Parse::Complete(hello) => Verdict::Complete(hello),
        Parse::Incomplete { needed } => Verdict::Incomplete(needed),
        Parse::Invalid(e) => Verdict::Invalid(e.reason()),
    }
}

fn check_hello(hello: &ClientHello, data: &[u8], limits: HelloLimits) {
    assert!(matches!(hello.carried, snigate::hello::Carried::Records(n) if n >= 1));
    assert!(hello.hello_bytes <= hello.wire_bytes);
    assert!(hello.wire_bytes <= data.len() && hello.wire_bytes <= limits.max_hello_bytes);
    if let Some(name) = &hello.sni {
        let s = name.as_str();
        assert!(!s.is_empty() && s.len() <= 253, "SNI length {}", s.len());
        assert!(s.is_ascii() && !s.bytes().any(|b| b.is_ascii_uppercase()), "SNI {s:?}");
        assert!(!s.ends_with('.'), "SNI {s:?}");
    }
}

fuzz_target!(|data: &[u8]| {
    // Odd lengths also admit '_' in names, so both settings get exercised.
    let limits = HelloLimits { max_hello_bytes: 4096, allow_underscore: data.len() % 2 == 1 };
    let whole = verdict(parse(data, limits));
    if let Verdict::Complete(hello) = &whole {
        check_hello(hello, data, limits);
    }

    let mut parser = HelloParser::new(limits);
    let mut n = 0;
    while n < data.len() {
        n = (n + 1 + usize::from(data[n]) % 64).min(data.len());
        let step = verdict(parser.parse(&data[..n]));
        assert_eq!(step, verdict(parse(&data[..n], limits)), "incremental != one-shot at {n} bytes");
        match step {
            Verdict::Incomplete(needed) => assert!(needed > n, "Incomplete {{ needed: {needed} }} at {n} bytes"),
            Verdict::Complete(_) => {
                assert_eq!(step, whole, "Complete at {n} bytes, not for the whole input");
                break;
            }
            Verdict::Invalid(_) => {
                assert!(matches!(whole, Verdict::Invalid(_)), "Invalid at {n} bytes, whole: {whole:?}");
                break;
            }
        }
    }
});
