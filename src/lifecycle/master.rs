//! The master process: the process a supervisor watches (systemd's main process, a container's
//! PID 1) never exits during an upgrade. It binds nothing itself; it starts a worker (this
//! binary with `--worker PATH`) that serves and serves its handovers at PATH, a socket in a
//! private directory. On SIGUSR2 it re-executes itself in place (same PID, the binary on disk,
//! its worker still its child) and starts a new worker that takes the sockets over from the old
//! one, which then drains and exits. SIGHUP goes to the worker; SIGTERM and SIGINT go to every
//! worker, and the master exits once they have, with the serving worker's exit code. As PID 1
//! it also reaps the orphans the kernel hands it.

use std::ffi::OsString;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use tokio::sync::mpsc;

use super::signals::{Event, spawn_signals};
use crate::handover;
use crate::sys::{reap_any, send_signal};

/// Carries the serving worker across the master's re-execution: `PID PATH`.
const STATE: &str = "SNIGATE_MASTER_WORKER";
/// Set on the re-executed master: start a new worker that takes over from the one in [`STATE`].
const UPGRADING: &str = "SNIGATE_MASTER_UPGRADE";

/// A worker process.
#[derive(Debug, Clone)]
struct Worker {
    /// Its process id (a child of the master).
    pid: u32,
    /// Where it serves handovers.
    socket: PathBuf,
}

/// Runs the master until its workers have stopped; its exit code is the serving worker's.
/// `program` and `args` start a worker (this binary and its command line, without `--worker`
/// and `--takeover`); `takeover`, the first worker takes over from there.
pub fn run(program: OsString, args: Vec<OsString>, takeover: Option<PathBuf>) -> Result<i32, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(Master { program, args, current: None, next: None, stopping: false }.serve(takeover))
}

/// The master's state.
struct Master {
    program: OsString,
    args: Vec<OsString>,
    /// The worker that serves.
    current: Option<Worker>,
    /// A new worker taking over from `current` (an upgrade in progress).
    next: Option<Worker>,
    /// Told to stop: no new worker is started, and the master exits with the last.
    stopping: bool,
}

impl Master {
    async fn serve(mut self, takeover: Option<PathBuf>) -> Result<i32, String> {
        let (events, mut event) = mpsc::channel(16);
        spawn_signals(events, true)?;
        match adopted() {
            Some(worker) => {
                tracing::info!(pid = worker.pid, "master re-executed; its worker serves on");
                self.current = Some(worker.clone());
                if std::env::var_os(UPGRADING).is_some() {
                    self.next = self.start(Some(&worker.socket));
                }
            }
            None => {
                self.current = self.start(takeover.as_deref());
                if self.current.is_none() {
                    return Err("cannot start a worker".into());
                }
            }
        }
        while let Some(event) = event.recv().await {
            match event {
                Event::Stop => {
                    self.stopping = true;
                    for w in self.current.iter().chain(&self.next) {
                        let _ = send_signal(w.pid, libc::SIGTERM);
                    }
                }
                Event::Reload => {
                    if let Some(w) = &self.current {
                        let _ = send_signal(w.pid, libc::SIGHUP);
                    }
                }
                // Both workers during an upgrade: each holds the file open.
                Event::Reopen => {
                    for w in self.current.iter().chain(&self.next) {
                        let _ = send_signal(w.pid, libc::SIGUSR1);
                    }
                }
                Event::Upgrade if self.next.is_some() || self.stopping => {
                    tracing::warn!("SIGUSR2: an upgrade or a stop is in progress; ignored");
                }
                Event::Upgrade => self.upgrade(),
                Event::Child => {
                    if let Some(code) = self.reap() {
                        return Ok(code);
                    }
                }
            }
        }
        Ok(0)
    }

    /// Starts a worker serving handovers in a private directory, taking over from `from`.
    fn start(&self, from: Option<&Path>) -> Option<Worker> {
        let socket = match handover::upgrade_socket() {
            Ok(socket) => socket,
            Err(e) => {
                tracing::error!(error = %e, "cannot make the worker's handover socket");
                return None;
            }
        };
        let mut command = Command::new(&self.program);
        command.args(&self.args).arg("--worker").arg(&socket).env_remove(STATE).env_remove(UPGRADING);
        if let Some(from) = from {
            command.arg("--takeover").arg(from);
        }
        match command.spawn() {
            Ok(child) => {
                tracing::info!(pid = child.id(), "started a worker");
                Some(Worker { pid: child.id(), socket })
            }
            Err(e) => {
                tracing::error!(error = %e, "cannot start a worker");
                None
            }
        }
    }

    /// SIGUSR2: the master re-executes itself in place (the binary on disk, the same PID), and
    /// the new image starts the new worker. When it cannot, this image starts it.
    fn upgrade(&mut self) {
        let Some(current) = &self.current else { return };
        tracing::info!("SIGUSR2: re-executing the master in place, then a new worker takes over");
        let state = format!("{} {}", current.pid, current.socket.display());
        let e = Command::new(&self.program).args(&self.args).env(STATE, state).env(UPGRADING, "1").exec();
        tracing::error!(error = %e, "cannot re-execute the master; starting the new worker from this one");
        let from = current.socket.clone();
        self.next = self.start(Some(&from));
    }

    /// Reaps every child that ended; `Some(code)` when the master is done.
    fn reap(&mut self) -> Option<i32> {
        while let Some((pid, code)) = reap_any() {
            let is = |w: &Option<Worker>| w.as_ref().is_some_and(|w| w.pid == pid);
            if is(&self.current) {
                remove_socket(self.current.take().map(|w| w.socket));
                match self.next.take() {
                    Some(next) => {
                        tracing::info!(
                            old = pid,
                            new = next.pid,
                            "the previous worker has drained; the new one serves"
                        );
                        self.current = Some(next);
                    }
                    None if self.stopping => return Some(code),
                    None => {
                        tracing::error!(pid, code, "the worker exited unexpectedly; the master exits too");
                        return Some(if code == 0 { 1 } else { code });
                    }
                }
            } else if is(&self.next) {
                remove_socket(self.next.take().map(|w| w.socket));
                tracing::error!(pid, code, "the new worker exited before taking over; the previous one serves on");
                if self.stopping && self.current.is_none() {
                    return Some(code);
                }
            }
            // Anything else is an orphan handed to PID 1: reaped, nothing more.
        }
        None
    }
}

/// The worker a re-executed master inherits, from [`STATE`].
fn adopted() -> Option<Worker> {
    let state = std::env::var(STATE).ok()?;
    let (pid, socket) = state.split_once(' ')?;
    Some(Worker { pid: pid.parse().ok()?, socket: PathBuf::from(socket) })
}

/// Removes a worker's handover socket and the private directory made for it.
fn remove_socket(socket: Option<PathBuf>) {
    let Some(socket) = socket else { return };
    let _ = std::fs::remove_file(&socket);
    if std::env::var_os("RUNTIME_DIRECTORY").is_none()
        && let Some(dir) = socket.parent()
    {
        let _ = std::fs::remove_dir(dir);
    }
}
