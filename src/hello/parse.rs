//! The pure ClientHello parser: bytes in, a three-way answer out. No I/O, no clock.
//!
//! Reassembly (records → one handshake message) is done here, incrementally, so that a client
//! that sends one byte per segment or one byte per record costs linear work. The fields a filter
//! needs are read in place, with the strictness it needs: exact lengths, no duplicate
//! extensions, exactly one host_name, and the host-name rules of [`Name`]. A typical hello is
//! decoded with one allocation, its name's: the lists it keeps are inline.

use std::borrow::Cow;

use smallvec::SmallVec;
use thiserror::Error;

use crate::name::{Name, NameError};
use crate::reason::Reason;

/// Default cap on bytes buffered while inspecting a ClientHello.
pub const DEFAULT_MAX_HELLO_BYTES: usize = 64 * 1024;

const RECORD_HEADER_LEN: usize = 5;
/// ContentType handshake (RFC 8446 5.1).
const RECORD_HANDSHAKE: u8 = 0x16;
const HANDSHAKE_HEADER_LEN: usize = 4;
/// TLSPlaintext.length limit (RFC 8446 5.1).
const MAX_RECORD_PAYLOAD: usize = 1 << 14;
const HANDSHAKE_CLIENT_HELLO: u8 = 1;
const EXT_SERVER_NAME: u16 = 0;
const EXT_ALPN: u16 = 16;
const EXT_SUPPORTED_VERSIONS: u16 = 43;
/// encrypted_client_hello (draft-ietf-tls-esni).
pub const EXT_ECH: u16 = 0xfe0d;
/// Extensions a hello is expected to carry at most (browsers send 15 to 20): their types are
/// recorded inline up to this many.
const TYPICAL_EXTENSIONS: usize = 32;
/// Bytes of ALPN names held inline (browsers send `h2` and `http/1.1`: 12 bytes).
const TYPICAL_ALPN: usize = 24;
/// supported_versions held inline (browsers send GREASE, TLS 1.3 and 1.2).
const TYPICAL_VERSIONS: usize = 8;

/// supported_versions (RFC 8446 4.2.1) in the client's order, GREASE values included, kept as
/// they came and inline for the usual few.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Versions(SmallVec<[u8; 2 * TYPICAL_VERSIONS]>);

impl Versions {
    /// The versions, in the client's order.
    pub fn iter(&self) -> impl Iterator<Item = u16> {
        self.0.chunks_exact(2).map(|v| u16::from_be_bytes([v[0], v[1]]))
    }
}

/// Extension types in the client's order; inline for the usual count.
pub type Extensions = SmallVec<[u16; TYPICAL_EXTENSIONS]>;

/// ALPN protocol names (RFC 7301) in the client's order, kept as they came (each after its
/// length byte) and inline for the usual short lists: they become strings only for what logs
/// them ([`escaped`](Self::escaped)).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Alpn(SmallVec<[u8; TYPICAL_ALPN]>);

impl Alpn {
    /// The names, as the client sent them.
    pub fn names(&self) -> impl Iterator<Item = &[u8]> {
        let mut rest = &self.0[..];
        std::iter::from_fn(move || {
            let (&len, tail) = rest.split_first()?;
            let (name, tail) = tail.split_at(usize::from(len));
            rest = tail;
            Some(name)
        })
    }

    /// The names with non-printable bytes escaped as `\xNN` ([`escape`]): what logs show.
    pub fn escaped(&self) -> Vec<String> {
        self.names().map(escape).collect()
    }

    /// Whether the client offered none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Parser settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HelloLimits {
    /// Cap on the bytes held while inspecting, record headers included. A hello that declares
    /// a larger message, or needs more bytes than this, is `hello_too_large`. It also bounds
    /// per-connection memory before the verdict.
    pub max_hello_bytes: usize,
    /// Admit `_` in SNI labels (`sni_allow_underscore`).
    pub allow_underscore: bool,
}

impl Default for HelloLimits {
    fn default() -> Self {
        HelloLimits { max_hello_bytes: DEFAULT_MAX_HELLO_BYTES, allow_underscore: false }
    }
}

