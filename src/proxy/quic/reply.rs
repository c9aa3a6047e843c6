//! How a flow's datagrams reach its client: the path is chosen once, when the flow opens, and
//! kept in the flow, so that a flow's answers never depend on what else shares its address.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use socket2::{Domain, SockRef, Socket, Type};
use tokio::net::UdpSocket;

/// A client address, and the address it sent to (the original destination, with TPROXY).
pub(super) type Key = (SocketAddr, SocketAddr);

/// How a flow's datagrams reach its client.
pub(super) enum Replies {
    /// From the listener's own socket (its address is what the client sent to).
    Shared(Arc<UdpSocket>, SocketAddr),
    /// From a socket bound to the original destination (TPROXY: the client must see the
    /// server's address) and connected to the client. The kernel then delivers the client's
    /// later datagrams of the flow to it too.
    Own(UdpSocket),
}

impl Replies {
    /// The path to `key`'s client: the listener's own socket, or (`transparent`) a socket that
    /// answers as the original destination.
    pub fn new(socket: &Arc<UdpSocket>, transparent: bool, key: Key) -> io::Result<Replies> {
        match transparent {
            true => Replies::transparent(key),
            false => Ok(Replies::Shared(socket.clone(), key.0)),
        }
    }

    /// A socket that answers as `key`'s destination: IP_TRANSPARENT, bound to it, connected
    /// to the client.
    fn transparent((client, dst): Key) -> io::Result<Replies> {
        let socket = Socket::new(Domain::for_address(dst), Type::DGRAM.nonblocking(), None)?;
        if dst.is_ipv4() {
            socket.set_ip_transparent_v4(true)?;
        } else {
            socket.set_ip_transparent_v6(true)?;
        }
        socket.set_reuse_address(true)?;
        socket.bind(&dst.into())?;
        socket.connect(&client.into())?;
        Ok(Replies::Own(UdpSocket::from_std(socket.into())?))
    }

    /// Sends one datagram to the client now, or not at all (UDP: the network may drop it too).
    pub fn try_send(&self, datagram: &[u8]) -> io::Result<()> {
        match self {
            Replies::Shared(socket, client) => SockRef::from(&**socket).send_to(datagram, &(*client).into()).map(drop),
            Replies::Own(socket) => SockRef::from(socket).send(datagram).map(drop),
        }
    }

    /// The flow's own socket (TPROXY), where the kernel also delivers the client's later
    /// datagrams.
    pub fn own(&self) -> Option<&UdpSocket> {
        match self {
            Replies::Shared(..) => None,
            Replies::Own(socket) => Some(socket),
        }
    }
}
