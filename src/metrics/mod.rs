//! Prometheus metrics: one registry per server, typed handles, and the HTTP endpoint that
//! serves them.
//!
//! - [`registry`]: [`Metrics`](registry::Metrics), every metric in one registry, and
//!   [`ListenerMetrics`](registry::ListenerMetrics), a listener's handles resolved once.
//! - [`endpoint`]: [`Endpoint`](endpoint::Endpoint), serving `/metrics`, `/healthz` and `/readyz`.

pub(crate) mod endpoint;
pub(crate) mod registry;
pub(crate) mod report;
mod sum;
