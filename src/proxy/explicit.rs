//! The explicit modes: `connect` (an HTTP CONNECT proxy whose tunnel must carry a ClientHello
//! for the host it named) and `http` (plain HTTP filtered on the request's host).

use std::net::SocketAddr;

use base64::Engine;
use bytes::BytesMut;
use subtle::ConstantTimeEq;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::Listener;
use super::connection::{Outcome, Stage, decide, forward, resolve};
use super::http::{self, Head, HeadError, Target};
use crate::hello::ClientHello;
use crate::reason::Reason;

/// Port of a CONNECT target without one, and of plain HTTP.
const HTTPS_PORT: u16 = 443;
const HTTP_PORT: u16 = 80;

/// Reads the CONNECT request, checks credentials and the rules, and answers: `200` and the
/// target when allowed (the tunnel's first bytes stay in `buf`), or a `4xx` and the reason.
pub async fn connect(
    listener: &Listener,
    client: &mut TcpStream,
    out: &mut Outcome,
    buf: &mut BytesMut,
    deadline: Instant,
) -> Result<Target, Reason> {
    let head = read(client, out, buf, deadline).await?;
    if !head.method.eq_ignore_ascii_case("CONNECT") {
        out.error = Some(format!("method {} in connect mode", head.method));
        answer(client, 405, "Method Not Allowed", "snigate: only CONNECT is served here\n").await;
        return Err(Reason::BadRequest);
    }
    if !listener.credentials.is_empty() && !authorized(&listener.credentials, head.proxy_authorization.as_deref()) {
        let body = "snigate: proxy authentication required\n";
        let mut response = http::response(407, "Proxy Authentication Required", body);
        let at = response.windows(4).position(|w| w == b"\r\n\r\n").expect("a head") + 2;
        response.splice(at..at, b"Proxy-Authenticate: Basic realm=\"snigate\"\r\n".iter().copied());
        let _ = client.write_all(&response).await;
        return Err(Reason::ProxyAuth);
    }
    let target = match http::parse_authority(&head.target, HTTPS_PORT) {
        Ok(t) => t,
        Err(e) => {
            out.error = Some(e.to_string());
            answer(client, 400, "Bad Request", "snigate: bad CONNECT target\n").await;
            return Err(Reason::BadRequest);
        }
    };
    let _ = buf.split_to(head.len);
    out.stage = Stage::Decide;
    let (name, addr) = target.parts();
    if let Err(reason) = decide(listener, out, name, addr) {
        answer(client, 403, "Forbidden", &format!("snigate: denied ({reason})\n")).await;
        return Err(reason);
    }
    if let Err(e) = client.write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n").await {
        out.error = Some(e.to_string());
        return Err(Reason::ClientClosed);
    }
    out.stage = Stage::Hello;
    Ok(target)
}

/// The upstream of a CONNECT tunnel, once its ClientHello is read. The hello must name the
/// host the CONNECT named (case and one trailing dot aside), or the tunnel is cut with
/// `sni_mismatch`: otherwise an allowed CONNECT could carry a hello for any name, to an
/// address that serves several. A CONNECT to an address literal is decided by `ip` rules, and
/// a hello in it that names a host must be allowed by the name rules too.
pub async fn tunnel_candidates(
    listener: &Listener,
    out: &mut Outcome,
    hello: &ClientHello,
    target: &Target,
) -> Result<Vec<SocketAddr>, Reason> {
    out.stage = Stage::Decide;
    match (target, &hello.sni) {
        (Target::Name(name, port), Some(sni)) if sni == name => {
            out.stage = Stage::Resolve;
            resolve(listener, out, name, *port).await
        }
        (Target::Name(name, _), sni) => {
            out.error = Some(format!(
                "CONNECT {name} carried a ClientHello for {}",
                sni.as_ref().map_or("no name", |n| n.as_str())
            ));
            Err(Reason::SniMismatch)
        }
        (Target::Addr(addr), Some(sni)) => decide(listener, out, Some(sni), Some(*addr)).map(|()| vec![*addr]),
        (Target::Addr(addr), None) => Ok(vec![*addr]),
    }
}

