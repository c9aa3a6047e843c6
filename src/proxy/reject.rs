//! How a denied connection ends: the one place a denial reaches the wire. A TLS client gets a
//! fatal alert, a reset or a plain close, as configured; an explicit-mode request gets an HTTP
//! error.

use std::io::Read;
use std::time::Duration;

use socket2::SockRef;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::client::Client;
use super::http::Refusal;
use crate::config::RejectStyle;
use crate::outcome::Seen;
use crate::reason::Reason;

/// Why a connection ends before it is spliced, and how its client is told. A stage that ends
/// the connection returns one; the connection's one exit answers and records it.
#[derive(Debug)]
pub(super) struct Denied {
    /// The reason: the metric label and log field.
    pub reason: Reason,
    /// What went wrong, for failures (not for rule denials): the record's `error`.
    pub error: Option<String>,
    /// How the client is told.
    pub reply: Reply,
}

/// How a denied client is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Reply {
    /// The usual answer in the protocol the client speaks at that point: the listener's
    /// reject style to a TLS client, an HTTP error for the reason to an explicit-mode request.
    Usual,
    /// This HTTP answer.
    Http(Refusal),
    /// Nothing: the client has gone, or never said anything that could be answered.
    Silent,
}

impl Denied {
    /// A denial by the rules, or one with nothing more to say than its reason.
    pub fn by(reason: Reason) -> Denied {
        Denied { reason, error: None, reply: Reply::Usual }
    }

    /// A failure: the reason, and what went wrong.
    pub fn failed(reason: Reason, error: impl std::fmt::Display) -> Denied {
        Denied { reason, error: Some(error.to_string()), reply: Reply::Usual }
    }

    /// The same denial, answered with `reply`.
    pub fn answered(self, reply: Reply) -> Denied {
        Denied { reply, ..self }
    }
}

/// Answers a denied client as `denied.reply` says, in the protocol it speaks at that point (the
/// record's `protocol`: TLS, or nothing yet, gets an alert; HTTP an HTTP error; anything else
/// no answer but the close).
pub(super) async fn answer(client: Client, denied: &Denied, speaks: Seen, style: RejectStyle, first_bytes: &[u8]) {
    let refusal = match (denied.reply, speaks) {
        (Reply::Silent, _) => return,
        (Reply::Usual, Seen::Tls) => return reject(client, style, Some(denied.reason), first_bytes).await,
        (Reply::Usual, Seen::Other | Seen::Quic) => return reject(client, style, None, first_bytes).await,
        (Reply::Usual, Seen::Http) => Refusal::for_reason(denied.reason),
        (Reply::Http(refusal), _) => refusal,
    };
    if let Ok(mut stream) = client.registered() {
        let _ = stream.write_all(&refusal.response(denied.reason)).await;
        let _ = stream.shutdown().await;
        // The request's unread body would make the close a reset that destroys the answer.
        let _ = tokio::time::timeout(LINGER, drain(&mut stream)).await;
    }
}

/// TLS AlertDescription values snigate sends (RFC 8446 6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Alert {
    /// The name is known and the policy refuses it.
    AccessDenied = 49,
    /// The hello could not be decoded.
    DecodeError = 50,
    /// The name is not acceptable or cannot be resolved.
    UnrecognizedName = 112,
}

impl Alert {
    /// The alert that explains `reason` to a TLS client, or `None` where no alert makes sense
    /// (the peer is not speaking TLS, is silent, or has gone).
    pub fn for_reason(reason: Reason) -> Option<Alert> {
        match reason {
            Reason::InvalidSni | Reason::UpstreamError => Some(Alert::UnrecognizedName),
            Reason::Malformed | Reason::HelloTooLarge => Some(Alert::DecodeError),
            Reason::NotTls
            | Reason::UnknownProtocol
            | Reason::HelloTimeout
            | Reason::ClientClosed
            | Reason::ProxyProtocol
            | Reason::BadRequest
            | Reason::AmbiguousRequest
            | Reason::HostMismatch
            | Reason::ProxyAuth
            // A report scope lets its connections through: it never reaches a client.
            | Reason::Report => None,
            _ => Some(Alert::AccessDenied),
        }
    }

    /// The alert as one TLS record: fatal level, record version `version` (the client's own
    /// record version, so that TLS 1.0 clients and TLS 1.3 clients both accept it).
    pub fn record(self, version: u16) -> [u8; 7] {
        let [hi, lo] = version.to_be_bytes();
        [0x15, hi, lo, 0x00, 0x02, 0x02, self as u8]
    }
}

/// The record version to answer a client in: its first record's version, capped at TLS 1.2
/// (TLS 1.3 keeps 0x0303 on the wire), and TLS 1.0 when unknown.
pub fn alert_version(first_bytes: &[u8]) -> u16 {
    match first_bytes {
        [0x16, 0x03, minor, ..] => u16::from_be_bytes([0x03, (*minor).min(0x03)]),
        _ => 0x0301,
    }
}