/// What the parser learned from one complete ClientHello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientHello {
    /// The validated, normalised server name; `None` when the hello carries no server_name.
    pub sni: Option<Name>,
    /// ALPN protocol names in the client's order.
    pub alpn: Alpn,
    /// ClientHello.legacy_version.
    pub legacy_version: u16,
    /// supported_versions in the client's order, GREASE values included.
    pub supported_versions: Versions,
    /// Whether an encrypted_client_hello extension is present (real ECH or GREASE; on the wire
    /// the two cannot be told apart).
    pub ech: bool,
    /// Extension types in the client's order.
    pub extensions: Extensions,
    /// Length of the handshake message, header included.
    pub hello_bytes: usize,
    /// Bytes of the records that carry the hello: where the hello ends on the wire.
    pub wire_bytes: usize,
    /// What carried the hello, and in how many pieces.
    pub carried: Carried,
}

/// What carried a ClientHello: TLS records over TCP, or CRYPTO frames in QUIC Initials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Carried {
    /// This many TLS handshake records.
    Records(usize),
    /// This many QUIC CRYPTO frames.
    CryptoFrames(usize),
}

/// Whether a 16-bit code point (version, extension type) is a GREASE value (RFC 8701).
pub fn is_grease(v: u16) -> bool {
    v & 0x0f0f == 0x0a0a
}

/// `0x0304` → `TLS1.3`; GREASE values → `grease`.
pub fn version_name(v: u16) -> String {
    match v {
        0x0300 => "SSL3.0".to_string(),
        0x0301..=0x0304 => format!("TLS1.{}", (v & 0xff) - 1),
        v if is_grease(v) => "grease".to_string(),
        v => format!("0x{v:04x}"),
    }
}

impl ClientHello {
    /// The versions the client offers: supported_versions without GREASE, or else the legacy
    /// version.
    pub fn offered_versions(&self) -> Vec<u16> {
        let listed: Vec<u16> = self.supported_versions.iter().filter(|&v| !is_grease(v)).collect();
        if listed.is_empty() { vec![self.legacy_version] } else { listed }
    }

    /// The highest version offered, by name (`TLS1.3`), for logs.
    pub fn highest_version(&self) -> String {
        let offered = self.supported_versions.iter().filter(|&v| !is_grease(v)).max();
        version_name(offered.unwrap_or(self.legacy_version))
    }
}

