//! One listener's settings, shared by its connections; its connection slots; the server's
//! drain deadline.

use std::future::{Future, poll_fn};
use std::net::SocketAddr;
use std::pin::pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::task::Poll;

use tokio::sync::Notify;

use ipnet::IpNet;

use super::live::SharedLive;
use super::resolver::Resolver;
use super::sources::{Sources, Waiting};
use crate::access_log::ListenerLog;
use crate::config::{ProxyVersion, RejectStyle, SpliceMode};
use crate::metrics::decisions::Decisions;
use crate::metrics::registry::ListenerMetrics;
use crate::outcome::Outcome;
use crate::policy::destination::DestinationGuard;

/// One listener's settings, resolved once when it is bound, and what its connections share.
pub struct Listener {
    /// The `listener` label.
    pub name: Arc<str>,
    /// Its place among the configuration's listeners: where its credentials are in [`Live`](super::live::Live).
    pub index: usize,
    /// The address it accepts on, as configured.
    pub listen: SocketAddr,
    /// Where its connections go, and the settings of that mode alone.
    pub mode: ListenerMode,
    /// How denied connections end.
    pub reject: RejectStyle,
    /// SO_MARK for its upstream sockets.
    pub mark: Option<u32>,
    /// The load balancers whose PROXY header is read first; empty: none is.
    pub proxy_in: Vec<IpNet>,
    /// The PROXY header sent upstream, if any.
    pub proxy_out: Option<ProxyVersion>,
    /// How allowed connections move bytes.
    pub splice: SpliceMode,
    /// The live settings: rules, limits, credentials, name and ECH policies (a reload swaps
    /// them whole).
    pub live: SharedLive,
    /// Where finished connections are logged (rate-limited for denials, never blocking).
    pub access_log: ListenerLog,
    /// This listener's metric handles, resolved once.
    pub metrics: ListenerMetrics,
    /// Where its decisions are counted for `/decisions` (shared by all listeners).
    pub decisions: Arc<Decisions>,
    /// Open connections, at most `max_connections`.
    pub slots: Arc<Slots>,
    /// Resolves allowed names (one cache shared by all listeners).
    pub resolver: Arc<Resolver>,
    /// Where connections may go (shared by all listeners).
    pub guard: Arc<DestinationGuard>,
    /// Every source's connections (shared by all listeners).
    pub sources: Arc<Sources>,
    /// This listener's connections waiting for their hello, oldest first.
    pub waiting: Waiting,
    /// When open connections are cut (shared by all listeners).
    pub drain: Arc<DrainDeadline>,
}

/// A listener's mode, resolved: where an allowed connection goes, and what only that mode has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenerMode {
    /// The SNI, resolved, on `port`.
    Sni {
        /// The port allowed names are reached on.
        port: u16,
    },
    /// One fixed upstream.
    Upstream {
        /// Its address, resolved when the listener was bound.
        addr: SocketAddr,
    },
    /// The original destination.
    Transparent {
        /// TPROXY: the original destination is the accepted socket's own address.
        tproxy: bool,
        /// The destination must be among the SNI's DNS answers.
        verify: bool,
    },
    /// An HTTP CONNECT proxy; its credentials are live.
    Connect {
        /// The ports a CONNECT may name.
        ports: Vec<u16>,
    },
    /// Plain HTTP.
    Http {
        /// The ports a request may name.
        ports: Vec<u16>,
    },
}

impl ListenerMode {
    /// The ports an explicit request may name; none in the other modes.
    pub fn ports(&self) -> &[u16] {
        match self {
            ListenerMode::Connect { ports } | ListenerMode::Http { ports } => ports,
            _ => &[],
        }
    }
}

impl Listener {
    /// A connection or flow has ended: it is counted, then logged (never blocking).
    pub fn finished(&self, record: Outcome) {
        self.metrics.finished(&record);
        if let Err(cause) = self.access_log.write(record) {
            self.metrics.log_suppressed(cause);
        }
    }

    /// The original destination, as TPROXY gives it (the accepted socket's own address).
    pub fn tproxy(&self) -> bool {
        matches!(self.mode, ListenerMode::Transparent { tproxy: true, .. })
    }
}

/// A listener's open connections, at most `max`: a connection takes a slot and gives it back
/// when it ends. Taking and giving back are one atomic operation on the count, shared by every
/// worker; only a caller that waits (for a slot, or at the drain for every slot back) takes the
/// lock of the `Notify`, and a slot given back wakes waiters only when there are some.
#[derive(Debug)]
pub struct Slots {
    /// Slots taken.
    open: AtomicUsize,
    /// The most that may be taken (`max_connections`, live).
    max: AtomicUsize,
    /// Callers waiting in [`take`](Self::take) or [`all_free`](Self::all_free).
    waiting: AtomicUsize,
    /// Woken when a slot is given back while someone waits.
    freed: Notify,
}

