//! Counters of the data buffer pool ([`crate::buf`]), SPDK's `iobuf_get_stats`: per class,
//! the buffers taken from a thread's cache, those taken from the global queue, and the requests
//! that had to wait for one.
//!
//! Each lightweight thread counts in its own block (one cache line pair, written by that thread
//! only, with plain load + store: no read-modify-write shared between cores on the data path);
//! [`iobuf_stats`] sums the live blocks, those of threads gone (folded in when a thread's bdev
//! state is dropped) and those of OS threads without a lightweight thread (tests, tools; they
//! count with atomic adds, off the data path).
//!
//! Thread contract: [`iobuf_stats`] from any thread; the counting functions on the thread that
//! owns the block.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

/// What a buffer request counted: taken from the thread's cache.
pub(crate) const CACHE: usize = 0;
/// Taken from the global queue.
pub(crate) const MAIN: usize = 1;
/// Had to wait (the pool was empty).
pub(crate) const RETRY: usize = 2;

/// One class's counters, as `iobuf_get_stats` reports them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ClassStats {
    /// Buffers taken from a thread's cache.
    pub cache: u64,
    /// Buffers taken from the global queue.
    pub main: u64,
    /// Requests that waited for a buffer.
    pub retry: u64,
    /// Buffers each thread may keep in its cache (`bdev_set_options`).
    pub cache_size: u32,
}

/// Both classes' counters since start, summed over every thread.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IobufStats {
    /// Small buffers.
    pub small: ClassStats,
    /// Large buffers.
    pub large: ClassStats,
}

/// A block of counters: `[class][CACHE | MAIN | RETRY]`, on its own cache lines.
#[derive(Default)]
#[repr(align(128))]
pub(crate) struct Counters {
    v: [[AtomicU64; 3]; 2],
}

impl Counters {
    /// Counts one `what` of `class` in a block only the calling thread writes.
    #[inline(always)]
    pub(crate) fn bump_owned(&self, class: u8, what: usize) {
        let c = &self.v[usize::from(class & 1)][what];
        c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
    }

    /// Counts one `what` of `class` in a block several threads write.
    fn bump_shared(&self, class: u8, what: usize) {
        self.v[usize::from(class & 1)][what].fetch_add(1, Ordering::Relaxed);
    }

    fn add_into(&self, sum: &mut [[u64; 3]; 2]) {
        for (s, v) in sum.iter_mut().zip(&self.v) {
            for (s, v) in s.iter_mut().zip(v) {
                *s += v.load(Ordering::Relaxed);
            }
        }
    }
}

/// The blocks of the live lightweight threads.
static LIVE: Mutex<Vec<Arc<Counters>>> = Mutex::new(Vec::new());
/// The counts of threads gone.
static RETIRED: Counters = Counters {
    v: [const { [const { AtomicU64::new(0) }; 3] }; 2],
};
/// The counts of OS threads without a lightweight thread.
static OTHER: Counters = Counters {
    v: [const { [const { AtomicU64::new(0) }; 3] }; 2],
};

fn live() -> MutexGuard<'static, Vec<Arc<Counters>>> {
    // Plain pushes and removals: a panic while holding it leaves the list consistent.
    LIVE.lock().unwrap_or_else(|p| p.into_inner())
}

/// A lightweight thread's block: registered when the thread's bdev state is created, folded
/// into the retired counts when it is dropped.
pub(crate) struct ThreadCounters(Arc<Counters>);

impl Default for ThreadCounters {
    fn default() -> Self {
        let c = Arc::new(Counters::default());
        live().push(Arc::clone(&c));
        Self(c)
    }
}

impl Drop for ThreadCounters {
    fn drop(&mut self) {
        let mut live = live();
        let mut sum = [[0; 3]; 2];
        self.0.add_into(&mut sum);
        for (class, s) in sum.iter().enumerate() {
            for (what, n) in s.iter().enumerate() {
                RETIRED.v[class][what].fetch_add(*n, Ordering::Relaxed);
            }
        }
        live.retain(|c| !Arc::ptr_eq(c, &self.0));
    }
}

impl std::ops::Deref for ThreadCounters {
    type Target = Counters;
    fn deref(&self) -> &Counters {
        &self.0
    }
}

/// Counts one `what` of `class` for an OS thread without a lightweight thread.
pub(crate) fn bump_other(class: u8, what: usize) {
    OTHER.bump_shared(class, what);
}

/// The pool's counters since start, summed over every thread, with the cache sizes in force.
///
/// Thread contract: any thread; takes a lock held only while threads come and go (never on
/// the data path). A thread's latest counts may be missing for an instant (no tearing: each
/// counter is one atomic word).
pub fn iobuf_stats() -> IobufStats {
    let mut sum = [[0u64; 3]; 2];
    // The lock first: a thread folding its block into RETIRED holds it, so no count is
    // missed or counted twice.
    let live = live();
    for c in live.iter() {
        c.add_into(&mut sum);
    }
    RETIRED.add_into(&mut sum);
    drop(live);
    OTHER.add_into(&mut sum);
    let class = |i: usize| ClassStats {
        cache: sum[i][CACHE],
        main: sum[i][MAIN],
        retry: sum[i][RETRY],
        cache_size: crate::options::iobuf_cache_size(i as u8) as u32,
    };
    IobufStats {
        small: class(0),
        large: class(1),
    }
}
