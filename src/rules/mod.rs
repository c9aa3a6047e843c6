//! The rule language and its compiled matchers.
//!
//! - [`pattern`]: a domain pattern, and the precedence between patterns, stated once.
//! - [`rule`]: one parsed rule (action, target, source scope, origin).
//! - [`file`]: the rule-file parser, which reports every error with file, line and column.
//! - [`list`]: large domain lists (plain, hosts-file, adblock) tied to one action.
//! - [`matcher`]: the production engine, a hash table over label-boundary suffixes.
//! - [`ac`]: the alternative engine, an anchored Aho-Corasick automaton; kept as a test oracle.
//! - [`reference`]: the naive loop over all rules that both engines are tested against.
//! - [`check`]: the `snigate check` analysis: counts, duplicates, shadowed rules, conflicts.

pub(crate) mod ac;
pub(crate) mod check;
pub(crate) mod file;
pub(crate) mod list;
pub(crate) mod matcher;
pub(crate) mod pattern;
pub(crate) mod reference;
pub(crate) mod rule;

pub use ac::AcMatcher;
pub use check::{Counts, Finding, Report, check};
pub use file::{PRESET, RuleError, RuleErrorKind, RuleErrors, load_rules, parse_rules, preset_rules};
pub use list::{List, ListSpec, load_list, parse_list};
pub use pattern::{Glob, Pattern, PatternError, Precedence, Specificity};
pub use reference::Reference;
pub use rule::{Rule, Target, canonical_ip};
