//! One snigate owns an address. SO_REUSEPORT lets a second process bind an address a running
//! one serves, and the kernel would then give it half the traffic under its own policy; so each
//! listener's address is claimed with a lock file (`flock`) in a runtime directory, and a
//! second snigate on it is refused, naming the address and the owner. A new process that takes
//! the sockets over takes the locks with them (the handover passes their descriptors: the lock
//! belongs to the open file, which both then hold).

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::path::PathBuf;

use crate::config::{Config, Protocol};
use crate::sys::{effective_uid, try_lock};

/// The locks this process holds, each with its name: what a handover passes on.
pub(super) struct Claims(pub Vec<(String, File)>);

/// Where the locks are: the service manager's runtime directory, `/run/snigate` for root,
/// else a directory of this user's in the runtime or temporary directory. The same place for
/// every snigate of a user, so that they see each other's locks (processes of different users
/// cannot share an address anyway: the kernel refuses SO_REUSEPORT across users).
fn lock_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("RUNTIME_DIRECTORY") {
        let first = dir.to_string_lossy().split(':').next().unwrap_or_default().to_string();
        if !first.is_empty() {
            return PathBuf::from(first);
        }
    }
    let uid = effective_uid();
    if uid == 0 {
        return PathBuf::from("/run/snigate");
    }
    match std::env::var_os("XDG_RUNTIME_DIR") {
        Some(dir) => PathBuf::from(dir).join("snigate"),
        None => std::env::temp_dir().join(format!("snigate-{uid}")),
    }
}

/// The lock's name for a listener: its protocol and address, in a file name.
fn lock_name(protocol: Protocol, addr: std::net::SocketAddr) -> String {
    let addr: String =
        addr.to_string().chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '_' }).collect();
    let protocol = match protocol {
        Protocol::Tcp => "tcp",
        Protocol::Quic => "udp",
    };
    format!("{protocol}-{addr}.lock")
}

/// Claims every address of `config` with a fixed port (port 0 is a fresh port each time),
/// keeping the locks `inherited` from a process this one takes over from. `Err` names the first
/// address another snigate owns. A lock that cannot be taken for want of a writable directory
/// is said in the log, and does not stop the start.
pub(super) fn claim(config: &Config, inherited: Vec<(String, File)>) -> Result<Claims, String> {
    let dir = lock_dir();
    let mut inherited = inherited;
    let mut held = Vec::new();
    if let Err(e) = prepare(&dir) {
        tracing::warn!(dir = %dir.display(), error = %e, "cannot claim the listen addresses: a second snigate on them would not be refused");
        return Ok(Claims(inherited));
    }
    for l in &config.listeners {
        let l = l.get_ref();
        if l.listen.port() == 0 {
            continue;
        }
        let name = lock_name(l.protocol, l.listen);
        if let Some(at) = inherited.iter().position(|(n, _)| *n == name) {
            held.push(inherited.swap_remove(at));
            continue;
        }
        let path = dir.join(&name);
        let mut file = match std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path)
        {
            Ok(file) => file,
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot claim a listen address");
                continue;
            }
        };
        match try_lock(&file) {
            Ok(true) => {
                let _ = file.set_len(0);
                let _ = file.rewind().and_then(|()| writeln!(file, "{}", std::process::id()));
                held.push((name, file));
            }
            Ok(false) => {
                let mut owner = String::new();
                let _ = file.read_to_string(&mut owner);
                let owner = owner.trim();
                return Err(format!(
                    "{} is already served by another snigate (pid {}; lock {}): stop it, or take over from it \
                     with --takeover",
                    l.listen,
                    if owner.is_empty() { "unknown" } else { owner },
                    path.display()
                ));
            }
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "cannot claim a listen address"),
        }
    }
    // Locks of listeners this configuration no longer has go with the previous process.
    Ok(Claims(held))
}

/// The lock directory, made if missing: only this user may write in it.
fn prepare(dir: &std::path::Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let meta = std::fs::metadata(dir)?;
            let owner = meta.uid();
            if owner != effective_uid() && owner != 0 {
                let why = format!("{} belongs to uid {owner}", dir.display());
                return Err(std::io::Error::new(std::io::ErrorKind::PermissionDenied, why));
            }
            Ok(())
        }
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_names_are_file_names() {
        assert_eq!(lock_name(Protocol::Tcp, "127.0.0.1:8443".parse().unwrap()), "tcp-127.0.0.1_8443.lock");
        assert_eq!(lock_name(Protocol::Quic, "[::1]:443".parse().unwrap()), "udp-___1__443.lock");
    }
}
