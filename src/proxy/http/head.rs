//! HTTP/1.x request heads: read bounded and timed (httparse does the parsing), how each
//! request's body is framed (anything ambiguous is refused, as request smuggling defences do),
//! the request's target, and the short responses snigate answers with.

use std::net::{IpAddr, SocketAddr};

use bytes::BytesMut;
use thiserror::Error;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;

use crate::name::Name;
use crate::reason::Reason;

/// Cap on a request head (request line and headers).
pub const MAX_HEAD: usize = 16 * 1024;
/// Cap on the number of headers.
const MAX_HEADERS: usize = 64;

/// The parts of a request head snigate decides on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Head {
    /// The method, as sent.
    pub method: String,
    /// The request-target, as sent.
    pub target: String,
    /// The Host header, when present (exactly once).
    pub host: Option<String>,
    /// The Proxy-Authorization header value, when present.
    pub proxy_authorization: Option<Vec<u8>>,
    /// Length of the head in bytes, final CRLF included.
    pub len: usize,
    /// How the request's body is delimited.
    pub body: Body,
    /// Whether another request may follow on the connection: not after `Connection: close`,
    /// nor after an HTTP/1.0 request without `Connection: keep-alive`.
    pub persistent: bool,
    /// A WebSocket handshake: `Upgrade: websocket` with `Connection: upgrade`.
    pub websocket: bool,
}

/// How a request's body is delimited (RFC 9112 6.3). A request is never delimited by the
/// close of its connection: without Content-Length or Transfer-Encoding it has no body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Body {
    /// No body.
    None,
    /// `Content-Length` bytes.
    Length(u64),
    /// Chunked transfer coding, ended by the last chunk and the trailer section.
    Chunked,
}

/// Where a request wants to go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A host name and port.
    Name(Name, u16),
    /// An address literal and port.
    Addr(SocketAddr),
}

impl std::fmt::Display for Target {
    /// `host:port`, or the address literal as written in a request (`[v6]:port`).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Name(name, port) => write!(f, "{name}:{port}"),
            Target::Addr(addr) => write!(f, "{addr}"),
        }
    }
}

impl Target {
    /// The port named.
    pub fn port(&self) -> u16 {
        match self {
            Target::Name(_, port) => *port,
            Target::Addr(addr) => addr.port(),
        }
    }

    /// What the rules decide on: the name, or (for an address literal) the destination.
    pub fn parts(&self) -> (Option<&Name>, Option<SocketAddr>) {
        match self {
            Target::Name(name, _) => (Some(name), None),
            Target::Addr(addr) => (None, Some(*addr)),
        }
    }
}

/// Why no usable request head could be read.
#[derive(Debug, Error)]
pub enum HeadError {
    /// Not an HTTP/1.x request, or one that names its host ambiguously.
    #[error("bad request: {0}")]
    Bad(String),
    /// Framing that two HTTP implementations could read differently (request smuggling):
    /// Content-Length with Transfer-Encoding, several or malformed Content-Lengths, a
    /// Transfer-Encoding whose final coding is not `chunked`, a folded header line, a malformed
    /// chunk.
    #[error("ambiguous request framing: {0}")]
    Ambiguous(String),
    /// Longer than [`MAX_HEAD`].
    #[error("request head longer than {MAX_HEAD} bytes")]
    TooLarge,
    /// Not complete by the deadline.
    #[error("no complete request head in time")]
    Timeout,
    /// The client closed or failed after `read` bytes.
    #[error("client closed after {read} bytes of request head")]
    Closed {
        /// Bytes received.
        read: usize,
    },
}

/// Whether `first`, the first bytes a client sent, may begin an HTTP/1 request: a method token
/// (uppercase letters, at most 16) that is complete with its space, or still arriving.
pub fn may_be_request(first: &[u8]) -> bool {
    let method = first.iter().take_while(|b| b.is_ascii_uppercase()).count();
    (1..=16).contains(&method) && first.get(method).is_none_or(|&b| b == b' ')
}

/// Most bytes read to find a client's first line, in transparent mode.
pub const MAX_LINE: usize = 8192;

/// Whether `first` starts with a complete HTTP/1 request line: `METHOD SP target SP HTTP/1.x`.
pub fn is_request_line(first: &[u8]) -> bool {
    let Some(end) = first.iter().position(|&b| b == b'\n') else { return false };
    let line = first[..end].strip_suffix(b"\r").unwrap_or(&first[..end]);
    let mut parts = line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return false;
    };
    may_be_request(method) && !target.is_empty() && version.starts_with(b"HTTP/1.") && version.len() == 8
}

