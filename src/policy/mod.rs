//! The decision: rules compiled into an immutable snapshot, and the one allocation-free call
//! that decides a connection with it.
//!
//! - [`decide`]: [`RuleSet`](decide::RuleSet), its hot-path call and the [`Decision`](decide::Decision) it returns.
//! - [`compile`]: parsed rules and lists in, a `RuleSet` out.
//! - [`table`]: the production engine, a hash table over label-boundary suffixes, and the
//!   precedence walk both engines share.
//! - [`ac`]: the alternative engine, an anchored Aho-Corasick automaton; a test oracle.
//! - [`reference`]: the naive loop over all rules that both engines are tested against.

pub(crate) mod ac;
pub(crate) mod compile;
pub(crate) mod decide;
pub(crate) mod destination;
pub(crate) mod reference;
pub(crate) mod table;