/// Why bytes are not an acceptable ClientHello. Each variant maps to one [`Reason`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum HelloError {
    /// The stream does not start with a TLS handshake record.
    #[error("not TLS: {0}")]
    NotTls(&'static str),
    /// TLS framing or the ClientHello encoding is broken or ambiguous.
    #[error("malformed ClientHello: {0}")]
    Malformed(&'static str),
    /// The server_name entry is not an acceptable host name.
    #[error("invalid server name: {0}")]
    InvalidSni(#[from] NameError),
    /// The hello is larger than [`HelloLimits::max_hello_bytes`].
    #[error("ClientHello larger than {limit} bytes")]
    TooLarge {
        /// The configured cap.
        limit: usize,
    },
}

impl HelloError {
    /// The metric and log reason for this error.
    pub fn reason(&self) -> Reason {
        match self {
            HelloError::NotTls(_) => Reason::NotTls,
            HelloError::Malformed(_) => Reason::Malformed,
            HelloError::InvalidSni(_) => Reason::InvalidSni,
            HelloError::TooLarge { .. } => Reason::HelloTooLarge,
        }
    }
}

/// The parser's answer for the bytes seen so far.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parse {
    /// A complete, valid ClientHello (with or without SNI).
    Complete(ClientHello),
    /// Not decidable yet: at least `needed` bytes in total are required before asking again.
    Incomplete {
        /// Total buffer length at which the next call can make progress.
        needed: usize,
    },
    /// Not a valid ClientHello; the connection must be denied.
    Invalid(HelloError),
}

/// Parses `buf`, the first bytes a client sent. Pure; see [`HelloParser`] for the incremental form.
pub fn parse(buf: &[u8], limits: HelloLimits) -> Parse {
    HelloParser::new(limits).parse(buf)
}

/// Incremental parser for one connection's growing buffer.
///
/// Each call resumes after the last complete record it walked, so feeding a hello one byte at a
/// time costs linear work. The caller must pass the same buffer, only ever appended to.
#[derive(Debug, Clone)]
pub struct HelloParser {
    /// Settings for this connection.
    limits: HelloLimits,
    /// Wire offset of the next record header not yet walked.
    pos: usize,
    /// Complete records walked so far.
    records: usize,
    /// Handshake payload bytes in the records walked so far.
    payload: usize,
    /// The 4-byte handshake header, gathered across records (a client may send 1-byte records).
    head: [u8; HANDSHAKE_HEADER_LEN],
    /// How many bytes of `head` are filled.
    head_len: usize,
}

impl HelloParser {
    /// A parser for a new connection.
    pub fn new(limits: HelloLimits) -> Self {
        HelloParser { limits, pos: 0, records: 0, payload: 0, head: [0; 4], head_len: 0 }
    }

    /// Parses the connection's buffer so far.
    pub fn parse(&mut self, buf: &[u8]) -> Parse {
        match self.scan(buf) {
            Ok(Some(wire_bytes)) => match decode(&buf[..wire_bytes], self.records, self.limits) {
                Ok(hello) => Parse::Complete(hello),
                Err(e) => Parse::Invalid(e),
            },
            Ok(None) => Parse::Incomplete { needed: self.needed(buf) },
            Err(e) => Parse::Invalid(e),
        }
    }

    /// Walks record framing. `Ok(Some(n))`: the hello ends at wire offset `n`.
    fn scan(&mut self, buf: &[u8]) -> Result<Option<usize>, HelloError> {
        loop {
            let rest = &buf[self.pos..];
            let first = self.records == 0;
            if first {
                sniff(rest)?;
            }
            let [record_type, major, minor, len_hi, len_lo, ..] = *rest else {
                return self.within_cap(self.pos + RECORD_HEADER_LEN).map(|_| None);
            };
            let framing = |msg| {
                if first { HelloError::NotTls(msg) } else { HelloError::Malformed(msg) }
            };
            if record_type != RECORD_HANDSHAKE {
                return Err(framing("record is not a handshake record"));
            }
            if major != 3 || minor > 4 {
                return Err(framing("record version is not TLS"));
            }
            let len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
            if len == 0 {
                return Err(HelloError::Malformed("empty handshake record"));
            }
            if len > MAX_RECORD_PAYLOAD {
                return Err(HelloError::Malformed("record longer than 2^14 bytes"));
            }
            let end = self.pos + RECORD_HEADER_LEN + len;
            let avail = &rest[RECORD_HEADER_LEN..rest.len().min(RECORD_HEADER_LEN + len)];
            // Check the handshake header as soon as its bytes are here, even mid-record, so a
            // hello that declares 16 MiB is refused before it is buffered.
            let (head, head_len) = self.fill_head(avail);
            let msg_len = if head_len == HANDSHAKE_HEADER_LEN { Some(check_head(head, self.limits)?) } else { None };
            if buf.len() < end {
                return self.within_cap(end).map(|_| None);
            }
            self.within_cap(end)?;
            (self.head, self.head_len) = (head, head_len);
            self.pos = end;
            self.records += 1;
            self.payload += len;
            if let Some(msg_len) = msg_len {
                if self.payload == msg_len {
                    return Ok(Some(end));
                }
                if self.payload > msg_len {
                    return Err(HelloError::Malformed("bytes after the ClientHello in its record"));
                }
            }
        }
    }

    /// The handshake header with the bytes of `avail` added, without committing them.
    fn fill_head(&self, avail: &[u8]) -> ([u8; HANDSHAKE_HEADER_LEN], usize) {
        // The usual case: the whole header at the start of the first record.
        if let (0, Some(&head)) = (self.head_len, avail.first_chunk()) {
            return (head, HANDSHAKE_HEADER_LEN);
        }
        let mut head = self.head;
        let take = (HANDSHAKE_HEADER_LEN - self.head_len).min(avail.len());
        head[self.head_len..self.head_len + take].copy_from_slice(&avail[..take]);
        (head, self.head_len + take)
    }

    fn within_cap(&self, needed: usize) -> Result<(), HelloError> {
        if needed > self.limits.max_hello_bytes {
            return Err(HelloError::TooLarge { limit: self.limits.max_hello_bytes });
        }
        Ok(())
    }

    /// Total buffer length at which the next call can make progress.
    fn needed(&self, buf: &[u8]) -> usize {
        let rest = &buf[self.pos..];
        if rest.len() < RECORD_HEADER_LEN {
            return self.pos + RECORD_HEADER_LEN;
        }
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        self.pos + RECORD_HEADER_LEN + len
    }
}

/// Early verdicts on the first bytes, before a record header is complete: an HTTP request or an
/// SSLv2-style hello is refused on its first byte rather than after a timeout.
fn sniff(rest: &[u8]) -> Result<(), HelloError> {
    match rest {
        [b, ..] if b & 0x80 != 0 => Err(HelloError::NotTls("SSLv2-style record header")),
        [b, ..] if *b != RECORD_HANDSHAKE => Err(HelloError::NotTls("first byte is not a TLS handshake record")),
        [_, major, ..] if *major != 3 => Err(HelloError::NotTls("record version is not TLS")),
        _ => Ok(()),
    }
}

/// Validates the handshake header and returns the message length, header included.
fn check_head(head: [u8; HANDSHAKE_HEADER_LEN], limits: HelloLimits) -> Result<usize, HelloError> {
    if head[0] != HANDSHAKE_CLIENT_HELLO {
        return Err(HelloError::Malformed("first handshake message is not a ClientHello"));
    }
    let body = usize::from(head[1]) << 16 | usize::from(head[2]) << 8 | usize::from(head[3]);
    let len = HANDSHAKE_HEADER_LEN + body;
    if len > limits.max_hello_bytes {
        return Err(HelloError::TooLarge { limit: limits.max_hello_bytes });
    }
    Ok(len)
}

/// Joins the handshake payload of `records` complete records (borrowed when there is one).
fn reassemble(wire: &[u8], records: usize) -> Cow<'_, [u8]> {
    if records == 1 {
        return Cow::Borrowed(&wire[RECORD_HEADER_LEN..]);
    }
    let mut msg = Vec::with_capacity(wire.len());
    let mut rest = wire;
    while rest.len() >= RECORD_HEADER_LEN {
        let len = usize::from(u16::from_be_bytes([rest[3], rest[4]]));
        msg.extend_from_slice(&rest[RECORD_HEADER_LEN..RECORD_HEADER_LEN + len]);
        rest = &rest[RECORD_HEADER_LEN + len..];
    }
    Cow::Owned(msg)
}

