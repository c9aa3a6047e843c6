//! QUIC listeners (`protocol = "quic"`): UDP flows decided by the ClientHello in their Initial
//! packets, then forwarded both ways as opaque datagrams.
//!
//! A flow is one QUIC connection: found by its connection IDs (the client's first Destination
//! Connection ID, and those the server chose), or else by its client address and the address it
//! sent to (the original destination, with TPROXY). A client Initial to an ID no flow knows
//! starts a new flow, even from an address and port in use. One task per listener owns the flow
//! table (`table`): it inspects the datagrams of flows being read (buffering them, bounded),
//! decides with the same rules, destination guard, limits, metrics and log as TCP, and forwards
//! the client's datagrams of open flows. A flow's states are types (`flow`): `Reading`,
//! `Opening`, `Open`. Each open flow has a task that relays the upstream's datagrams back on the
//! flow's own reply path (`reply`), until the flow is idle for `flow_idle_timeout`. Denied flows
//! get a CONNECTION_CLOSE with `reject = "alert"` (so that clients fall back to TCP at once),
//! and their later datagrams are dropped until forgotten.

mod flow;
mod reply;
mod table;

use std::io;
use std::net::SocketAddr;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use socket2::{Domain, Socket, Type};
use tokio::io::Interest;
use tokio::net::UdpSocket;
use tokio::sync::mpsc;

use self::flow::MAX_DATAGRAM;
use self::table::Table;
use super::listener::Listener;
use crate::metrics::registry::Dropped;

/// How often flows past their deadlines are looked for.
const SWEEP: Duration = Duration::from_millis(250);

/// A QUIC listener's socket: bound (IP_TRANSPARENT with `tproxy`), reporting each datagram's
/// original destination.
pub(super) fn bind(addr: SocketAddr, tproxy: bool) -> io::Result<Socket> {
    let socket = Socket::new(Domain::for_address(addr), Type::DGRAM.nonblocking(), None)?;
    prepare(&socket, addr.is_ipv6(), tproxy)?;
    socket.bind(&addr.into())?;
    Ok(socket)
}

/// A passed UDP socket (a handover), set up like one snigate binds.
pub(super) fn adopt(socket: Socket) -> io::Result<Socket> {
    if socket.r#type()? != Type::DGRAM {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, "the passed socket is not a UDP socket"));
    }
    let ipv6 = socket.local_addr()?.is_ipv6();
    socket.set_nonblocking(true)?;
    crate::sys::set_recv_original_dst(socket.as_fd(), ipv6)?;
    Ok(socket)
}

/// The receive and send buffers asked for a QUIC listener's socket (the kernel caps them at
/// `net.core.rmem_max` / `wmem_max`): the default 208 KiB overflows at about 120 datagrams in
/// flight (`benches/quic.rs`).
const SOCKET_BUFFER: usize = 4 << 20;

fn prepare(socket: &Socket, ipv6: bool, tproxy: bool) -> io::Result<()> {
    if ipv6 {
        socket.set_only_v6(true)?;
    }
    // Best effort: a smaller buffer only means earlier drops under load.
    let _ = socket.set_recv_buffer_size(SOCKET_BUFFER);
    let _ = socket.set_send_buffer_size(SOCKET_BUFFER);
    if tproxy && !ipv6 {
        socket.set_ip_transparent_v4(true)?;
    } else if tproxy {
        socket.set_ip_transparent_v6(true)?;
    }
    crate::sys::set_recv_original_dst(socket.as_fd(), ipv6)
}

/// Serves one QUIC listener until the task is stopped.
/// Most datagrams the listener takes in one go before it lets other tasks run.
const BURST: usize = 64;

pub(super) async fn serve(socket: Socket, listener: Arc<Listener>) {
    let socket = match UdpSocket::from_std(std::net::UdpSocket::from(socket)) {
        Ok(s) => Arc::new(s),
        Err(e) => return tracing::error!(listener = %listener.name, error = %e, "cannot register the QUIC socket"),
    };
    let (events, mut incoming) = mpsc::unbounded_channel();
    let mut table = Table::new(listener, socket.clone(), events);
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut sweep = tokio::time::interval(SWEEP);
    loop {
        tokio::select! {
            // Events first: a relay reports the server's new connection ID before the client
            // can answer the packet that carried it, so the client's answer finds its flow. The
            // sweep's tick is rare, and must not wait behind a flood.
            biased;
            Some(event) = incoming.recv() => table.event(event),
            _ = sweep.tick() => table.sweep(),
            received = socket.async_io(Interest::READABLE, || crate::sys::recv_from_to(socket.as_fd(), &mut buf)) => {
                let mut received = Some(received);
                // A burst: what else is waiting, without going back through the select (its
                // timer and channel polls cost more than a datagram's own work). Events still
                // come first, before each datagram.
                for _ in 0..BURST {
                    let Some(r) = received.take() else { break };
                    match r {
                        Ok((n, _, _)) if n > MAX_DATAGRAM => table.listener.metrics.quic_dropped(Dropped::Buffer),
                        Ok((n, client, to)) => table.datagram(&buf[..n], client, to),
                        Err(e) => {
                            table.listener.metrics.accept_failed();
                            tracing::warn!(listener = %table.listener.name, error = %e, "receiving a datagram failed");
                            tokio::time::sleep(Duration::from_millis(5)).await;
                            break;
                        }
                    }
                    while let Ok(event) = incoming.try_recv() {
                        table.event(event);
                    }
                    received = match socket.try_io(Interest::READABLE, || crate::sys::recv_from_to(socket.as_fd(), &mut buf)) {
                        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => None,
                        other => Some(other),
                    };
                }
            }
        }
    }
}
