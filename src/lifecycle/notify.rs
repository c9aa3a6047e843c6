//! The service manager's notification protocol (`sd_notify`): under systemd with `Type=notify`,
//! the phases are told on `$NOTIFY_SOCKET`: `READY=1` once every listener accepts,
//! `RELOADING=1` while a reload runs, `STOPPING=1` from a stop, and `MAINPID=` from a process
//! that took over from another, so that the manager follows the new process.

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};

use tokio::sync::watch;

use crate::phase::Phase;

/// Where notifications go: the service manager's datagram socket.
pub(super) struct Notifier {
    socket: UnixDatagram,
    to: SocketAddr,
}

impl Notifier {
    /// The manager's socket from `$NOTIFY_SOCKET` (a path, or `@name` in the abstract
    /// namespace); `None` when not run by a manager that listens.
    pub fn from_env() -> Option<Notifier> {
        let name = std::env::var_os("NOTIFY_SOCKET")?;
        let bytes = name.as_encoded_bytes();
        let to = match bytes.strip_prefix(b"@") {
            Some(abstract_name) => SocketAddr::from_abstract_name(abstract_name),
            None => SocketAddr::from_pathname(&name),
        };
        let sent = to.and_then(|to| Ok(Notifier { socket: UnixDatagram::unbound()?, to }));
        sent.map_err(|e| tracing::warn!(error = %e, "cannot use NOTIFY_SOCKET")).ok()
    }

    /// Sends one notification (`KEY=VALUE` lines).
    pub fn send(&self, state: &str) -> io::Result<()> {
        self.socket.send_to_addr(state.as_bytes(), &self.to).map(drop)
    }
}

/// What the manager is told when the process enters `phase`; `main` is set on the first
/// `READY=1` of a process that took over (the manager's main process is this one from then on).
pub(super) fn message(phase: Phase, main: Option<u32>) -> Option<String> {
    match phase {
        Phase::Ready => Some(match main {
            Some(pid) => format!("MAINPID={pid}\nREADY=1\nSTATUS=serving"),
            None => "READY=1\nSTATUS=serving".into(),
        }),
        Phase::Reloading => {
            Some(format!("RELOADING=1\nMONOTONIC_USEC={}\nSTATUS=reloading", crate::sys::monotonic_usec()))
        }
        Phase::Stopping | Phase::Draining => Some("STOPPING=1\nSTATUS=draining".into()),
        Phase::Starting | Phase::HandingOver | Phase::Done => None,
    }
}

/// Tells the manager every phase change until the phases end. `took_over`: this process took
/// the sockets over from another, and becomes the manager's main process when ready.
pub(super) async fn follow(notifier: Notifier, mut phase: watch::Receiver<Phase>, took_over: bool) {
    let mut main = took_over.then(std::process::id);
    let mut last = None;
    loop {
        let now = *phase.borrow_and_update();
        if last != Some(now)
            && let Some(state) = message(now, main)
        {
            if let Err(e) = notifier.send(&state) {
                tracing::warn!(error = %e, "cannot notify the service manager");
            }
            if now == Phase::Ready {
                main = None;
            }
        }
        last = Some(now);
        if phase.changed().await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_follow_the_protocol() {
        assert_eq!(message(Phase::Ready, None).unwrap(), "READY=1\nSTATUS=serving");
        assert_eq!(message(Phase::Ready, Some(42)).unwrap(), "MAINPID=42\nREADY=1\nSTATUS=serving");
        let reloading = message(Phase::Reloading, None).unwrap();
        assert!(reloading.starts_with("RELOADING=1\nMONOTONIC_USEC="), "{reloading}");
        assert!(message(Phase::Stopping, None).unwrap().starts_with("STOPPING=1"));
        assert!(message(Phase::HandingOver, None).is_none());
    }
}
