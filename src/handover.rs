//! Handing the listening sockets from a running snigate to a new one, so that a binary upgrade
//! or a configuration change that needs new sockets refuses no connection.
//!
//! The running process serves a Unix socket (`[runtime] handover_socket`, or a temporary one
//! for SIGUSR2). A new process started with `--takeover PATH` validates its own configuration
//! first, connects, and receives every listening socket with its listener name (SCM_RIGHTS, in
//! messages of up to 64 sockets, each with their names; a listener has one socket per worker).
//! It adopts those its listeners name or listen on, binds the others, and once it accepts it
//! writes `accepting`. Only then does the old process stop accepting and drain; until then
//! both hold the sockets, so connections queue in the kernel and none is refused. A new
//! process that fails (a bad configuration, a crash) never confirms, and the old one keeps
//! serving.
//!
//! Whoever takes the sockets over owns the egress, so the channel is private: its socket is
//! created mode 0600 whatever the umask, in a directory only this user can write (a service
//! manager's runtime directory, or one this process creates mode 0700 with a name nobody can
//! take first), and both ends check the other's credentials (SO_PEERCRED): the same user, or
//! root.

use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::sys::{MAX_PASSED_FDS, effective_uid, peer_uid, recv_fds, send_fds};

/// What the new process writes once it accepts.
const ACCEPTING: &str = "accepting";

/// The first line of the first message: this, a space and how many sockets follow in all. A
/// process of an earlier version sends its names alone, in one message.
const HEADER: &str = "#snigate-handover";

/// What a handed-over socket is for, named beside it on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// A listening socket of the listener of this name.
    Listener(String),
    /// The metrics endpoint's socket.
    Metrics,
    /// The lock file by which this process owns a listen address (the lock goes with it).
    Lock(String),
}

/// How the metrics endpoint's socket is named on the wire.
const METRICS: &str = "metrics-endpoint";
/// What an earlier version named it.
const METRICS_EARLIER: &str = "(metrics)";
/// What precedes a listener's name on the wire (an earlier version sent the name alone).
const LISTENER: &str = "listener ";
/// What precedes an address lock's name on the wire.
const LOCK: &str = "lock ";

impl Role {
    /// The name on the wire.
    fn encode(&self) -> String {
        match self {
            Role::Listener(name) => format!("{LISTENER}{name}"),
            Role::Metrics => METRICS.to_string(),
            Role::Lock(name) => format!("{LOCK}{name}"),
        }
    }

    /// The role of a name on the wire, this version's or an earlier one's.
    fn decode(name: &str) -> Role {
        match name {
            METRICS | METRICS_EARLIER => Role::Metrics,
            _ => match name.strip_prefix(LOCK) {
                Some(lock) => Role::Lock(lock.to_string()),
                None => Role::Listener(name.strip_prefix(LISTENER).unwrap_or(name).to_string()),
            },
        }
    }
}

/// How long each side waits for the other.
pub const HANDOVER_TIMEOUT: Duration = Duration::from_secs(10);

/// The new process's side: the running process's listening sockets, each with its role, and the connection to confirm on once the new process accepts.
pub fn take_over(path: &Path) -> io::Result<(Vec<(Role, OwnedFd)>, Confirm)> {
    let stream = UnixStream::connect(path)
        .map_err(|e| io::Error::new(e.kind(), format!("take over from {}: {e}", path.display())))?;
    trusted(stream.as_fd()).map_err(|e| io::Error::new(e.kind(), format!("take over from {}: {e}", path.display())))?;
    stream.set_read_timeout(Some(HANDOVER_TIMEOUT))?;
    let invalid = |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("handover: {why}"));
    let mut payload = vec![0u8; 16 * 1024];
    let mut sockets = Vec::new();
    let mut total = None;
    loop {
        let (n, fds) = recv_fds(stream.as_fd(), &mut payload)?;
        if n == 0 && fds.is_empty() {
            let why = "the running process closed the handover without sending its sockets (it refuses this \
                       process's user, or it failed)";
            return Err(io::Error::new(io::ErrorKind::ConnectionAborted, why));
        }
        let text = std::str::from_utf8(&payload[..n]).map_err(|_| invalid("names are not UTF-8"))?;
        let mut lines = text.lines().peekable();
        if total.is_none() {
            let count = match lines.peek().and_then(|l| l.strip_prefix(HEADER)) {
                Some(count) => count.trim().parse().map_err(|_| invalid("a bad count"))?,
                None => text.lines().count(),
            };
            if lines.peek().is_some_and(|l| l.starts_with(HEADER)) {
                lines.next();
            }
            total = Some(count);
        }
        let names: Vec<&str> = lines.collect();
        if n == 0 || names.len() != fds.len() {
            return Err(invalid("names and sockets disagree"));
        }
        sockets.extend(names.into_iter().zip(fds).map(|(name, fd)| (Role::decode(name), fd)));
        match total {
            Some(t) if sockets.len() < t => continue,
            Some(t) if sockets.len() == t => break,
            _ => return Err(invalid("more sockets than announced")),
        }
    }
    Ok((sockets, Confirm(stream)))
}