/// One taken slot, given back when dropped.
#[derive(Debug)]
pub struct Slot(Arc<Slots>);

impl Slots {
    /// `max` free slots.
    pub fn new(max: usize) -> Arc<Slots> {
        Arc::new(Slots {
            open: AtomicUsize::new(0),
            max: AtomicUsize::new(max),
            waiting: AtomicUsize::new(0),
            freed: Notify::new(),
        })
    }

    /// A slot, if one is free now.
    pub fn try_take(self: &Arc<Self>) -> Option<Slot> {
        let mut open = self.open.load(Ordering::SeqCst);
        loop {
            if open >= self.max.load(Ordering::Relaxed) {
                return None;
            }
            match self.open.compare_exchange_weak(open, open + 1, Ordering::SeqCst, Ordering::SeqCst) {
                Ok(_) => return Some(Slot(self.clone())),
                Err(now) => open = now,
            }
        }
    }

    /// A new most: slots taken beyond it stay until given back; none is taken until below it.
    pub fn set_max(&self, max: usize) {
        self.max.store(max, Ordering::Relaxed);
        if self.waiting.load(Ordering::SeqCst) > 0 {
            self.freed.notify_waiters();
        }
    }

    /// A slot, once one is free.
    pub async fn take(self: &Arc<Self>) -> Slot {
        self.wait_until(|| self.try_take()).await
    }

    /// Resolves once every slot has been given back.
    pub async fn all_free(&self) {
        self.wait_until(|| (self.open.load(Ordering::SeqCst) == 0).then_some(())).await
    }

    /// Waits until `ready` answers. The waiter is counted, then registered with the `Notify`,
    /// then `ready` is asked again: a slot given back after that wakes it, and one given back
    /// before it is seen by `ready` (every step is sequentially consistent).
    async fn wait_until<T>(&self, mut ready: impl FnMut() -> Option<T>) -> T {
        if let Some(v) = ready() {
            return v;
        }
        /// Uncounts the waiter however the wait ends (done, or dropped).
        struct Counted<'a>(&'a AtomicUsize);
        impl Drop for Counted<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::SeqCst);
            }
        }
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let _counted = Counted(&self.waiting);
        loop {
            let mut freed = pin!(self.freed.notified());
            freed.as_mut().enable();
            if let Some(v) = ready() {
                return v;
            }
            freed.await;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::SeqCst);
        if self.0.waiting.load(Ordering::SeqCst) > 0 {
            self.0.freed.notify_waiters();
        }
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn a_slot_given_back_goes_to_a_waiter_and_the_drain_waits_for_all() {
        let slots = Slots::new(2);
        let (a, b) = (slots.try_take().unwrap(), slots.try_take().unwrap());
        assert!(slots.try_take().is_none(), "two at most");
        let waiter = tokio::spawn({
            let slots = slots.clone();
            async move { slots.take().await }
        });
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiter.is_finished(), "waits while both are taken");
        drop(a);
        let c = tokio::time::timeout(Duration::from_secs(1), waiter).await.expect("woken").unwrap();
        let drained = tokio::spawn({
            let slots = slots.clone();
            async move { slots.all_free().await }
        });
        drop(b);
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!drained.is_finished(), "one is still taken");
        drop(c);
        tokio::time::timeout(Duration::from_secs(1), drained).await.expect("all free").unwrap();
        assert_eq!(slots.waiting.load(Ordering::SeqCst), 0, "no waiter left counted");
    }

    /// Threads taking and giving back slots, and waiting for them, never hold more than `max`
    /// and never miss a slot given back.
    #[test]
    fn slots_hold_under_contention() {
        let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(4).enable_all().build().unwrap();
        let slots = Slots::new(3);
        let peak = Arc::new(AtomicUsize::new(0));
        rt.block_on(async {
            let tasks: Vec<_> = (0..16)
                .map(|_| {
                    let (slots, peak) = (slots.clone(), peak.clone());
                    tokio::spawn(async move {
                        for _ in 0..500 {
                            let slot = slots.take().await;
                            peak.fetch_max(slots.open.load(Ordering::SeqCst), Ordering::SeqCst);
                            tokio::task::yield_now().await;
                            drop(slot);
                        }
                    })
                })
                .collect();
            for t in tasks {
                tokio::time::timeout(Duration::from_secs(20), t).await.expect("no waiter stranded").unwrap();
            }
        });
        assert!(peak.load(Ordering::SeqCst) <= 3);
        assert_eq!(slots.open.load(Ordering::SeqCst), 0);
    }
}