/// Decodes the complete hello carried by `wire` (its records, nothing more).
fn decode(wire: &[u8], records: usize, limits: HelloLimits) -> Result<ClientHello, HelloError> {
    decode_message(&reassemble(wire, records), wire.len(), Carried::Records(records), limits)
}

/// Decodes one complete ClientHello handshake message (its 4-byte header included), however it
/// was carried: TLS records over TCP, or QUIC CRYPTO frames. `wire_bytes` and `carried` say
/// what carried it (record bytes and records; datagram bytes and CRYPTO frames).
pub(crate) fn decode_message(
    msg: &[u8],
    wire_bytes: usize,
    carried: Carried,
    limits: HelloLimits,
) -> Result<ClientHello, HelloError> {
    let [a, b, c, d, ..] = *msg else { return Err(HelloError::Malformed("truncated handshake header")) };
    if check_head([a, b, c, d], limits)? != msg.len() {
        return Err(HelloError::Malformed("handshake length does not match the message"));
    }
    let (legacy_version, exts) = client_hello_body(&msg[HANDSHAKE_HEADER_LEN..])?;
    // One walk over the extensions checks their framing, records their types and notes the
    // data of those read here, which are read after it.
    let (mut types, mut count) = ([0; TYPICAL_EXTENSIONS], 0);
    let (mut server_name, mut alpn_list, mut versions, mut ech) = (None, None, None, false);
    let mut rest = exts.unwrap_or_default();
    while !rest.is_empty() {
        const FRAMING: HelloError = HelloError::Malformed("extension framing");
        // A type, then the data after its 2-byte length.
        let [ty_hi, ty_lo, len_hi, len_lo, ref tail @ ..] = *rest else { return Err(FRAMING) };
        let (data, tail) = tail.split_at_checked(usize::from(u16::from_be_bytes([len_hi, len_lo]))).ok_or(FRAMING)?;
        let ty = u16::from_be_bytes([ty_hi, ty_lo]);
        if let Some(slot) = types.get_mut(count) {
            *slot = ty;
        }
        count += 1;
        match ty {
            EXT_SERVER_NAME => server_name = Some(data),
            EXT_ALPN => alpn_list = Some(data),
            EXT_SUPPORTED_VERSIONS => versions = Some(data),
            EXT_ECH => ech = true,
            _ => {}
        }
        rest = tail;
    }
    let extensions = match types.get(..count) {
        Some(types) => Extensions::from_slice(types),
        None => every_type(exts.unwrap_or_default()),
    };
    if duplicate(&extensions) {
        return Err(HelloError::Malformed("duplicate extension"));
    }
    let server_name = server_name.map(host_name).transpose()?;
    let alpn = alpn_list.map(alpn).transpose()?.unwrap_or_default();
    let supported_versions = versions.map(supported_versions).transpose()?.unwrap_or_default();
    let sni = server_name.map(|raw| Name::parse(raw, limits.allow_underscore)).transpose()?;
    Ok(ClientHello {
        sni,
        alpn,
        legacy_version,
        supported_versions,
        ech,
        extensions,
        hello_bytes: msg.len(),
        wire_bytes,
        carried,
    })
}