/// The new process's promise to say when it accepts.
#[derive(Debug)]
pub struct Confirm(UnixStream);

impl Confirm {
    /// Tells the old process that this one accepts: it stops accepting and drains.
    pub fn accepting(mut self) -> io::Result<()> {
        writeln!(self.0, "{ACCEPTING}")
    }
}

/// The running process's side, for one new process connected on `stream`: sends `sockets`
/// with their names and waits until the new process accepts. `Err` when it does not (it failed
/// or went away): the caller keeps serving.
pub fn hand_over(stream: UnixStream, sockets: &[(Role, BorrowedFd<'_>)]) -> io::Result<()> {
    trusted(stream.as_fd())?;
    let mut payload = format!("{HEADER} {}\n", sockets.len());
    for chunk in sockets.chunks(MAX_PASSED_FDS) {
        for (role, _) in chunk {
            payload.push_str(&role.encode());
            payload.push('\n');
        }
        let fds: Vec<BorrowedFd<'_>> = chunk.iter().map(|(_, fd)| *fd).collect();
        send_fds(stream.as_fd(), payload.as_bytes(), &fds)?;
        payload.clear();
    }
    stream.set_read_timeout(Some(HANDOVER_TIMEOUT))?;
    let mut line = String::new();
    BufReader::new(&stream).read_line(&mut line)?;
    match line.trim() {
        ACCEPTING => Ok(()),
        _ => Err(io::Error::new(io::ErrorKind::UnexpectedEof, "the new process went away before accepting")),
    }
}

/// Whether the process at the other end of `stream` may take part in a handover: it runs as
/// this process's user, or as root.
fn trusted(stream: BorrowedFd<'_>) -> io::Result<()> {
    let (theirs, ours) = (peer_uid(stream)?, effective_uid());
    match theirs == ours || theirs == 0 {
        true => Ok(()),
        false => Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            format!("handover refused: the peer runs as uid {theirs}, neither this process's uid {ours} nor root"),
        )),
    }
}

/// A handover socket at `path`, mode 0600 whatever the umask, in a directory that only its
/// owner (this user or root) can write: a socket in a shared directory could be replaced or
/// taken first by another user. A stale socket of an earlier process is replaced.
pub fn listen(path: &Path) -> io::Result<UnixListener> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    private(dir)?;
    let refuse = |why: String| io::Error::new(io::ErrorKind::PermissionDenied, why);
    match std::fs::symlink_metadata(path) {
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(refuse(format!("{} exists and is not a socket", path.display())));
        }
        Ok(meta) if meta.uid() != effective_uid() && meta.uid() != 0 => {
            return Err(refuse(format!("{} belongs to uid {}", path.display(), meta.uid())));
        }
        Ok(_) => std::fs::remove_file(path)?,
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    let listener = UnixListener::bind(path)?;
    // Set before anyone can connect but through the directory, which only this user can enter;
    // a peer that connects all the same is refused by its credentials.
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(listener)
}

/// Refuses a directory that another user could write to, or that another user owns.
fn private(dir: &Path) -> io::Result<()> {
    let meta = std::fs::metadata(dir)?;
    let owner = meta.uid();
    let shared = meta.mode() & 0o022 != 0;
    if (owner != effective_uid() && owner != 0) || shared {
        let why = format!(
            "the handover socket's directory {} is {}: use a private runtime directory (mode 0700, \
             systemd's RuntimeDirectory=)",
            dir.display(),
            if shared { "writable by others" } else { "another user's" }
        );
        return Err(io::Error::new(io::ErrorKind::PermissionDenied, why));
    }
    Ok(())
}

