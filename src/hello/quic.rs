//! The ClientHello of a QUIC connection (RFC 9000, RFC 9001 §5, RFC 9369), read from the
//! client's Initial packets without terminating anything. Pure: datagrams in, a three-way
//! answer out; no I/O, no clock.
//!
//! Initial packets are protected with keys that anyone can derive from the first Destination
//! Connection ID and a published salt. [`Inspector`] derives them, removes header protection,
//! decrypts each Initial packet of each datagram (coalesced packets included), walks the frames,
//! reassembles CRYPTO data in any order across datagrams, and hands the complete ClientHello
//! to the TCP path's parser, so that both paths apply the same name rules.

use ring::aead::quic::{AES_128, HeaderProtectionKey};
use ring::aead::{AES_128_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use ring::hkdf::{HKDF_SHA256, KeyType, Prk, Salt};
use thiserror::Error;

use super::parse::{ClientHello, HelloError, HelloLimits, decode_message};
use crate::reason::Reason;

/// A client's datagrams that carry Initial packets are at least this long (RFC 9000 §14.1).
pub const MIN_INITIAL_DATAGRAM: usize = 1200;
/// The longest connection ID (RFC 9000 §17.2).
const MAX_CID: usize = 20;
/// A client's first Destination Connection ID is at least 8 bytes (RFC 9000 §7.2).
const MIN_CLIENT_DCID: usize = 8;
/// Most separate CRYPTO ranges held before they join up: reordering needs a few dozen.
const MAX_RANGES: usize = 256;
/// The AEAD tag, and the header-protection sample, are 16 bytes.
const TAG: usize = 16;
/// TLS alert access_denied (49) as a QUIC crypto error (RFC 9001 §4.8).
pub const ACCESS_DENIED: u64 = 0x0100 + 49;

/// A QUIC version whose Initial packets snigate can read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub enum Version {
    /// QUIC version 1 (RFC 9000).
    V1,
    /// QUIC version 2 (RFC 9369): another salt, other labels, renumbered packet types.
    V2,
}

impl Version {
    /// The version a packet's version field names, if snigate reads it.
    pub const fn from_wire(v: u32) -> Option<Version> {
        match v {
            1 => Some(Version::V1),
            0x6b33_43cf => Some(Version::V2),
            _ => None,
        }
    }

    /// The version field.
    pub const fn wire(self) -> u32 {
        match self {
            Version::V1 => 1,
            Version::V2 => 0x6b33_43cf,
        }
    }

    /// The long-header packet type of an Initial packet (bits 4–5 of the first byte).
    const fn initial_type(self) -> u8 {
        match self {
            Version::V1 => 0,
            Version::V2 => 1,
        }
    }

    /// The initial salt (RFC 9001 §5.2, RFC 9369 §3.3.1).
    const fn salt(self) -> [u8; 20] {
        match self {
            Version::V1 => [
                0x38, 0x76, 0x2c, 0xf7, 0xf5, 0x59, 0x34, 0xb3, 0x4d, 0x17, 0x9a, 0xe6, 0xa4, 0xc8, 0x0c, 0xad, 0xcc,
                0xbb, 0x7f, 0x0a,
            ],
            Version::V2 => [
                0x0d, 0xed, 0xe3, 0xde, 0xf7, 0x00, 0xa6, 0xdb, 0x81, 0x93, 0x81, 0xbe, 0x6e, 0x26, 0x9d, 0xcb, 0xf9,
                0xbd, 0x2e, 0xd9,
            ],
        }
    }

    /// The HKDF labels of the packet key, IV and header-protection key (RFC 9369 §3.3.2).
    const fn labels(self) -> [&'static [u8]; 3] {
        match self {
            Version::V1 => [b"quic key", b"quic iv", b"quic hp"],
            Version::V2 => [b"quicv2 key", b"quicv2 iv", b"quicv2 hp"],
        }
    }
}

