//! The inspector: a flow's client datagrams in, its ClientHello (or why not) out; then the
//! follower, which keeps an allowed flow from carrying a second, unread hello.

use super::assembler::{Crypto, Frame, for_each_frame};
use super::error::QuicError;
use super::keys::{Keys, Side, Version};
use super::packet::{
    Cid, FIXED_BIT, LongHeader, MIN_INITIAL_DATAGRAM, PacketType, VERSION_NEGOTIATION, is_long_header, long_header,
    with_opened,
};
use crate::hello::parse::{Carried, ClientHello, HelloError, HelloLimits, decode_message};

/// The shortest first Destination Connection ID a client may choose (RFC 9000 §7.2).
const MIN_CLIENT_DCID: usize = 8;

/// Default for [`QuicLimits::max_datagrams`]: a post-quantum hello spans 2 or 3.
pub const DEFAULT_MAX_DATAGRAMS: usize = 8;

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
            if !is_long_header(packet[0]) && pos > 0 {
                break;
            }
            let header = long_header(packet)?;
            let Some(version) = Version::from_wire(header.version) else {
                return Err(match header.version {
                    VERSION_NEGOTIATION => QuicError::NotInitial("a Version Negotiation packet"),
                    v => QuicError::Version(v),
                });
            };
            if !header.is_initial() {
                if self.initial.is_none() && pos == 0 {
                    return Err(QuicError::NotInitial("the first packet is not an Initial"));
                }
                if header.packet_type() == Some(PacketType::Retry) {
                    return Err(QuicError::Malformed("a Retry packet from the client"));
                }
                // 0-RTT and the like travel with the Initials; they are not read.
                pos += header.end.max(1);
                continue;
            }
            if datagram.len() < MIN_INITIAL_DATAGRAM {
                return Err(QuicError::Undersized(datagram.len()));
            }
            if header.first & FIXED_BIT == 0 {
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

    /// The ClientHello's length, its handshake message header included, once that header is
    /// here.
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
        Ok(Some(decode_message(&msg, self.wire, Carried::CryptoFrames(self.crypto.frames), self.limits.hello)?))
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
            if !is_long_header(packet[0]) {
                return Ok(());
            }
            let header = long_header(packet)?;
            if header.version != self.initial.version.wire() {
                return Err(QuicError::Malformed("a packet of another version on the flow"));
            }
            match header.packet_type() {
                Some(PacketType::Retry) => return Err(QuicError::Malformed("a Retry packet from the client")),
                Some(PacketType::Initial) => self.check_initial(packet, &header, server_cids)?,
                _ => {}
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