/// Reads one request head into `buf` by `deadline`. On success `buf` holds the head and
/// whatever the client sent after it.
///
/// Linear in the bytes received, however they are split: the head is parsed when its blank
/// line has arrived (found by scanning only the new bytes), and once before that, on the first
/// bytes, so that what is not HTTP at all is refused at once.
pub async fn read_head<R: AsyncRead + Unpin>(
    io: &mut R,
    buf: &mut BytesMut,
    deadline: Instant,
) -> Result<Head, HeadError> {
    let read = async {
        let (mut scanned, mut started) = (0usize, false);
        // Where the request line starts: httparse skips empty lines before it, which must not
        // count as the blank line that ends the head.
        let mut content: Option<usize> = None;
        loop {
            if content.is_none() {
                content = buf[scanned..].iter().position(|b| !matches!(b, b'\r' | b'\n')).map(|at| scanned + at);
            }
            // A blank line ends the head: `\n\n` or `\n\r\n` (httparse accepts bare LF too).
            let ended = content.is_some_and(|start| {
                let new = &buf[scanned.saturating_sub(2).max(start)..];
                new.windows(2).any(|w| w == b"\n\n") || new.windows(3).any(|w| w == b"\n\r\n")
            });
            scanned = buf.len();
            if (ended || !started) && !buf.is_empty() {
                started = true;
                if let Some(head) = parse_head(buf)? {
                    return Ok(head);
                }
            }
            if buf.len() >= MAX_HEAD {
                return Err(HeadError::TooLarge);
            }
            buf.reserve(2048);
            match io.read_buf(buf).await {
                Ok(0) | Err(_) => return Err(HeadError::Closed { read: buf.len() }),
                Ok(_) => {}
            }
        }
    };
    tokio::time::timeout_at(deadline, read).await.unwrap_or(Err(HeadError::Timeout))
}

/// Parses a complete head at the start of `bytes`; `Ok(None)` while incomplete.
pub fn parse_head(bytes: &[u8]) -> Result<Option<Head>, HeadError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let len = match req.parse(bytes) {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) => return Ok(None),
        Err(e) => return Err(HeadError::Bad(e.to_string())),
    };
    let field = |name: &str| req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case(name)).collect::<Vec<_>>();
    let host = match field("host").as_slice() {
        [] => None,
        [h] => Some(
            std::str::from_utf8(h.value).map_err(|_| HeadError::Bad("Host is not ASCII".into()))?.trim().to_string(),
        ),
        _ => return Err(HeadError::Bad("several Host headers".into())),
    };
    let proxy_authorization = match field("proxy-authorization").as_slice() {
        [] => None,
        [h] => Some(h.value.to_vec()),
        _ => return Err(HeadError::Bad("several Proxy-Authorization headers".into())),
    };
    let (body, persistent, websocket) = framing(&req, &bytes[..len])?;
    Ok(Some(Head {
        method: req.method.unwrap_or_default().to_string(),
        target: req.path.unwrap_or_default().to_string(),
        host,
        proxy_authorization,
        len,
        body,
        persistent,
        websocket,
    }))
}