/// Which endpoint's Initial keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// Protects what the client sends.
    Client,
    /// Protects what the server sends.
    Server,
}

/// The Initial key material of one side: AES-128-GCM key and IV, and the header-protection key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Secrets {
    /// The packet key.
    pub key: [u8; 16],
    /// The packet IV.
    pub iv: [u8; 12],
    /// The header-protection key.
    pub hp: [u8; 16],
}

/// HKDF output of a given length.
struct Len(usize);

impl KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// HKDF-Expand-Label (RFC 8446 §7.1) with an empty context.
fn expand_label(prk: &Prk, label: &[u8], out: &mut [u8]) {
    let len = u16::try_from(out.len()).unwrap_or(u16::MAX).to_be_bytes();
    let label_len = [u8::try_from(6 + label.len()).unwrap_or(u8::MAX)];
    let info: [&[u8]; 5] = [&len, &label_len, b"tls13 ", label, &[0]];
    // Lengths here are the fixed 12, 16 and 32 bytes: within HKDF's limit, so this cannot fail.
    if let Ok(okm) = prk.expand(&info, Len(out.len())) {
        let _ = okm.fill(out);
    }
}

impl Secrets {
    /// The Initial secrets of `side` for a connection whose client chose `dcid`.
    pub fn initial(version: Version, dcid: &[u8], side: Side) -> Secrets {
        let initial = Salt::new(HKDF_SHA256, &version.salt()).extract(dcid);
        let mut secret = [0u8; 32];
        expand_label(&initial, if side == Side::Client { b"client in" } else { b"server in" }, &mut secret);
        let prk = Prk::new_less_safe(HKDF_SHA256, &secret);
        let [key_label, iv_label, hp_label] = version.labels();
        let mut s = Secrets { key: [0; 16], iv: [0; 12], hp: [0; 16] };
        expand_label(&prk, key_label, &mut s.key);
        expand_label(&prk, iv_label, &mut s.iv);
        expand_label(&prk, hp_label, &mut s.hp);
        s
    }
}

/// One side's Initial keys, ready to open or seal packets.
struct Keys {
    aead: LessSafeKey,
    iv: [u8; 12],
    hp: HeaderProtectionKey,
}

impl Keys {
    fn new(version: Version, dcid: &[u8], side: Side) -> Keys {
        let s = Secrets::initial(version, dcid, side);
        // AES-128 takes any 16-byte key: these constructors cannot fail.
        let aead = LessSafeKey::new(UnboundKey::new(&AES_128_GCM, &s.key).expect("a 16-byte AES-128-GCM key"));
        let hp = HeaderProtectionKey::new(&AES_128, &s.hp).expect("a 16-byte AES-128 key");
        Keys { aead, iv: s.iv, hp }
    }

    fn nonce(&self, pn: u64) -> Nonce {
        let mut nonce = self.iv;
        for (n, p) in nonce[4..].iter_mut().zip(pn.to_be_bytes()) {
            *n ^= p;
        }
        Nonce::assume_unique_for_key(nonce)
    }

    /// The 5-byte header-protection mask for the 16 bytes of `sample`.
    fn mask(&self, sample: &[u8]) -> Result<[u8; 5], QuicError> {
        self.hp.new_mask(sample).map_err(|_| QuicError::Malformed("header protection sample"))
    }
}