/// The types of every extension in `exts`, a block whose framing was checked: for a hello
/// with more than [`TYPICAL_EXTENSIONS`].
fn every_type(mut exts: &[u8]) -> Extensions {
    let mut types = Extensions::new();
    while let [ty_hi, ty_lo, len_hi, len_lo, ref tail @ ..] = *exts {
        types.push(u16::from_be_bytes([ty_hi, ty_lo]));
        exts = &tail[usize::from(u16::from_be_bytes([len_hi, len_lo]))..];
    }
    types
}

/// Extension types uncommon enough to be checked against each other, up to this many, for the
/// duplicate check.
const UNCOMMON: usize = 16;

/// Whether a type comes twice in `types`. Those below 64 (every type a browser sends but a few)
/// are checked as bits, the others against each other while they are few; past [`UNCOMMON`] of
/// them, a sorted copy is. Linear in the hello, whatever it holds.
fn duplicate(types: &[u16]) -> bool {
    let (mut common, mut uncommon, mut uncommons) = (0u64, [0; UNCOMMON], 0);
    for &ty in types {
        if ty < 64 {
            if common & 1 << ty != 0 {
                return true;
            }
            common |= 1 << ty;
        } else if uncommons < UNCOMMON {
            // Not `contains`: for u16 it is a call, about 100 instructions more per hello.
            #[allow(clippy::manual_contains)]
            if uncommon[..uncommons].iter().any(|&t| t == ty) {
                return true;
            }
            uncommon[uncommons] = ty;
            uncommons += 1;
        } else {
            let mut sorted = types.to_vec();
            sorted.sort_unstable();
            return sorted.windows(2).any(|w| w[0] == w[1]);
        }
    }
    false
}

