//! Fuzzes the PROXY protocol reader (`snigate::internal::read_proxy_header`, v1 and v2). Each
//! input is read twice from an in-memory stream: once handed out as far as the reader's buffer
//! takes it, once in chunks whose sizes come from the input (1 + the byte at each split point,
//! mod 64). For any input it checks that:
//!
//! - the reader does not panic, and its answer does not depend on the chunking (same `Ok`
//!   addresses, or the same error variant), nor does the length of the header it consumed;
//! - on `Ok`, the buffer holds exactly the bytes after the header that were read (they are the
//!   ClientHello's), and every byte of the input before the end of the header was needed: the
//!   input cut anywhere before that end gives `Closed`, cut at that end the same addresses with
//!   nothing left over;
//! - `TooLong` only for a v2 header that declares more than the cap; `Closed` only with the
//!   whole input read; an I/O error never (the stream cannot fail).
//!
//! The cap is 512 bytes.
#![no_main]

#[path = "chunked.rs"]
mod chunked;

use std::mem::discriminant;

use bytes::BytesMut;
use chunked::{Chunked, block_on};
use libfuzzer_sys::fuzz_target;
use snigate::internal::{Addresses, ProxyError, read_proxy_header};

const MAX: usize = 512;

/// What one read gave: the answer, what the buffer holds, and how much of the input was read.
struct Outcome {
    result: Result<Option<Addresses>, ProxyError>,
    buffered: Vec<u8>,
    read: usize,
}

fn read(data: &[u8], whole: bool) -> Outcome {
    let mut io = Chunked::new(data, whole);
    let mut buf = BytesMut::new();
    let result = block_on(read_proxy_header(&mut io, &mut buf, MAX));
    Outcome { result, buffered: buf.to_vec(), read: io.pos }
}

/// Checks one outcome on its own; returns the header's length for an `Ok`.
fn check(data: &[u8], o: &Outcome, how: &str) -> Option<usize> {
    match &o.result {
        Ok(_) => {
            // The buffer holds what was read after the header.
            let header = o.read.checked_sub(o.buffered.len()).expect("more bytes buffered than read");
            assert!(header > 0, "{how}: Ok from an empty header");
            assert_eq!(&o.buffered[..], &data[header..o.read], "{how}: the bytes after the header");
            Some(header)
        }
        Err(ProxyError::TooLong(max)) => {
            assert_eq!(*max, MAX);
            // Only a v2 header that declares more than the cap.
            assert!(
                data.starts_with(b"\r\n\r\n\0\r\nQUIT\n") && data.len() >= 16,
                "{how}: TooLong without a v2 header"
            );
            assert!(16 + usize::from(u16::from_be_bytes([data[14], data[15]])) > MAX, "{how}: TooLong within the cap");
            assert_eq!(&o.buffered[..], &data[..o.read], "{how}: the buffer is what was read");
            None
        }
        Err(ProxyError::Closed) => {
            assert_eq!(o.read, data.len(), "{how}: Closed before the end of the input");
            assert_eq!(&o.buffered[..], data, "{how}: the buffer is what was read");
            None
        }
        Err(ProxyError::Invalid(_)) => {
            assert_eq!(&o.buffered[..], &data[..o.read], "{how}: the buffer is what was read");
            None
        }
        Err(e) => panic!("{how}: unexpected {e:?}"),
    }
}

fuzz_target!(|data: &[u8]| {
    let whole = read(data, true);
    let chunked = read(data, false);
    let header = check(data, &whole, "whole");
    let chunked_header = check(data, &chunked, "chunked");
    match (&whole.result, &chunked.result) {
        (Ok(a), Ok(b)) => {
            assert_eq!(a, b, "addresses depend on the chunking");
            assert_eq!(header, chunked_header, "the header's length depends on the chunking");
        }
        (Err(a), Err(b)) => assert_eq!(discriminant(a), discriminant(b), "whole: {a:?}, chunked: {b:?}"),
        (a, b) => panic!("the answer depends on the chunking: whole {a:?}, chunked {b:?}"),
    }

    // The header ends exactly where the reader said: any shorter input is an unfinished
    // header, and the header alone gives the same answer with nothing left over.
    if let Some(len) = header {
        let cut = len - 1;
        for at in [cut, cut / 2, usize::from(data[0]) % len] {
            let short = read(&data[..at], true);
            assert_eq!(short.result, Err(ProxyError::Closed), "the header cut at {at} of {len} bytes");
        }
        let exact = read(&data[..len], true);
        assert_eq!(exact.result, whole.result, "the header alone");
        assert!(exact.buffered.is_empty(), "the header alone left {} bytes", exact.buffered.len());
    }
});
