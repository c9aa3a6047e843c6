//! A request body's framing, followed as its bytes pass: how many of the bytes at hand belong to
//! the body, and where it ends. Pure: the forwarder feeds it what it reads, and forwards what it
//! accepts unchanged. A chunked body is read strictly (hex sizes, CRLF line ends, no folded
//! trailer lines): what another implementation could read differently is refused.

use thiserror::Error;

use super::head::{Body, MAX_HEAD};

/// Most bytes of one chunk-size line (size, extensions and CRLF) or one trailer line.
pub const MAX_CHUNK_LINE: usize = 4096;

/// A chunked body that cannot be read one way only.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum ChunkError {
    /// The chunk-size line is not `1*HEXDIG [ chunk-ext ] CRLF`, or the size overflows.
    #[error("invalid chunk-size line {0:?}")]
    Size(String),
    /// Chunk data not followed by CRLF.
    #[error("chunk data not followed by CRLF")]
    DataEnd,
    /// A line ended by a bare LF, or holding a bare CR.
    #[error("a chunk line not ended by CRLF")]
    LineEnd,
    /// A chunk-size or trailer line longer than [`MAX_CHUNK_LINE`].
    #[error("a chunk line longer than {MAX_CHUNK_LINE} bytes")]
    LineTooLong,
    /// A folded or malformed trailer line, or a trailer section longer than [`MAX_HEAD`].
    #[error("invalid trailer section: {0}")]
    Trailer(&'static str),
}

/// Where a body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// This many bytes of a Content-Length body to go.
    Length(u64),
    /// Before a chunk-size line.
    Size,
    /// This many bytes of chunk data to go.
    Data(u64),
    /// Before the CRLF that ends a chunk's data.
    DataEnd,
    /// In the trailer section, after this many bytes of it.
    Trailer(usize),
    /// Complete.
    Done,
}

/// One request body, followed through its framing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BodyReader {
    /// Where the body is.
    state: State,
}

impl BodyReader {
    /// The reader of a body framed as `body`.
    pub fn new(body: Body) -> BodyReader {
        let state = match body {
            Body::None | Body::Length(0) => State::Done,
            Body::Length(n) => State::Length(n),
            Body::Chunked => State::Size,
        };
        BodyReader { state }
    }

    /// Whether the body is complete.
    pub fn done(&self) -> bool {
        self.state == State::Done
    }

    /// How many bytes at the start of `buf` belong to the body, never past its end. Fewer than
    /// all (and not done): the rest of a line has to arrive first.
    pub fn advance(&mut self, buf: &[u8]) -> Result<usize, ChunkError> {
        let mut at = 0;
        loop {
            let rest = &buf[at..];
            match self.state {
                State::Done => return Ok(at),
                State::Length(n) | State::Data(n) => {
                    let k = n.min(rest.len() as u64);
                    at += k as usize;
                    let chunk = matches!(self.state, State::Data(_));
                    self.state = match (chunk, n - k) {
                        (false, 0) => State::Done,
                        (true, 0) => State::DataEnd,
                        (false, left) => State::Length(left),
                        (true, left) => State::Data(left),
                    };
                    if k < n {
                        return Ok(at);
                    }
                }
                State::DataEnd => match rest {
                    [] | [b'\r'] => return Ok(at),
                    [b'\r', b'\n', ..] => {
                        at += 2;
                        self.state = State::Size;
                    }
                    _ => return Err(ChunkError::DataEnd),
                },
                State::Size => {
                    let Some(line) = line(rest)? else { return Ok(at) };
                    let size = chunk_size(&line[..line.len() - 2])?;
                    at += line.len();
                    self.state = if size == 0 { State::Trailer(0) } else { State::Data(size) };
                }
                State::Trailer(seen) => {
                    let Some(line) = line(rest)? else { return Ok(at) };
                    at += line.len();
                    if line == b"\r\n" {
                        self.state = State::Done;
                        continue;
                    }
                    if matches!(line[0], b' ' | b'\t') {
                        return Err(ChunkError::Trailer("a folded line"));
                    }
                    if !line.contains(&b':') {
                        return Err(ChunkError::Trailer("a line without a colon"));
                    }
                    if seen + line.len() > MAX_HEAD {
                        return Err(ChunkError::Trailer("longer than the head limit"));
                    }
                    self.state = State::Trailer(seen + line.len());
                }
            }
        }
    }
}