/// Where an upgrade's handover socket goes when none is configured: the service manager's
/// runtime directory (`RUNTIME_DIRECTORY`) when it gave one, else a new directory, mode 0700,
/// under the temporary directory, whose name is created exclusively (nobody can have made it
/// first: an existing name is never reused).
pub fn upgrade_socket() -> io::Result<PathBuf> {
    let pid = std::process::id();
    if let Some(dir) = std::env::var_os("RUNTIME_DIRECTORY") {
        let first = dir.to_string_lossy().split(':').next().unwrap_or_default().to_string();
        if !first.is_empty() {
            return Ok(Path::new(&first).join(format!("handover-{pid}.sock")));
        }
    }
    let base = std::env::temp_dir();
    for attempt in 0u32..16 {
        let nanos =
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().subsec_nanos();
        let dir = base.join(format!("snigate-{pid}-{nanos:08x}{attempt}"));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir.join("handover.sock")),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::new(io::ErrorKind::AlreadyExists, "no private directory could be created for the handover"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` listening sockets, each named after its index, cross in order.
    fn hand_over_sockets(n: usize) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("handover.sock");
        let server = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let listeners: Vec<_> = (0..n).map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap()).collect();
        let addrs: Vec<_> = listeners.iter().map(|l| l.local_addr().unwrap()).collect();
        let old = std::thread::spawn(move || {
            let (stream, _) = server.accept().unwrap();
            let named: Vec<_> =
                listeners.iter().enumerate().map(|(i, l)| (Role::Listener(format!("edge{i}")), l.as_fd())).collect();
            hand_over(stream, &named)
        });
        let (sockets, confirm) = take_over(&path).unwrap();
        assert_eq!(sockets.len(), n);
        for (i, (role, socket)) in sockets.iter().enumerate() {
            assert_eq!(*role, Role::Listener(format!("edge{i}")));
            let socket = socket2::Socket::from(socket.try_clone().unwrap());
            assert_eq!(socket.local_addr().unwrap().as_socket(), Some(addrs[i]));
        }
        confirm.accepting().unwrap();
        old.join().unwrap().unwrap();
    }

    #[test]
    fn sockets_and_names_cross_and_the_new_side_confirms() {
        hand_over_sockets(1);
    }

    /// More sockets than one message carries (listeners × workers): several messages.
    #[test]
    fn more_sockets_than_one_message_carries_cross_in_several() {
        hand_over_sockets(MAX_PASSED_FDS);
        hand_over_sockets(2 * MAX_PASSED_FDS + 7);
    }

    /// A running process of an earlier version sends its names alone, with every socket, in one
    /// message: it is still taken over.
    #[test]
    fn an_earlier_version_is_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("handover.sock");
        let server = std::os::unix::net::UnixListener::bind(&path).unwrap();
        let (a, b) =
            (std::net::TcpListener::bind("127.0.0.1:0").unwrap(), std::net::TcpListener::bind("127.0.0.1:0").unwrap());
        let addr = b.local_addr().unwrap();
        let old = std::thread::spawn(move || {
            let (stream, _) = server.accept().unwrap();
            send_fds(stream.as_fd(), b"edge\n(metrics)\n", &[a.as_fd(), b.as_fd()]).unwrap();
            let mut line = String::new();
            BufReader::new(&stream).read_line(&mut line).unwrap();
            line
        });
        let (sockets, confirm) = take_over(&path).unwrap();
        let roles: Vec<&Role> = sockets.iter().map(|(r, _)| r).collect();
        assert_eq!(roles, [&Role::Listener("edge".into()), &Role::Metrics]);
        let metrics = socket2::Socket::from(sockets[1].1.try_clone().unwrap());
        assert_eq!(metrics.local_addr().unwrap().as_socket(), Some(addr));
        confirm.accepting().unwrap();
        assert_eq!(old.join().unwrap().trim(), ACCEPTING);
    }

    /// The socket is 0600 whatever the umask, and a directory others can write is refused.
    #[test]
    fn the_channel_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("handover.sock");
        let _listener = listen(&path).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        let shared = dir.path().join("shared");
        std::fs::create_dir(&shared).unwrap();
        std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o1777)).unwrap();
        let e = listen(&shared.join("handover.sock")).unwrap_err();
        assert!(e.to_string().contains("writable by others"), "{e}");
        std::fs::write(dir.path().join("file"), "x").unwrap();
        assert!(listen(&dir.path().join("file")).is_err(), "a file that is not a socket is not replaced");
        let upgrade = upgrade_socket().unwrap();
        let parent = upgrade.parent().unwrap();
        assert_eq!(std::fs::metadata(parent).unwrap().mode() & 0o777, 0o700);
        let again = upgrade_socket().unwrap();
        assert_ne!(again, upgrade, "a fresh directory each time");
        for path in [upgrade, again] {
            let _ = std::fs::remove_dir(path.parent().unwrap());
        }
    }

    #[test]
    fn a_new_process_that_goes_away_does_not_take_over() {
        let (old, new) = UnixStream::pair().unwrap();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let taker = std::thread::spawn(move || {
            let mut payload = [0u8; 64];
            let _ = recv_fds(new.as_fd(), &mut payload);
            drop(new);
        });
        assert!(hand_over(old, &[(Role::Listener("edge".into()), listener.as_fd())]).is_err());
        taker.join().unwrap();
    }
}
