//! Prometheus metrics: one registry per server, typed handles, and the HTTP endpoint that
//! serves them.
//!
//! - [`registry`]: [`Metrics`](registry::Metrics), every metric in one registry, and
//!   [`ListenerMetrics`](registry::ListenerMetrics), a listener's handles resolved once.
//! - [`usage`]: [`RuleUsage`](usage::RuleUsage), each rule's hits and last hit, per worker.
//! - [`decisions`]: [`Decisions`](decisions::Decisions), the most frequent names of the last
//!   hour per outcome, per worker.
//! - [`worker`]: which worker the calling thread is, for what is counted per worker.
//! - [`endpoint`]: [`Endpoint`](endpoint::Endpoint), serving `/metrics`, `/rules`,
//!   `/decisions`, `/healthz` and `/readyz`, and the page at `/` ([`page`]).

pub(crate) mod decisions;
pub(crate) mod endpoint;
mod page;
pub(crate) mod registry;
pub(crate) mod report;
mod sum;
pub(crate) mod usage;
pub(crate) mod worker;
