//! What the async readers' fuzz targets share: an in-memory stream that hands out an input in
//! chunks, and one current-thread runtime per thread to drive the reader on.

use std::cell::RefCell;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, ReadBuf};
use tokio::runtime::Runtime;

/// An in-memory stream: hands out `data` in chunks, then end of file.
pub struct Chunked<'a> {
    /// The input.
    pub data: &'a [u8],
    /// Bytes handed out so far.
    pub pos: usize,
    /// Everything left per read (as much as the reader's buffer takes) rather than chunks.
    pub whole: bool,
}

impl<'a> Chunked<'a> {
    /// `data`, all at once (`whole`) or in chunks of 1 + the byte at each split point, mod 64.
    pub fn new(data: &'a [u8], whole: bool) -> Chunked<'a> {
        Chunked { data, pos: 0, whole }
    }
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(self: Pin<&mut Self>, _: &mut Context<'_>, out: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let rest = &this.data[this.pos..];
        let n = match rest.first() {
            None => 0,
            Some(_) if this.whole => rest.len(),
            Some(&b) => 1 + usize::from(b) % 64,
        };
        let n = n.min(rest.len()).min(out.remaining());
        out.put_slice(&rest[..n]);
        this.pos += n;
        Poll::Ready(Ok(()))
    }
}

thread_local! {
    static RUNTIME: RefCell<Runtime> = RefCell::new(
        tokio::runtime::Builder::new_current_thread().enable_time().build().expect("a current-thread runtime"),
    );
}

/// Runs `future` to its end on this thread's runtime.
pub fn block_on<F: Future>(future: F) -> F::Output {
    RUNTIME.with(|rt| rt.borrow().block_on(future))
}
