//! The live settings: what a reload changes in place (rules, limits, credentials, the ECH and
//! name policies, the log's denial rate, the report scopes), behind one swap that every listener reads. What needs
//! new sockets is static ([`crate::config::StaticConfig`]) and is never in here.

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;

use super::report::Scopes;
use crate::config::{Config, Credentials, EchPolicy, LimitsConfig};
use crate::hello::HelloLimits;
use crate::metrics::usage::RuleUsage;
use crate::policy::decide::RuleSet;
use crate::rules::fingerprint::Fingerprint;

/// One snapshot of the live settings. A connection reads the snapshot that is current when it
/// needs a setting; a reload swaps in a whole new one.
#[derive(Clone)]
pub struct Live {
    /// The rule snapshot new decisions are made with.
    pub rules: Arc<RuleSet>,
    /// `rules`' usage counters: a decision counts here, against the snapshot that made it.
    pub usage: Arc<RuleUsage>,
    /// What `rules` was compiled from: its identity, and its files' rules to tell what a
    /// reload changes.
    pub fingerprint: Arc<Fingerprint>,
    /// Limits and timeouts, as configured.
    pub limits: LimitsConfig,
    /// The timeouts a connection reads, as durations (converted once per reload, not per
    /// connection).
    pub timeouts: Timeouts,
    /// Whether a hello that carries encrypted_client_hello is denied.
    pub ech: EchPolicy,
    /// `[rules] sni_allow_underscore`.
    pub allow_underscore: bool,
    /// `[log] deny_lines_per_second`.
    pub deny_lines_per_second: u32,
    /// Each listener's credentials, by its place in the configuration (`connect` listeners
    /// that name a file).
    pub credentials: Vec<Option<Arc<Credentials>>>,
    /// The report scopes: listeners with `enforce = "report"`, and `[[report]]` sources.
    pub report: Arc<Scopes>,
}

impl Live {
    /// The live part of `config`, deciding with `rules` (counted in `usage`), compiled from
    /// `fingerprint`'s files.
    pub fn new(config: &Config, rules: Arc<RuleSet>, usage: Arc<RuleUsage>, fingerprint: Arc<Fingerprint>) -> Live {
        Live {
            rules,
            usage,
            fingerprint,
            limits: config.limits.clone(),
            timeouts: Timeouts::of(&config.limits),
            ech: config.rules.ech,
            allow_underscore: config.rules.sni_allow_underscore,
            deny_lines_per_second: config.log.deny_lines_per_second,
            credentials: config
                .listeners
                .iter()
                .map(|l| l.get_ref().mode.credentials().cloned().map(Arc::new))
                .collect(),
            report: Arc::new(Scopes::of(config)),
        }
    }

    /// The hello parser's limits.
    pub fn hello_limits(&self) -> HelloLimits {
        HelloLimits { max_hello_bytes: self.limits.max_hello_bytes, allow_underscore: self.allow_underscore }
    }
}

/// `[limits]`' timeouts as durations.
#[derive(Debug, Clone, Copy)]
pub struct Timeouts {
    /// `hello_timeout`.
    pub hello: Duration,
    /// `connect_timeout`.
    pub connect: Duration,
    /// `idle_timeout`.
    pub idle: Duration,
    /// `drain_timeout`.
    pub drain: Duration,
}

impl Timeouts {
    fn of(limits: &LimitsConfig) -> Timeouts {
        Timeouts {
            hello: limits.hello_timeout(),
            connect: limits.connect_timeout(),
            idle: limits.idle_timeout(),
            drain: limits.drain_timeout(),
        }
    }
}

/// The swap every listener reads.
pub type SharedLive = Arc<ArcSwap<Live>>;