/// The complete line at the start of `rest`, its CRLF included; `None` while it is arriving.
fn line(rest: &[u8]) -> Result<Option<&[u8]>, ChunkError> {
    let Some(lf) = rest.iter().take(MAX_CHUNK_LINE).position(|&b| b == b'\n') else {
        return if rest.len() >= MAX_CHUNK_LINE { Err(ChunkError::LineTooLong) } else { Ok(None) };
    };
    let line = &rest[..=lf];
    match line.iter().position(|&b| b == b'\r') {
        Some(cr) if cr + 2 == line.len() => Ok(Some(line)),
        _ => Err(ChunkError::LineEnd),
    }
}

/// The size of a chunk-size line without its CRLF: 1 to 16 hex digits, then nothing or
/// extensions (`;`, after optional whitespace) of visible characters and whitespace.
fn chunk_size(line: &[u8]) -> Result<u64, ChunkError> {
    let bad = || ChunkError::Size(String::from_utf8_lossy(line).into_owned());
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    if digits == 0 || digits > 16 {
        return Err(bad());
    }
    let ext = &line[digits..];
    let ext_start = ext.iter().position(|b| !matches!(b, b' ' | b'\t')).map(|i| &ext[i..]);
    let ext_ok = match ext_start {
        None => ext.is_empty(),
        Some(ext) => ext[0] == b';' && ext.iter().all(|&b| b == b'\t' || (b' '..=b'~').contains(&b) || b >= 0x80),
    };
    if !ext_ok {
        return Err(bad());
    }
    let hex = std::str::from_utf8(&line[..digits]).map_err(|_| bad())?;
    u64::from_str_radix(hex, 16).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Feeds `wire` whole and one byte at a time: the body's length and what follows it.
    fn read(body: Body, wire: &[u8]) -> Result<usize, ChunkError> {
        let mut whole = BodyReader::new(body);
        let n = whole.advance(wire)?;
        assert!(whole.done(), "complete: {:?}", String::from_utf8_lossy(wire));
        let mut trickled = BodyReader::new(body);
        let mut at = 0;
        for end in 1..=wire.len() {
            at += trickled.advance(&wire[at..end])?;
            if trickled.done() {
                break;
            }
        }
        assert_eq!((at, trickled.done()), (n, true), "one byte at a time");
        Ok(n)
    }

    #[test]
    fn bodies_end_where_their_framing_says() {
        assert_eq!(read(Body::None, b"GET / HTTP/1.1\r\n"), Ok(0));
        assert_eq!(read(Body::Length(5), b"helloGET"), Ok(5));
        let chunked = b"5\r\nhello\r\n1;ext=\"a b\"\r\n!\r\n0\r\nX-Sum: 1\r\n\r\nGET / HTTP/1.1";
        assert_eq!(read(Body::Chunked, chunked), Ok(chunked.len() - 14));
        assert_eq!(read(Body::Chunked, b"A\r\n0123456789\r\n0\r\n\r\nnext"), Ok(20));
        assert_eq!(read(Body::Chunked, b"0 ;x\r\n\r\n"), Ok(8));
    }

    #[test]
    fn ambiguous_chunks_are_refused() {
        let refused = |wire: &[u8]| BodyReader::new(Body::Chunked).advance(wire).unwrap_err();
        for wire in [
            &b"x\r\n"[..],
            b"-1\r\n",
            b"+5\r\nhello\r\n",
            b"5 5\r\nhello\r\n",
            b"0x5\r\nhello\r\n",
            b"\r\n",
            b"11111111111111111\r\n",
        ] {
            assert!(matches!(refused(wire), ChunkError::Size(_)), "{:?}", String::from_utf8_lossy(wire));
        }
        assert_eq!(refused(b"5\nhello\r\n"), ChunkError::LineEnd, "bare LF");
        assert_eq!(refused(b"5\r\r\nhello\r\n"), ChunkError::LineEnd, "bare CR");
        assert_eq!(refused(b"5\r\nhelloX\r\n"), ChunkError::DataEnd, "data longer than its size");
        assert_eq!(refused(b"0\r\nX: 1\r\n folded\r\n\r\n"), ChunkError::Trailer("a folded line"));
        assert_eq!(refused(&[b'1'; MAX_CHUNK_LINE]), ChunkError::LineTooLong);
        let mut partial = BodyReader::new(Body::Chunked);
        assert_eq!(partial.advance(&[b'1'; 100]), Ok(0), "a size line still arriving");
        assert!(!partial.done());
    }
}