/// A request's body framing, whether the connection persists after it, and whether it is a
/// WebSocket handshake. Anything another implementation could read differently is refused.
fn framing(req: &httparse::Request<'_, '_>, head: &[u8]) -> Result<(Body, bool, bool), HeadError> {
    let ambiguous = |why: String| HeadError::Ambiguous(why);
    // A folded line (obs-fold) joins its predecessor for some readers and not others.
    if head.windows(2).any(|w| w[0] == b'\n' && matches!(w[1], b' ' | b'\t')) {
        return Err(ambiguous("a folded header line".into()));
    }
    let mut length: Option<u64> = None;
    let mut codings: Vec<&[u8]> = Vec::new();
    let (mut connection, mut upgrade) = (Vec::new(), Vec::new());
    for h in req.headers.iter() {
        let name = h.name;
        if name.eq_ignore_ascii_case("content-length") {
            let value = trim(h.value);
            let valid = !value.is_empty() && value.len() <= 18 && value.iter().all(u8::is_ascii_digit);
            if !valid {
                return Err(ambiguous(format!("Content-Length {:?}", String::from_utf8_lossy(h.value))));
            }
            if length.is_some() {
                return Err(ambiguous("several Content-Length headers".into()));
            }
            length = std::str::from_utf8(value).ok().and_then(|v| v.parse().ok());
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            codings.extend(h.value.split(|&b| b == b',').map(trim));
        } else if name.eq_ignore_ascii_case("connection") {
            connection.extend(h.value.split(|&b| b == b',').map(trim));
        } else if name.eq_ignore_ascii_case("upgrade") {
            upgrade.extend(h.value.split(|&b| b == b',').map(trim));
        }
    }
    let is = |token: &[u8], name: &str| token.eq_ignore_ascii_case(name.as_bytes());
    let http10 = req.version == Some(0);
    let body = match (length, codings.as_slice()) {
        (length, []) => length.map_or(Body::None, Body::Length),
        (Some(_), _) => return Err(ambiguous("both Content-Length and Transfer-Encoding".into())),
        (None, _) if http10 => return Err(ambiguous("Transfer-Encoding in an HTTP/1.0 request".into())),
        (None, [before @ .., last]) => {
            let token = |c: &&[u8]| !c.is_empty() && c.iter().all(|&b| is_tchar(b));
            if !is(last, "chunked") || before.iter().any(|c| is(c, "chunked")) || !codings.iter().all(token) {
                let codings: Vec<_> = codings.iter().map(|c| String::from_utf8_lossy(c)).collect();
                return Err(ambiguous(format!(
                    "Transfer-Encoding {:?} does not end in one chunked",
                    codings.join(",")
                )));
            }
            Body::Chunked
        }
    };
    let says = |token: &str| connection.iter().any(|c| is(c, token));
    let persistent = if http10 { says("keep-alive") && !says("close") } else { !says("close") };
    let websocket = says("upgrade") && upgrade.iter().any(|u| is(u, "websocket"));
    Ok((body, persistent, websocket))
}

/// `value` without the optional whitespace around it.
fn trim(value: &[u8]) -> &[u8] {
    let start = value.iter().position(|b| !matches!(b, b' ' | b'\t')).unwrap_or(value.len());
    let end = value.iter().rposition(|b| !matches!(b, b' ' | b'\t')).map_or(start, |e| e + 1);
    &value[start..end]
}

/// Whether `b` may appear in a token (RFC 9110 5.6.2).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// `host`, `host:port`, `[v6]:port` or `v4:port` → a target; `default_port` when none is given.
/// Names are validated and normalised like an SNI.
pub fn parse_authority(authority: &str, default_port: u16) -> Result<Target, HeadError> {
    let bad = || HeadError::Bad(format!("bad authority {authority:?}"));
    if let Ok(addr) = authority.parse::<SocketAddr>() {
        return Ok(Target::Addr(addr));
    }
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.starts_with('[') => (h, p.parse().map_err(|_| bad())?),
        _ => (authority, default_port),
    };
    let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if let Ok(ip) = host.parse::<IpAddr>() {
        return Ok(Target::Addr(SocketAddr::new(ip, port)));
    }
    let name = Name::parse(host.as_bytes(), false).map_err(|e| HeadError::Bad(format!("bad host {host:?}: {e}")))?;
    Ok(Target::Name(name, port))
}

/// The target of a plain-HTTP request: the authority of an absolute-form URI (scheme in any
/// case), else the Host header. When both are present they must agree: a request that names two
/// hosts is refused rather than guessed at. An `https://` URI is refused too: TLS goes through
/// a `connect` listener, where its ClientHello is checked.
pub fn http_target(head: &Head, default_port: u16) -> Result<Target, HeadError> {
    let scheme = |s: &str| head.target.get(..s.len()).is_some_and(|p| p.eq_ignore_ascii_case(s));
    if scheme("https://") {
        return Err(HeadError::Bad("an https:// URI in plain-HTTP mode".into()));
    }
    let absolute = scheme("http://").then(|| {
        let rest = &head.target["http://".len()..];
        rest.split(['/', '?']).next().unwrap_or(rest)
    });
    let from_uri = absolute.map(|a| parse_authority(a, default_port)).transpose()?;
    let from_host = head.host.as_deref().map(|h| parse_authority(h, default_port)).transpose()?;
    match (from_uri, from_host) {
        (Some(uri), Some(host)) if uri != host => {
            Err(HeadError::Bad("absolute URI and Host name different hosts".into()))
        }
        (Some(target), _) | (None, Some(target)) => Ok(target),
        (None, None) => Err(HeadError::Bad("no Host".into())),
    }
}

