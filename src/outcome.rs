//! The record of one finished connection: what the access log writes and the metrics count.
//! Every layer above fills or reads it; it depends only on the vocabulary below it.

use crate::date::civil_from_days;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::Serialize;

use crate::reason::Reason;
use crate::rules::rule::Verdict;

/// Where a connection is in its life; named in errors and logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// Reading the ClientHello.
    Hello,
    /// Asking the rules.
    Decide,
    /// Finding the upstream address.
    Resolve,
    /// Connecting to the upstream.
    Connect,
    /// Moving bytes both ways.
    Splice,
}

impl Stage {
    /// The snake_case name used in logs.
    pub const fn as_str(self) -> &'static str {
        match self {
            Stage::Hello => "hello",
            Stage::Decide => "decide",
            Stage::Resolve => "resolve",
            Stage::Connect => "connect",
            Stage::Splice => "splice",
        }
    }
}

/// What a connection spoke, as its first bytes showed: the access log's `protocol`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Seen {
    /// A TLS ClientHello over TCP (or nothing yet).
    #[default]
    Tls,
    /// An HTTP/1 request.
    Http,
    /// QUIC over UDP.
    Quic,
    /// Anything else (transparent mode), or nothing yet when the destination alone decided.
    Other,
}

impl Seen {
    /// The log value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Seen::Tls => "tls",
            Seen::Http => "http",
            Seen::Quic => "quic",
            Seen::Other => "other",
        }
    }
}

/// How a connection ended, as the access log's `verdict` and the `verdict` metric label say it.
/// The rules decide only allow or deny ([`Verdict`]); `Error` is the record's own: allowed by
/// the policy, then failed upstream, so that a network outage is not read as denials.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Disposition {
    /// Allowed, and sent on (or still going when it ended for another cause).
    Allow,
    /// Refused: by the rules, by a check before them, or by the destination guard.
    Deny,
    /// Allowed by the policy, but its upstream could not be resolved or reached
    /// (`upstream_error`).
    Error,
}

impl Disposition {
    /// Every disposition, in label order; the metrics pre-create their series from it.
    pub const ALL: [Disposition; 3] = [Disposition::Allow, Disposition::Deny, Disposition::Error];

    /// The log value and metric label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Disposition::Allow => "allow",
            Disposition::Deny => "deny",
            Disposition::Error => "error",
        }
    }

    /// What the rules' verdict makes of a connection, until something else happens.
    pub const fn decided(verdict: Verdict) -> Disposition {
        match verdict {
            Verdict::Allow => Disposition::Allow,
            Verdict::Deny => Disposition::Deny,
        }
    }

    /// How a connection that was `self` so far ends when it stops for `reason`: an allowed one
    /// that could not reach its upstream is an error, anything else a denial (a destination the
    /// guard refuses after an allow is still the policy's refusal).
    pub const fn ended(self, reason: Reason) -> Disposition {
        match (self, reason) {
            (Disposition::Allow | Disposition::Error, Reason::UpstreamError) => Disposition::Error,
            _ => Disposition::Deny,
        }
    }
}

