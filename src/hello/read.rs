//! Reading a ClientHello off a stream: bounded, timed, and keeping every byte for replay.

use std::io;
use std::time::Duration;

use bytes::BytesMut;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt};

use super::parse::{ClientHello, HelloError, HelloParser, Limits, Parse};
use crate::reason::Reason;

/// Smallest read, so that a hello arriving in one segment is read in one call.
const MIN_READ: usize = 4096;

/// Why no ClientHello could be read. Each variant maps to one [`Reason`].
#[derive(Debug, Error)]
pub enum ReadError {
    /// The bytes are not an acceptable ClientHello.
    #[error(transparent)]
    Invalid(#[from] HelloError),
    /// No complete hello within the timeout (a slow or silent client).
    #[error("no complete ClientHello within {0:?}")]
    Timeout(Duration),
    /// The client closed its side after `read` bytes, before the hello was complete.
    #[error("client closed after {read} bytes, before the ClientHello was complete")]
    Closed {
        /// Bytes received before the close.
        read: usize,
    },
    /// Reading failed (for example a reset) after `read` bytes.
    #[error("reading the ClientHello failed after {read} bytes: {source}")]
    Io {
        /// Bytes received before the failure.
        read: usize,
        /// The underlying error.
        source: io::Error,
    },
}

impl ReadError {
    /// The metric and log reason. A client that leaves without sending anything is
    /// `client_closed` (counted, not an error); one that leaves mid-hello sent a truncated,
    /// hence `malformed`, hello.
    pub fn reason(&self) -> Reason {
        match self {
            ReadError::Invalid(e) => e.reason(),
            ReadError::Timeout(_) => Reason::HelloTimeout,
            ReadError::Closed { read: 0 } | ReadError::Io { read: 0, .. } => Reason::ClientClosed,
            ReadError::Closed { .. } | ReadError::Io { .. } => Reason::Malformed,
        }
    }
}

/// Reads from `io` into `buf` until the parser has an answer, for at most `timeout` in total.
///
/// On success `buf` holds every byte read, the hello and anything the client sent after it,
/// to be replayed to the upstream unchanged. At most `limits.max_hello_bytes` plus one read's
/// worth of bytes are buffered.
pub async fn read_client_hello<R>(
    io: &mut R,
    buf: &mut BytesMut,
    limits: Limits,
    timeout: Duration,
) -> Result<ClientHello, ReadError>
where
    R: AsyncRead + Unpin,
{
    let mut parser = HelloParser::new(limits);
    let read = async {
        loop {
            match parser.parse(buf) {
                Parse::Complete(hello) => return Ok(hello),
                Parse::Invalid(e) => return Err(ReadError::Invalid(e)),
                Parse::Incomplete { needed } => {
                    buf.reserve((needed - buf.len()).max(MIN_READ));
                    match io.read_buf(buf).await {
                        Ok(0) => return Err(ReadError::Closed { read: buf.len() }),
                        Ok(_) => {}
                        Err(source) => {
                            return Err(ReadError::Io { read: buf.len(), source });
                        }
                    }
                }
            }
        }
    };
    tokio::time::timeout(timeout, read).await.unwrap_or(Err(ReadError::Timeout(timeout)))
}
