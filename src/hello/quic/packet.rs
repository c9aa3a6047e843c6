//! The long-header codec (RFC 9000 §17.2, RFC 9369 §3.2): header fields, packet types (which
//! each version numbers its own way), varints, and opening and sealing Initial packets.

use ring::aead::Aad;

use super::error::QuicError;
use super::keys::{Keys, Side, TAG, Version};

/// A client's datagrams that carry Initial packets are at least this long (RFC 9000 §14.1).
pub const MIN_INITIAL_DATAGRAM: usize = 1200;
/// TLS alert access_denied (49) as a QUIC crypto error (RFC 9001 §4.8).
pub const ACCESS_DENIED: u64 = 0x0100 + 49;
/// The version field of a Version Negotiation packet (RFC 9000 §17.2.1).
pub const VERSION_NEGOTIATION: u32 = 0;
/// The longest connection ID (RFC 9000 §17.2).
const MAX_CID: usize = 20;

/// The first byte's header-form bit: set on long-header packets, the ones that can start a
/// connection.
const LONG_HEADER: u8 = 0x80;
/// The first byte's fixed bit: 1 in every QUIC packet (RFC 9000 §17.2).
pub const FIXED_BIT: u8 = 0x40;
/// A long header's packet type bits.
const TYPE_MASK: u8 = 0x30;
const TYPE_SHIFT: u32 = TYPE_MASK.trailing_zeros();
/// The first byte's bits under header protection in a long header (RFC 9001 §5.4.1).
const PROTECTED_BITS: u8 = 0x0f;
/// Reserved bits: 0 once header protection is removed (RFC 9000 §17.2).
const RESERVED_BITS: u8 = 0x0c;
/// The packet number's length, less one.
const PN_LEN_MASK: u8 = 0x03;

// The frame types (RFC 9000 §19) that an Initial packet may carry.
pub(super) const FRAME_PADDING: u64 = 0x00;
pub(super) const FRAME_PING: u64 = 0x01;
pub(super) const FRAME_ACK: u64 = 0x02;
pub(super) const FRAME_ACK_ECN: u64 = 0x03;
pub(super) const FRAME_CRYPTO: u64 = 0x06;
pub(super) const FRAME_CONNECTION_CLOSE: u64 = 0x1c;

/// Whether `first`, a packet's first byte, starts a long-header packet.
pub const fn is_long_header(first: u8) -> bool {
    first & LONG_HEADER != 0
}

/// A long-header packet's type, whatever number its version gives it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PacketType {
    /// Initial: carries the ClientHello.
    Initial = 0,
    /// 0-RTT: early application data.
    ZeroRtt = 1,
    /// Handshake.
    Handshake = 2,
    /// Retry: only a server sends it.
    Retry = 3,
}

impl PacketType {
    /// The type bits of this type in `version`: the discriminants are v1's numbers, and v2
    /// numbers each type one higher, Retry wrapping to 0 (RFC 9369 §3.2).
    const fn bits(self, version: Version) -> u8 {
        let n = self as u8;
        let n = match version {
            Version::V1 => n,
            Version::V2 => (n + 1) % 4,
        };
        n << TYPE_SHIFT
    }
}

/// The type of a long-header packet of `version` whose first byte is `first`.
const fn packet_type(version: Version, first: u8) -> PacketType {
    let n = (first & TYPE_MASK) >> TYPE_SHIFT;
    let n = match version {
        Version::V1 => n,
        Version::V2 => (n + 3) % 4,
    };
    match n {
        0 => PacketType::Initial,
        1 => PacketType::ZeroRtt,
        2 => PacketType::Handshake,
        _ => PacketType::Retry,
    }
}

/// A connection ID, held inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Cid {
    len: u8,
    bytes: [u8; MAX_CID],
}

