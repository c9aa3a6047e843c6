//! The accepted client socket, registered with the runtime only when a stage has to wait on it.

use std::io;
use std::os::fd::{AsFd, BorrowedFd};

use tokio::net::TcpStream;

/// An accepted client socket. It is registered with the runtime's reactor only once the
/// connection has to wait on it: a hello that is there when the connection is accepted (the
/// listener defers accepts until the client has sent data) is read and decided first, and a
/// denied connection is answered and closed without ever touching epoll.
pub(super) enum Client {
    /// Not registered: reads and writes go straight to the kernel and must not block.
    Fresh(std::net::TcpStream),
    /// Registered, so that the connection can await its readiness.
    Registered(TcpStream),
    /// Gone: registering it failed, which closed it.
    Closed,
}

impl Client {
    /// The socket, registered.
    pub(super) fn registered(self) -> io::Result<TcpStream> {
        match self {
            Client::Fresh(stream) => TcpStream::from_std(stream),
            Client::Registered(stream) => Ok(stream),
            Client::Closed => Err(closed()),
        }
    }

    /// Registers the socket in place (once) and returns it. A failure leaves it `Closed`.
    pub(super) fn register(&mut self) -> io::Result<&mut TcpStream> {
        if let Client::Fresh(_) = self {
            let Client::Fresh(stream) = std::mem::replace(self, Client::Closed) else { unreachable!() };
            *self = Client::Registered(TcpStream::from_std(stream)?);
        }
        match self {
            Client::Registered(stream) => Ok(stream),
            _ => Err(closed()),
        }
    }

    /// The socket, registered or not; `None` once closed.
    pub(super) fn fd(&self) -> Option<BorrowedFd<'_>> {
        match self {
            Client::Fresh(stream) => Some(stream.as_fd()),
            Client::Registered(stream) => Some(stream.as_fd()),
            Client::Closed => None,
        }
    }
}

fn closed() -> io::Error {
    io::Error::new(io::ErrorKind::NotConnected, "the client socket is closed")
}
