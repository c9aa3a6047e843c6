//! The registry: every metric, and each listener's handles resolved once.
//!
//! Cardinality is fixed at start: label values come from fixed enums ([`Reason`], [`Disposition`],
//! directions, reload results) and from configured names (listeners, rule files, lists), never
//! from client data. Every listener's `(verdict, reason)` series are created at 0 when it is
//! bound, and resolved once into a [`ListenerMetrics`], so recording an outcome on the hot path
//! is an array index and an atomic add, with no label hashing.
//!
//! What connections record is kept per worker ([`Families`], one set per worker thread, see
//! [`set_worker`](super::worker::set_worker)), so that workers on different cores never write the same cache line; a
//! scrape sums the workers' series. The rest (readiness, reloads, limits) is kept once.

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use super::decisions::Decisions;
use super::report::{ReportMetrics, WOULD_REASONS};
use super::sum::sum;
use super::usage::{RuleUsage, UsageSlot};
use super::worker;
use prometheus::{
    Gauge, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry,
    TextEncoder,
};

use crate::config::Config;
use crate::outcome::{Disposition, Outcome};
use crate::policy::decide::RuleSet;
use crate::reason::Reason;

/// `snigate_client_hello_seconds`: from the first read to a complete hello. A hello in one
/// segment takes microseconds; a slow or fragmenting client milliseconds to seconds; the last
/// bucket is the default `hello_timeout`.
pub const HELLO_SECONDS_BUCKETS: &[f64] = &[
    0.000_025, 0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

/// `snigate_client_hello_bytes`: bytes on the wire, record headers included. OpenSSL and curl
/// send 200–600 B, browsers with a post-quantum key share 1.7–2 KB, fragmenting clients more;
/// the last bucket is the default `max_hello_bytes`.
pub const HELLO_BYTES_BUCKETS: &[f64] =
    &[128.0, 256.0, 512.0, 1024.0, 1536.0, 2048.0, 4096.0, 8192.0, 16384.0, 32768.0, 65536.0];

/// `snigate_upstream_connect_seconds`: sub-millisecond on a LAN, tens of milliseconds across
/// regions; the last bucket is the default `connect_timeout`.
pub const CONNECT_SECONDS_BUCKETS: &[f64] =
    &[0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

/// `snigate_connection_duration_seconds`: a refused connection lasts milliseconds (up to the
/// one-second linger after an alert), an API call seconds, a long-lived stream hours.
pub const DURATION_SECONDS_BUCKETS: &[f64] = &[
    0.001, 0.01, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 14400.0, 43200.0,
    86400.0,
];

/// Why a QUIC datagram was dropped (the `cause` label of
/// `snigate_quic_datagrams_dropped_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dropped {
    /// A datagram of a flow that was denied (until the flow is forgotten).
    Denied,
    /// Beyond what a flow buffers while it is decided.
    Buffer,
    /// The flow table is full and no flow being decided could make room.
    Full,
    /// It does not start a flow: not a client Initial.
    NotInitial,
    /// On an allowed flow, a long-header packet that could start a connection snigate has not
    /// decided: another connection's Initial, another hello, another version.
    OtherHello,
    /// A server datagram toward a client that has not proved its address, beyond three times
    /// what that client sent on the flow (RFC 9000 §8.1): the address may be forged, and
    /// snigate must not amplify toward it.
    Amplification,
}

impl Dropped {
    /// The `cause` label.
    pub const fn as_str(self) -> &'static str {
        match self {
            Dropped::Denied => "denied_flow",
            Dropped::Buffer => "buffer_full",
            Dropped::Full => "flows_full",
            Dropped::NotInitial => "not_initial",
            Dropped::OtherHello => "other_hello",
            Dropped::Amplification => "amplification",
        }
    }
}

/// Why an access-log line was not written (the `cause` label of `snigate_log_suppressed_total`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suppressed {
    /// A denial line beyond the per-listener rate.
    RateLimit,
    /// The writer's queue was full (the log destination is slower than the traffic).
    QueueFull,
}

