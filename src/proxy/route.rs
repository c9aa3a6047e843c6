//! Where an allowed connection or flow may go: its name resolved, or its destination taken as
//! it is (verified where `verify_destination` says so), then passed through the destination
//! guard. TCP connections and QUIC flows share it.

use std::net::{IpAddr, SocketAddr};

use super::admission::Ask;
use super::listener::{Listener, ListenerMode};
use super::reject::Denied;
use super::upstream;
use crate::name::Name;
use crate::policy::destination::Chosen;
use crate::reason::Reason;

/// The upstream addresses to try, in order, for an admitted `ask`: its name resolved on its
/// port, or its destination (verified against the name when it says so), that the destination
/// guard lets `client` reach.
pub(super) async fn destinations(listener: &Listener, client: IpAddr, ask: &Ask) -> Result<Vec<SocketAddr>, Denied> {
    let Ask { name, dst, port, verify, .. } = ask;
    let (name, dst, port, verify) = (name.as_ref(), *dst, *port, *verify);
    let candidates = match (dst, name) {
        (Some(dst), Some(name)) if verify => verify_destination(listener, name, dst).await.map(|()| vec![dst]),
        (Some(dst), _) => Ok(vec![dst]),
        (None, Some(name)) => lookup(listener, name, port).await.map_err(|e| Denied::failed(Reason::UpstreamError, e)),
        (None, None) => Err(Denied::by(Reason::UpstreamError)),
    }?;
    guard(listener, client, candidates, verify)
}

/// The destination guard: the candidates that are neither snigate itself, nor in a range the
/// guard refuses, nor refused by a `deny ip` rule. `upstream` mode's fixed upstream is the
/// operator's own setting, and passes.
fn guard(
    listener: &Listener,
    client: IpAddr,
    candidates: Vec<SocketAddr>,
    verified: bool,
) -> Result<Vec<SocketAddr>, Denied> {
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
    let allowed: Vec<SocketAddr> = candidates.into_iter().filter(|&addr| check(addr)).collect();
    match allowed.is_empty() {
        true => Err(Denied::failed(Reason::DstDenied, refused.join("; "))),
        false => Ok(allowed),
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
