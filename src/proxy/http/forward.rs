//! The client → upstream direction of an HTTP/1 connection. Every request's head is read whole
//! (at most [`MAX_HEAD`] bytes) and decided before any of its bytes go on; its body follows
//! its framing, streamed as it arrives. Each byte is forwarded as it came: an allowed request
//! loses none. The first refused request ends the direction; what came after it is never
//! forwarded. The upstream → client direction stays a splice.

use std::io;

use bytes::{Buf, BytesMut};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::body::BodyReader;
use super::head::{Head, HeadError, MAX_HEAD, parse_head};
use crate::proxy::reject::Denied;
use crate::proxy::splice::{Meter, write_all};

/// Bytes read from the client per system call.
const READ: usize = 16 * 1024;

/// Where the client's byte stream is.
enum State {
    /// In a request's body; `persistent`: another request may follow it.
    Body { body: BodyReader, persistent: bool },
    /// Before a request head.
    Head,
    /// After the connection's last request: what the client sends is not forwarded.
    Last,
}

/// Forwards the requests `client` sends to `upstream`, starting in the body of `first` (whose
/// head was decided and sent), with `buf` the bytes read after that head. Each later head is
/// checked by `decide` (host, rules) and by its framing; the first refused one ends the
/// direction: the upstream's side is closed, and the refusal is returned for the client. An
/// ambiguous head or body is refused by [`refusal`]. `Ok(None)`: the client closed.
pub(in crate::proxy) async fn requests(
    client: &TcpStream,
    upstream: &TcpStream,
    mut buf: BytesMut,
    first: &Head,
    meter: &Meter<'_>,
    mut decide: impl FnMut(&Head) -> Result<(), Denied>,
    refusal: impl Fn(HeadError) -> Denied,
) -> io::Result<Option<Denied>> {
    let mut state = State::Body { body: BodyReader::new(first.body), persistent: first.persistent };
    let refuse = |denied: Denied| meter.ended(upstream).map(|()| Some(denied));
    loop {
        match &mut state {
            State::Body { body, persistent } => {
                let n = match body.advance(&buf) {
                    Ok(n) => n,
                    Err(e) => return refuse(refusal(HeadError::Ambiguous(e.to_string()))),
                };
                if n > 0 {
                    write_all(&buf[..n], upstream, meter).await?;
                    buf.advance(n);
                }
                if body.done() {
                    state = if *persistent { State::Head } else { State::Last };
                    continue;
                }
            }
            State::Head if !buf.is_empty() => match parse_head(&buf) {
                Ok(Some(head)) => {
                    if let Err(denied) = decide(&head) {
                        return refuse(denied);
                    }
                    write_all(&buf[..head.len], upstream, meter).await?;
                    buf.advance(head.len);
                    state = State::Body { body: BodyReader::new(head.body), persistent: head.persistent };
                    continue;
                }
                Ok(None) if buf.len() < MAX_HEAD => {}
                Ok(None) => return refuse(refusal(HeadError::TooLarge)),
                Err(e) => return refuse(refusal(e)),
            },
            State::Head => {}
            State::Last => buf.clear(),
        }
        // A client that closes mid-request leaves that request unfinished upstream, as it would
        // have without snigate; a partial head was never sent.
        if !read(client, &mut buf).await? {
            return meter.ended(upstream).map(|()| None);
        }
    }
}

/// Reads what the client has sent into `buf`; `false` at its EOF.
async fn read(client: &TcpStream, buf: &mut BytesMut) -> io::Result<bool> {
    buf.reserve(READ);
    loop {
        client.readable().await?;
        match client.try_read_buf(buf) {
            Ok(n) => return Ok(n > 0),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(e),
        }
    }
}

/// After a WebSocket handshake that opened the connection (its first request, without a body,
/// sent): reads the upstream's response head by `deadline` and passes it to the client as it
/// is. Whether it is `101 Switching Protocols`, and the bytes passed on. Only then is the
/// connection another protocol: a server that declines the upgrade keeps speaking HTTP, and so
/// must the client, request by request.
pub async fn switched(upstream: &mut TcpStream, client: &mut TcpStream, deadline: Instant) -> io::Result<(bool, u64)> {
    let mut buf = BytesMut::with_capacity(2048);
    let status = loop {
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut response = httparse::Response::new(&mut headers);
        match response.parse(&buf) {
            Ok(httparse::Status::Complete(_)) => break response.code,
            Ok(httparse::Status::Partial) if buf.len() < MAX_HEAD => {}
            _ => break None,
        }
        match tokio::time::timeout_at(deadline, upstream.read_buf(&mut buf)).await {
            Ok(Ok(0)) => break None,
            Ok(Ok(_)) => {}
            Ok(Err(e)) => return Err(e),
            Err(_) => return Err(io::ErrorKind::TimedOut.into()),
        }
    };
    client.write_all(&buf).await?;
    Ok((status == Some(101), buf.len() as u64))
}
