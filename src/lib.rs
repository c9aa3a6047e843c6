//! snigate: an SNI-inspecting TCP edge filter.
//!
//! # Layout
//!
//! The modules follow the connection pipeline:
//!
//! - [`name`]: the validated, normalised host name every later stage matches on.
//! - [`hello`]: the ClientHello: a pure, incremental parser and a timed, bounded stream reader
//!   that keeps every byte for replay.
//! - `rules`: the rule language (patterns, rule files, large lists), the compiled matchers
//!   (a suffix hash table in production, an Aho-Corasick automaton and a naive loop as test
//!   oracles) and the `snigate check` analysis.
//! - `policy`: the decision: [`RuleSet`], an immutable compiled snapshot, and its one
//!   allocation-free hot-path call, [`RuleSet::decide`], returning a [`Decision`].
//! - [`proxy`]: listeners, the per-connection pipeline (hello, decision, upstream, replay,
//!   splice), rejecting, and the accept loop's limits and drain.
//! - [`metrics`]: the Prometheus registry, its pre-resolved per-listener handles, and the HTTP
//!   endpoint serving `/metrics`, `/healthz` and `/readyz`.
//! - [`access_log`]: one line per finished connection (JSON or text, stdout or a file), written
//!   by its own thread behind a bounded queue, with denial lines rate-limited.
//! - [`config`]: the TOML configuration, validated as a whole before anything is bound.
//! - [`reload`]: rule reloads on SIGHUP and on file changes, swapped in atomically.
//! - [`reason`]: the fixed vocabulary of outcome reasons (metric labels).
//! - [`salesforce`]: rule files from Salesforce data: ip-ranges.json import, tenant restriction.
//! - [`cli`]: the command line; `main.rs` only parses arguments and calls into it.
//! - `sys`: the crate's only `unsafe`: `pipe2`, `F_SETPIPE_SZ` and `splice(2)` behind safe
//!   wrappers.
#![deny(unsafe_code)]
#![warn(missing_docs)]

pub mod access_log;
pub mod cli;
pub mod config;
pub mod hello;
pub mod metrics;
pub mod name;
mod policy;
pub mod proxy;
pub mod reason;
pub mod reload;
mod rules;
pub mod salesforce;
mod sys;

pub use hello::{ClientHello, HelloError, Limits, Parse, ReadError, parse, read_client_hello};
pub use name::{Name, NameError};
pub use policy::{Decision, MatchKind, Matched, RuleRef, RuleSet, Verdict};
pub use reason::Reason;
pub use rules::{
    AcMatcher, Counts, Finding, Glob, List, ListSpec, PRESET, Pattern, PatternError, Precedence, Reference, Report,
    Rule, RuleError, RuleErrorKind, RuleErrors, Specificity, Target, canonical_ip, check, load_list, load_rules,
    parse_list, parse_rules, preset_rules,
};
