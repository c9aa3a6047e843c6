//! The report scopes of one live snapshot: where a connection the policy would deny is let
//! through and reported. Asked only on the deny path, so allowed connections never pay for it.

use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use ipnet::IpNet;

use crate::config::{Config, Enforce};

/// Every report scope: each listener's own (by its place in the configuration) and the
/// `[[report]]` source scopes, which apply on every listener.
#[derive(Debug, Default)]
pub struct Scopes {
    /// By listener index: its scope when it has `enforce = "report"`.
    listeners: Vec<Option<Scope>>,
    /// `[[report]]`: the sources and their scope.
    sources: Vec<(Vec<IpNet>, Scope)>,
}

/// One scope: until when it reports, and whether its end has been logged.
#[derive(Debug)]
struct Scope {
    /// The `scope` label: the listener's name, or `report:` and the sources.
    label: String,
    /// The unix time it ends at (midnight UTC after its last day), precomputed; `None`: never.
    ends_at: Option<i64>,
    /// Its end has been logged (once per snapshot).
    ended: AtomicBool,
}

impl Scope {
    fn new(label: String, ends_at: Option<i64>) -> Scope {
        Scope { label, ends_at, ended: AtomicBool::new(false) }
    }

    /// Whether it still reports at unix time `now`; the first time it does not, says so.
    fn open(&self, now: i64) -> bool {
        match self.ends_at {
            Some(end) if now >= end => {
                if !self.ended.swap(true, Ordering::Relaxed) {
                    tracing::warn!(scope = %self.label, "report scope expired: enforcing");
                }
                false
            }
            _ => true,
        }
    }
}

impl Scopes {
    /// `config`'s report scopes.
    pub fn of(config: &Config) -> Scopes {
        let listeners = config
            .listeners
            .iter()
            .map(|l| match l.get_ref().enforce {
                Enforce::Enforce => None,
                Enforce::Report { until } => Some(Scope::new(l.get_ref().label(), until.map(|u| u.ends_at()))),
            })
            .collect();
        let sources =
            config.report.iter().map(|r| (r.from.clone(), Scope::new(r.label(), Some(r.until.ends_at())))).collect();
        Scopes { listeners, sources }
    }

    /// Whether a connection from `client` on the listener at `index` is reported rather than
    /// denied, now.
    pub fn cover(&self, index: usize, client: IpAddr) -> bool {
        if self.sources.is_empty() && self.listeners.get(index).is_none_or(Option::is_none) {
            return false;
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64);
        self.covering(index, client).any(|s| s.open(now))
    }

    /// Whether a connection from `client` on the listener at `index` (`None`: a listener the
    /// configuration does not have) would have been reported at unix time `at`: for replaying
    /// recorded connections. Says nothing in the log.
    pub fn cover_at(&self, index: Option<usize>, client: IpAddr, at: i64) -> bool {
        self.covering(index.unwrap_or(usize::MAX), client).any(|s| s.ends_at.is_none_or(|end| at < end))
    }

    /// The scopes that cover `client` on the listener at `index`, open or not.
    fn covering(&self, index: usize, client: IpAddr) -> impl Iterator<Item = &Scope> {
        let client = client.to_canonical();
        let listener = self.listeners.get(index).and_then(Option::as_ref);
        let sources = self.sources.iter().filter(move |(from, _)| from.iter().any(|n| n.contains(&client)));
        listener.into_iter().chain(sources.map(|(_, s)| s))
    }
}
