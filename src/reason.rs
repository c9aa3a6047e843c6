//! Why a connection was allowed or denied: the fixed vocabulary behind the `reason` metric
//! label and the access log. Label values come only from here, never from client data.

use std::fmt;

/// The reason attached to every connection outcome. `as_str()` is the metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    /// The first bytes are not a TLS handshake record (HTTP, SSH, SSLv2-style hello, garbage).
    NotTls,
    /// TLS framing or ClientHello encoding is broken, truncated or ambiguous (for example
    /// two server_name extensions, or two host_name entries).
    Malformed,
    /// The server_name is present but not an acceptable host name.
    InvalidSni,
    /// The ClientHello exceeds the configured size cap.
    HelloTooLarge,
    /// The ClientHello did not arrive within `hello_timeout`.
    HelloTimeout,
    /// The client closed (or reset) the connection before sending a byte.
    ClientClosed,
    /// A rule decided: a name rule matched the SNI, or an `ip` rule matched the destination
    /// of a connection without SNI. The rule itself is in the decision's `RuleRef`.
    Rule,
    /// The SNI matched no rule, so the rule set's default verdict applied.
    Default,
    /// The hello carried no SNI and no `ip` rule matched the destination.
    NoSni,
    /// The hello carried encrypted_client_hello and the policy is `ech = "deny"`.
    Ech,
    /// The upstream could not be found or reached: the name does not resolve, the connect
    /// failed or timed out, or a transparent connection has no original destination.
    UpstreamError,
    /// PROXY protocol in: the peer is not a trusted source, or its header is missing or invalid.
    ProxyProtocol,
    /// `connect` mode: the tunnel's ClientHello names another host than the CONNECT did.
    SniMismatch,
    /// `verify_destination`: the original destination is not among the SNI's addresses.
    DstMismatch,
    /// `connect` and `http` modes: a malformed request, a method other than CONNECT (a CONNECT
    /// in `http` and transparent modes), or no host.
    BadRequest,
    /// `connect` mode: missing or wrong Proxy-Authorization.
    ProxyAuth,
    /// The destination guard refused every address the connection could go to: snigate
    /// itself, an internal or reserved range, a `[destinations] deny` range, a `deny ip` rule,
    /// or (connect and http modes) a port outside the listener's `ports`.
    DstDenied,
    /// The client's source already holds `max_connections_per_source` connections, or
    /// `max_hellos_per_source` that are not decided yet (for QUIC, `max_quic_flows_per_source`
    /// flows): refused at once.
    SourceLimit,
    /// QUIC: the client's Initial uses a version snigate cannot read, so cannot filter.
    QuicVersion,
    /// Transparent mode: the first bytes are neither a TLS ClientHello nor an HTTP/1 request,
    /// and no `ip` rule allows the original destination on its port.
    UnknownProtocol,
    /// `http` and transparent modes: a request whose framing two HTTP implementations could
    /// read differently (request smuggling): Content-Length with Transfer-Encoding, several or
    /// malformed Content-Lengths, a Transfer-Encoding that does not end in `chunked`, a folded
    /// header line, a malformed chunk.
    AmbiguousRequest,
    /// `http` and transparent modes: a later request on a connection names another host than
    /// the one the connection goes to.
    HostMismatch,
    /// A report scope let through a connection the policy would deny; the record's
    /// `would_reason` says why it would have been denied.
    Report,
}

impl Reason {
    /// Every reason, in label order; used to pre-register metric series.
    pub const ALL: [Reason; 23] = [
        Reason::NotTls,
        Reason::Malformed,
        Reason::InvalidSni,
        Reason::HelloTooLarge,
        Reason::HelloTimeout,
        Reason::ClientClosed,
        Reason::Rule,
        Reason::Default,
        Reason::NoSni,
        Reason::Ech,
        Reason::UpstreamError,
        Reason::ProxyProtocol,
        Reason::SniMismatch,
        Reason::DstMismatch,
        Reason::BadRequest,
        Reason::ProxyAuth,
        Reason::DstDenied,
        Reason::SourceLimit,
        Reason::QuicVersion,
        Reason::UnknownProtocol,
        Reason::AmbiguousRequest,
        Reason::HostMismatch,
        Reason::Report,
    ];

    /// The snake_case label used in metrics, logs and JSON output.
    pub const fn as_str(self) -> &'static str {
        match self {
            Reason::NotTls => "not_tls",
            Reason::Malformed => "malformed",
            Reason::InvalidSni => "invalid_sni",
            Reason::HelloTooLarge => "hello_too_large",
            Reason::HelloTimeout => "hello_timeout",
            Reason::ClientClosed => "client_closed",
            Reason::Rule => "rule",
            Reason::Default => "default",
            Reason::NoSni => "no_sni",
            Reason::Ech => "ech",
            Reason::UpstreamError => "upstream_error",
            Reason::ProxyProtocol => "proxy_protocol",
            Reason::SniMismatch => "sni_mismatch",
            Reason::DstMismatch => "dst_mismatch",
            Reason::BadRequest => "bad_request",
            Reason::ProxyAuth => "proxy_auth",
            Reason::DstDenied => "dst_denied",
            Reason::SourceLimit => "source_limit",
            Reason::QuicVersion => "quic_version",
            Reason::UnknownProtocol => "unknown_protocol",
            Reason::AmbiguousRequest => "ambiguous_request",
            Reason::HostMismatch => "host_mismatch",
            Reason::Report => "report",
        }
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Reason {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}
