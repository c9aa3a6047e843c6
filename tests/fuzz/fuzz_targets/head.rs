//! Fuzzes the HTTP/1.x request-head reader of the explicit modes (`snigate::internal::read_head`)
//! and its parser (`parse_head`). Each input is read twice from an in-memory stream: once handed
//! out as far as the reader's buffer takes it, once in chunks whose sizes come from the input
//! (1 + the byte at each split point, mod 64); the deadline is a day away, so every read ends at
//! the end of the input at the latest. For any input it checks that:
//!
//! - neither function panics, and `read_head`'s answer does not depend on the chunking (equal
//!   heads, or the same error variant), save that input `parse_head` refuses may be answered
//!   `Bad` or `Closed`: the reader parses an unfinished head only on its first bytes and when a
//!   blank line arrives, so what follows a good start is refused only at the next blank line;
//! - a head `read_head` returns is what `parse_head` gives for its `len` bytes and for the whole
//!   input, `len` is at most the input's length, and the buffer holds the head and what followed;
//! - what `parse_head` finds in the whole input (no longer than `MAX_HEAD`), `read_head` returns;
//!   what it finds unfinished, `read_head` answers `Closed` after reading all of it;
//! - `TooLarge` only for inputs of at least `MAX_HEAD` bytes.
#![no_main]

#[path = "chunked.rs"]
mod chunked;

use std::mem::{Discriminant, discriminant};
use std::time::Duration;

use bytes::BytesMut;
use chunked::{Chunked, block_on};
use libfuzzer_sys::fuzz_target;
use snigate::internal::{Head, HeadError, MAX_HEAD, parse_head, read_head};
use tokio::time::Instant;

fn read(data: &[u8], whole: bool) -> (Result<Head, HeadError>, BytesMut, usize) {
    let mut io = Chunked::new(data, whole);
    let mut buf = BytesMut::new();
    let deadline = Instant::now() + Duration::from_secs(86_400);
    let result = block_on(read_head(&mut io, &mut buf, deadline));
    (result, buf, io.pos)
}

/// `parse_head`'s answer with errors reduced to their variant, for comparisons.
type Parsed = Result<Option<Head>, Discriminant<HeadError>>;

fn parsed(bytes: &[u8]) -> Parsed {
    parse_head(bytes).map_err(|e| discriminant(&e))
}

/// Reads `data` and checks the answer on its own and against `parse_head`'s for all of it.
fn check(data: &[u8], whole_parse: &Parsed, whole: bool) -> Result<Head, HeadError> {
    let how = if whole { "whole" } else { "chunked" };
    let (result, buf, read) = read(data, whole);
    assert_eq!(&buf[..], &data[..read], "{how}: the buffer is what was read");
    match &result {
        Ok(head) => {
            assert!(head.len <= buf.len() && buf.len() <= data.len(), "{how}: len {} of {}", head.len, buf.len());
            assert_eq!(parsed(&data[..head.len]), Ok(Some(head.clone())), "{how}: parse_head of the head's bytes");
            assert_eq!(whole_parse, &Ok(Some(head.clone())), "{how}: parse_head of the whole input");
        }
        Err(HeadError::TooLarge) => {
            assert!(data.len() >= MAX_HEAD, "{how}: TooLarge for {} bytes", data.len());
            assert!(buf.len() >= MAX_HEAD, "{how}: TooLarge after {} bytes", buf.len());
        }
        Err(HeadError::Closed { read: n }) => {
            assert_eq!((*n, read), (data.len(), data.len()), "{how}: Closed before the end of the input");
        }
        Err(HeadError::Timeout) => panic!("{how}: Timeout with the deadline a day away"),
        Err(HeadError::Bad(_)) => {}
    }
    match whole_parse {
        Ok(Some(h)) if data.len() <= MAX_HEAD => {
            assert_eq!(result.as_ref().ok(), Some(h), "{how}: parse_head found a head, read_head {result:?}")
        }
        Ok(None) if data.len() < MAX_HEAD => {
            assert!(matches!(result, Err(HeadError::Closed { .. })), "{how}: unfinished head, read_head {result:?}")
        }
        _ => {}
    }
    result
}

fuzz_target!(|data: &[u8]| {
    let whole_parse = parsed(data);
    let whole = check(data, &whole_parse, true);
    let chunked = check(data, &whole_parse, false);
    match (&whole, &chunked) {
        (Ok(a), Ok(b)) => assert_eq!(a, b, "the head depends on the chunking"),
        // An unfinished head is parsed only on the first bytes and at blank lines, so bytes
        // that are not HTTP after those are found at the next blank line, or never if the
        // client closes first: `Bad` or `Closed`, by chunking, for input `parse_head` refuses.
        (Err(HeadError::Bad(_)), Err(HeadError::Closed { .. }))
        | (Err(HeadError::Closed { .. }), Err(HeadError::Bad(_)))
            if whole_parse.is_err() => {}
        (Err(a), Err(b)) => assert_eq!(discriminant(a), discriminant(b), "whole: {a:?}, chunked: {b:?}"),
        (a, b) => panic!("the answer depends on the chunking: whole {a:?}, chunked {b:?}"),
    }
});
