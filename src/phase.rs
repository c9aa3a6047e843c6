//! The process's phases, from start to exit, and the channel that carries them: the lifecycle
//! sets them, the server reports when it accepts and when it drains, and what depends on them
//! (readiness, notifications to a service manager) follows.

use tokio::sync::watch;

/// Where the process is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Binding its sockets; not accepting yet.
    Starting,
    /// Every listener accepts.
    Ready,
    /// Accepting, while the live settings are read again.
    Reloading,
    /// Accepting, while a new process takes the listening sockets over.
    HandingOver,
    /// Told to stop: not ready any more (load balancers take it out), still accepting for
    /// `[runtime] shutdown_delay`, so that clients routed here meanwhile are served.
    Stopping,
    /// No longer accepting; open connections finish until the drain deadline.
    Draining,
    /// Drained: the process exits.
    Done,
}

impl Phase {
    /// Whether new connections are accepted: what `/readyz` answers.
    pub const fn serving(self) -> bool {
        matches!(self, Phase::Ready | Phase::Reloading | Phase::HandingOver)
    }
}

/// The current phase, shared: set by the lifecycle and the server, followed by the rest.
#[derive(Debug, Clone)]
pub struct Phases(watch::Sender<Phase>);

impl Default for Phases {
    fn default() -> Self {
        Phases(watch::Sender::new(Phase::Starting))
    }
}

impl Phases {
    /// Moves to `phase`. Once stopping, the process only goes on to draining and done.
    pub fn set(&self, phase: Phase) {
        self.0.send_if_modified(|now| {
            let allowed = match *now {
                Phase::Stopping => matches!(phase, Phase::Draining | Phase::Done),
                Phase::Draining => phase == Phase::Done,
                Phase::Done => false,
                _ => true,
            };
            let changed = allowed && *now != phase;
            if changed {
                *now = phase;
            }
            changed
        });
    }

    /// The phase now.
    pub fn current(&self) -> Phase {
        *self.0.borrow()
    }

    /// A receiver that sees every change from now on.
    pub fn subscribe(&self) -> watch::Receiver<Phase> {
        self.0.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A draining process only finishes: a reload or a failed handover that ends meanwhile
    /// cannot make it ready again.
    #[test]
    fn draining_goes_only_to_done() {
        let phases = Phases::default();
        assert!(!phases.current().serving());
        phases.set(Phase::Ready);
        phases.set(Phase::Reloading);
        assert!(phases.current().serving());
        phases.set(Phase::Stopping);
        phases.set(Phase::Ready);
        assert!(!phases.current().serving(), "stopping is not ready");
        phases.set(Phase::Draining);
        phases.set(Phase::Ready);
        assert_eq!(phases.current(), Phase::Draining);
        phases.set(Phase::Done);
        phases.set(Phase::Starting);
        assert_eq!(phases.current(), Phase::Done);
    }
}