impl Suppressed {
    /// The label value.
    pub const fn as_str(self) -> &'static str {
        match self {
            Suppressed::RateLimit => "rate_limit",
            Suppressed::QueueFull => "queue_full",
        }
    }
}

/// The registry and every metric in it. One per server; share it behind an `Arc`.
pub struct Metrics {
    /// What `/metrics` renders (with the workers' families summed in); not the process-global
    /// default registry, so that several servers in one process (tests) keep separate counts.
    registry: Registry,
    /// What connections record, one set per worker.
    workers: Box<[Families]>,
    /// `snigate_max_connections{listener}`: the configured limit, for saturation ratios.
    max_connections: IntGaugeVec,
    /// `snigate_rules_loaded`: patterns in the running snapshot.
    rules_loaded: IntGauge,
    /// `snigate_rules_reloads_total{result="success"}`.
    reloads_ok: IntCounter,
    /// `snigate_rules_reloads_total{result="failure"}`.
    reloads_failed: IntCounter,
    /// `snigate_rules_last_reload_success_timestamp_seconds`.
    last_reload: Gauge,
    /// `snigate_config_last_reload_successful`: 0 from a failed reload until one succeeds.
    reload_ok: IntGauge,
    /// `snigate_rules_info{sha256}`: 1 for the running ruleset's identity.
    rules_info: IntGaugeVec,
    /// `snigate_ready`: 1 while every listener accepts, 0 before and while draining; `/readyz`
    /// answers from it.
    ready: IntGauge,
    /// The running rule snapshot's usage, for `/rules`.
    usage: UsageSlot,
    /// The last hour's most frequent names per outcome, for `/decisions`.
    decisions: Arc<Decisions>,
    /// `snigate_sources_tracked`: sources (IPv4 addresses, IPv6 /64s) with connections open.
    sources_tracked: IntGauge,
    /// What the report scopes let through, and the scopes themselves.
    report: ReportMetrics,
}

/// One worker's copy of the metrics connections record, in a registry of its own.
struct Families {
    registry: Registry,
    /// `snigate_connections_total{listener, verdict, reason}`.
    connections: IntCounterVec,
    /// `snigate_rule_hits_total{ruleset}`.
    rule_hits: IntCounterVec,
    /// `snigate_active_connections{listener}`.
    active: IntGaugeVec,
    /// `snigate_accept_errors_total{listener}`: EMFILE, ENFILE and friends.
    accept_errors: IntCounterVec,
    /// `snigate_ech_hellos_total{listener}`: hellos carrying encrypted_client_hello.
    ech_hellos: IntCounterVec,
    /// `snigate_bytes_total{direction="upstream"}`: client to upstream, replayed hello included.
    bytes_upstream: IntCounter,
    /// `snigate_bytes_total{direction="downstream"}`: upstream to client.
    bytes_downstream: IntCounter,
    /// `snigate_client_hello_seconds`.
    hello_seconds: Histogram,
    /// `snigate_client_hello_bytes`.
    hello_bytes: Histogram,
    /// `snigate_upstream_connect_seconds`.
    connect_seconds: Histogram,
    /// `snigate_connection_duration_seconds{verdict}`: refused and spliced connections last
    /// orders of magnitude apart, so they are kept apart.
    duration: HistogramVec,
    /// `snigate_log_suppressed_total{listener, cause}`.
    log_suppressed: IntCounterVec,
    /// `snigate_quic_datagrams_dropped_total`.
    quic_dropped: IntCounterVec,
}