/// Why datagrams are not an acceptable QUIC Initial. Each variant maps to one [`Reason`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QuicError {
    /// A client's datagram with an Initial packet under 1,200 bytes (RFC 9000 §14.1).
    #[error("Initial datagram of {0} bytes: clients pad them to at least 1200")]
    Undersized(usize),
    /// The first packet of a flow is not a long-header Initial packet.
    #[error("not a QUIC Initial: {0}")]
    NotInitial(&'static str),
    /// A version snigate cannot read, so cannot filter.
    #[error("QUIC version {0:#010x} is not one snigate can read")]
    Version(u32),
    /// Packet framing or frames are broken, or the packet does not decrypt.
    #[error("malformed QUIC Initial: {0}")]
    Malformed(&'static str),
    /// A frame that an Initial packet may not carry.
    #[error("frame type {0:#x} is not allowed in an Initial packet")]
    Frame(u64),
    /// Two CRYPTO frames carry different bytes for the same offset: a server could read either.
    #[error("conflicting CRYPTO data at offset {0}")]
    Conflict(u64),
    /// The hello did not complete within the datagrams allowed.
    #[error("ClientHello not complete within {0} datagrams")]
    TooManyDatagrams(usize),
    /// The client closed the connection (CONNECTION_CLOSE) before its hello was complete.
    #[error("the client closed the connection")]
    Closed,
    /// The reassembled ClientHello, as the TCP path's parser judges it.
    #[error(transparent)]
    Hello(#[from] HelloError),
}

impl QuicError {
    /// The metric and log reason for this error.
    pub fn reason(&self) -> Reason {
        match self {
            QuicError::Version(_) => Reason::QuicVersion,
            QuicError::TooManyDatagrams(_) => Reason::HelloTooLarge,
            QuicError::Closed => Reason::ClientClosed,
            QuicError::Hello(e) => e.reason(),
            QuicError::Undersized(_)
            | QuicError::NotInitial(_)
            | QuicError::Malformed(_)
            | QuicError::Frame(_)
            | QuicError::Conflict(_) => Reason::Malformed,
        }
    }
}

/// The inspector's answer for the datagrams seen so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Inspect {
    /// A complete, valid ClientHello.
    Complete(ClientHello),
    /// More datagrams are needed.
    Incomplete,
    /// Not an acceptable QUIC Initial: the flow must be denied.
    Invalid(QuicError),
}

/// Limits of one inspection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuicLimits {
    /// The ClientHello's limits (size cap, underscores), as on TCP. The cap bounds the highest
    /// CRYPTO offset too.
    pub hello: HelloLimits,
    /// Most datagrams the hello may span.
    pub max_datagrams: usize,
}

/// Default for [`QuicLimits::max_datagrams`]: a post-quantum hello spans 2 or 3.
pub const DEFAULT_MAX_DATAGRAMS: usize = 8;

/// A connection ID (at most 20 bytes), held inline.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Cid {
    len: u8,
    bytes: [u8; MAX_CID],
}

impl Cid {
    /// The ID, or `None` when longer than 20 bytes.
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
    /// Where the packet number starts (Initial, 0-RTT and Handshake packets).
    pn_offset: usize,
    /// Where the packet ends (the next coalesced packet starts).
    pub end: usize,
}

impl LongHeader<'_> {
    /// The packet type bits (their meaning depends on the version).
    pub const fn packet_type(&self) -> u8 {
        (self.first >> 4) & 3
    }

    /// Whether this is an Initial packet of a version snigate reads.
    pub fn is_initial(&self) -> bool {
        Version::from_wire(self.version).is_some_and(|v| self.packet_type() == v.initial_type())
    }
}

