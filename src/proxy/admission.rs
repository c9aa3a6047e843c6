//! Admission: the one place where what a connection or flow asks for becomes allowed or
//! denied. TCP connections and QUIC flows are transports: each reads what precedes the
//! decision, asks here with an [`Ask`], and carries out the answer.
//!
//! [`admit`] is the only place a rules `Decision` becomes a verdict: it checks the ECH policy,
//! asks the rules, fills the record's decision fields, and counts the decision for
//! `/decisions` (as do the admissions of transparent connections by destination alone). A denial in a report scope becomes
//! an allowance with reason `report` ([`reported`]): the policy's denials (`rule`, `default`,
//! `no_sni`, `ech`, and `unknown_protocol` and `dst_mismatch`, decided here too) are reported,
//! never the safety checks, which deny before or after admission (the destination guard,
//! source limits, malformed hellos). An [`Admitted`] ask is the only way
//! to its upstream addresses ([`Admitted::route`]: resolved or taken as they are, verified,
//! then passed through the destination guard).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use super::http::Target;
use super::listener::{Listener, ListenerMode};
use super::live::Live;
use super::reject::Denied;
use super::upstream;
use crate::config::EchPolicy;
use crate::hello::ClientHello;
use crate::metrics::decisions::{By, Kind, Subject};
use crate::metrics::usage::RuleUsage;
use crate::name::Name;
use crate::outcome::{Disposition, Outcome};
use crate::policy::decide::Decision;
use crate::policy::destination::Chosen;
use crate::policy::origin::RuleRef;
use crate::reason::Reason;
use crate::rules::rule::Verdict;

/// What a connection or flow asks to reach, once its transport has read what the decision
/// needs.
#[derive(Debug)]
pub(super) struct Ask {
    /// What the rules match: the SNI, the HTTP request's host or the CONNECT target's name.
    pub name: Option<Name>,
    /// The destination: the original destination, the fixed upstream, or an address literal.
    pub dst: Option<SocketAddr>,
    /// The port `name` is reached on when there is no destination.
    pub port: u16,
    /// `verify_destination`: `dst` must be among `name`'s addresses.
    pub verify: bool,
    /// The hello carried encrypted_client_hello.
    pub ech: bool,
}

impl Ask {
    /// A ClientHello, over TCP or QUIC: its SNI, and the destination the listener's mode gives
    /// it. `original` finds the original destination (transparent mode only).
    pub fn hello(
        listener: &Listener,
        hello: ClientHello,
        original: impl FnOnce() -> Result<SocketAddr, Denied>,
    ) -> Result<Ask, Denied> {
        let (name, ech) = (hello.sni, hello.ech);
        Ok(match &listener.mode {
            ListenerMode::Transparent { verify, .. } => {
                let dst = original()?;
                Ask { name, dst: Some(dst), port: dst.port(), verify: *verify, ech }
            }
            ListenerMode::Upstream { addr } => Ask { name, dst: Some(*addr), port: addr.port(), verify: false, ech },
            ListenerMode::Sni { port } => Ask { name, dst: None, port: *port, verify: false, ech },
            // The explicit modes' hellos come through their tunnels ([`Ask::tunnel`]).
            ListenerMode::Connect { .. } | ListenerMode::Http { .. } => {
                Ask { name, dst: None, port: listener.listen.port(), verify: false, ech }
            }
        })
    }

    /// A destination alone: a transparent connection that is not TLS, or that an `ip` rule
    /// lets through before it says anything.
    pub fn destination(dst: SocketAddr) -> Ask {
        Ask { name: None, dst: Some(dst), port: dst.port(), verify: false, ech: false }
    }

    /// An explicit request: a CONNECT's target, or a plain-HTTP request's. `original` is the
    /// original destination of a transparent listener's HTTP request (verified against its
    /// host where `verify`); without one, the target is where it goes.
    pub fn request(target: &Target, original: Option<SocketAddr>, verify: bool) -> Ask {
        match (target, original) {
            (Target::Name(name, port), None) => {
                Ask { name: Some(name.clone()), dst: None, port: *port, verify: false, ech: false }
            }
            (Target::Name(name, _), Some(dst)) => {
                Ask { name: Some(name.clone()), dst: Some(dst), port: dst.port(), verify, ech: false }
            }
            (Target::Addr(addr), None) => Ask::destination(*addr),
            (Target::Addr(_), Some(dst)) => Ask::destination(dst),
        }
    }

