//! Which worker the calling thread is: what is counted per worker (the registry's families,
//! rule usage) goes to that worker's own set, so that workers on different cores never write
//! the same cache line.

use std::cell::Cell;

thread_local! {
    /// The worker this thread is (0: the first worker, and every thread that is not one).
    static WORKER: Cell<usize> = const { Cell::new(0) };
}

/// Marks the calling thread as worker `k`: what connections on it record goes to the `k`th
/// set of per-worker counters (the last one when there are fewer).
pub fn set_worker(k: usize) {
    WORKER.with(|w| w.set(k));
}

/// The calling thread's worker, as [`set_worker`] set it.
#[inline]
pub(crate) fn current() -> usize {
    WORKER.with(Cell::get)
}