impl Families {
    fn new() -> Families {
        let registry = Registry::new();
        let counter_vec = |name: &str, help: &str, labels: &[&str]| {
            let c = IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(c.clone())).expect("unique metric");
            c
        };
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            let h =
                Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec())).expect("valid metric");
            registry.register(Box::new(h.clone())).expect("unique metric");
            h
        };
        let connections = counter_vec(
            "snigate_connections_total",
            "Connections finished, by listener, verdict and reason.",
            &["listener", "verdict", "reason"],
        );
        let rule_hits = counter_vec(
            "snigate_rule_hits_total",
            "Connections decided by a rule, by rule file or list name.",
            &["ruleset"],
        );
        let active = IntGaugeVec::new(Opts::new("snigate_active_connections", "Connections open now."), &["listener"])
            .expect("valid metric");
        registry.register(Box::new(active.clone())).expect("unique metric");
        let accept_errors =
            counter_vec("snigate_accept_errors_total", "Failed accept calls (the loop backs off).", &["listener"]);
        let ech_hellos = counter_vec(
            "snigate_ech_hellos_total",
            "ClientHellos carrying encrypted_client_hello (real or GREASE).",
            &["listener"],
        );
        let bytes = counter_vec(
            "snigate_bytes_total",
            "Bytes spliced, counted when the connection ends: upstream is client to upstream (the replayed hello \
             included), downstream is upstream to client.",
            &["direction"],
        );
        let hello_seconds = histogram(
            "snigate_client_hello_seconds",
            "Time from the first read to a complete ClientHello.",
            HELLO_SECONDS_BUCKETS,
        );
        let hello_bytes = histogram(
            "snigate_client_hello_bytes",
            "Size of complete ClientHellos on the wire, record headers included.",
            HELLO_BYTES_BUCKETS,
        );
        let connect_seconds = histogram(
            "snigate_upstream_connect_seconds",
            "Time to establish successful upstream connections (every address tried included).",
            CONNECT_SECONDS_BUCKETS,
        );
        let duration = HistogramVec::new(
            HistogramOpts::new("snigate_connection_duration_seconds", "Time from accept to close, by verdict.")
                .buckets(DURATION_SECONDS_BUCKETS.to_vec()),
            &["verdict"],
        )
        .expect("valid metric");
        registry.register(Box::new(duration.clone())).expect("unique metric");
        let log_suppressed = counter_vec(
            "snigate_log_suppressed_total",
            "Access-log lines not written: denial lines beyond the rate limit, or lines dropped because the writer \
             was behind.",
            &["listener", "cause"],
        );
        let quic_dropped = counter_vec(
            "snigate_quic_datagrams_dropped_total",
            "QUIC datagrams dropped without a new verdict: for a denied flow, beyond a flow's buffer while it is \
             decided, with the flow table full, not starting a flow (not a client Initial), another hello on an \
             allowed flow, or beyond 3x what a client not yet validated sent.",
            &["listener", "cause"],
        );
        Families {
            registry,
            connections,
            rule_hits,
            active,
            accept_errors,
            ech_hellos,
            bytes_upstream: bytes.with_label_values(&["upstream"]),
            bytes_downstream: bytes.with_label_values(&["downstream"]),
            hello_seconds,
            hello_bytes,
            connect_seconds,
            duration,
            log_suppressed,
            quic_dropped,
        }
    }

    /// Listener `name`'s handles into this worker's families, its possible
    /// `(verdict, reason)` series created at 0.
    fn listener(&self, name: &str) -> Handles {
        let connections = Disposition::ALL.map(|verdict| {
            Reason::ALL.map(|reason| {
                possible(verdict, reason)
                    .then(|| self.connections.with_label_values(&[name, verdict.as_str(), reason.as_str()]))
            })
        });
        Handles {
            connections,
            all_connections: self.connections.clone(),
            active: self.active.with_label_values(&[name]),
            accept_errors: self.accept_errors.with_label_values(&[name]),
            ech_hellos: self.ech_hellos.with_label_values(&[name]),
            log_rate_limited: self.log_suppressed.with_label_values(&[name, Suppressed::RateLimit.as_str()]),
            log_queue_full: self.log_suppressed.with_label_values(&[name, Suppressed::QueueFull.as_str()]),
            quic_dropped: self.quic_dropped.clone(),
            rule_hits: self.rule_hits.clone(),
            bytes_upstream: self.bytes_upstream.clone(),
            bytes_downstream: self.bytes_downstream.clone(),
            hello_seconds: self.hello_seconds.clone(),
            hello_bytes: self.hello_bytes.clone(),
            connect_seconds: self.connect_seconds.clone(),
            duration: Disposition::ALL.map(|v| self.duration.with_label_values(&[v.as_str()])),
        }
    }
}