/// What happened to one connection: the access-log record.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// When the connection was accepted (RFC 3339 in the log).
    #[serde(serialize_with = "serialize_time")]
    pub time: SystemTime,
    /// The listener's name.
    pub listener: Arc<str>,
    /// The client's address.
    pub client: SocketAddr,
    /// The original destination (transparent mode).
    pub original_dst: Option<SocketAddr>,
    /// What the connection spoke.
    pub protocol: Seen,
    /// The normalised SNI: from the ClientHello only.
    pub sni: Option<String>,
    /// What an explicit request asked for: the CONNECT target or the HTTP request's host, as
    /// `host:port`.
    pub host: Option<String>,
    /// ALPN protocols offered (escaped).
    pub alpn: Vec<String>,
    /// Highest TLS version offered.
    pub tls_version: Option<String>,
    /// Whether the hello carried encrypted_client_hello.
    pub ech: bool,
    /// allow, deny or error ([`Disposition`]).
    pub verdict: Disposition,
    /// Why.
    pub reason: Reason,
    /// Reason `report`: why the policy would have denied the connection (`rule`, `default`,
    /// `no_sni`, `ech`, `unknown_protocol`, `dst_mismatch`). Logged only then.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub would_reason: Option<Reason>,
    /// The deciding rule (`file:line` or a list's name).
    pub rule: Option<String>,
    /// The deciding rule's file or list: the `ruleset` metric label.
    #[serde(skip)]
    pub ruleset: Option<Arc<str>>,
    /// The upstream reached; when connecting failed, the last address tried (null when no
    /// address was tried: a name that did not resolve, a destination the guard refused).
    pub upstream: Option<SocketAddr>,
    /// The stage the connection ended in.
    pub stage: Stage,
    /// Plain HTTP: the requests decided on the connection, the refused one included (each is
    /// decided by its own host; a refusal ends the connection and its line names the host and
    /// the reason). 0 for other protocols, and then not logged.
    #[serde(skip_serializing_if = "is_zero")]
    pub requests: u32,
    /// Client → upstream bytes, the replayed hello included.
    pub bytes_up: u64,
    /// Upstream → client bytes.
    pub bytes_down: u64,
    /// Seconds from accept to close.
    pub duration: f64,
    /// What went wrong, for failures (not for rule denials).
    pub error: Option<String>,
    /// What `/decisions` counted last for this connection (a hash of its name and outcome; 0:
    /// nothing yet), so that deciding the same name again on it does not count it again. 32
    /// bits fit beside the small fields: the record, held by every connection, does not grow.
    #[serde(skip)]
    pub noted: u32,
}

/// `t` as RFC 3339 UTC with milliseconds: `2024-05-01T12:34:56.789Z`.
pub fn rfc3339(t: SystemTime) -> String {
    let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(i64::try_from(days).unwrap_or(i64::MAX));
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z", rem / 3600, rem / 60 % 60, rem % 60, since.subsec_millis())
}

impl Outcome {
    /// The record of a connection just accepted from `client` on `listener`: nothing decided
    /// yet. Until a stage says otherwise it is a denial of a client that closed in the hello.
    pub fn accepted(listener: Arc<str>, client: SocketAddr) -> Outcome {
        Outcome {
            time: SystemTime::now(),
            listener,
            client,
            original_dst: None,
            protocol: Seen::Tls,
            sni: None,
            host: None,
            alpn: Vec::new(),
            tls_version: None,
            ech: false,
            verdict: Disposition::Deny,
            reason: Reason::ClientClosed,
            would_reason: None,
            rule: None,
            ruleset: None,
            upstream: None,
            stage: Stage::Hello,
            requests: 0,
            bytes_up: 0,
            bytes_down: 0,
            duration: 0.0,
            error: None,
            noted: 0,
        }
    }
}

/// Whether a count is 0 (then left out of the log).
fn is_zero(n: &u32) -> bool {
    *n == 0
}

/// Serialises a `SystemTime` as RFC 3339 (the `time` field).
fn serialize_time<S: serde::Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&rfc3339(*t))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn rfc3339_matches_known_instants() {
        let at = |secs: u64, ms: u64| UNIX_EPOCH + Duration::from_millis(secs * 1000 + ms);
        assert_eq!(rfc3339(at(0, 0)), "1970-01-01T00:00:00.000Z");
        assert_eq!(rfc3339(at(951_782_400, 5)), "2000-02-29T00:00:00.005Z");
        assert_eq!(rfc3339(at(1_709_251_199, 999)), "2024-02-29T23:59:59.999Z");
        assert_eq!(rfc3339(at(4_102_444_800, 0)), "2100-01-01T00:00:00.000Z");
    }

    /// Only an allowed connection that failed upstream is an error; a failure before any
    /// decision (a transparent connection with no destination) and every other stop deny.
    #[test]
    fn an_error_is_an_allowed_connection_that_failed_upstream() {
        use Disposition::*;
        assert_eq!(Allow.ended(Reason::UpstreamError), Error);
        assert_eq!(Deny.ended(Reason::UpstreamError), Deny);
        assert_eq!(Allow.ended(Reason::DstDenied), Deny);
        assert_eq!(Allow.ended(Reason::SniMismatch), Deny);
        assert_eq!(Disposition::decided(Verdict::Allow), Allow);
        let labels: Vec<_> = Disposition::ALL.iter().map(|d| d.as_str()).collect();
        assert_eq!(labels, ["allow", "deny", "error"]);
    }
}