impl Cid {
    /// The ID, or `None` when longer than a connection ID may be.
    pub fn new(id: &[u8]) -> Option<Cid> {
        let mut bytes = [0; MAX_CID];
        bytes.get_mut(..id.len())?.copy_from_slice(id);
        Some(Cid { len: u8::try_from(id.len()).ok()?, bytes })
    }

    /// The ID's bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }
}

impl std::fmt::Debug for Cid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&hex::encode(self.as_bytes()))
    }
}

/// A long-header packet's cleartext fields, as offsets into its datagram.
#[derive(Debug, Clone, Copy)]
pub struct LongHeader<'a> {
    /// The first byte, still header-protected (the type bits are not).
    pub first: u8,
    /// The version field.
    pub version: u32,
    /// Destination Connection ID.
    pub dcid: &'a [u8],
    /// Source Connection ID.
    pub scid: &'a [u8],
    /// The packet type, decoded once the version is known to be one snigate reads.
    ty: Option<PacketType>,
    /// Where the packet number starts (Initial, 0-RTT and Handshake packets).
    pn_offset: usize,
    /// Where the packet ends (the next coalesced packet starts).
    pub end: usize,
}

impl LongHeader<'_> {
    /// The packet type, when the version is one snigate reads (the type bits mean nothing
    /// without it).
    pub const fn packet_type(&self) -> Option<PacketType> {
        self.ty
    }

    /// Whether this is an Initial packet of a version snigate reads.
    pub fn is_initial(&self) -> bool {
        self.ty == Some(PacketType::Initial)
    }
}

/// A QUIC variable-length integer at `*pos`, advancing it.
pub(super) fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
    let first = *buf.get(*pos)?;
    let len = 1usize << (first >> 6);
    let bytes = buf.get(*pos..*pos + len)?;
    let mut v = u64::from(first & 0x3f);
    for &b in &bytes[1..] {
        v = v << 8 | u64::from(b);
    }
    *pos += len;
    Some(v)
}

/// Appends `v` as a QUIC variable-length integer (at most 2^62 - 1).
pub(super) fn put_varint(out: &mut Vec<u8>, v: u64) {
    match v {
        0..0x40 => out.push(v as u8),
        0x40..0x4000 => out.extend_from_slice(&(v as u16 | 0x4000).to_be_bytes()),
        0x4000..0x4000_0000 => out.extend_from_slice(&(v as u32 | 0x8000_0000).to_be_bytes()),
        _ => out.extend_from_slice(&(v | 0xc000_0000_0000_0000).to_be_bytes()),
    }
}

/// A varint as a `usize` offset or length.
pub(super) fn length(buf: &[u8], pos: &mut usize) -> Option<usize> {
    varint(buf, pos).and_then(|v| usize::try_from(v).ok())
}

/// Parses the long header of the packet at the start of `packet` (RFC 9000 §17.2). The packet
/// number and payload fields are located only for Initial, 0-RTT and Handshake packets; a
/// Retry or Version Negotiation packet ends the datagram.
pub fn long_header(packet: &[u8]) -> Result<LongHeader<'_>, QuicError> {
    const SHORT: QuicError = QuicError::Malformed("truncated long header");
    let first = *packet.first().ok_or(SHORT)?;
    if !is_long_header(first) {
        return Err(QuicError::NotInitial("a short-header packet"));
    }
    let version = u32::from_be_bytes(packet.get(1..5).ok_or(SHORT)?.try_into().map_err(|_| SHORT)?);
    let mut pos = 5;
    let cid = |pos: &mut usize| -> Result<&[u8], QuicError> {
        let len = usize::from(*packet.get(*pos).ok_or(SHORT)?);
        if len > MAX_CID {
            return Err(QuicError::Malformed("connection ID longer than 20 bytes"));
        }
        let id = packet.get(*pos + 1..*pos + 1 + len).ok_or(SHORT)?;
        *pos += 1 + len;
        Ok(id)
    };
    let dcid = cid(&mut pos)?;
    let scid = cid(&mut pos)?;
    let ty = Version::from_wire(version).map(|v| packet_type(v, first));
    let mut header = LongHeader { first, version, dcid, scid, ty, pn_offset: packet.len(), end: packet.len() };
    // Everything but a Retry carries a length.
    let Some(ty) = ty else { return Ok(header) };
    if ty == PacketType::Retry {
        return Ok(header);
    }
    if ty == PacketType::Initial {
        let token = length(packet, &mut pos).ok_or(SHORT)?;
        pos = pos.checked_add(token).filter(|&p| p <= packet.len()).ok_or(SHORT)?;
    }
    let len = length(packet, &mut pos).ok_or(SHORT)?;
    header.pn_offset = pos;
    header.end = pos
        .checked_add(len)
        .filter(|&e| e <= packet.len())
        .ok_or(QuicError::Malformed("packet length beyond its datagram"))?;
    Ok(header)
}