/// A complete short response that closes the connection.
pub fn response(status: u16, reason: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// How the explicit modes refuse a request, in HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// 400, with what was wrong.
    BadRequest(&'static str),
    /// 405, with what is served: a method other than CONNECT in `connect` mode, a CONNECT in
    /// `http` and transparent modes.
    MethodNotAllowed(&'static str),
    /// 407, with a Basic challenge.
    AuthRequired,
    /// 403: the rules deny the request.
    Forbidden,
    /// 502: the upstream cannot be found or reached.
    BadGateway,
}

impl Refusal {
    /// The refusal of a request denied for `reason` when no more specific one applies.
    pub fn for_reason(reason: Reason) -> Refusal {
        match reason {
            Reason::UpstreamError => Refusal::BadGateway,
            _ => Refusal::Forbidden,
        }
    }

    /// The complete response for a request denied for `reason`.
    pub fn response(self, reason: Reason) -> Vec<u8> {
        match self {
            Refusal::BadRequest(body) => response(400, "Bad Request", body),
            Refusal::MethodNotAllowed(body) => response(405, "Method Not Allowed", body),
            Refusal::AuthRequired => {
                let body = "snigate: proxy authentication required\n";
                let mut response = response(407, "Proxy Authentication Required", body);
                let at = response.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 2;
                response.splice(at..at, b"Proxy-Authenticate: Basic realm=\"snigate\"\r\n".iter().copied());
                response
            }
            // Whether a rule or the default decided is for the operator's log, not the client.
            Refusal::Forbidden => response(403, "Forbidden", "snigate: denied by policy\n"),
            Refusal::BadGateway => response(502, "Bad Gateway", &format!("snigate: {reason}\n")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Transparent mode takes an HTTP/1 request line for HTTP, and other verb-first protocols
    /// for what they are.
    #[test]
    fn request_lines_are_told_from_other_line_protocols() {
        for line in ["GET / HTTP/1.1\r\n", "POST http://x/ HTTP/1.0\n", "OPTIONS * HTTP/1.1\r\nHost: x\r\n"] {
            assert!(is_request_line(line.as_bytes()), "{line:?}");
        }
        for line in ["NICK alice\r\n", "EHLO mail.example\r\n", "GET / HTTP/2\r\n", "GET /\r\n", "GET / HTTP/1.1"] {
            assert!(!is_request_line(line.as_bytes()), "{line:?}");
        }
    }

    fn head(text: &str) -> Head {
        parse_head(text.as_bytes()).unwrap().unwrap()
    }

    #[test]
    fn connect_heads_and_authorities() {
        let h = head("CONNECT Acme.My.Salesforce.com:443 HTTP/1.1\r\nHost: acme.my.salesforce.com:443\r\n\r\n");
        assert_eq!(h.method, "CONNECT");
        assert_eq!(
            parse_authority(&h.target, 443).unwrap(),
            Target::Name(Name::parse(b"acme.my.salesforce.com", false).unwrap(), 443)
        );
        assert_eq!(
            parse_authority("[2001:db8::1]:8443", 443).unwrap(),
            Target::Addr("[2001:db8::1]:8443".parse().unwrap())
        );
        assert_eq!(parse_authority("10.0.0.1", 443).unwrap(), Target::Addr("10.0.0.1:443".parse().unwrap()));
        assert!(parse_authority("a..b:443", 443).is_err());
        assert!(parse_authority("a.com:99999", 443).is_err());
        assert!(parse_head(b"CONNECT a.com:443 HTTP/1.1\r\n").unwrap().is_none());
        assert!(parse_head(b"\x16\x03\x01\x00").is_err());
    }

    #[test]
    fn plain_http_targets() {
        let t = |s: &str| http_target(&head(s), 80);
        assert_eq!(
            t("GET / HTTP/1.1\r\nHost: example.com\r\n\r\n").unwrap(),
            Target::Name(Name::parse(b"example.com", false).unwrap(), 80)
        );
        assert_eq!(
            t("GET http://example.com:8080/x HTTP/1.1\r\nHost: example.com:8080\r\n\r\n").unwrap(),
            Target::Name(Name::parse(b"example.com", false).unwrap(), 8080)
        );
        assert!(t("GET http://a.com/ HTTP/1.1\r\nHost: b.com\r\n\r\n").is_err());
        assert!(t("GET HTTP://a.com/ HTTP/1.1\r\nHost: b.com\r\n\r\n").is_err(), "the scheme in any case");
        assert_eq!(
            t("GET HtTp://a.com:81/ HTTP/1.1\r\n\r\n").unwrap(),
            Target::Name(Name::parse(b"a.com", false).unwrap(), 81)
        );
        assert!(t("GET https://a.com/ HTTP/1.1\r\nHost: a.com\r\n\r\n").is_err(), "TLS goes through CONNECT");
        assert!(t("GET HTTPS://a.com/ HTTP/1.1\r\nHost: a.com\r\n\r\n").is_err());
        assert!(t("GET / HTTP/1.0\r\n\r\n").is_err());
        assert!(parse_head(b"GET / HTTP/1.1\r\nHost: a.com\r\nHost: b.com\r\n\r\n").is_err());
    }

    /// A head trickled one byte at a time is read whole; bytes that are not HTTP are refused
    /// on the first read, not at the deadline.
    #[tokio::test]
    async fn heads_are_read_across_any_split() {
        use tokio::io::AsyncWriteExt;
        let request = b"GET http://a.com/ HTTP/1.1\r\nHost: a.com\r\nX: y\r\n\r\nbody";
        let (mut client, mut server) = tokio::io::duplex(1);
        let writer = tokio::spawn(async move {
            for b in request {
                if client.write_all(&[*b]).await.is_err() {
                    return;
                }
            }
        });
        let mut buf = BytesMut::new();
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let head = read_head(&mut server, &mut buf, deadline).await.unwrap();
        assert_eq!((head.method.as_str(), head.host.as_deref()), ("GET", Some("a.com")));
        assert_eq!(&buf[head.len..], &b"body"[..buf.len() - head.len]);
        drop(server);
        writer.await.unwrap();

        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"\x16\x03\x01\x00\x05hello").await.unwrap();
        let mut buf = BytesMut::new();
        let refused = read_head(&mut server, &mut buf, deadline).await;
        assert!(matches!(refused, Err(HeadError::Bad(_))), "{refused:?}");
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"GET / HTTP/1.1\nHost: a.com\n\n").await.unwrap();
        let mut buf = BytesMut::new();
        assert!(read_head(&mut server, &mut buf, deadline).await.is_ok(), "bare LF line ends");
        let (mut client, mut server) = tokio::io::duplex(64);
        client.write_all(b"\r\n\r\n\nGET / HTTP/1.1\r\nHost: a.com\r\n\r\n").await.unwrap();
        let mut buf = BytesMut::new();
        let head = read_head(&mut server, &mut buf, deadline).await.unwrap();
        assert_eq!(head.host.as_deref(), Some("a.com"), "empty lines before the request line are skipped");
    }
}

#[cfg(test)]
mod framing_tests {
    use super::*;

    fn framed(text: &str) -> Result<(Body, bool, bool), HeadError> {
        let head = parse_head(text.as_bytes())?.expect("complete");
        Ok((head.body, head.persistent, head.websocket))
    }

    #[test]
    fn bodies_and_persistence() {
        let ok = |text: &str| framed(text).unwrap();
        assert_eq!(ok("GET / HTTP/1.1\r\nHost: a\r\n\r\n"), (Body::None, true, false));
        assert_eq!(ok("POST / HTTP/1.1\r\nContent-Length: 12\r\n\r\n"), (Body::Length(12), true, false));
        assert_eq!(ok("POST / HTTP/1.1\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n").0, Body::Chunked);
        assert!(!ok("GET / HTTP/1.1\r\nConnection: keep-alive, close\r\n\r\n").1);
        assert!(!ok("GET / HTTP/1.0\r\n\r\n").1, "HTTP/1.0 closes by default");
        assert!(ok("GET / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n").1);
        assert!(ok("GET / HTTP/1.1\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n").2);
        assert!(!ok("GET / HTTP/1.1\r\nUpgrade: websocket\r\n\r\n").2, "without Connection: upgrade");
        assert!(!ok("GET / HTTP/1.1\r\nConnection: upgrade\r\nUpgrade: h2c\r\n\r\n").2, "only WebSocket");
    }

    /// What request smuggling uses is refused as ambiguous, not guessed at.
    #[test]
    fn ambiguous_framing_is_refused() {
        for text in [
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 5, 5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: +5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: 0x5\r\n\r\n",
            "POST / HTTP/1.1\r\nContent-Length: \r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: xchunked\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked;q=1\r\n\r\n",
            "POST / HTTP/1.1\r\nTransfer-Encoding: ,\r\n\r\n",
            "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(matches!(framed(text), Err(HeadError::Ambiguous(_))), "{text:?}: {:?}", framed(text));
        }
        // A folded line is refused, by httparse or by the framing check.
        let folded = framed("POST / HTTP/1.1\r\nX: a\r\n Transfer-Encoding: chunked\r\nContent-Length: 1\r\n\r\n");
        assert!(matches!(folded, Err(HeadError::Ambiguous(_) | HeadError::Bad(_))), "{folded:?}");
        let spaced = framed("POST / HTTP/1.1\r\nTransfer-Encoding : chunked\r\n\r\n");
        assert!(spaced.is_err(), "whitespace before the colon");
    }
}
