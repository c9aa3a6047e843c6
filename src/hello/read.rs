//! Reading a ClientHello off a stream: bounded, timed, and keeping every byte for replay.

use std::io::{self, Read};
use std::time::Duration;

use bytes::BytesMut;
use std::future::poll_fn;
use std::pin::Pin;
use std::task::{Poll, ready};
use thiserror::Error;

use tokio::io::{AsyncRead, ReadBuf};

use super::parse::{ClientHello, HelloError, HelloLimits, HelloParser, Parse};
use crate::reason::Reason;

/// The most one read takes. A record header may declare 16 KiB that never come: reads land in
/// a per-thread scratch buffer and only what arrived is kept, so a silent client holds little.
const READ_NOW: usize = 16 * 1024;
/// The least: a hello that arrived in one segment is read in one call.
const MIN_READ: usize = 4096;

thread_local! {
    /// Where reads land: the bytes are then copied into the connection's buffer, sized by what
    /// arrived. It is never borrowed across an await.
    static SCRATCH: std::cell::RefCell<Box<[u8]>> = std::cell::RefCell::new(vec![0; READ_NOW].into_boxed_slice());
}

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
/// worth of bytes are buffered, and the buffer holds at most about twice what the client has
/// sent. `buf` may already hold the first bytes (from
/// [`read_client_hello_now`]); they are parsed before anything is read.
pub async fn read_client_hello<R>(
    io: &mut R,
    buf: &mut BytesMut,
    limits: HelloLimits,
    timeout: Duration,
) -> Result<ClientHello, ReadError>
where
    R: AsyncRead + Unpin,
{
    let mut parser = HelloParser::new(limits);
    let read = async {
        loop {
            let want = match step(&mut parser, buf) {
                Step::Done(answer) => return answer,
                Step::Read(want) => want,
            };
            let before = buf.len();
            // Read through the thread's scratch buffer: what arrived is copied, so the buffer
            // grows with the client's bytes, never with what a record header announced.
            let read = poll_fn(|cx| {
                SCRATCH.with_borrow_mut(|scratch| {
                    let mut into = ReadBuf::new(&mut scratch[..want.clamp(MIN_READ, READ_NOW)]);
                    ready!(Pin::new(&mut *io).poll_read(cx, &mut into))?;
                    buf.extend_from_slice(into.filled());
                    Poll::Ready(Ok(into.filled().len()))
                })
            });
            if let Some(end) = ended(read.await, before) {
                return Err(end);
            }
        }
    };
    tokio::time::timeout(timeout, read).await.unwrap_or(Err(ReadError::Timeout(timeout)))
}

/// Reads what a non-blocking `io` holds already, without waiting: `Some` when that settles the
/// hello (complete, invalid, or the client gone), `None` when bytes that have not arrived yet
/// are needed; the caller then awaits them with [`read_client_hello`] on the same `buf`.
///
/// With TCP_DEFER_ACCEPT on the listener the hello is there when the connection is accepted,
/// so this settles most connections before they are registered with the runtime's reactor.
pub fn read_client_hello_now<R: Read>(
    mut io: R,
    buf: &mut BytesMut,
    limits: HelloLimits,
) -> Option<Result<ClientHello, ReadError>> {
    let mut parser = HelloParser::new(limits);
    loop {
        let want = match step(&mut parser, buf) {
            Step::Done(answer) => return Some(answer),
            Step::Read(want) => want,
        };
        let before = buf.len();
        // One read takes what is there (what follows the hello too, to be replayed).
        let read = SCRATCH.with_borrow_mut(|scratch| -> io::Result<usize> {
            let n = io.read(&mut scratch[..want.clamp(MIN_READ, READ_NOW)])?;
            buf.extend_from_slice(&scratch[..n]);
            Ok(n)
        });
        match read {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => return None,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            read => {
                if let Some(end) = ended(read, before) {
                    return Some(Err(end));
                }
            }
        }
    }
}

/// What the parser makes of `buf`: an answer, or how many bytes to read next.
enum Step {
    Done(Result<ClientHello, ReadError>),
    Read(usize),
}

fn step(parser: &mut HelloParser, buf: &BytesMut) -> Step {
    match parser.parse(buf) {
        Parse::Complete(hello) => Step::Done(Ok(hello)),
        Parse::Invalid(e) => Step::Done(Err(ReadError::Invalid(e))),
        Parse::Incomplete { needed } => Step::Read(needed - buf.len()),
    }
}

/// How a read `before` bytes into the hello ends it, if it does: an EOF or a failure.
fn ended(read: io::Result<usize>, before: usize) -> Option<ReadError> {
    match read {
        Ok(0) => Some(ReadError::Closed { read: before }),
        Ok(_) => None,
        Err(source) => Some(ReadError::Io { read: before, source }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// A record header that announces 16 KiB, then silence: the buffer holds what arrived and
    /// a small constant, not what was announced.
    #[tokio::test]
    async fn a_silent_client_holds_little() {
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(&[0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0xff, 0xf0]).await.unwrap();
        let mut buf = BytesMut::new();
        let got = read_client_hello(&mut server, &mut buf, HelloLimits::default(), Duration::from_millis(50)).await;
        assert!(matches!(got, Err(ReadError::Timeout(_))), "{got:?}");
        assert_eq!(buf.len(), 9);
        assert!(buf.capacity() < 64, "{} bytes held for 9 received", buf.capacity());
    }

    /// The same from a socket read without waiting.
    #[test]
    fn reading_what_is_there_holds_what_arrived() {
        let mut buf = BytesMut::new();
        let bytes: &[u8] = &[0x16, 0x03, 0x01, 0x40, 0x00, 0x01, 0x00, 0xff, 0xf0];
        struct Then<'a>(&'a [u8]);
        impl Read for Then<'_> {
            fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
                if self.0.is_empty() {
                    return Err(io::ErrorKind::WouldBlock.into());
                }
                let n = self.0.len().min(out.len());
                out[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        assert!(read_client_hello_now(Then(bytes), &mut buf, HelloLimits::default()).is_none());
        assert_eq!(&buf[..], bytes);
        assert!(buf.capacity() < 64, "{} bytes held for 9 received", buf.capacity());
    }
}
