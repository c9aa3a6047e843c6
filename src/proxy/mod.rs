//! The proxy: listeners, the connection's stages, upstreams, splicing and rejecting.
//!
//! - [`server`]: binds the listeners, accepts, drains.
//! - [`listener`]: one listener's settings, resolved per mode, shared by its connections; the
//!   drain deadline.
//! - [`live`]: what a reload changes in place, behind one swap.
//! - [`admission`]: the one place an ask (TCP or QUIC) becomes allowed or denied, and the way
//!   to an allowed ask's upstream addresses.
//! - [`connection`]: one connection as its named stages, and its one exit.
//! - [`client`]: the accepted socket, registered with the runtime only when a stage waits.
//! - [`quic`]: QUIC listeners: UDP flows decided by their Initial packets, then forwarded.
//! - [`proxy_protocol`]: PROXY headers in (from trusted load balancers) and out.
//! - [`explicit`] and [`http`]: the `connect` and `http` modes' requests and answers; every
//!   request of a plain-HTTP connection is decided as it passes ([`http::forward`]).
//! - [`reject`]: how a denial reaches the wire.
//! - [`resolver`] and [`upstream`]: finding and reaching the upstream (vetted in [`admission`]).
//! - [`splice`]: moving bytes both ways once allowed.
//! - [`sources`]: per-source limits, and the queue of connections waiting for their hello.

pub(crate) mod admission;
pub(crate) mod client;
pub(crate) mod connection;
pub(crate) mod explicit;
pub(crate) mod http;
pub(crate) mod listener;
pub(crate) mod live;
pub(crate) mod proxy_protocol;
pub(crate) mod quic;
pub(crate) mod reject;
pub(crate) mod report;
pub(crate) mod resolver;
pub(crate) mod server;
pub(crate) mod sources;
pub(crate) mod splice;
pub(crate) mod upstream;