    /// The hello inside a CONNECT tunnel (which must name the CONNECT's host: checked before):
    /// the tunnel to a name asks for that name; to an address literal, for the hello's SNI there.
    pub fn tunnel(target: &Target, hello: ClientHello) -> Ask {
        match target {
            Target::Name(name, port) => {
                Ask { name: Some(name.clone()), dst: None, port: *port, verify: false, ech: hello.ech }
            }
            Target::Addr(addr) => {
                Ask { name: hello.sni, dst: Some(*addr), port: addr.port(), verify: false, ech: hello.ech }
            }
        }
    }

    /// The port the rules match: the destination's, or the one the name is reached on.
    fn rule_port(&self) -> u16 {
        self.dst.map_or(self.port, |dst| dst.port())
    }

    /// What `/decisions` counts it under: its name, else its destination.
    fn subject(&self) -> Subject<'_> {
        match (&self.name, self.dst) {
            (Some(name), _) => Subject::Name(name),
            (None, Some(dst)) => Subject::Destination(dst),
            (None, None) => Subject::Unknown,
        }
    }
}

/// An ask the rules allowed: the only way to its upstream addresses.
#[derive(Debug)]
pub(super) struct Admitted {
    /// What was asked.
    ask: Ask,
    /// Its upstream addresses, when an earlier stage found them (a CONNECT, before its `200`).
    route: Option<Route>,
}

/// The upstream addresses of an admitted ask, in the order to try them, each let through by the
/// destination guard and the `deny ip` rules.
#[derive(Debug)]
pub(super) struct Route(Addrs);

/// Upstream addresses: the one of a fixed upstream or an original destination, held inline, or a
/// name's several.
#[derive(Debug)]
enum Addrs {
    /// One address.
    One(SocketAddr),
    /// Several, in the order to try them.
    Several(Vec<SocketAddr>),
}

impl Route {
    /// The addresses.
    pub fn addrs(&self) -> &[SocketAddr] {
        match &self.0 {
            Addrs::One(addr) => std::slice::from_ref(addr),
            Addrs::Several(addrs) => addrs,
        }
    }
}

impl Admitted {
    /// The upstream addresses to try: the name resolved on its port, or the destination taken
    /// as it is (verified where `verify_destination` says so), through the destination guard.
    /// A destination that fails verification in a report scope is reported in `record`.
    pub async fn route(self, listener: &Listener, record: &mut Outcome) -> Result<Route, Denied> {
        match self.route {
            Some(route) => Ok(route),
            None => destinations(listener, record.client.ip(), &self.ask, Some(record)).await.map(Route),
        }
    }

    /// [`route`](Self::route), bounded by `timeout` (a QUIC flow has no connect to bound it).
    /// A QUIC flow's record stays in its table while a task routes it, so a `dst_mismatch` is
    /// denied here, not reported.
    pub async fn route_within(self, listener: &Listener, client: IpAddr, timeout: Duration) -> Result<Route, Denied> {
        let route = async {
            match self.route {
                Some(route) => Ok(route),
                None => destinations(listener, client, &self.ask, None).await.map(Route),
            }
        };
        tokio::time::timeout(timeout, route)
            .await
            .unwrap_or_else(|_| Err(Denied::failed(Reason::UpstreamError, "resolving timed out")))
    }

    /// This ask, going where an earlier admission of the same connection was routed (a
    /// CONNECT tunnel's hello goes where its CONNECT was resolved to).
    pub fn routed(self, route: Route) -> Admitted {
        Admitted { route: Some(route), ..self }
    }
}

/// Decides `ask` for the client of `record`: the ECH policy, then the rules. The record gets
/// the verdict, the reason and the deciding rule, and `/decisions` counts it; a denial is
/// `Err`.
pub(super) fn admit(listener: &Listener, ask: Ask, record: &mut Outcome) -> Result<Admitted, Denied> {
    let live = listener.live.load();
    if ask.ech && live.ech == EchPolicy::Deny {
        let kind = match reported(listener, &live, record, Reason::Ech, None) {
            true => Kind::WouldDeny,
            false => Kind::Deny,
        };
        listener.decisions.note(record, kind, ask.subject(), By::Reason(Reason::Ech));
        return match kind {
            Kind::Deny => Err(Denied::by(Reason::Ech)),
            Kind::WouldDeny | Kind::Allow => Ok(Admitted { ask, route: None }),
        };
    }
    let decision = live.rules.decide(ask.name.as_ref(), record.client.ip(), ask.dst, ask.rule_port());
    decided(listener, &live.usage, record, &decision);
    let kind = match decision.verdict {
        Verdict::Allow => Kind::Allow,
        Verdict::Deny if reported(listener, &live, record, decision.reason, decision.rule) => Kind::WouldDeny,
        Verdict::Deny => Kind::Deny,
    };
    listener.decisions.note(record, kind, ask.subject(), By::of(&decision));
    match kind {
        Kind::Deny => Err(Denied::by(decision.reason)),
        Kind::WouldDeny | Kind::Allow => Ok(Admitted { ask, route: None }),
    }
}

