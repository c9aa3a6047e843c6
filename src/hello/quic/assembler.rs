//! The frames of a decrypted Initial packet, and the CRYPTO stream they carry, put back in
//! order across packets and datagrams.

use super::error::QuicError;
use super::packet::{
    FRAME_ACK, FRAME_ACK_ECN, FRAME_CONNECTION_CLOSE, FRAME_CRYPTO, FRAME_PADDING, FRAME_PING, length, varint,
};
use crate::hello::parse::HelloError;

/// Most separate CRYPTO ranges held before they join up: reordering needs a few dozen.
const MAX_RANGES: usize = 256;

/// CRYPTO data received so far, as the pieces that arrived: what a flow holds grows with the
/// bytes its client sent, never with the offsets it named.
#[derive(Debug, Default)]
pub(super) struct Crypto {
    /// Received bytes by stream offset, sorted; pieces never overlap.
    pieces: Vec<(usize, Vec<u8>)>,
    /// The highest offset received, plus one.
    pub(super) end: usize,
    /// CRYPTO frames received.
    pub(super) frames: usize,
}

impl Crypto {
    /// Adds `data` at `offset`. Bytes received twice must be identical.
    pub(super) fn insert(&mut self, offset: usize, data: &[u8], cap: usize) -> Result<(), QuicError> {
        self.frames += 1;
        let end = offset.checked_add(data.len()).filter(|&e| e <= cap).ok_or(HelloError::TooLarge { limit: cap })?;
        if data.is_empty() {
            return Ok(());
        }
        // The pieces that overlap [offset, end), in order: their bytes must agree with `data`.
        let mut covered = Vec::new();
        for (s, bytes) in &self.pieces {
            let (s, e) = (*s, s + bytes.len());
            if e <= offset || s >= end {
                continue;
            }
            let (from, to) = (s.max(offset), e.min(end));
            if let Some(at) = (from..to).find(|&i| bytes[i - s] != data[i - offset]) {
                return Err(QuicError::Conflict(at as u64));
            }
            covered.push((s, e));
        }
        // Keep only what is new.
        let mut cursor = offset;
        let mut add = |at: usize, bytes: &[u8]| {
            let i = self.pieces.partition_point(|(s, _)| *s < at);
            self.pieces.insert(i, (at, bytes.to_vec()));
        };
        for (s, e) in covered {
            if s > cursor {
                add(cursor, &data[cursor - offset..s - offset]);
            }
            cursor = cursor.max(e);
        }
        if cursor < end {
            add(cursor, &data[cursor - offset..]);
        }
        self.end = self.end.max(end);
        if self.pieces.len() > MAX_RANGES {
            return Err(QuicError::Malformed("CRYPTO data in too many pieces"));
        }
        Ok(())
    }

    /// Bytes received without a gap from offset 0.
    pub(super) fn contiguous(&self) -> usize {
        let mut have = 0;
        for (s, bytes) in &self.pieces {
            if *s != have {
                break;
            }
            have += bytes.len();
        }
        have
    }

    /// The first `n` bytes (at most [`contiguous`](Self::contiguous)).
    pub(super) fn prefix(&self, n: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(n);
        for (_, bytes) in &self.pieces {
            if out.len() >= n {
                break;
            }
            out.extend_from_slice(&bytes[..bytes.len().min(n - out.len())]);
        }
        out
    }
}

/// A frame of an Initial packet, as far as snigate reads it.
pub(super) enum Frame<'a> {
    /// CRYPTO: stream offset and data.
    Crypto(usize, &'a [u8]),
    /// CONNECTION_CLOSE.
    Close,
    /// PADDING, PING or ACK.
    Other,
}

/// Calls `each` for every frame of a decrypted Initial payload: only PADDING, PING, ACK, CRYPTO
/// and CONNECTION_CLOSE may be there (RFC 9000 §17.2.2).
pub(super) fn for_each_frame<'a>(
    payload: &'a [u8],
    mut each: impl FnMut(Frame<'a>) -> Result<(), QuicError>,
) -> Result<(), QuicError> {
    const CUT: QuicError = QuicError::Malformed("truncated frame");
    if payload.is_empty() {
        return Err(QuicError::Malformed("an Initial packet without frames"));
    }
    let mut pos = 0;
    while pos < payload.len() {
        let ty = varint(payload, &mut pos).ok_or(CUT)?;
        match ty {
            FRAME_PADDING | FRAME_PING => each(Frame::Other)?,
            FRAME_ACK | FRAME_ACK_ECN => {
                let _largest = varint(payload, &mut pos).ok_or(CUT)?;
                let _delay = varint(payload, &mut pos).ok_or(CUT)?;
                let ranges = varint(payload, &mut pos).ok_or(CUT)?;
                let _first = varint(payload, &mut pos).ok_or(CUT)?;
                // Each further range is two varints of at least a byte: bounded by the payload.
                if ranges > payload.len() as u64 {
                    return Err(CUT);
                }
                let counts = if ty == FRAME_ACK_ECN { 3 } else { 0 };
                for _ in 0..ranges * 2 + counts {
                    varint(payload, &mut pos).ok_or(CUT)?;
                }
                each(Frame::Other)?;
            }
            FRAME_CRYPTO => {
                let offset = length(payload, &mut pos).ok_or(CUT)?;
                let len = length(payload, &mut pos).ok_or(CUT)?;
                let data = payload.get(pos..pos.checked_add(len).ok_or(CUT)?).ok_or(CUT)?;
                pos += len;
                each(Frame::Crypto(offset, data))?;
            }
            FRAME_CONNECTION_CLOSE => {
                let _code = varint(payload, &mut pos).ok_or(CUT)?;
                let _frame = varint(payload, &mut pos).ok_or(CUT)?;
                let len = length(payload, &mut pos).ok_or(CUT)?;
                pos = pos.checked_add(len).filter(|&p| p <= payload.len()).ok_or(CUT)?;
                each(Frame::Close)?;
            }
            other => return Err(QuicError::Frame(other)),
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crypto_ranges_merge_and_refuse_conflicts() {
        let mut c = Crypto::default();
        c.insert(4, b"efgh", 100).unwrap();
        assert_eq!(c.contiguous(), 0);
        c.insert(0, b"abcd", 100).unwrap();
        assert_eq!(c.contiguous(), 8);
        c.insert(2, b"cdef", 100).unwrap();
        assert_eq!(c.prefix(8), b"abcdefgh");
        assert_eq!(c.insert(6, b"gX", 100), Err(QuicError::Conflict(7)));
        c.insert(20, b"z", 100).unwrap();
        c.insert(6, b"ghij", 100).unwrap();
        assert_eq!((c.contiguous(), c.end), (10, 21));
        assert_eq!(c.pieces.iter().map(|(_, b)| b.len()).sum::<usize>(), 11, "each byte held once");
        assert!(matches!(c.insert(99, b"zz", 100), Err(QuicError::Hello(HelloError::TooLarge { .. }))));
        // An offset near the cap holds the bytes that arrived, not the offset's worth.
        let mut far = Crypto::default();
        far.insert(60_000, b"x", 65_536).unwrap();
        assert_eq!(far.pieces.iter().map(|(_, b)| b.capacity()).sum::<usize>(), 1);
    }
}