/// Removes header protection from `packet` in place and decrypts its payload: the plaintext's
/// range within `packet`. `header` is the packet's long header.
fn open(keys: &Keys, packet: &mut [u8], header: &LongHeader<'_>) -> Result<std::ops::Range<usize>, QuicError> {
    let pn_offset = header.pn_offset;
    let sample =
        packet.get(pn_offset + 4..pn_offset + 4 + TAG).ok_or(QuicError::Malformed("packet too short to sample"))?;
    let mask = keys.mask(sample)?;
    packet[0] ^= mask[0] & PROTECTED_BITS;
    // The reserved bits must be 0 (RFC 9000 §17.2): a server drops a packet where they are not,
    // and would then read another hello than the one snigate decided on.
    if packet[0] & RESERVED_BITS != 0 {
        return Err(QuicError::Malformed("reserved header bits are set"));
    }
    let pn_len = usize::from(packet[0] & PN_LEN_MASK) + 1;
    let mut pn = 0u64;
    for (i, m) in mask[1..=pn_len].iter().enumerate() {
        packet[pn_offset + i] ^= m;
        pn = pn << 8 | u64::from(packet[pn_offset + i]);
    }
    let payload = pn_offset + pn_len;
    if header.end < payload + TAG {
        return Err(QuicError::Malformed("packet shorter than its tag"));
    }
    let (aad, rest) = packet[..header.end].split_at_mut(payload);
    let plain = keys.aead.open_in_place(keys.nonce(pn), Aad::from(&*aad), rest);
    let len = plain.map_err(|_| QuicError::Malformed("Initial packet does not decrypt"))?.len();
    Ok(payload..payload + len)
}

