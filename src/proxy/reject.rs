//! How a denied connection ends: a fatal TLS alert, a reset, or a plain close.

use std::io::Read;
use std::time::Duration;

use serde::Deserialize;
use socket2::SockRef;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::connection::Client;
use crate::reason::Reason;

/// The configured way to end a denied connection (`reject = "alert" | "rst" | "close"`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RejectStyle {
    /// A fatal TLS alert, then FIN: clients show a readable error.
    #[default]
    Alert,
    /// An RST (SO_LINGER 0): nothing for the client to read.
    Rst,
    /// A plain FIN.
    Close,
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
            | Reason::HelloTimeout
            | Reason::ClientClosed
            | Reason::ProxyProtocol
            | Reason::BadRequest
            | Reason::ProxyAuth => None,
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
pub async fn reject(client: Client, style: RejectStyle, reason: Reason, first_bytes: &[u8]) {
    if style == RejectStyle::Rst {
        let _ = SockRef::from(&client).set_linger(Some(Duration::ZERO));
        return;
    }
    let record = farewell(style, reason, first_bytes);
    let record: &[u8] = record.as_ref().map_or(&[], |r| r);
    let (mut stream, unsent) = match client {
        Client::Registered(stream) => (stream, record),
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
fn farewell(style: RejectStyle, reason: Reason, first_bytes: &[u8]) -> Option<[u8; 7]> {
    match style {
        RejectStyle::Alert => Alert::for_reason(reason).map(|alert| alert.record(alert_version(first_bytes))),
        RejectStyle::Rst | RejectStyle::Close => None,
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
}