/// How long a rejected client may keep sending after our FIN before the socket is dropped.
const LINGER: Duration = Duration::from_secs(1);
/// Most bytes read and discarded while lingering.
const LINGER_BYTES: usize = 64 * 1024;

/// Ends a denied connection in the configured style. Best effort: the client may be gone.
///
/// `rst` closes with SO_LINGER 0. Otherwise the alert goes out (when the style and the reason
/// call for one), then FIN. Closing a socket with unread input makes the kernel send RST, which
/// can destroy the alert before the client reads it, so a client that keeps sending is read
/// and discarded for up to a second first. A socket not yet registered with the runtime is
/// answered at once, and when the client has sent nothing more it is closed then, without
/// ever touching epoll.
async fn reject(client: Client, style: RejectStyle, reason: Option<Reason>, first_bytes: &[u8]) {
    if style == RejectStyle::Rst {
        if let Some(fd) = client.fd() {
            let _ = SockRef::from(&fd).set_linger(Some(Duration::ZERO));
        }
        return;
    }
    let record = farewell(style, reason, first_bytes);
    let record: &[u8] = record.as_ref().map_or(&[], |r| r);
    let (mut stream, unsent) = match client {
        Client::Registered(stream) => (stream, record),
        Client::Closed => return,
        Client::Fresh(stream) => {
            // MSG_MORE holds the alert back until the close (or the lingering path's shutdown),
            // whose FIN then rides in the same segment: one packet for the client, not two.
            let sent = match record {
                [] => 0,
                _ => SockRef::from(&stream).send_with_flags(record, libc::MSG_MORE | libc::MSG_NOSIGNAL).unwrap_or(0),
            };
            if sent == record.len() && !sends_more(&stream) {
                return;
            }
            match TcpStream::from_std(stream) {
                Ok(stream) => (stream, &record[sent..]),
                Err(_) => return,
            }
        }
    };
    let _ = stream.write_all(unsent).await;
    let _ = stream.shutdown().await;
    let _ = tokio::time::timeout(LINGER, drain(&mut stream)).await;
}

/// The alert record a denial sends, if any.
/// The alert a denied client gets: with `reason` for a client that speaks TLS (`None`: one a
/// transparent listener found speaking something else, or decided before it said anything),
/// and only when its first bytes, if any, are a TLS handshake record.
fn farewell(style: RejectStyle, reason: Option<Reason>, first_bytes: &[u8]) -> Option<[u8; 7]> {
    let speaks_tls = first_bytes.first().is_none_or(|&b| b == 0x16);
    match (style, reason) {
        (RejectStyle::Alert, Some(reason)) if speaks_tls => {
            Alert::for_reason(reason).map(|alert| alert.record(alert_version(first_bytes)))
        }
        _ => None,
    }
}

/// Whether the client has sent more since its hello was read (then closing would send RST).
/// An EOF or a failure means nothing more will come. Reads at most one byte, which is discarded
/// like everything a rejected client sends.
fn sends_more(stream: &std::net::TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!((&*stream).read(&mut probe), Ok(1))
}

/// Reads and discards until EOF, an error or `LINGER_BYTES`. The buffer lives only between
/// awaits, so it stays out of the future, which every connection's task would otherwise carry.
async fn drain(stream: &mut TcpStream) {
    let mut total = 0;
    while total < LINGER_BYTES {
        if stream.readable().await.is_err() {
            return;
        }
        let mut buf = [0u8; 4096];
        match stream.try_read(&mut buf) {
            Ok(0) => return,
            Ok(n) => total += n,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => return,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alert_record_uses_the_client_record_version() {
        assert_eq!(Alert::AccessDenied.record(alert_version(&[0x16, 0x03, 0x01])), [0x15, 3, 1, 0, 2, 2, 49]);
        assert_eq!(alert_version(&[0x16, 0x03, 0x04]), 0x0303);
        assert_eq!(alert_version(b"GET"), 0x0301);
        assert_eq!(Alert::for_reason(Reason::InvalidSni), Some(Alert::UnrecognizedName));
        assert_eq!(Alert::for_reason(Reason::NotTls), None);
    }

    /// A TLS alert goes only to a client that speaks TLS: not to one a transparent listener
    /// found speaking something else, nor to one decided before it said anything.
    #[test]
    fn only_tls_clients_get_an_alert() {
        let hello = [0x16, 0x03, 0x01];
        assert!(farewell(RejectStyle::Alert, Some(Reason::Rule), &hello).is_some());
        assert!(farewell(RejectStyle::Alert, Some(Reason::Rule), &[]).is_some(), "nothing said yet");
        assert!(farewell(RejectStyle::Alert, Some(Reason::Rule), b"SSH-2.0-x").is_none(), "not TLS");
        assert!(farewell(RejectStyle::Alert, None, &[]).is_none(), "spliced at accept, then refused");
        assert!(farewell(RejectStyle::Close, Some(Reason::Rule), &hello).is_none());
    }
}
