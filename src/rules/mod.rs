//! The rule language: what operators write, parsed and checked, but not yet compiled.
//!
//! - [`rule`]: one parsed rule (verdict, target, source and port scopes, file, line and
//!   text), and the verdict vocabulary every later layer reports in.
//! - [`pattern`]: a domain pattern.
//! - [`precedence`]: the kinds of rule and the precedence between them, stated once.
//! - [`file`]: the rule-file parser, which reports every error with file, line and column,
//!   and streams rules from their files line by line.
//! - [`fingerprint`]: which ruleset runs (a SHA-256 of its files) and what a reload changed.
//! - [`list`]: large domain lists (plain, hosts-file, adblock) tied to one action, streamed
//!   likewise.
//! - [`suffix`]: the public-suffix guard on `allow` wildcards, and the list's version.
//! - [`check`]: the `snigate check` analysis: counts, duplicates, shadowed rules, conflicts.
//! - [`salesforce`]: rule files generated from Salesforce's data (ip-ranges.json, tenant
//!   restriction).
//!
//! Compiling rules into a decision snapshot is the `policy` layer's job, one layer up.

pub(crate) mod check;
pub(crate) mod file;
pub(crate) mod fingerprint;
pub(crate) mod list;
pub(crate) mod pattern;
pub(crate) mod precedence;
pub(crate) mod rule;
pub mod salesforce;
pub(crate) mod suffix;
