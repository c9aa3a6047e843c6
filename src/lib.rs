//! snigate: an SNI-inspecting TCP edge filter.
//!
//! # Layout
//!
//! The modules follow the connection pipeline, and each imports only from the layers below it
//! (`tests/layering.rs` fails otherwise). From the bottom:
//!
//! 1. Vocabulary: [`Name`], the validated host name every stage matches on; [`Reason`], why a
//!    connection ended (the metric label); [`Phase`], where the process is in its life; `sys`,
//!    the crate's only `unsafe`.
//! 2. [`hello`]: the ClientHello: a pure, incremental parser and a timed, bounded stream reader
//!    that keeps every byte for replay.
//! 3. `rules`: the rule language: [`Rule`], [`Verdict`], [`Pattern`], the kinds of rule and
//!    their [`Precedence`] (stated once), rule files, large lists, `snigate check`, and the
//!    [`salesforce`] rule generators.
//! 4. `policy`: the decision: rules compiled into a [`RuleSet`], and its one allocation-free
//!    hot-path call, [`RuleSet::decide`], returning a [`Decision`].
//! 5. `config`: the TOML configuration and the types it names, validated as a whole before
//!    anything is bound.
//! 6. `outcome`: [`Outcome`], the record of a finished connection.
//! 7. `metrics` (the Prometheus registry and its endpoint), then `access_log` (one line per
//!    finished connection, written off the connection's path).
//! 8. `proxy`: the [`Server`], its listeners and their [`Live`] settings, admission (the one
//!    place an ask becomes allowed or denied, for TCP and QUIC alike), and each connection as
//!    named stages: accept, PROXY header, mode prelude, hello, decide, resolve, connect, replay,
//!    splice, finish.
//! 9. `reload` (the live settings read again on SIGHUP and file changes) and `handover` (the
//!    listening sockets passed to a new process, each with its role).
//! 10. `lifecycle`: the process's phases, from start to drained, and the only place signals
//!     are handled; then [`cli`] (the command line; `main.rs` only parses arguments and calls
//!     into it).
//!
//! Every public item is reachable by one path: the modules are private, and this one block
//! re-exports what they offer. [`hello`], [`salesforce`] and [`cli`] are namespaces of their
//! own; [`internal`] holds the test oracles.
#![deny(unsafe_code)]
#![warn(missing_docs)]

mod access_log;
pub mod cli;
mod config;
mod date;
mod handover;
pub mod hello;
mod lifecycle;
mod metrics;
mod name;
mod outcome;
mod phase;
mod policy;
mod proxy;
mod reason;
mod reload;
mod rules;
mod sys;

pub use crate::access_log::{AccessLog, ListenerLog, QUEUE as ACCESS_LOG_QUEUE, format_line};
pub use crate::config::{
    Config, ConfigError, ConfigErrors, Credentials, DEFAULT_DENY_LINES_PER_SECOND, DEFAULT_METRICS_LISTEN, EMBEDDED,
    EMBEDDED_NAME, EchPolicy, Keyword, LimitsConfig, ListConfig, ListenerConfig, LogConfig, LogFormat, LogLevel,
    MetricsConfig, Mode, ModeConfig, OpsFormat, ProxyVersion, RejectStyle, RulesConfig, RuntimeConfig, SpliceMode,
    StaticConfig, VerifyDestination,
};
pub use crate::lifecycle::{Event, Start};
pub use crate::metrics::endpoint::Endpoint;
pub use crate::metrics::registry::{
    ActiveGuard, CONNECT_SECONDS_BUCKETS, DURATION_SECONDS_BUCKETS, HELLO_BYTES_BUCKETS, HELLO_SECONDS_BUCKETS,
    ListenerMetrics, Metrics, Suppressed,
};
pub use crate::name::{MAX_LABEL_LEN, MAX_NAME_LEN, Name, NameError};
pub use crate::outcome::{Disposition, Outcome, Stage};
pub use crate::phase::{Phase, Phases};
pub use crate::policy::decide::{Decision, Matched, RuleSet};
pub use crate::policy::origin::RuleRef;
pub use crate::proxy::live::Live;
pub use crate::proxy::server::LiveSettings;
pub use crate::proxy::server::Server;
pub use crate::proxy::splice::{End, Moved, splice};
pub use crate::reason::Reason;
pub use crate::reload::{DEBOUNCE, ReloadTrigger, reload_credentials, reload_rules, watch_rules, watched_dirs};
pub use crate::rules::check::{Counts, Finding, Report, check};
pub use crate::rules::file::{
    PRESET, RuleError, RuleErrorKind, RuleErrors, load_rules, parse_rules, parse_rules_with, preset_rules, rule_text,
};
pub use crate::rules::list::{List, ListSpec, load_list, parse_list};
pub use crate::rules::pattern::{Glob, Pattern, PatternError};
pub use crate::rules::precedence::{Kind, Precedence};
pub use crate::rules::rule::{PortRange, Rule, Target, Verdict, canonical_ip};
pub use crate::rules::salesforce;
pub use crate::rules::suffix::{PUBLIC_SUFFIX_LIST, PublicSuffixWildcards, covered_suffix, is_public_suffix};

/// For tests, benches and fuzz targets: the alternative and the naive matching engines the
/// production engine is compared with, the readers of the PROXY header and the explicit
/// modes' request heads, and builders of QUIC client Initials. Not part of the supported
/// interface.
#[doc(hidden)]
pub mod internal {
    pub use crate::cli::log_line;
    pub use crate::hello::quic::builders::{crypto_frame, padded, seal_initial};
    pub use crate::policy::ac::AcMatcher;
    pub use crate::policy::reference::Reference;
    pub use crate::proxy::http::{Head, HeadError, MAX_HEAD, Target as RequestTarget, parse_head, read_head};
    pub use crate::proxy::proxy_protocol::{Addresses, ProxyError, read_header as read_proxy_header};
}
