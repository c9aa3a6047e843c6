//! Handing this process's sockets to a new one: served on the configured handover socket, or on
//! an upgrade (SIGUSR2) to this binary re-executed with `--takeover`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::os::fd::OwnedFd;
use tokio::sync::{Notify, mpsc};

use crate::handover::{self, Role};
use crate::phase::{Phase, Phases};

/// The sockets a new process takes over, and where it connects to take them.
pub(super) struct Handovers {
    /// `[runtime] handover_socket`: served for `snigate run --takeover PATH`.
    pub configured: Option<PathBuf>,
    /// Every listening socket and the metrics endpoint's, with their roles.
    pub sockets: Vec<(Role, OwnedFd)>,
    /// `HandingOver` while a new process takes over.
    pub phases: Phases,
}

impl Handovers {
    /// Hands the sockets to a new snigate: one that connects to the configured handover socket,
    /// or, on an upgrade, this binary re-executed with the same arguments and `--takeover`.
    /// Notifies `done` once the new process accepts; until then, and whenever a new process
    /// fails, this one keeps serving.
    pub async fn serve(self, mut upgrade: mpsc::Receiver<()>, done: Arc<Notify>) {
        let Handovers { configured, sockets, phases } = self;
        let sockets = Arc::new(sockets);
        let listener = configured.as_deref().and_then(|path| match handover_listener(path) {
            Ok(l) => Some(l),
            Err(e) => {
                tracing::error!(path = %path.display(), error = %e, "cannot serve the handover socket; --takeover cannot reach this process");
                None
            }
        });
        loop {
            let connected = tokio::select! {
                accepted = async { listener.as_ref()?.accept().await.ok() }, if listener.is_some() => accepted.map(|(s, _)| s),
                asked = upgrade.recv() => match asked {
                    Some(()) => re_exec(configured.as_deref(), listener.as_ref()).await,
                    None => return,
                },
            };
            let Some(stream) = connected else { continue };
            let before = phases.current();
            phases.set(Phase::HandingOver);
            let sockets = sockets.clone();
            let handed = tokio::task::spawn_blocking(move || {
                let stream = stream.into_std()?;
                stream.set_nonblocking(false)?;
                let fds: Vec<(Role, std::os::fd::BorrowedFd<'_>)> =
                    sockets.iter().map(|(role, s)| (role.clone(), std::os::fd::AsFd::as_fd(s))).collect();
                handover::hand_over(stream, &fds)
            })
            .await;
            match handed {
                Ok(Ok(())) => {
                    done.notify_one();
                    return;
                }
                Ok(Err(e)) => tracing::error!(error = %e, "handover failed; still serving"),
                Err(e) => tracing::error!(error = %e, "handover failed; still serving"),
            }
            phases.set(before);
        }
    }
}

/// A private Unix socket at `path` for new processes to take over from ([`handover::listen`]).
fn handover_listener(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    let listener = handover::listen(path)?;
    listener.set_nonblocking(true)?;
    tokio::net::UnixListener::from_std(listener)
}

/// An upgrade: starts this binary again with the same arguments and `--takeover`, and returns
/// its connection once it takes over; `None` when it fails first (its configuration is invalid).
async fn re_exec(
    configured: Option<&Path>,
    listener: Option<&tokio::net::UnixListener>,
) -> Option<tokio::net::UnixStream> {
    let own;
    let mut temporary = None;
    let (path, listener) = match (configured, listener) {
        (Some(path), Some(listener)) => (path.to_path_buf(), listener),
        _ => {
            let made = handover::upgrade_socket().and_then(|path| Ok((handover_listener(&path)?, path)));
            let (made, path) = match made {
                Ok(made) => made,
                Err(e) => {
                    tracing::error!(error = %e, "cannot create the handover socket for the upgrade; still serving");
                    return None;
                }
            };
            own = made;
            temporary = Some(path.clone());
            (path, &own)
        }
    };
    let (program, rest) = own_command(std::env::args_os())?;
    tracing::info!(?program, "SIGUSR2: starting a new process to hand the listening sockets to");
    let mut child = match tokio::process::Command::new(&program).args(&rest).arg("--takeover").arg(&path).spawn() {
        Ok(child) => child,
        Err(e) => {
            tracing::error!(error = %e, "cannot start the new process; still serving");
            return None;
        }
    };
    let connected = tokio::select! {
        accepted = tokio::time::timeout(handover::HANDOVER_TIMEOUT, listener.accept()) => accepted.ok().and_then(Result::ok).map(|(s, _)| s),
        status = child.wait() => {
            tracing::error!(?status, "the new process exited before taking over; still serving");
            None
        }
    };
    if let Some(path) = &temporary {
        let _ = std::fs::remove_file(path);
        // The private directory made for it, if this process made one.
        if std::env::var_os("RUNTIME_DIRECTORY").is_none()
            && let Some(dir) = path.parent()
        {
            let _ = std::fs::remove_dir(dir);
        }
    }
    if connected.is_some() {
        tracing::info!(pid = child.id(), "the new process is taking over");
        // It runs on; reaping it is its new parent's business once this process exits.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
    }
    connected
}

/// The program and arguments of `args` (this process's), without the flags that say where
/// this one process takes over from or serves handovers (`--takeover PATH`, `--worker PATH`,
/// either also as `--flag=PATH`): a process started from them decides those afresh.
pub fn own_command(
    mut args: impl Iterator<Item = std::ffi::OsString>,
) -> Option<(std::ffi::OsString, Vec<std::ffi::OsString>)> {
    const OWN: [&str; 2] = ["--takeover", "--worker"];
    let program = args.next()?;
    let mut rest = Vec::new();
    while let Some(arg) = args.next() {
        let bytes = arg.as_encoded_bytes();
        if OWN.iter().any(|flag| bytes == flag.as_bytes()) {
            args.next();
        } else if !OWN.iter().any(|flag| bytes.starts_with(flag.as_bytes()) && bytes.get(flag.len()) == Some(&b'=')) {
            rest.push(arg);
        }
    }
    Some((program, rest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn takeover_and_worker_flags_are_not_passed_on_in_either_form() {
        let args =
            ["snigate", "run", "--takeover", "/a.sock", "--config", "c.toml", "--takeover=/b.sock", "--log", "off"];
        let (program, rest) = own_command(args.iter().map(Into::into)).unwrap();
        assert_eq!(program, "snigate");
        assert_eq!(rest, ["run", "--config", "c.toml", "--log", "off"]);
    }
}
