//! Builders of client Initials for tests, benchmarks and fuzz targets; the crate re-exports
//! them, hidden, from `snigate::internal`.

use super::keys::TAG;
use super::packet::{FRAME_CRYPTO, MIN_INITIAL_DATAGRAM, put_varint};

pub use super::packet::seal_initial;

/// Frames for a client Initial: `frames`, then PADDING up to the least datagram a client may
/// send an Initial in.
pub fn padded(frames: &[u8], dcid: &[u8], scid: &[u8]) -> Vec<u8> {
    let overhead = 1 + 4 + 2 + dcid.len() + scid.len() + 1 + 2 + 4 + TAG;
    let mut payload = frames.to_vec();
    payload.resize(payload.len().max(MIN_INITIAL_DATAGRAM.saturating_sub(overhead)), 0);
    payload
}

/// A CRYPTO frame carrying `data` at `offset`.
pub fn crypto_frame(offset: u64, data: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    put_varint(&mut frame, FRAME_CRYPTO);
    put_varint(&mut frame, offset);
    put_varint(&mut frame, data.len() as u64);
    frame.extend_from_slice(data);
    frame
}
