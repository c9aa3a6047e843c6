//! Signals become events here and nowhere else: SIGHUP reloads, SIGUSR1 reopens the access log,
//! SIGUSR2 upgrades, SIGTERM and SIGINT stop, and (for the master process) SIGCHLD says a worker
//! ended.

use tokio::signal::unix::{SignalKind, signal};
use tokio::sync::mpsc;

/// What a signal asks of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// SIGHUP: read the configuration, the rules and the credentials again.
    Reload,
    /// SIGUSR1: reopen the access log file (logrotate has moved it).
    Reopen,
    /// SIGUSR2: hand the listening sockets to a new process (this binary, re-executed).
    Upgrade,
    /// SIGTERM or SIGINT: stop accepting and drain.
    Stop,
    /// SIGCHLD: a child process ended (the master's workers, and as PID 1 any orphan).
    Child,
}

/// Turns the process's signals into events: the only place signals are handled. `children`:
/// SIGCHLD too (a process that reaps its children itself).
pub(super) fn spawn_signals(events: mpsc::Sender<Event>, children: bool) -> Result<(), String> {
    let kinds = [
        (SignalKind::hangup(), Event::Reload),
        (SignalKind::user_defined1(), Event::Reopen),
        (SignalKind::user_defined2(), Event::Upgrade),
        (SignalKind::terminate(), Event::Stop),
        (SignalKind::interrupt(), Event::Stop),
        (SignalKind::child(), Event::Child),
    ];
    for (kind, event) in kinds.into_iter().filter(|&(_, e)| children || e != Event::Child) {
        let mut stream = signal(kind).map_err(|e| format!("cannot handle signal {}: {e}", kind.as_raw_value()))?;
        let events = events.clone();
        tokio::spawn(async move {
            while stream.recv().await.is_some() {
                if events.send(event).await.is_err() {
                    return;
                }
            }
        });
    }
    Ok(())
}
