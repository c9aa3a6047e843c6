//! The decision: rules compiled into an immutable snapshot, and the one allocation-free call
//! that decides a connection with it.
//!
//! - [`decide`]: [`RuleSet`](decide::RuleSet), its hot-path call and the [`Decision`](decide::Decision) it returns.
//! - [`compile`]: rules and lists in, as their files are read, a `RuleSet` out.
//! - [`origin`]: where each compiled rule was written (a line number per rule), and the
//!   scopes and globs of the few rules that have them; [`RuleRef`](origin::RuleRef).
//! - [`table`]: the production engine, a hash table over label-boundary suffixes, and the
//!   precedence walk both engines share.
//! - [`ac`]: the alternative engine, an anchored Aho-Corasick automaton; a test oracle.
//! - [`reference`]: the naive loop over all rules that both engines are tested against.

pub(crate) mod ac;
pub(crate) mod compile;
pub(crate) mod decide;
pub(crate) mod destination;
pub(crate) mod origin;
pub(crate) mod reference;
pub(crate) mod table;
