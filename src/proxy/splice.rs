//! Moving bytes both ways once a connection is allowed, with half-close and an idle timeout.

use std::io;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::net::tcp::{ReadHalf, WriteHalf};
use tokio::time::Instant;

/// Bytes read per system call while a direction is busy.
const CHUNK: usize = 16 * 1024;

/// Bytes moved, per direction.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Moved {
    /// Client to upstream.
    pub upstream: u64,
    /// Upstream to client.
    pub downstream: u64,
}

/// How a spliced connection ended.
#[derive(Debug)]
pub enum End {
    /// Both sides closed their write half (FIN both ways): the normal end.
    Closed,
    /// Nothing moved either way for the idle timeout.
    Idle,
    /// A side failed (for example a reset).
    Error(io::Error),
}

/// Copies client → upstream and upstream → client until both directions see EOF, a side fails,
/// or nothing moves for `idle`. An EOF in one direction is passed on as a FIN (shutdown of the
/// write half) while the other direction keeps flowing.
///
/// A buffer is allocated only while a direction has data to move, so an idle connection holds
/// no userspace buffer.
pub async fn splice(client: &mut TcpStream, upstream: &mut TcpStream, idle: Duration) -> (Moved, End) {
    let start = Instant::now();
    let last = AtomicU64::new(0);
    let up = AtomicU64::new(0);
    let down = AtomicU64::new(0);
    let (mut cr, mut cw) = client.split();
    let (mut ur, mut uw) = upstream.split();
    let both = async {
        tokio::try_join!(pump(&mut cr, &mut uw, &up, &last, start), pump(&mut ur, &mut cw, &down, &last, start))
    };
    let watchdog = async {
        loop {
            let since = Duration::from_millis(last.load(Ordering::Relaxed));
            let deadline = start + since + idle;
            if Instant::now() >= deadline {
                return;
            }
            tokio::time::sleep_until(deadline).await;
        }
    };
    let end = tokio::select! {
        r = both => match r { Ok(_) => End::Closed, Err(e) => End::Error(e) },
        () = watchdog => End::Idle,
    };
    (Moved { upstream: up.load(Ordering::Relaxed), downstream: down.load(Ordering::Relaxed) }, end)
}

/// One direction: read until EOF, write everything, then shut down the write half.
async fn pump(
    from: &mut ReadHalf<'_>,
    to: &mut WriteHalf<'_>,
    moved: &AtomicU64,
    last: &AtomicU64,
    start: Instant,
) -> io::Result<()> {
    loop {
        from.readable().await?;
        let mut buf = vec![0u8; CHUNK];
        loop {
            match from.try_read(&mut buf) {
                Ok(0) => return to.shutdown().await,
                Ok(n) => {
                    to.write_all(&buf[..n]).await?;
                    moved.fetch_add(n as u64, Ordering::Relaxed);
                    last.store(start.elapsed().as_millis() as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e),
            }
        }
    }
}