/// A transparent connection that speaks neither TLS nor HTTP, to `dst`: decided by the `ip`
/// rules when one does, else `unknown_protocol` (`error` says what the client sent), reported
/// in a report scope like the rules' denials.
pub(super) fn admit_unknown(
    listener: &Listener,
    dst: SocketAddr,
    record: &mut Outcome,
    error: impl FnOnce() -> String,
) -> Result<Admitted, Denied> {
    let live = listener.live.load();
    if live.rules.decide(None, record.client.ip(), Some(dst), dst.port()).reason != Reason::NoSni {
        return admit(listener, Ask::destination(dst), record);
    }
    let reported = reported(listener, &live, record, Reason::UnknownProtocol, None);
    let kind = if reported { Kind::WouldDeny } else { Kind::Deny };
    listener.decisions.note(record, kind, Subject::Destination(dst), By::Reason(Reason::UnknownProtocol));
    match reported {
        true => Ok(Admitted { ask: Ask::destination(dst), route: None }),
        false => Err(Denied::failed(Reason::UnknownProtocol, error())),
    }
}

/// On the deny path only: whether a report scope lets through what the policy denies for
/// `would` (by `rule`, if a rule decided). A rule of an always-enforced file or list keeps its
/// denial. A reported record is allowed with reason `report`, and keeps `would` and the rule.
fn reported(listener: &Listener, live: &Live, record: &mut Outcome, would: Reason, rule: Option<RuleRef<'_>>) -> bool {
    if rule.is_some_and(|r| r.always_enforced()) || !live.report.cover(listener.index, record.client.ip()) {
        return false;
    }
    record.verdict = Disposition::Allow;
    record.reason = Reason::Report;
    record.would_reason = Some(would);
    true
}

/// A transparent connection, at accept: its destination, when an `allow ip … port` rule lets
/// it through before the client says anything (protocols where the server speaks first).
pub(super) fn admit_at_accept(listener: &Listener, dst: SocketAddr, record: &mut Outcome) -> Option<Admitted> {
    let live = listener.live.load();
    let decision = live.rules.allows_destination(record.client.ip(), dst)?;
    decided(listener, &live.usage, record, &decision);
    listener.decisions.note(record, Kind::Allow, Subject::Destination(dst), By::of(&decision));
    Some(Admitted { ask: Ask::destination(dst), route: None })
}

/// A complete hello, over TCP or QUIC: counted, and recorded (its strings only when logged).
pub(super) fn hello_read(listener: &Listener, record: &mut Outcome, hello: &ClientHello, seconds: f64) {
    listener.metrics.hello(seconds, hello.wire_bytes, hello.ech);
    record.ech = hello.ech;
    if listener.access_log.is_on() {
        record.sni = hello.sni.as_ref().map(|n| n.as_str().to_string());
        record.alpn = hello.alpn.escaped();
        record.tls_version = Some(hello.highest_version());
    }
}

/// Records a connection or flow that ends before its splice: the verdict (an allowed one whose
/// upstream failed is an error, not a denial), the reason and what went wrong.
pub(super) fn denied(record: &mut Outcome, denied: &Denied) {
    record.verdict = record.verdict.ended(denied.reason);
    record.reason = denied.reason;
    if denied.error.is_some() {
        record.error = denied.error.clone();
    }
}

/// Records what the rules decided: the verdict, the reason and the deciding rule (its text only
/// when it is logged), and counts the rule's use in `usage`, the deciding snapshot's.
fn decided(listener: &Listener, usage: &RuleUsage, record: &mut Outcome, decision: &Decision<'_>) {
    if let Some(rule) = decision.rule {
        usage.hit(rule.index(), record.time);
    }
    record.verdict = Disposition::decided(decision.verdict);
    record.reason = decision.reason;
    record.ruleset = decision.rule.map(|r| r.ruleset_label());
    if listener.access_log.is_on() {
        record.rule = decision.rule.map(|r| r.to_string());
    }
}