thread_local! {
    /// Where packets are decrypted: one buffer per thread, so that a flow holds none.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Decrypts a copy of `packet` (header protection removed) and hands `then` its payload: the
/// outer error is the packet's (it does not open with `keys`), the inner one `then`'s.
pub(super) fn with_opened<T>(
    keys: &Keys,
    packet: &[u8],
    header: &LongHeader<'_>,
    then: impl FnOnce(&[u8]) -> Result<T, QuicError>,
) -> Result<Result<T, QuicError>, QuicError> {
    SCRATCH.with_borrow_mut(|buf| {
        buf.clear();
        buf.extend_from_slice(packet);
        let plain = open(keys, buf, header)?;
        Ok(then(&buf[plain]))
    })
}

/// Seals an Initial packet of `side` carrying `payload` (its frames), with packet number `pn`
/// at full length: the inverse of the inspector's opening, for denials and tests.
pub fn seal_initial(
    version: Version,
    original_dcid: &[u8],
    side: Side,
    (dcid, scid): (&[u8], &[u8]),
    pn: u32,
    payload: &[u8],
) -> Vec<u8> {
    const PN_LEN: usize = size_of::<u32>();
    let keys = Keys::new(version, original_dcid, side);
    let mut out = vec![LONG_HEADER | FIXED_BIT | PacketType::Initial.bits(version) | (PN_LEN - 1) as u8];
    out.extend_from_slice(&version.wire().to_be_bytes());
    for id in [dcid, scid] {
        out.push(u8::try_from(id.len()).unwrap_or(0));
        out.extend_from_slice(id);
    }
    put_varint(&mut out, 0); // no token
    put_varint(&mut out, (PN_LEN + payload.len() + TAG) as u64);
    let pn_offset = out.len();
    out.extend_from_slice(&pn.to_be_bytes());
    let mut body = payload.to_vec();
    let tag = keys.aead.seal_in_place_separate_tag(keys.nonce(u64::from(pn)), Aad::from(&out[..]), &mut body);
    out.extend_from_slice(&body);
    out.extend_from_slice(tag.expect("sealing an Initial packet").as_ref());
    let mask = keys.mask(&out[pn_offset + PN_LEN..pn_offset + PN_LEN + TAG]).expect("a full sample");
    out[0] ^= mask[0] & PROTECTED_BITS;
    for (b, m) in out[pn_offset..pn_offset + PN_LEN].iter_mut().zip(&mask[1..]) {
        *b ^= m;
    }
    out
}

/// The server Initial that refuses a client: CONNECTION_CLOSE with crypto error `error` (a TLS
/// alert), addressed to the client's Source Connection ID and protected with the server Initial
/// keys of the client's first Destination Connection ID. Clients fail at once (and browsers fall
/// back to TCP).
pub fn close_datagram(version: Version, original_dcid: &[u8], client_scid: &[u8], error: u64, reason: &str) -> Vec<u8> {
    let mut frame = Vec::new();
    put_varint(&mut frame, FRAME_CONNECTION_CLOSE);
    put_varint(&mut frame, error);
    put_varint(&mut frame, FRAME_CRYPTO); // raised while reading CRYPTO
    put_varint(&mut frame, reason.len() as u64);
    frame.extend_from_slice(reason.as_bytes());
    seal_initial(version, original_dcid, Side::Server, (client_scid, original_dcid), 0, &frame)
}

/// A Version Negotiation packet (RFC 9000 §17.2.1) answering a client Initial of a version
/// snigate cannot read: the versions it can, so that the client may try again in one of them.
/// Send it only for a datagram of at least [`MIN_INITIAL_DATAGRAM`] (no amplification).
pub fn version_negotiation(client_dcid: &[u8], client_scid: &[u8]) -> Vec<u8> {
    let mut out = vec![LONG_HEADER | FIXED_BIT];
    out.extend_from_slice(&VERSION_NEGOTIATION.to_be_bytes());
    for id in [client_scid, client_dcid] {
        out.push(u8::try_from(id.len()).unwrap_or(0));
        out.extend_from_slice(id);
    }
    for v in [Version::V1, Version::V2] {
        out.extend_from_slice(&v.wire().to_be_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn varints_round_trip() {
        for v in [0, 63, 64, 16_383, 16_384, 1_073_741_823, 1_073_741_824, (1 << 62) - 1] {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            let mut pos = 0;
            assert_eq!(varint(&out, &mut pos), Some(v));
            assert_eq!(pos, out.len());
        }
    }

    /// RFC 9000 §17.2 and RFC 9369 §3.2: the type bits of each packet type.
    #[test]
    fn packet_types_follow_each_versions_numbers() {
        use PacketType::*;
        for (version, types) in
            [(Version::V1, [Initial, ZeroRtt, Handshake, Retry]), (Version::V2, [Retry, Initial, ZeroRtt, Handshake])]
        {
            for (n, ty) in (0u8..).zip(types) {
                let first = LONG_HEADER | FIXED_BIT | n << TYPE_SHIFT | PROTECTED_BITS;
                assert_eq!(packet_type(version, first), ty, "{version:?} {n}");
                assert_eq!(ty.bits(version), n << TYPE_SHIFT, "{version:?} {ty:?}");
            }
        }
    }
}