/// Plain HTTP: the first request's host decides; allowed requests go, byte for byte, to that
/// host; denied ones get `403`, requests without a host `400`.
pub async fn plain_http(
    listener: &Listener,
    client: &mut TcpStream,
    out: &mut Outcome,
    buf: &mut BytesMut,
    deadline: Instant,
) -> Result<(), Reason> {
    let head = read(client, out, buf, deadline).await?;
    let target = match http::http_target(&head, HTTP_PORT) {
        Ok(t) => t,
        Err(e) => {
            out.error = Some(e.to_string());
            answer(client, 400, "Bad Request", "snigate: the request names no usable host\n").await;
            return Err(Reason::BadRequest);
        }
    };
    out.sni = match &target {
        Target::Name(name, _) => Some(name.as_str().to_string()),
        Target::Addr(_) => None,
    };
    out.stage = Stage::Decide;
    let (name, addr) = target.parts();
    if let Err(reason) = decide(listener, out, name, addr) {
        answer(client, 403, "Forbidden", &format!("snigate: denied ({reason})\n")).await;
        return Err(reason);
    }
    let candidates = match &target {
        Target::Name(name, port) => {
            out.stage = Stage::Resolve;
            match resolve(listener, out, name, *port).await {
                Ok(candidates) => candidates,
                Err(reason) => {
                    answer(client, 502, "Bad Gateway", &format!("snigate: {reason}\n")).await;
                    return Err(reason);
                }
            }
        }
        Target::Addr(addr) => vec![*addr],
    };
    if let Err(reason) = forward(listener, client, out, &candidates, buf, None).await {
        answer(client, 502, "Bad Gateway", &format!("snigate: {reason}\n")).await;
        return Err(reason);
    }
    Ok(())
}

/// Reads a request head; a failure is answered (`400`) where the client can still read it.
async fn read(
    client: &mut TcpStream,
    out: &mut Outcome,
    buf: &mut BytesMut,
    deadline: Instant,
) -> Result<Head, Reason> {
    out.stage = Stage::Hello;
    match http::read_head(client, buf, deadline).await {
        Ok(head) => Ok(head),
        Err(HeadError::Closed { read: 0 }) => Err(Reason::ClientClosed),
        Err(HeadError::Timeout) => Err(Reason::HelloTimeout),
        Err(e) => {
            out.error = Some(e.to_string());
            if !matches!(e, HeadError::Closed { .. }) {
                answer(client, 400, "Bad Request", "snigate: bad request\n").await;
            }
            Err(Reason::BadRequest)
        }
    }
}

async fn answer(client: &mut TcpStream, status: u16, reason: &str, body: &str) {
    let _ = client.write_all(&http::response(status, reason, body)).await;
    let _ = client.shutdown().await;
}

/// Whether `header` (`Basic base64(user:password)`) matches one of `credentials`, comparing in
/// constant time so that timing reveals nothing about how much of a secret matched.
pub fn authorized(credentials: &[Vec<u8>], header: Option<&[u8]>) -> bool {
    let Some(value) = header.and_then(|h| std::str::from_utf8(h).ok()) else { return false };
    let Some(encoded) = value.trim().strip_prefix("Basic ").or_else(|| value.trim().strip_prefix("basic ")) else {
        return false;
    };
    let Ok(given) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else { return false };
    credentials.iter().fold(false, |found, c| found | bool::from(c.as_slice().ct_eq(&given)))
}

/// Parses a credentials file: one `user:password` a line; `#` comments and blank lines ignored.
pub fn parse_credentials(text: &str) -> Result<Vec<Vec<u8>>, String> {
    text.lines()
        .enumerate()
        .map(|(i, l)| (i + 1, l.trim()))
        .filter(|(_, l)| !l.is_empty() && !l.starts_with('#'))
        .map(
            |(n, l)| {
                if l.contains(':') {
                    Ok(l.as_bytes().to_vec())
                } else {
                    Err(format!("line {n}: expected user:password"))
                }
            },
        )
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basic_credentials() {
        let creds = parse_credentials("# ops\nalice:s3cret\n\nbob:pa:ss\n").unwrap();
        let b64 = |s: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(s));
        assert!(authorized(&creds, Some(b64("alice:s3cret").as_bytes())));
        assert!(authorized(&creds, Some(b64("bob:pa:ss").as_bytes())));
        assert!(!authorized(&creds, Some(b64("alice:s3cre").as_bytes())));
        assert!(!authorized(&creds, Some(b"Bearer x")));
        assert!(!authorized(&creds, None));
        assert!(parse_credentials("nocolon\n").is_err());
    }
}