/// The upstream addresses to try, in order, for an admitted `ask`: its name resolved on its
/// port, or its destination (verified against the name when it says so), that the destination
/// guard lets `client` reach. A destination that fails verification is reported in `record`,
/// when there is one and a report scope covers it, and then taken as the client chose it.
async fn destinations(
    listener: &Listener,
    client: IpAddr,
    ask: &Ask,
    record: Option<&mut Outcome>,
) -> Result<Addrs, Denied> {
    let Ask { name, dst, port, verify, .. } = ask;
    let (name, dst, port, mut verify) = (name.as_ref(), *dst, *port, *verify);
    let candidates = match (dst, name) {
        (Some(dst), Some(name)) if verify => match verify_destination(listener, name, dst).await {
            Ok(()) => Ok(Addrs::One(dst)),
            Err(denied) => {
                if let Some(record) = record
                    && reported(listener, &listener.live.load(), record, Reason::DstMismatch, None)
                {
                    record.error = denied.error;
                    verify = false;
                    Ok(Addrs::One(dst))
                } else {
                    Err(denied)
                }
            }
        },
        (Some(dst), _) => Ok(Addrs::One(dst)),
        (None, Some(name)) => match lookup(listener, name, port).await {
            Ok(addrs) => Ok(Addrs::Several(addrs)),
            Err(e) => Err(Denied::failed(Reason::UpstreamError, e)),
        },
        (None, None) => Err(Denied::by(Reason::UpstreamError)),
    }?;
    guard(listener, client, candidates, verify)
}

/// The destination guard: the candidates that are neither snigate itself, nor in a range the
/// guard refuses, nor refused by a `deny ip` rule. `upstream` mode's fixed upstream is the
/// operator's own setting, and passes.
fn guard(listener: &Listener, client: IpAddr, mut candidates: Addrs, verified: bool) -> Result<Addrs, Denied> {
    let chosen = match listener.mode {
        ListenerMode::Upstream { .. } => return Ok(candidates),
        ListenerMode::Transparent { .. } if !verified => Chosen::ByClient,
        _ => Chosen::BySnigate,
    };
    let live = listener.live.load();
    let rules = &live.rules;
    let mut refused = Vec::new();
    let mut check = |addr: SocketAddr| {
        let verdict = match rules.denies_destination(client, addr) {
            Some(rule) => Err(format!("destination {addr} refused: denied by rule {rule}")),
            None => listener.guard.check(addr, chosen, upstream::is_local).map_err(|r| r.to_string()),
        };
        verdict.map_err(|e| refused.push(e)).is_ok()
    };
    let any = match &mut candidates {
        Addrs::One(addr) => check(*addr),
        Addrs::Several(addrs) => {
            addrs.retain(|&addr| check(addr));
            !addrs.is_empty()
        }
    };
    match any {
        true => Ok(candidates),
        false => Err(Denied::failed(Reason::DstDenied, refused.join("; "))),
    }
}

/// `verify_destination = "dns"`: the original destination must be one of the SNI's addresses,
/// or the SNI is a lie (spoofing, domain fronting to another address). A lookup that fails
/// cannot vouch for the destination, so it denies too.
async fn verify_destination(listener: &Listener, sni: &Name, dst: SocketAddr) -> Result<(), Denied> {
    match lookup(listener, sni, dst.port()).await {
        Ok(addrs) if addrs.iter().any(|a| a.ip() == dst.ip()) => Ok(()),
        Ok(addrs) => {
            let shown: Vec<String> = addrs.iter().map(|a| a.ip().to_string()).collect();
            let error = format!("{} is not among {sni}'s addresses ({})", dst.ip(), shown.join(", "));
            Err(Denied::failed(Reason::DstMismatch, error))
        }
        Err(e) => Err(Denied::failed(Reason::DstMismatch, format!("cannot verify {}: {e}", dst.ip()))),
    }
}

/// A DNS lookup, boxed: the resolver's future is large and a cache hit is quick.
async fn lookup(listener: &Listener, name: &Name, port: u16) -> std::io::Result<Vec<SocketAddr>> {
    Box::pin(listener.resolver.lookup(name.as_str(), port)).await
}
