//! Why datagrams are not an acceptable QUIC Initial: one error for every part of the inspector,
//! so that each maps to one metric reason.

use thiserror::Error;

use crate::hello::parse::HelloError;
use crate::reason::Reason;

/// Why datagrams are not an acceptable QUIC Initial. Each variant maps to one [`Reason`].
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum QuicError {
    /// A client's datagram with an Initial packet shorter than clients must pad it to
    /// (RFC 9000 §14.1).
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
