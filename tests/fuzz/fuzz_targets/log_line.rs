//! Fuzzes the access-log line reader of `snigate replay` and `snigate learn`
//! (`snigate::internal::log_line`): recorded logs carry client-chosen names and hosts (escaped
//! by JSON), and a log may be cut or corrupted. For any input it checks that:
//!
//! - it does not panic;
//! - text that is not JSON is refused, and a line it reads is JSON (JSON's syntax: a number
//!   too large for a float, in a field the reader skips, is still JSON);
//! - a name it reads is normalised: lowercase, no trailing dot, and read the same again by the
//!   name parser.
#![no_main]

use libfuzzer_sys::fuzz_target;
use snigate::Name;
use snigate::internal::log_line;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let read = log_line(text);
    let json = serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok();
    if !json {
        assert!(read.is_err(), "not JSON, yet read: {read:?}");
    }
    if let Ok(Some((_, Some(name), _))) = &read {
        assert!(json);
        assert!(!name.ends_with('.') && !name.bytes().any(|b| b.is_ascii_uppercase()), "{name}");
        let again = Name::parse(name.as_bytes(), true).expect("a read name parses again");
        assert_eq!(again.as_str(), name);
    }
});
