//! The live settings: what a reload changes in place (rules, limits, credentials, the ECH and
//! name policies, the log's denial rate), behind one swap that every listener reads. What needs
//! new sockets is static ([`crate::config::StaticConfig`]) and is never in here.

use std::sync::Arc;

use arc_swap::{ArcSwap, Guard};

use super::listener::Listener;
use crate::config::{Config, Credentials, EchPolicy, LimitsConfig};
use crate::hello::HelloLimits;
use crate::policy::decide::RuleSet;

/// One snapshot of the live settings. A connection reads the snapshot that is current when it
/// needs a setting; a reload swaps in a whole new one.
#[derive(Clone)]
pub struct Live {
    /// The rule snapshot new decisions are made with.
    pub rules: Arc<RuleSet>,
    /// Limits and timeouts.
    pub limits: LimitsConfig,
    /// Whether a hello that carries encrypted_client_hello is denied.
    pub ech: EchPolicy,
    /// `[rules] sni_allow_underscore`.
    pub allow_underscore: bool,
    /// `[log] deny_lines_per_second`.
    pub deny_lines_per_second: u32,
    /// Each listener's credentials, by its place in the configuration (`connect` listeners
    /// that name a file).
    pub credentials: Vec<Option<Arc<Credentials>>>,
}

impl Live {
    /// The live part of `config`, deciding with `rules`.
    pub fn new(config: &Config, rules: Arc<RuleSet>) -> Live {
        Live {
            rules,
            limits: config.limits.clone(),
            ech: config.rules.ech,
            allow_underscore: config.rules.sni_allow_underscore,
            deny_lines_per_second: config.log.deny_lines_per_second,
            credentials: config
                .listeners
                .iter()
                .map(|l| l.get_ref().mode.credentials().cloned().map(Arc::new))
                .collect(),
        }
    }

    /// The hello parser's limits.
    pub fn hello_limits(&self) -> HelloLimits {
        HelloLimits { max_hello_bytes: self.limits.max_hello_bytes, allow_underscore: self.allow_underscore }
    }
}

/// The swap every listener reads.
pub type SharedLive = Arc<ArcSwap<Live>>;

/// The live settings of a running server: the one swap, and the listeners whose own state
/// follows it (their slot counts, their access log's denial rate, the per-source table).
#[derive(Clone)]
pub struct LiveSettings {
    /// The swap.
    current: SharedLive,
    /// Every listener, to apply what is not read through the swap.
    listeners: Vec<Arc<Listener>>,
}

impl LiveSettings {
    pub(super) fn new(current: SharedLive, listeners: Vec<Arc<Listener>>) -> LiveSettings {
        LiveSettings { current, listeners }
    }

    /// The current snapshot.
    pub fn load(&self) -> Guard<Arc<Live>> {
        self.current.load()
    }

    /// Swaps in `live`, for every connection that reads a setting from now on; connections
    /// already decided keep the rules they were decided with.
    pub fn store(&self, live: Live) {
        let limits = &live.limits;
        for l in &self.listeners {
            l.slots.set_max(limits.max_connections);
            l.access_log.set_deny_lines_per_second(live.deny_lines_per_second);
        }
        if let Some(l) = self.listeners.first() {
            l.sources.set_limits(limits.max_connections_per_source, limits.max_hellos_per_source);
        }
        self.current.store(Arc::new(live));
    }

    /// A copy of the current snapshot with `change` applied, swapped in.
    pub fn update(&self, change: impl FnOnce(&Live) -> Live) {
        let next = change(&self.load());
        self.store(next);
    }
}
