//! The report scopes' metrics: what they let through that the policy would deny, when they
//! end, and whether each listener enforces or reports.

use prometheus::{GaugeVec, IntCounter, IntCounterVec, IntGaugeVec, Opts, Registry};

use crate::config::{Config, Enforce};
use crate::reason::Reason;

/// The reasons a report scope reports: the `reason` label of `snigate_would_deny_total`.
pub const WOULD_REASONS: [Reason; 6] =
    [Reason::Rule, Reason::Default, Reason::NoSni, Reason::Ech, Reason::UnknownProtocol, Reason::DstMismatch];

/// `snigate_would_deny_total`, `snigate_report_until_timestamp_seconds` and
/// `snigate_report_scope_info`.
pub(super) struct ReportMetrics {
    /// `snigate_would_deny_total{listener, reason}`.
    would_deny: IntCounterVec,
    /// `snigate_report_until_timestamp_seconds{scope}`.
    until: GaugeVec,
    /// `snigate_report_scope_info{listener, enforce}`.
    info: IntGaugeVec,
}

impl ReportMetrics {
    /// The metrics, registered in `registry`.
    pub(super) fn register(registry: &Registry) -> ReportMetrics {
        let would_deny = IntCounterVec::new(
            Opts::new(
                "snigate_would_deny_total",
                "Connections a report scope let through that the policy would deny, by listener and the reason it \
                 would have given.",
            ),
            &["listener", "reason"],
        )
        .expect("valid metric");
        let until = GaugeVec::new(
            Opts::new(
                "snigate_report_until_timestamp_seconds",
                "Unix time a report scope ends (enforces from then on), by scope: a listener's name, or report: \
                 and the sources of a [[report]] table.",
            ),
            &["scope"],
        )
        .expect("valid metric");
        let info = IntGaugeVec::new(
            Opts::new(
                "snigate_report_scope_info",
                "Always 1; enforce is what the listener is configured to do (enforce or report), whatever \
                 [[report]] source scopes say.",
            ),
            &["listener", "enforce"],
        )
        .expect("valid metric");
        registry.register(Box::new(would_deny.clone())).expect("unique metric");
        registry.register(Box::new(until.clone())).expect("unique metric");
        registry.register(Box::new(info.clone())).expect("unique metric");
        ReportMetrics { would_deny, until, info }
    }

    /// Listener `name`'s `snigate_would_deny_total` series, created at 0, by [`WOULD_REASONS`].
    pub(super) fn listener(&self, name: &str) -> [IntCounter; WOULD_REASONS.len()] {
        WOULD_REASONS.map(|r| self.would_deny.with_label_values(&[name, r.as_str()]))
    }

    /// `config`'s scopes (at start, and again on every reload).
    pub(super) fn scopes(&self, config: &Config) {
        self.until.reset();
        self.info.reset();
        for l in &config.listeners {
            let l = l.get_ref();
            let (enforce, until) = match l.enforce {
                Enforce::Enforce => ("enforce", None),
                Enforce::Report { until } => ("report", until),
            };
            self.info.with_label_values(&[&l.label(), enforce]).set(1);
            if let Some(until) = until {
                self.until.with_label_values(&[&l.label()]).set(until.ends_at() as f64);
            }
        }
        for scope in &config.report {
            self.until.with_label_values(&[&scope.label()]).set(scope.until.ends_at() as f64);
        }
    }
}
