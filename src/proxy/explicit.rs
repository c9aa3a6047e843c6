//! The explicit modes' requests: `connect` (an HTTP CONNECT proxy whose tunnel must carry a
//! ClientHello for the host it named) and `http` (plain HTTP filtered on each request's host,
//! as transparent mode's HTTP path is). Reading and checking a request is here; deciding and
//! forwarding are the connection's stages.

use base64::Engine;
use bytes::BytesMut;
use subtle::ConstantTimeEq;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::http::{self, Head, HeadError, Refusal, Target};
use super::reject::{Denied, Reply};
use crate::config::{Credentials, HTTPS_PORT, MAX_CREDENTIAL};
use crate::name::Name;
use crate::reason::Reason;

/// Reads a request head by `deadline`. A client that leaves or stalls is not answered; a
/// malformed head is answered `400` where the client can still read it.
pub(super) async fn read_request(
    client: &mut TcpStream,
    buf: &mut BytesMut,
    deadline: Instant,
) -> Result<Head, Denied> {
    match http::read_head(client, buf, deadline).await {
        Ok(head) => Ok(head),
        Err(HeadError::Closed { read: 0 }) => Err(Denied::by(Reason::ClientClosed).answered(Reply::Silent)),
        Err(HeadError::Timeout) => Err(Denied::by(Reason::HelloTimeout).answered(Reply::Silent)),
        Err(e @ HeadError::Closed { .. }) => Err(Denied::failed(Reason::BadRequest, e).answered(Reply::Silent)),
        Err(e) => Err(refusal(e)),
    }
}

/// The `400` a request that cannot be read one way is refused with: ambiguous framing (request
/// smuggling) has its own reason.
pub(super) fn refusal(e: HeadError) -> Denied {
    let (reason, body) = match e {
        HeadError::Ambiguous(_) => (Reason::AmbiguousRequest, "snigate: ambiguous request framing\n"),
        _ => (Reason::BadRequest, "snigate: bad request\n"),
    };
    Denied::failed(reason, e).answered(Reply::Http(Refusal::BadRequest(body)))
}

/// `http` and transparent modes: the target of one request on a plain-HTTP connection (each is
/// checked). A CONNECT is refused, never forwarded: it would open a tunnel nothing inspects. A
/// host without a port is on `default_port`; `ports`, where given, bound the port it names.
pub(super) fn http_request(head: &Head, default_port: u16, ports: Option<&[u16]>) -> Result<Target, Denied> {
    if head.method.eq_ignore_ascii_case("CONNECT") {
        let error = format!("CONNECT {} on a plain-HTTP connection", head.target);
        let body = "snigate: CONNECT is not served here\n";
        return Err(Denied::failed(Reason::BadRequest, error).answered(Reply::Http(Refusal::MethodNotAllowed(body))));
    }
    let target = http_target(head, default_port)?;
    if let Some(ports) = ports {
        check_port(&target, ports)?;
    }
    Ok(target)
}

/// `connect` mode: checks the method and the credentials, and returns the CONNECT target.
/// `buf` keeps only what follows the head: the tunnel's first bytes.
pub(super) fn connect_target(
    head: &Head,
    credentials: Option<&Credentials>,
    buf: &mut BytesMut,
) -> Result<Target, Denied> {
    if !head.method.eq_ignore_ascii_case("CONNECT") {
        let error = format!("method {} in connect mode", head.method);
        return Err(Denied::failed(Reason::BadRequest, error)
            .answered(Reply::Http(Refusal::MethodNotAllowed("snigate: only CONNECT is served here\n"))));
    }
    if let Some(credentials) = credentials
        && !authorized(credentials.users(), head.proxy_authorization.as_deref())
    {
        return Err(Denied::by(Reason::ProxyAuth).answered(Reply::Http(Refusal::AuthRequired)));
    }
    let target = http::parse_authority(&head.target, HTTPS_PORT).map_err(|e| {
        Denied::failed(Reason::BadRequest, e)
            .answered(Reply::Http(Refusal::BadRequest("snigate: bad CONNECT target\n")))
    })?;
    let _ = buf.split_to(head.len);
    Ok(target)
}

