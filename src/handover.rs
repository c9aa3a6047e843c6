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

use std::io::{self, BufRead, BufReader, Write};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use socket2::Socket;

use crate::sys::{MAX_PASSED_FDS, recv_fds, send_fds};

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
}

/// How the metrics endpoint's socket is named on the wire.
const METRICS: &str = "metrics-endpoint";
/// What an earlier version named it.
const METRICS_EARLIER: &str = "(metrics)";
/// What precedes a listener's name on the wire (an earlier version sent the name alone).
const LISTENER: &str = "listener ";

impl Role {
    /// The name on the wire.
    fn encode(&self) -> String {
        match self {
            Role::Listener(name) => format!("{LISTENER}{name}"),
            Role::Metrics => METRICS.to_string(),
        }
    }

    /// The role of a name on the wire, this version's or an earlier one's.
    fn decode(name: &str) -> Role {
        match name {
            METRICS | METRICS_EARLIER => Role::Metrics,
            _ => Role::Listener(name.strip_prefix(LISTENER).unwrap_or(name).to_string()),
        }
    }
}

/// How long each side waits for the other.
pub const HANDOVER_TIMEOUT: Duration = Duration::from_secs(10);

/// The new process's side: the running process's listening sockets, each with its role, and the connection to confirm on once the new process accepts.
pub fn take_over(path: &Path) -> io::Result<(Vec<(Role, Socket)>, Confirm)> {
    let stream = UnixStream::connect(path)
        .map_err(|e| io::Error::new(e.kind(), format!("take over from {}: {e}", path.display())))?;
    stream.set_read_timeout(Some(HANDOVER_TIMEOUT))?;
    let invalid = |why: &str| io::Error::new(io::ErrorKind::InvalidData, format!("handover: {why}"));
    let mut payload = vec![0u8; 16 * 1024];
    let mut sockets = Vec::new();
    let mut total = None;
    loop {
        let (n, fds) = recv_fds(stream.as_fd(), &mut payload)?;
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
        sockets.extend(names.into_iter().zip(fds).map(|(name, fd)| (Role::decode(name), Socket::from(fd))));
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
        assert_eq!(sockets[1].1.local_addr().unwrap().as_socket(), Some(addr));
        confirm.accepting().unwrap();
        assert_eq!(old.join().unwrap().trim(), ACCEPTING);
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