impl Metrics {
    /// A registry holding every snigate metric, the process metrics and `snigate_build_info`,
    /// for one worker.
    pub fn new() -> Metrics {
        Metrics::with_workers(1)
    }

    /// [`new`](Self::new), with what connections record kept apart for each of `workers`
    /// workers (at least one).
    pub fn with_workers(workers: usize) -> Metrics {
        let registry = Registry::new();
        let gauge_vec = |name: &str, help: &str, labels: &[&str]| {
            let g = IntGaugeVec::new(Opts::new(name, help), labels).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let int_gauge = |name: &str, help: &str| {
            let g = IntGauge::new(name, help).expect("valid metric");
            registry.register(Box::new(g.clone())).expect("unique metric");
            g
        };
        let max_connections =
            gauge_vec("snigate_max_connections", "Configured limit on open connections.", &["listener"]);
        let rules_loaded =
            int_gauge("snigate_rules_loaded", "Patterns in the running rule snapshot (rules and list entries).");
        let reloads =
            IntCounterVec::new(Opts::new("snigate_rules_reloads_total", "Rule reloads, by result."), &["result"])
                .expect("valid metric");
        registry.register(Box::new(reloads.clone())).expect("unique metric");
        let last_reload = Gauge::new(
            "snigate_rules_last_reload_success_timestamp_seconds",
            "Unix time of the last successful rule load (the first load at start included).",
        )
        .expect("valid metric");
        registry.register(Box::new(last_reload.clone())).expect("unique metric");
        let build_info = gauge_vec("snigate_build_info", "Always 1; the labels describe the build.", &["version"]);
        build_info.with_label_values(&[env!("CARGO_PKG_VERSION")]).set(1);
        let reload_ok = int_gauge(
            "snigate_config_last_reload_successful",
            "1 when the last reload of the rules (or the start) succeeded, 0 while its failure stands.",
        );
        reload_ok.set(1);
        let rules_info = gauge_vec(
            "snigate_rules_info",
            "Always 1; sha256 identifies the running rule files and lists.",
            &["sha256"],
        );
        let ready = int_gauge("snigate_ready", "1 while every listener accepts; 0 at start and while draining.");
        let sources_tracked = int_gauge(
            "snigate_sources_tracked",
            "Sources (IPv4 addresses, IPv6 /64s) with connections open, as tracked for the per-source limits.",
        );
        #[cfg(target_os = "linux")]
        registry
            .register(Box::new(prometheus::process_collector::ProcessCollector::for_self()))
            .expect("unique metric");

        Metrics {
            report: ReportMetrics::register(&registry),
            workers: (0..workers.max(1)).map(|_| Families::new()).collect(),
            max_connections,
            rules_loaded,
            reloads_ok: reloads.with_label_values(&["success"]),
            reloads_failed: reloads.with_label_values(&["failure"]),
            last_reload,
            reload_ok,
            rules_info,
            ready,
            sources_tracked,
            usage: UsageSlot::default(),
            decisions: Arc::new(Decisions::new(workers)),
            registry,
        }
    }

    /// Creates the series of listener `name` at 0 and resolves its handles once, for every
    /// worker.
    pub fn listener(&self, name: &str, max_connections: usize) -> ListenerMetrics {
        self.max_connections.with_label_values(&[name]).set(i64::try_from(max_connections).unwrap_or(i64::MAX));
        ListenerMetrics {
            name: name.into(),
            workers: self.workers.iter().map(|f| f.listener(name)).collect(),
            would_deny: self.report.listener(name),
        }
    }

    /// The report scopes of `config` (at start and on every reload): when each ends, and
    /// whether each listener enforces or reports.
    pub fn report_scopes(&self, config: &Config) {
        self.report.scopes(config);
    }

    /// A rule snapshot went live (at start or by a reload): its pattern count, the time, and a
    /// 0 series for each of its rule files and lists.
    pub fn rules_loaded(&self, rules: &RuleSet) {
        self.rules_loaded.set(i64::try_from(rules.len()).unwrap_or(i64::MAX));
        for ruleset in rules.rulesets() {
            self.workers[0].rule_hits.with_label_values(&[ruleset]);
        }
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        self.last_reload.set(now.as_secs_f64());
    }

    /// The usage counters of `rules`, going live (at start or by a reload): they inherit the
    /// counts of the running snapshot's unchanged rules, and `/rules` reports them from now on.
    pub fn rule_usage(&self, rules: &Arc<RuleSet>) -> Arc<RuleUsage> {
        self.usage.next(rules, self.workers.len())
    }

    /// `/rules`: each rule of the rule files with its hits and last hit, as a JSON array.
    pub fn rules_json(&self) -> String {
        self.usage.json()
    }

    /// Where decisions are counted for `/decisions`, for the listeners to share.
    pub(crate) fn decisions(&self) -> &Arc<Decisions> {
        &self.decisions
    }

    /// Counts a reload; a successful one has already been reported by [`rules_loaded`](Self::rules_loaded).
    pub fn reloaded(&self, ok: bool) {
        if ok {
            self.reloads_ok.inc()
        } else {
            self.reloads_failed.inc()
        }
        self.reload_ok.set(i64::from(ok));
    }

    /// The running ruleset's identity: the one `snigate_rules_info` series.
    pub fn rules_identity(&self, sha256: &str) {
        self.rules_info.reset();
        self.rules_info.with_label_values(&[sha256]).set(1);
    }

    /// Marks the server ready (every listener accepting) or not (starting, draining).
    pub fn set_ready(&self, ready: bool) {
        self.ready.set(i64::from(ready));
    }

    /// The `snigate_sources_tracked` gauge, for the per-source table to keep.
    pub fn sources_tracked(&self) -> IntGauge {
        self.sources_tracked.clone()
    }

    /// Whether the server is ready: what `/readyz` answers.
    pub fn is_ready(&self) -> bool {
        self.ready.get() == 1
    }

    /// The text exposition of every metric (Prometheus format 0.0.4), the workers' series summed.
    pub fn render(&self) -> String {
        let mut families = self.registry.gather();
        families.extend(sum(self.workers.iter().map(|f| f.registry.gather())));
        families.sort_by(|a, b| a.name().cmp(b.name()));
        TextEncoder::new().encode_to_string(&families).unwrap_or_else(|e| format!("# error: {e}\n"))
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

/// Whether `(verdict, reason)` can occur, so that only meaningful series are created at 0.
/// An allowed connection was allowed by a rule, by the default or by a report scope; an error
/// is an allowed one whose upstream failed; every reason but `report` can deny.
const fn possible(verdict: Disposition, reason: Reason) -> bool {
    match verdict {
        Disposition::Allow => matches!(reason, Reason::Rule | Reason::Default | Reason::Report),
        Disposition::Deny => !matches!(reason, Reason::Report),
        Disposition::Error => matches!(reason, Reason::UpstreamError),
    }
}

/// One listener's handles, resolved once when it is bound: one set per worker.
pub struct ListenerMetrics {
    /// The `listener` label, for the rare series not created in advance.
    name: Box<str>,
    /// Each worker's handles.
    workers: Box<[Handles]>,
    /// `snigate_would_deny_total{listener}` by [`WOULD_REASONS`]: shared by the workers, as
    /// only connections a report scope let through count in it.
    would_deny: [IntCounter; WOULD_REASONS.len()],
}

/// One listener's handles into one worker's families.
struct Handles {
    /// `snigate_connections_total` by `[verdict][reason]` (each in its `ALL` order); `None`
    /// for combinations that cannot happen.
    connections: [[Option<IntCounter>; Reason::ALL.len()]; Disposition::ALL.len()],
    /// The vector, for a combination [`possible`] did not foresee.
    all_connections: IntCounterVec,
    /// `snigate_active_connections{listener}`.
    active: IntGauge,
    /// `snigate_accept_errors_total{listener}`.
    accept_errors: IntCounter,
    /// `snigate_ech_hellos_total{listener}`.
    ech_hellos: IntCounter,
    /// `snigate_log_suppressed_total{listener, cause="rate_limit"}`.
    log_rate_limited: IntCounter,
    /// `snigate_log_suppressed_total{listener, cause="queue_full"}`.
    log_queue_full: IntCounter,
    /// `snigate_quic_datagrams_dropped_total`, labelled per drop.
    quic_dropped: IntCounterVec,
    /// `snigate_rule_hits_total`: the ruleset label is looked up per decision by a rule; its
    /// values are configured names.
    rule_hits: IntCounterVec,
    /// `snigate_bytes_total{direction="upstream"}`.
    bytes_upstream: IntCounter,
    /// `snigate_bytes_total{direction="downstream"}`.
    bytes_downstream: IntCounter,
    /// `snigate_client_hello_seconds`.
    hello_seconds: Histogram,
    /// `snigate_client_hello_bytes`.
    hello_bytes: Histogram,
    /// `snigate_upstream_connect_seconds`.
    connect_seconds: Histogram,
    /// `snigate_connection_duration_seconds` by verdict, in [`Disposition::ALL`] order.
    duration: [Histogram; Disposition::ALL.len()],
}

impl ListenerMetrics {
    /// The calling worker's handles.
    fn here(&self) -> &Handles {
        let k = worker::current();
        &self.workers[k.min(self.workers.len() - 1)]
    }

    /// A connection was accepted; the returned guard counts it as active until dropped.
    pub fn accepted(&self) -> ActiveGuard {
        let active = &self.here().active;
        active.inc();
        ActiveGuard(active.clone())
    }

    /// An accept call failed.
    pub fn accept_failed(&self) {
        self.here().accept_errors.inc();
    }

    /// A complete ClientHello: how long reading it took and its size on the wire.
    pub fn hello(&self, seconds: f64, wire_bytes: usize, ech: bool) {
        let h = self.here();
        h.hello_seconds.observe(seconds);
        h.hello_bytes.observe(wire_bytes as f64);
        if ech {
            h.ech_hellos.inc();
        }
    }

    /// A successful upstream connect and how long it took.
    pub fn connected(&self, seconds: f64) {
        self.here().connect_seconds.observe(seconds);
    }

    /// A connection finished: its verdict and reason, the deciding ruleset, bytes and duration.
    pub fn finished(&self, o: &Outcome) {
        let h = self.here();
        let v = o.verdict as usize;
        match &h.connections[v][o.reason as usize] {
            Some(c) => c.inc(),
            None => h.all_connections.with_label_values(&[&self.name, o.verdict.as_str(), o.reason.as_str()]).inc(),
        }
        if let Some(would) = o.would_reason
            && let Some(i) = WOULD_REASONS.iter().position(|&r| r == would)
        {
            self.would_deny[i].inc();
        }
        if let Some(ruleset) = &o.ruleset {
            h.rule_hits.with_label_values(&[ruleset]).inc();
        }
        h.bytes_upstream.inc_by(o.bytes_up);
        h.bytes_downstream.inc_by(o.bytes_down);
        h.duration[v].observe(o.duration);
    }

    /// A QUIC datagram was dropped for `cause`.
    pub fn quic_dropped(&self, cause: Dropped) {
        self.here().quic_dropped.with_label_values(&[&self.name, cause.as_str()]).inc();
    }

    /// An access-log line was not written.
    pub fn log_suppressed(&self, cause: Suppressed) {
        match cause {
            Suppressed::RateLimit => self.here().log_rate_limited.inc(),
            Suppressed::QueueFull => self.here().log_queue_full.inc(),
        }
    }
}

/// Counts one connection in `snigate_active_connections` while alive, even if its task panics.
pub struct ActiveGuard(IntGauge);

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        self.0.dec();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reasons_and_verdicts_index_in_declaration_order() {
        for (i, r) in Reason::ALL.iter().enumerate() {
            assert_eq!(*r as usize, i, "{r}");
        }
        for (i, d) in Disposition::ALL.iter().enumerate() {
            assert_eq!(*d as usize, i, "{}", d.as_str());
        }
    }

    #[test]
    fn a_listener_starts_with_every_possible_series_at_zero() {
        let m = Metrics::new();
        let _l = m.listener("edge", 10);
        let text = m.render();
        let series: Vec<&str> = text.lines().filter(|l| l.starts_with("snigate_connections_total{")).collect();
        assert_eq!(series.len(), 2 + Reason::ALL.len() + 1, "{series:#?}");
        assert!(series.iter().all(|l| l.ends_with(" 0")));
        assert!(text.contains(r#"snigate_connections_total{listener="edge",reason="not_tls",verdict="deny"} 0"#));
        assert!(!text.contains(r#"reason="not_tls",verdict="allow""#));
        assert!(
            text.contains(r#"snigate_connections_total{listener="edge",reason="upstream_error",verdict="error"} 0"#)
        );
        assert!(!text.contains(r#"reason="rule",verdict="error""#));
        assert!(text.contains(r#"snigate_max_connections{listener="edge"} 10"#));
        assert!(text.contains(&format!(r#"snigate_build_info{{version="{}"}} 1"#, env!("CARGO_PKG_VERSION"))));
    }

    /// Each worker records into its own families; a scrape shows their sums, histograms
    /// bucket by bucket, and series only some workers have.
    #[test]
    fn workers_record_apart_and_a_scrape_sums_them() {
        let m = std::sync::Arc::new(Metrics::with_workers(3));
        let l = std::sync::Arc::new(m.listener("edge", 10));
        let threads: Vec<_> = (0..3)
            .map(|k| {
                let l = l.clone();
                std::thread::spawn(move || {
                    worker::set_worker(k);
                    let guard = l.accepted();
                    for _ in 0..=k {
                        let mut o = Outcome::accepted("edge".into(), "127.0.0.1:1".parse().unwrap());
                        o.verdict = Disposition::Allow;
                        o.reason = Reason::Rule;
                        o.bytes_up = 10;
                        l.hello(0.001, 600, false);
                        l.finished(&o);
                    }
                    if k == 2 {
                        l.quic_dropped(Dropped::Denied);
                    }
                    std::mem::forget(guard);
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let text = m.render();
        for line in [
            r#"snigate_connections_total{listener="edge",reason="rule",verdict="allow"} 6"#,
            r#"snigate_active_connections{listener="edge"} 3"#,
            r#"snigate_bytes_total{direction="upstream"} 60"#,
            r#"snigate_client_hello_bytes_bucket{le="1024"} 6"#,
            r#"snigate_client_hello_bytes_bucket{le="512"} 0"#,
            "snigate_client_hello_bytes_count 6",
            r#"snigate_quic_datagrams_dropped_total{cause="denied_flow",listener="edge"} 1"#,
        ] {
            assert!(text.contains(line), "{line} in\n{text}");
        }
        assert_eq!(text.matches("# TYPE snigate_connections_total counter").count(), 1, "one family");
    }

    #[test]
    fn not_ready_until_told() {
        let m = Metrics::new();
        assert!(!m.is_ready());
        m.set_ready(true);
        assert!(m.is_ready());
        m.set_ready(false);
        assert!(!m.is_ready());
    }

    #[test]
    fn the_active_gauge_follows_the_guards() {
        let m = Metrics::new();
        let l = m.listener("edge", 10);
        let a = l.accepted();
        let b = l.accepted();
        assert!(m.render().contains(r#"snigate_active_connections{listener="edge"} 2"#));
        drop(a);
        drop(b);
        assert!(m.render().contains(r#"snigate_active_connections{listener="edge"} 0"#));
    }
}