/// `connect` mode: opens the tunnel.
pub(super) async fn establish(client: &mut TcpStream) -> Result<(), Denied> {
    client
        .write_all(b"HTTP/1.1 200 Connection Established\r\n\r\n")
        .await
        .map_err(|e| Denied::failed(Reason::ClientClosed, e).answered(Reply::Silent))
}

/// `connect` mode: the tunnel's ClientHello must name the host the CONNECT named (case and one
/// trailing dot aside), or the tunnel is cut with `sni_mismatch`: otherwise an allowed CONNECT
/// could carry a hello for any name, to an address that serves several.
pub(super) fn check_tunnel(target: &Target, sni: Option<&Name>) -> Result<(), Denied> {
    match (target, sni) {
        (Target::Name(name, _), Some(sni)) if sni == name => Ok(()),
        (Target::Name(name, _), sni) => Err(Denied::failed(
            Reason::SniMismatch,
            format!("CONNECT {name} carried a ClientHello for {}", sni.map_or("no name", |n| n.as_str())),
        )),
        (Target::Addr(_), _) => Ok(()),
    }
}

/// `connect` and `http` modes: the port a request names must be one of the listener's.
pub(super) fn check_port(target: &Target, ports: &[u16]) -> Result<(), Denied> {
    let port = target.port();
    if ports.contains(&port) {
        return Ok(());
    }
    let allowed: Vec<String> = ports.iter().map(u16::to_string).collect();
    Err(Denied::failed(
        Reason::DstDenied,
        format!("port {port} is not among this listener's ports ({})", allowed.join(", ")),
    ))
}

/// `http` mode: the host the request names; a request without a usable one is answered `400`.
/// The target of a plain-HTTP request; a host without a port is on `default_port` (80 in
/// `http` mode, the original destination's port in `transparent` mode).
pub(super) fn http_target(head: &Head, default_port: u16) -> Result<Target, Denied> {
    http::http_target(head, default_port).map_err(|e| {
        Denied::failed(Reason::BadRequest, e)
            .answered(Reply::Http(Refusal::BadRequest("snigate: the request names no usable host\n")))
    })
}

/// Whether `header` (`Basic base64(user:password)`, the scheme in any case, RFC 9110) matches
/// one of `credentials`. Every entry is compared, each in constant time over
/// [`MAX_CREDENTIAL`] bytes and its length, so that timing reveals neither how much of a
/// secret matched nor how long one is.
pub(super) fn authorized(credentials: &[Vec<u8>], header: Option<&[u8]>) -> bool {
    let Some(value) = header.and_then(|h| std::str::from_utf8(h).ok()) else { return false };
    let Some((scheme, encoded)) = value.trim().split_once(' ') else { return false };
    if !scheme.eq_ignore_ascii_case("basic") {
        return false;
    }
    let Ok(given) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else { return false };
    let padded = |b: &[u8]| {
        let mut out = [0u8; MAX_CREDENTIAL];
        let n = b.len().min(MAX_CREDENTIAL);
        out[..n].copy_from_slice(&b[..n]);
        out
    };
    let theirs = padded(&given);
    let found = credentials.iter().fold(subtle::Choice::from(0), |found, c| {
        found | (padded(c).ct_eq(&theirs) & (c.len() as u64).ct_eq(&(given.len() as u64)))
    });
    given.len() <= MAX_CREDENTIAL && bool::from(found)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn basic_credentials() {
        let creds = Credentials::parse(Path::new("users"), "# ops\nalice:s3cret\n\nbob:pa:ss\n").unwrap();
        let creds = creds.users();
        let b64 = |s: &str| format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(s));
        assert!(authorized(creds, Some(b64("alice:s3cret").as_bytes())));
        assert!(authorized(creds, Some(b64("bob:pa:ss").as_bytes())));
        assert!(!authorized(creds, Some(b64("alice:s3cre").as_bytes())));
        assert!(!authorized(creds, Some(b"Bearer x")));
        assert!(authorized(creds, Some(b64("alice:s3cret").replace("Basic", "BASIC").as_bytes())), "any case");
        let long = format!("alice:s3cret{}", "x".repeat(MAX_CREDENTIAL));
        assert!(!authorized(creds, Some(b64(&long).as_bytes())), "longer than any credential");
        assert!(!authorized(creds, None));
        assert!(Credentials::parse(Path::new("users"), "nocolon\n").is_err());
    }
}
