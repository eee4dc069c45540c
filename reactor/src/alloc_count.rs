//! A counting global allocator for zero-allocation tests: install it in a test binary with
//! `#[global_allocator] static A: CountingAlloc = CountingAlloc;`, then [`start`], run the
//! steady state, [`stop`], and [`take`] the number of allocations (and reallocations) made on
//! the calling OS thread in between. Threads other than the caller are not counted, so the
//! test harness's own threads do not disturb the figure.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static ALLOCS: Cell<u64> = const { Cell::new(0) };
}

/// The system allocator, counting what the calling thread allocates while counting is on.
pub struct CountingAlloc;

#[inline]
fn note() {
    if COUNTING.with(|c| c.get()) {
        ALLOCS.with(|a| a.set(a.get() + 1));
    }
}

// SAFETY: every call forwards to the system allocator with the same arguments; the
// bookkeeping touches only const-initialised thread-locals, which never allocate.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        note();
        // SAFETY: the caller upholds GlobalAlloc's contract, which System needs.
        unsafe { System.alloc(l) }
    }
    unsafe fn alloc_zeroed(&self, l: Layout) -> *mut u8 {
        note();
        // SAFETY: as above.
        unsafe { System.alloc_zeroed(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        // SAFETY: as above.
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, n: usize) -> *mut u8 {
        note();
        // SAFETY: as above.
        unsafe { System.realloc(p, l, n) }
    }
}

/// Starts counting the calling thread's allocations.
pub fn start() {
    COUNTING.with(|c| c.set(true));
}

/// Stops counting.
pub fn stop() {
    COUNTING.with(|c| c.set(false));
}

/// The calling thread's count since the last `take`, and resets it.
pub fn take() -> u64 {
    ALLOCS.with(|a| a.replace(0))
}
