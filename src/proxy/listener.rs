//! One listener's settings, shared by its connections, and the server's drain deadline.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::Poll;

use arc_swap::ArcSwap;
use tokio::sync::{Notify, Semaphore};

use super::resolver::Resolver;
use super::sources::{Sources, Waiting};
use crate::access_log::ListenerLog;
use crate::config::{Credentials, EchPolicy, LimitsConfig, ListenerConfig};
use crate::hello::HelloLimits;
use crate::metrics::registry::ListenerMetrics;
use crate::outcome::Outcome;
use crate::policy::decide::Decision;
use crate::policy::decide::Rules;

/// Credentials every connection of a listener reads; a reload swaps them whole.
pub type SharedCredentials = Arc<ArcSwap<Credentials>>;
use crate::policy::destination::DestinationGuard;

/// One listener's settings, shared by its connections.
pub struct Listener {
    /// The `listener` label.
    pub name: Arc<str>,
    /// The listener's configuration block.
    pub config: ListenerConfig,
    /// Limits and timeouts (shared by all listeners; a SIGHUP swaps in new ones).
    pub limits: Arc<ArcSwap<LimitsConfig>>,
    /// `max_connections` as bound: the slots cannot change size.
    pub max_connections: usize,
    /// `[rules] sni_allow_underscore`.
    pub allow_underscore: bool,
    /// ECH handling.
    pub ech: EchPolicy,
    /// `upstream` mode: the resolved upstream address.
    pub upstream: Option<SocketAddr>,
    /// `sni` mode: the port to connect to.
    pub upstream_port: u16,
    /// The shared rule snapshot.
    pub rules: Rules,
    /// Where finished connections are logged (rate-limited for denials, never blocking).
    pub access_log: ListenerLog,
    /// This listener's metric handles, resolved once.
    pub metrics: ListenerMetrics,
    /// Open connections; `max_connections` permits.
    pub slots: Arc<Semaphore>,
    /// Resolves allowed names (one cache shared by all listeners).
    pub resolver: Arc<Resolver>,
    /// Where connections may go (shared by all listeners).
    pub guard: Arc<DestinationGuard>,
    /// Every source's connections (shared by all listeners).
    pub sources: Arc<Sources>,
    /// This listener's connections waiting for their hello, oldest first.
    pub waiting: Waiting,
    /// `connect` mode: the accepted credentials, swapped whole when the file is reloaded.
    pub credentials: Option<SharedCredentials>,
    /// `connect` and `http` modes: the ports a request may name.
    pub ports: Vec<u16>,
    /// When open connections are cut (shared by all listeners).
    pub drain: Arc<DrainDeadline>,
}

impl Listener {
    /// Records what the rules decided for a connection or flow: the verdict, the reason and
    /// the deciding rule (its text only when it is logged).
    pub fn decided(&self, record: &mut Outcome, decision: &Decision<'_>) {
        record.verdict = decision.verdict;
        record.reason = decision.reason;
        record.ruleset = decision.rule.map(|r| r.ruleset_label());
        if self.access_log.is_on() {
            record.rule = decision.rule.map(|r| r.to_string());
        }
    }

    /// A connection or flow has ended: it is counted, then logged (never blocking).
    pub fn finished(&self, record: Outcome) {
        self.metrics.finished(&record);
        if let Err(cause) = self.access_log.write(record) {
            self.metrics.log_suppressed(cause);
        }
    }

    /// The hello parser's limits now.
    pub fn hello_limits(&self) -> HelloLimits {
        HelloLimits { max_hello_bytes: self.limits.load().max_hello_bytes, allow_underscore: self.allow_underscore }
    }
}

/// The moment a draining server stops waiting for open connections: every connection still
/// open is then cut, and still writes its log line and counts in the metrics.
#[derive(Debug, Default)]
pub struct DrainDeadline {
    /// Set once the deadline has passed.
    passed: AtomicBool,
    /// Wakes the connections waiting in [`passed`](Self::passed).
    notify: Notify,
}

impl DrainDeadline {
    /// Cuts every open connection.
    pub fn pass(&self) {
        self.passed.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
    }

    /// Resolves once the deadline has passed.
    ///
    /// Every connection polls this on every wake-up, so only its first poll touches the shared
    /// `Notify` (whose waiter list is behind a lock): that registers the task's waker, which
    /// `pass` wakes; later polls read the flag only.
    pub async fn passed(&self) {
        let mut notified = pin!(self.notify.notified());
        // Registered before the flag is read, so that a `pass` in between is not missed.
        notified.as_mut().enable();
        let mut registered = false;
        poll_fn(|cx| {
            if self.passed.load(Ordering::SeqCst) {
                return Poll::Ready(());
            }
            if !registered {
                registered = true;
                if notified.as_mut().poll(cx).is_ready() {
                    return Poll::Ready(());
                }
            }
            Poll::Pending
        })
        .await
    }
}