/// A QUIC variable-length integer at `*pos`, advancing it.
fn varint(buf: &[u8], pos: &mut usize) -> Option<u64> {
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
fn put_varint(out: &mut Vec<u8>, v: u64) {
    match v {
        0..0x40 => out.push(v as u8),
        0x40..0x4000 => out.extend_from_slice(&(v as u16 | 0x4000).to_be_bytes()),
        0x4000..0x4000_0000 => out.extend_from_slice(&(v as u32 | 0x8000_0000).to_be_bytes()),
        _ => out.extend_from_slice(&(v | 0xc000_0000_0000_0000).to_be_bytes()),
    }
}

/// A varint as a `usize` offset or length.
fn length(buf: &[u8], pos: &mut usize) -> Option<usize> {
    varint(buf, pos).and_then(|v| usize::try_from(v).ok())
}

/// Parses the long header of the packet at the start of `packet` (RFC 9000 §17.2). The packet
/// number and payload fields are located only for Initial, 0-RTT and Handshake packets; a
/// Retry or Version Negotiation packet ends the datagram.
pub fn long_header(packet: &[u8]) -> Result<LongHeader<'_>, QuicError> {
    const SHORT: QuicError = QuicError::Malformed("truncated long header");
    let first = *packet.first().ok_or(SHORT)?;
    if first & 0x80 == 0 {
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
    let mut header = LongHeader { first, version, dcid, scid, pn_offset: packet.len(), end: packet.len() };
    let Some(v) = Version::from_wire(version) else { return Ok(header) };
    let ty = header.packet_type();
    // Retry: v1 3, v2 0. Everything else carries a length.
    if ty == (v.initial_type() + 3) % 4 {
        return Ok(header);
    }
    if ty == v.initial_type() {
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
    packet[0] ^= mask[0] & 0x0f;
    // The reserved bits must be 0 (RFC 9000 §17.2): a server drops a packet where they are not,
    // and would then read another hello than the one snigate decided on.
    if packet[0] & 0x0c != 0 {
        return Err(QuicError::Malformed("reserved header bits are set"));
    }
    let pn_len = usize::from(packet[0] & 3) + 1;
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
fn with_opened<T>(
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

/// Seals an Initial packet of `side` carrying `payload` (its frames), with a 4-byte packet
/// number: the inverse of [`Inspector::push`]'s opening, for denials and tests.
pub fn seal_initial(
    version: Version,
    original_dcid: &[u8],
    side: Side,
    (dcid, scid): (&[u8], &[u8]),
    pn: u32,
    payload: &[u8],
) -> Vec<u8> {
    let keys = Keys::new(version, original_dcid, side);
    let mut out = vec![0xc0 | version.initial_type() << 4 | 3];
    out.extend_from_slice(&version.wire().to_be_bytes());
    for id in [dcid, scid] {
        out.push(u8::try_from(id.len()).unwrap_or(0));
        out.extend_from_slice(id);
    }
    put_varint(&mut out, 0); // no token
    put_varint(&mut out, (4 + payload.len() + TAG) as u64);
    let pn_offset = out.len();
    out.extend_from_slice(&pn.to_be_bytes());
    let mut body = payload.to_vec();
    let tag = keys.aead.seal_in_place_separate_tag(keys.nonce(u64::from(pn)), Aad::from(&out[..]), &mut body);
    out.extend_from_slice(&body);
    out.extend_from_slice(tag.expect("sealing an Initial packet").as_ref());
    let mask = keys.mask(&out[pn_offset + 4..pn_offset + 4 + TAG]).expect("a 16-byte sample");
    out[0] ^= mask[0] & 0x0f;
    for (b, m) in out[pn_offset..pn_offset + 4].iter_mut().zip(&mask[1..]) {
        *b ^= m;
    }
    out
}

/// The server Initial that refuses a client: CONNECTION_CLOSE with crypto error `error` (a TLS
/// alert), addressed to the client's Source Connection ID and protected with the server Initial
/// keys of the client's first Destination Connection ID. Clients fail at once (and browsers fall
/// back to TCP).
pub fn close_datagram(version: Version, original_dcid: &[u8], client_scid: &[u8], error: u64, reason: &str) -> Vec<u8> {
    let mut frame = vec![0x1c];
    put_varint(&mut frame, error);
    put_varint(&mut frame, 0x06); // raised while reading CRYPTO
    put_varint(&mut frame, reason.len() as u64);
    frame.extend_from_slice(reason.as_bytes());
    seal_initial(version, original_dcid, Side::Server, (client_scid, original_dcid), 0, &frame)
}

/// A Version Negotiation packet (RFC 9000 §17.2.1) answering a client Initial of a version
/// snigate cannot read: the versions it can, so that the client may try again in one of them.
/// Send it only for a datagram of at least 1,200 bytes (no amplification).
pub fn version_negotiation(client_dcid: &[u8], client_scid: &[u8]) -> Vec<u8> {
    let mut out = vec![0xc0, 0, 0, 0, 0];
    for id in [client_scid, client_dcid] {
        out.push(u8::try_from(id.len()).unwrap_or(0));
        out.extend_from_slice(id);
    }
    for v in [Version::V1, Version::V2] {
        out.extend_from_slice(&v.wire().to_be_bytes());
    }
    out
}

/// Frames for a client Initial: `frames`, then PADDING up to a 1,200-byte datagram (for tests
/// and benchmarks that build Initials).
pub fn padded(frames: &[u8], dcid: &[u8], scid: &[u8]) -> Vec<u8> {
    let overhead = 1 + 4 + 2 + dcid.len() + scid.len() + 1 + 2 + 4 + TAG;
    let mut payload = frames.to_vec();
    payload.resize(payload.len().max(MIN_INITIAL_DATAGRAM.saturating_sub(overhead)), 0);
    payload
}

/// A CRYPTO frame carrying `data` at `offset`.
pub fn crypto_frame(offset: u64, data: &[u8]) -> Vec<u8> {
    let mut frame = vec![0x06];
    put_varint(&mut frame, offset);
    put_varint(&mut frame, data.len() as u64);
    frame.extend_from_slice(data);
    frame
}

/// CRYPTO data received so far, as the pieces that arrived: what a flow holds grows with the
/// bytes its client sent, never with the offsets it named.
#[derive(Debug, Default)]
struct Crypto {
    /// Received bytes by stream offset, sorted; pieces never overlap.
    pieces: Vec<(usize, Vec<u8>)>,
    /// The highest offset received, plus one.
    end: usize,
    /// CRYPTO frames received.
    frames: usize,
}

impl Crypto {
    /// Adds `data` at `offset`. Bytes received twice must be identical.
    fn insert(&mut self, offset: usize, data: &[u8], cap: usize) -> Result<(), QuicError> {
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
    fn contiguous(&self) -> usize {
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
    fn prefix(&self, n: usize) -> Vec<u8> {
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

/// The first Initial packet's identity: what the flow's later packets, and a denial, refer to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Initial {
    /// The version.
    pub version: Version,
    /// The client's first Destination Connection ID (the Initial keys derive from it).
    pub dcid: Cid,
    /// The client's Source Connection ID.
    pub scid: Cid,
}

/// Reads one flow's ClientHello from its client's datagrams.
pub struct Inspector {
    limits: QuicLimits,
    /// Known once the first Initial packet is read.
    initial: Option<(Initial, Keys)>,
    crypto: Crypto,
    /// Datagrams pushed.
    datagrams: usize,
    /// Their bytes.
    wire: usize,
}

impl Inspector {
    /// An inspector for a new flow.
    pub fn new(limits: QuicLimits) -> Inspector {
        Inspector { limits, initial: None, crypto: Crypto::default(), datagrams: 0, wire: 0 }
    }

    /// The flow's first Initial packet's version and connection IDs, once read.
    pub fn initial(&self) -> Option<Initial> {
        self.initial.as_ref().map(|(i, _)| *i)
    }

    /// Reads one datagram the client sent. After `Complete` or `Invalid`, stop pushing.
    pub fn push(&mut self, datagram: &[u8]) -> Inspect {
        match self.read(datagram) {
            Ok(()) => match self.complete() {
                Ok(Some(hello)) => Inspect::Complete(hello),
                Ok(None) if self.datagrams >= self.limits.max_datagrams => {
                    Inspect::Invalid(QuicError::TooManyDatagrams(self.limits.max_datagrams))
                }
                Ok(None) => Inspect::Incomplete,
                Err(e) => Inspect::Invalid(e),
            },
            Err(e) => Inspect::Invalid(e),
        }
    }

    fn read(&mut self, datagram: &[u8]) -> Result<(), QuicError> {
        self.datagrams += 1;
        self.wire += datagram.len();
        let mut pos = 0;
        while pos < datagram.len() {
            let packet = &datagram[pos..];
            // A short-header packet can only follow long ones, and takes the rest.
            if packet[0] & 0x80 == 0 && pos > 0 {
                break;
            }
            let header = long_header(packet)?;
            let Some(version) = Version::from_wire(header.version) else {
                return Err(match header.version {
                    0 => QuicError::NotInitial("a Version Negotiation packet"),
                    v => QuicError::Version(v),
                });
            };
            if !header.is_initial() {
                if self.initial.is_none() && pos == 0 {
                    return Err(QuicError::NotInitial("the first packet is not an Initial"));
                }
                if header.packet_type() == (version.initial_type() + 3) % 4 {
                    return Err(QuicError::Malformed("a Retry packet from the client"));
                }
                // 0-RTT and the like travel with the Initials; they are not read.
                pos += header.end.max(1);
                continue;
            }
            if datagram.len() < MIN_INITIAL_DATAGRAM {
                return Err(QuicError::Undersized(datagram.len()));
            }
            if header.first & 0x40 == 0 {
                return Err(QuicError::Malformed("the fixed bit is 0"));
            }
            self.check_identity(version, &header)?;
            let end = header.end;
            let Some((_, keys)) = &self.initial else { unreachable!("set by check_identity") };
            let crypto = &mut self.crypto;
            let cap = self.limits.hello.max_hello_bytes;
            with_opened(keys, &packet[..end], &header, |payload| {
                for_each_frame(payload, |frame| match frame {
                    Frame::Crypto(offset, data) => crypto.insert(offset, data, cap),
                    Frame::Close => Err(QuicError::Closed),
                    Frame::Other => Ok(()),
                })
            })??;
            pos += end;
        }
        if self.initial.is_none() {
            return Err(QuicError::NotInitial("no Initial packet in the datagram"));
        }
        Ok(())
    }

    /// The first Initial packet sets the flow's version and connection IDs; later ones must
    /// repeat them.
    fn check_identity(&mut self, version: Version, header: &LongHeader<'_>) -> Result<(), QuicError> {
        match &self.initial {
            None => {
                if header.dcid.len() < MIN_CLIENT_DCID {
                    return Err(QuicError::Malformed("client Destination Connection ID shorter than 8 bytes"));
                }
                let (Some(dcid), Some(scid)) = (Cid::new(header.dcid), Cid::new(header.scid)) else {
                    return Err(QuicError::Malformed("connection ID longer than 20 bytes"));
                };
                let keys = Keys::new(version, header.dcid, Side::Client);
                self.initial = Some((Initial { version, dcid, scid }, keys));
                Ok(())
            }
            Some((first, _)) if first.version != version => Err(QuicError::Malformed("the version changed")),
            Some((first, _)) if first.dcid.as_bytes() != header.dcid || first.scid.as_bytes() != header.scid => {
                Err(QuicError::Malformed("another connection's Initial on the same flow"))
            }
            Some(_) => Ok(()),
        }
    }

    /// The ClientHello's length, its 4-byte header included, once that header is here.
    fn declared(&self) -> Result<Option<usize>, QuicError> {
        if self.crypto.contiguous() < 4 {
            return Ok(None);
        }
        let head = self.crypto.prefix(4);
        let declared = 4 + (usize::from(head[1]) << 16 | usize::from(head[2]) << 8 | usize::from(head[3]));
        match declared > self.limits.hello.max_hello_bytes {
            true => Err(HelloError::TooLarge { limit: self.limits.hello.max_hello_bytes }.into()),
            false => Ok(Some(declared)),
        }
    }

    /// The ClientHello, once its bytes are all here.
    fn complete(&self) -> Result<Option<ClientHello>, QuicError> {
        let Some(declared) = self.declared()? else { return Ok(None) };
        if self.crypto.end > declared {
            return Err(QuicError::Malformed("CRYPTO data beyond the ClientHello"));
        }
        if self.crypto.contiguous() < declared {
            return Ok(None);
        }
        let msg = self.crypto.prefix(declared);
        Ok(Some(decode_message(&msg, self.wire, self.crypto.frames, self.limits.hello)?))
    }

    /// After `Complete`: what watches the flow's later client packets, holding the hello's bytes
    /// and the keys (the inspector's other state is freed).
    pub fn into_follower(self) -> Option<Follower> {
        let declared = self.declared().ok().flatten().filter(|&n| self.crypto.contiguous() >= n)?;
        let hello = self.crypto.prefix(declared).into_boxed_slice();
        let (initial, keys) = self.initial?;
        Some(Follower { initial, keys, retry: None, hello })
    }
}

/// A frame of an Initial packet, as far as snigate reads it.
enum Frame<'a> {
    /// CRYPTO: stream offset and data.
    Crypto(usize, &'a [u8]),
    /// CONNECTION_CLOSE.
    Close,
    /// PADDING, PING or ACK.
    Other,
}

/// Calls `each` for every frame of a decrypted Initial payload: only PADDING, PING, ACK, CRYPTO
/// and CONNECTION_CLOSE may be there (RFC 9000 §17.2.2).
fn for_each_frame<'a>(
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
            0x00 | 0x01 => each(Frame::Other)?,
            0x02 | 0x03 => {
                let _largest = varint(payload, &mut pos).ok_or(CUT)?;
                let _delay = varint(payload, &mut pos).ok_or(CUT)?;
                let ranges = varint(payload, &mut pos).ok_or(CUT)?;
                let _first = varint(payload, &mut pos).ok_or(CUT)?;
                // Each further range is two varints of at least a byte: bounded by the payload.
                if ranges > payload.len() as u64 {
                    return Err(CUT);
                }
                let counts = if ty == 0x03 { 3 } else { 0 };
                for _ in 0..ranges * 2 + counts {
                    varint(payload, &mut pos).ok_or(CUT)?;
                }
                each(Frame::Other)?;
            }
            0x06 => {
                let offset = length(payload, &mut pos).ok_or(CUT)?;
                let len = length(payload, &mut pos).ok_or(CUT)?;
                let data = payload.get(pos..pos.checked_add(len).ok_or(CUT)?).ok_or(CUT)?;
                pos += len;
                each(Frame::Crypto(offset, data))?;
            }
            0x1c => {
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

/// Watches an allowed flow's later client packets, so that no second hello reaches the server
/// unread: a client Initial may only carry the decided hello's bytes again (a retransmission)
/// at their offsets, and acknowledgements, padding and pings; it must be addressed to the
/// flow's first connection ID or one the server chose, in the flow's version. Everything
/// else long-headed that could start a connection is refused.
pub struct Follower {
    initial: Initial,
    /// The Initial keys of the client's first DCID.
    keys: Keys,
    /// After a Retry, the Initial keys of the connection ID it gave.
    retry: Option<(Cid, Keys)>,
    /// The decided ClientHello, as its CRYPTO bytes.
    hello: Box<[u8]>,
}

impl Follower {
    /// The flow's first Initial packet's version and connection IDs.
    pub fn initial(&self) -> Initial {
        self.initial
    }

    /// Checks one client datagram of the allowed flow; `server_cids` are the connection IDs the
    /// server's long-header packets carried as their source.
    pub fn check(&mut self, datagram: &[u8], server_cids: &[Cid]) -> Result<(), QuicError> {
        let mut pos = 0;
        while pos < datagram.len() {
            let packet = &datagram[pos..];
            // A short-header packet (or padding after long ones) cannot start a connection.
            if packet[0] & 0x80 == 0 {
                return Ok(());
            }
            let header = long_header(packet)?;
            if header.version != self.initial.version.wire() {
                return Err(QuicError::Malformed("a packet of another version on the flow"));
            }
            let ty = header.packet_type();
            if ty == (self.initial.version.initial_type() + 3) % 4 {
                return Err(QuicError::Malformed("a Retry packet from the client"));
            }
            if ty == self.initial.version.initial_type() {
                self.check_initial(packet, &header, server_cids)?;
            }
            pos += header.end;
        }
        Ok(())
    }

    fn check_initial(&mut self, packet: &[u8], header: &LongHeader<'_>, server_cids: &[Cid]) -> Result<(), QuicError> {
        let dcid = header.dcid;
        let to_server = server_cids.iter().any(|c| c.as_bytes() == dcid);
        if dcid != self.initial.dcid.as_bytes() && !to_server {
            return Err(QuicError::Malformed("another connection's Initial on the flow"));
        }
        let hello = &self.hello;
        let repeats = |payload: &[u8]| {
            for_each_frame(payload, |frame| match frame {
                Frame::Crypto(offset, data) => {
                    let expected = offset.checked_add(data.len()).and_then(|end| hello.get(offset..end));
                    match expected == Some(data) {
                        true => Ok(()),
                        false => Err(QuicError::Conflict(offset as u64)),
                    }
                }
                Frame::Close | Frame::Other => Ok(()),
            })
        };
        let packet = &packet[..header.end];
        match with_opened(&self.keys, packet, header, repeats) {
            Ok(judged) => return judged,
            Err(e) if !to_server => return Err(e),
            Err(_) => {}
        }
        // After a Retry the client's Initial keys come from the connection ID it gave.
        let keys = match self.retry.take() {
            Some((cid, keys)) if cid.as_bytes() == dcid => keys,
            _ => Keys::new(self.initial.version, dcid, Side::Client),
        };
        let opened = with_opened(&keys, packet, header, repeats);
        self.retry = Cid::new(dcid).map(|cid| (cid, keys));
        opened?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(s: &str) -> Vec<u8> {
        hex::decode(s).unwrap()
    }

    /// RFC 9001 Appendix A.1 and RFC 9369 Appendix A.1: the keys of DCID 0x8394c8f03e515708.
    #[test]
    fn initial_secrets_match_the_rfc_vectors() {
        let dcid = h("8394c8f03e515708");
        let cases = [
            (
                Version::V1,
                Side::Client,
                "1f369613dd76d5467730efcbe3b1a22d",
                "fa044b2f42a3fd3b46fb255c",
                "9f50449e04a0e810283a1e9933adedd2",
            ),
            (
                Version::V1,
                Side::Server,
                "cf3a5331653c364c88f0f379b6067e37",
                "0ac1493ca1905853b0bba03e",
                "c206b8d9b9f0f37644430b490eeaa314",
            ),
            (
                Version::V2,
                Side::Client,
                "8b1a0bc121284290a29e0971b5cd045d",
                "91f73e2351d8fa91660e909f",
                "45b95e15235d6f45a6b19cbcb0294ba9",
            ),
            (
                Version::V2,
                Side::Server,
                "82db637861d55e1d011f19ea71d5d2a7",
                "dd13c276499c0249d3310652",
                "edf6d05c83121201b436e16877593c3a",
            ),
        ];
        for (version, side, key, iv, hp) in cases {
            let s = Secrets::initial(version, &dcid, side);
            assert_eq!(
                (hex::encode(s.key), hex::encode(s.iv), hex::encode(s.hp)),
                (key.into(), iv.into(), hp.into()),
                "{version:?} {side:?}"
            );
        }
    }

    /// RFC 9001 Appendix A.2: the client's header-protection mask for its sample.
    #[test]
    fn header_protection_matches_the_rfc_vector() {
        let keys = Keys::new(Version::V1, &h("8394c8f03e515708"), Side::Client);
        assert_eq!(hex::encode(keys.mask(&h("d1b1c98dd7689fb8ec11d242b123dc9b")).unwrap()), "437b9aec36");
    }

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
