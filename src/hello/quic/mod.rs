//! The ClientHello of a QUIC connection (RFC 9000, RFC 9001 §5, RFC 9369), read from the
//! client's Initial packets without terminating anything. Pure: datagrams in, a three-way
//! answer out; no I/O, no clock.
//!
//! Initial packets are protected with keys that anyone can derive from the first Destination
//! Connection ID and a published salt (`keys`). [`Inspector`] derives them, removes header
//! protection, decrypts each Initial packet of each datagram (coalesced packets included;
//! `packet`), walks the frames, reassembles CRYPTO data in any order across datagrams
//! (`assembler`), and hands the complete ClientHello to the TCP path's parser, so that both
//! paths apply the same name rules (`inspect`).

mod assembler;
pub(crate) mod builders;
mod error;
mod inspect;
mod keys;
mod packet;

pub use error::QuicError;
pub use inspect::{DEFAULT_MAX_DATAGRAMS, Follower, Initial, Inspect, Inspector, QuicLimits};
pub use keys::{Secrets, Side, Version};
pub use packet::{
    ACCESS_DENIED, Cid, FIXED_BIT, LongHeader, MIN_INITIAL_DATAGRAM, PacketType, VERSION_NEGOTIATION, close_datagram,
    is_long_header, long_header, version_negotiation,
};