/// The ClientHello body's fields before the extensions (RFC 8446 4.1.2), checked for framing
/// only: legacy_version, and the extensions block, `None` when the body ends without one.
/// Nothing is copied: the cipher suites and compression methods are only skipped.
fn client_hello_body(body: &[u8]) -> Result<(u16, Option<&[u8]>), HelloError> {
    const BAD: HelloError = HelloError::Malformed("ClientHello body");
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> Result<&'a [u8], HelloError> {
        let (field, tail) = rest.split_at_checked(n).ok_or(BAD)?;
        *rest = tail;
        Ok(field)
    }
    let mut rest = body;
    let version = take(&mut rest, 2)?;
    take(&mut rest, 32)?; // random
    let session_id = usize::from(take(&mut rest, 1)?[0]);
    if session_id > 32 {
        return Err(BAD);
    }
    take(&mut rest, session_id)?;
    let suites = take(&mut rest, 2)?;
    let suites = usize::from(u16::from_be_bytes([suites[0], suites[1]]));
    if suites % 2 == 1 {
        return Err(BAD);
    }
    take(&mut rest, suites)?;
    let compressions = usize::from(take(&mut rest, 1)?[0]);
    take(&mut rest, compressions)?;
    let exts = match rest {
        [] => None,
        [a, b, exts @ ..] if usize::from(u16::from_be_bytes([*a, *b])) == exts.len() => Some(exts),
        _ => return Err(HelloError::Malformed("extensions length does not match the message")),
    };
    Ok((u16::from_be_bytes([version[0], version[1]]), exts))
}

/// The one host_name of a server_name extension (RFC 6066 3), read in place with exact length
/// checks: the list's length is the extension's, and its entries (a type, then a name after
/// its 2-byte length) fill it exactly.
fn host_name(data: &[u8]) -> Result<&[u8], HelloError> {
    const BAD: HelloError = HelloError::Malformed("server_name extension encoding");
    const HOST_NAME: u8 = 0;
    let [hi, lo, ref all @ ..] = *data else { return Err(BAD) };
    let mut list: &[u8] = all;
    if usize::from(u16::from_be_bytes([hi, lo])) != list.len() {
        return Err(BAD);
    }
    let (mut entries, mut first) = (0, None);
    while let [ty, len_hi, len_lo, ref rest @ ..] = *list {
        let len = usize::from(u16::from_be_bytes([len_hi, len_lo]));
        let (name, rest) = rest.split_at_checked(len).ok_or(BAD)?;
        first = first.or(Some((ty, name)));
        entries += 1;
        list = rest;
    }
    match (entries, first) {
        _ if !list.is_empty() => Err(BAD),
        (1, Some((HOST_NAME, name))) => Ok(name),
        (1, _) => Err(HelloError::Malformed("server_name entry is not a host_name")),
        (0, _) => Err(HelloError::Malformed("server_name extension is empty")),
        _ => Err(HelloError::Malformed("server_name extension lists several names")),
    }
}

/// ALPN protocol names (RFC 7301 3.1), with exact length checks: the list's length is the
/// extension's, and every name is non-empty and within it. Kept as it came.
fn alpn(data: &[u8]) -> Result<Alpn, HelloError> {
    const BAD: HelloError = HelloError::Malformed("ALPN extension encoding");
    let [hi, lo, ref all @ ..] = *data else { return Err(BAD) };
    let mut list: &[u8] = all;
    if usize::from(u16::from_be_bytes([hi, lo])) != list.len() {
        return Err(BAD);
    }
    while let [len, ref rest @ ..] = *list {
        let len = usize::from(len);
        if len == 0 || len > rest.len() {
            return Err(BAD);
        }
        list = &rest[len..];
    }
    Ok(Alpn(SmallVec::from_slice(all)))
}

/// The supported_versions list, read as tls-parser reads it: two bytes are one version (the
/// ServerHello form); otherwise a length byte, not checked, and an even number of bytes of
/// versions. Empty is malformed.
fn supported_versions(data: &[u8]) -> Result<Versions, HelloError> {
    const BAD: HelloError = HelloError::Malformed("supported_versions extension encoding");
    let list = match data.len() {
        0 => return Err(BAD),
        2 => data,
        _ => &data[1..],
    };
    if list.is_empty() || list.len() % 2 == 1 {
        return Err(BAD);
    }
    Ok(Versions(SmallVec::from_slice(list)))
}

/// Printable ASCII kept, everything else as `\xNN`: client bytes are safe to log.
pub fn escape(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &b in bytes {
        if b.is_ascii_graphic() && b != b'\\' || b == b' ' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("\\x{b:02x}"));
        }
    }
    out
}
