//! Per-lightweight-thread state of the bdev layer: the I/O pool, the completion queue, the
//! buffer cache and the I/O parked for buffers, and the poller that drains them.
//!
//! Every completion goes through the completion queue, so a submitter's callback never runs
//! inside its submit call. The poller reports `can_sleep() == false` while anything is queued,
//! so an adaptive reactor never sleeps on pending completions.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use ferrite_reactor::{register_poller_obj, LocalKey, Poll, PollerHandle};

use crate::io::BdevIo;

/// Most I/O objects a thread may have out at once (a limit on everything).
pub const MAX_IOS_PER_THREAD: usize = 65_536;
/// Most completions handled in one poll, so other pollers are not starved.
const CQ_BATCH: usize = 512;
/// Rounds over the ready channels in one poll (stacked bdevs make more channels ready).
const READY_ROUNDS: usize = 4;

/// A channel state pointer parked in this thread's retry list.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChanPtr(pub std::ptr::NonNull<crate::channel::ChannelState>);

// SAFETY: only stored in and read from the owning lightweight thread's BdevThread; the state it
// points to is freed only when idle, and a channel in the retry list is never idle.
unsafe impl Send for ChanPtr {}

static BDEV_THREAD: LocalKey<BdevThread> = LocalKey::new();

/// Runs `f` with the calling thread's bdev state (`None` outside a lightweight thread).
#[inline]
pub(crate) fn with_local<R>(f: impl FnOnce(&BdevThread) -> R) -> Option<R> {
    BDEV_THREAD.with(f)
}

// Boxed I/O objects are the unit of ownership that moves between submitter, bdev layer and
// module; the pool keeps them boxed so handing one out moves a pointer, not the object.
#[allow(clippy::vec_box)]
#[derive(Default)]
pub(crate) struct BdevThread {
    /// Channels whose completion queue is non-empty, in the order they became so.
    pub(crate) ready: RefCell<Vec<ChanPtr>>,
    ready_spare: RefCell<Vec<ChanPtr>>,
    pool: RefCell<Vec<Box<BdevIo>>>,
    allocated: Cell<usize>,
    /// The pool got its `bdev_io_cache_size` objects (once, even if the poller failed), and
    /// the thread is counted in [`crate::options`].
    prefilled: Cell<bool>,
    cq: RefCell<VecDeque<Box<BdevIo>>>,
    buf_cache: [RefCell<Vec<usize>>; 2],
    /// This thread's buffer pool counters (`iobuf_get_stats`).
    buf_counts: crate::buf_stats::ThreadCounters,
    pub(crate) buf_waiters: RefCell<VecDeque<Box<BdevIo>>>,
    pub(crate) retry: RefCell<Vec<ChanPtr>>,
    /// The retry list's twin: swapped with it every poll so that taking the list keeps its
    /// capacity (no allocation per poll while a backend keeps answering NOMEM).
    retry_spare: RefCell<Vec<ChanPtr>>,
    poller: RefCell<Option<PollerHandle>>,
    /// `poller` is set (it never goes back to `None`): what `alloc_io` checks per I/O.
    poller_ready: Cell<bool>,
    pub(crate) zombies: RefCell<Vec<Box<crate::channel::ChannelState>>>,
    split_scratch: RefCell<Vec<Box<BdevIo>>>,
}

impl Drop for BdevThread {
    fn drop(&mut self) {
        if self.prefilled.get() {
            crate::options::thread_stopped(self.allocated.get());
        }
        for (class, c) in self.buf_cache.iter().enumerate() {
            for addr in c.borrow_mut().drain(..) {
                crate::buf::release_to_global(class as u8, addr);
            }
        }
    }
}

struct CqPoller;

impl Poll for CqPoller {
    fn poll(&mut self) -> usize {
        drain()
    }
    fn can_sleep(&mut self) -> bool {
        with_local(|t| {
            t.cq.borrow().is_empty()
                && t.buf_waiters.borrow().is_empty()
                && t.retry.borrow().is_empty()
        })
        .unwrap_or(true)
    }
}

/// Ready-list entries reserved up front in both alternating lists, so that swapping them never
/// allocates in steady state (a thread with more ready channels grows them once, then keeps it).
const READY_RESERVE: usize = 64;

// Each thread's pool gets `bdev_io_cache_size` objects (crate::options) when its bdev state is
// set up (the first channel it opens), as SPDK's per-thread cache. The pool grows lazily beyond
// it, so without this a workload's first burst to its full depth allocates — inside the steady
// state when that burst comes late, e.g. when a backend answering NOMEM recovers and every
// parked I/O goes down at once, each taking a child.

/// Pool entries reserved up front, so that returning objects never grows the pool's list in
/// steady state (a thread with more objects out grows it once, then keeps it).
const POOL_RESERVE: usize = 1024;

/// Makes sure the thread's completion poller is registered: one flag test once it is.
#[inline(always)]
fn ensure_poller(t: &BdevThread) {
    if !t.poller_ready.get() {
        register_poller(t);
    }
}

#[cold]
#[inline(never)]
fn register_poller(t: &BdevThread) {
    if t.poller.borrow().is_some() {
        return;
    }
    t.ready.borrow_mut().reserve(READY_RESERVE);
    t.ready_spare.borrow_mut().reserve(READY_RESERVE);
    if !t.prefilled.replace(true) {
        let prefill = crate::options::thread_started();
        let mut pool = t.pool.borrow_mut();
        pool.reserve(POOL_RESERVE.max(prefill));
        for _ in 0..prefill {
            pool.push(Box::<BdevIo>::default());
        }
        t.allocated.set(t.allocated.get() + prefill);
    }
    match register_poller_obj("bdev_completions", 0, Box::new(CqPoller)) {
        Ok(h) => {
            *t.poller.borrow_mut() = Some(h);
            t.poller_ready.set(true);
        }
        Err(e) => tracing::error!("cannot register the bdev completion poller: {e}"),
    }
}

/// Takes an I/O object from the calling thread's pool. `None` outside a lightweight thread,
/// when the thread already has [`MAX_IOS_PER_THREAD`] out, or when all threads together have
/// created `bdev_io_pool_size` ([`crate::options`]) and this thread's pool is empty.
pub fn alloc_io() -> Option<Box<BdevIo>> {
    with_local(|t| {
        ensure_poller(t);
        if let Some(mut io) = t.pool.borrow_mut().pop() {
            io.reset();
            return Some(io);
        }
        if t.allocated.get() >= MAX_IOS_PER_THREAD || !crate::options::try_create() {
            return None;
        }
        t.allocated.set(t.allocated.get() + 1);
        Some(Box::<BdevIo>::default())
    })
    .flatten()
}

/// Returns an I/O object to the calling thread's pool (what dropping it in a callback should
/// be: call this instead of letting the Box drop, to keep the steady state allocation-free).
pub fn free_io(mut io: Box<BdevIo>) {
    io.buf = None;
    io.parent = crate::io::Parent::None;
    let back = with_local(|t| {
        t.pool.borrow_mut().push(io);
    });
    if back.is_none() {
        tracing::debug!("I/O freed outside a lightweight thread; dropped");
    }
}

/// Queues a completed I/O for the completion poller. The common case (a counted I/O whose
/// channel is already listed as ready) stays small enough to inline into a backend's `submit`
/// without a stack frame; everything else is out of line.
#[inline]
pub(crate) fn enqueue_completion(io: Box<BdevIo>) {
    let cur = ferrite_reactor::current_id();
    // Thread ids start at 1 (0: not on a lightweight thread); an I/O that never reached
    // `submit` has thread id 0.
    if cur == 0 || (io.thread_id != cur && io.thread_id != 0) {
        wrong_thread(cur, io.thread_id);
    }
    // Counted I/O go to their channel's queue: no thread-local lookup unless the channel was
    // not already waiting to be drained.
    if io.flags & crate::io::FLAG_COUNTED != 0 {
        if let Some(ch) = io.chan {
            // SAFETY: a counted I/O keeps its channel state alive (freed only when idle).
            let st = unsafe { ch.as_ref() };
            if st.push_completion(io) {
                list_ready(ch);
            }
            return;
        }
    }
    enqueue_uncounted(io);
}

#[cold]
#[inline(never)]
fn wrong_thread(cur: u64, submitted: u64) -> ! {
    panic!("I/O completed on thread {cur}, but it was submitted on thread {submitted}");
}

/// Adds a channel whose completion queue just became non-empty to the ready list.
#[inline(never)]
fn list_ready(ch: std::ptr::NonNull<crate::channel::ChannelState>) {
    let _ = with_local(|t| t.ready.borrow_mut().push(ChanPtr(ch)));
}

/// Completion of an I/O that never reached a channel (rejected at submit).
#[cold]
#[inline(never)]
fn enqueue_uncounted(io: Box<BdevIo>) {
    let r = with_local(|t| {
        ensure_poller(t);
        t.cq.borrow_mut().push_back(io);
    });
    assert!(r.is_some(), "I/O completed outside a lightweight thread");
}

/// Makes sure the completion poller of the calling thread exists (called when a channel is
/// created, so the data path never has to).
pub(crate) fn ensure_completion_poller() {
    let _ = with_local(ensure_poller);
}

pub(crate) fn park_for_buf(io: Box<BdevIo>) {
    let class = crate::buf::class_of(io.num_blocks as usize * io.block_size as usize);
    let _ = with_local(|t| {
        t.buf_counts.bump_owned(class, crate::buf_stats::RETRY);
        ensure_poller(t);
        t.buf_waiters.borrow_mut().push_back(io);
    });
}

pub(crate) fn park_for_buf_front(io: Box<BdevIo>) {
    let _ = with_local(|t| {
        t.buf_waiters.borrow_mut().push_front(io);
    });
}

pub(crate) fn schedule_retry(ch: std::ptr::NonNull<crate::channel::ChannelState>) {
    let _ = with_local(|t| {
        ensure_poller(t);
        let mut r = t.retry.borrow_mut();
        if !r.contains(&ChanPtr(ch)) {
            r.push(ChanPtr(ch));
        }
    });
}

fn drain() -> usize {
    with_local(|t| {
        // An idle thread polls this all the time: one look at each list, out before anything
        // is taken or swapped.
        if t.ready.borrow().is_empty()
            && t.cq.borrow().is_empty()
            && t.retry.borrow().is_empty()
            && t.buf_waiters.borrow().is_empty()
            && t.zombies.borrow().is_empty()
        {
            return 0;
        }
        drain_work(t)
    })
    .unwrap_or(0)
}

/// [`drain`] when something is queued (out of line: an idle poll keeps no stack frame).
#[inline(never)]
fn drain_work(t: &BdevThread) -> usize {
    let mut work = 0;
    // Channels whose NOMEM retry was scheduled before this poll: retried at its end, so
    // that I/O parked during this poll stays parked (and abortable) until the next one
    // instead of bouncing off the backend in a tight loop.
    let retrying = !t.retry.borrow().is_empty();
    let mut retry_chans = Vec::new();
    if retrying {
        retry_chans = std::mem::take(&mut *t.retry_spare.borrow_mut());
        std::mem::swap(&mut retry_chans, &mut *t.retry.borrow_mut());
    }
    // Channel completion queues first, in the order they became ready; completions may
    // make more channels ready (stacked bdevs), handled in the next round (bounded).
    for _ in 0..READY_ROUNDS {
        if t.ready.borrow().is_empty() {
            break;
        }
        let mut list = std::mem::take(&mut *t.ready_spare.borrow_mut());
        std::mem::swap(&mut list, &mut *t.ready.borrow_mut());
        if list.is_empty() {
            *t.ready_spare.borrow_mut() = list;
            break;
        }
        for ch in list.drain(..) {
            // SAFETY: a channel is in the ready list only while its queue holds counted
            // I/O, which keeps it alive.
            let st = unsafe { ch.0.as_ref() };
            let (n, more) = st.drain_completions(CQ_BATCH);
            work += n;
            if more {
                t.ready.borrow_mut().push(ch);
            }
        }
        *t.ready_spare.borrow_mut() = list;
    }
    // Completions of I/O that never reached a channel (rejected at submit).
    for _ in 0..CQ_BATCH {
        let io = t.cq.borrow_mut().pop_front();
        match io {
            Some(io) if io.flags & crate::forward_refuse::FLAG_HOOK_DEFERRED != 0 => {
                crate::forward_refuse::run_deferred_hook(io);
                work += 1;
            }
            Some(io) => {
                crate::channel::finish_io(io);
                work += 1;
            }
            None => break,
        }
    }
    // I/O waiting for a data buffer.
    let n = t.buf_waiters.borrow().len();
    for _ in 0..n {
        let io = t.buf_waiters.borrow_mut().pop_front();
        match io {
            Some(io) => {
                if crate::channel::retry_buf(io) {
                    work += 1;
                } else {
                    break; // still none: keep order, try next poll
                }
            }
            None => break,
        }
    }
    // Channels with I/O that a module refused for lack of resources.
    if retrying {
        for ch in retry_chans.drain(..) {
            work += crate::channel::retry_nomem(ch.0);
        }
        *t.retry_spare.borrow_mut() = retry_chans;
    }
    if !t.retry.borrow().is_empty() {
        work += 1; // retries due next poll: not idle
    }
    // Channel states whose handles were dropped with I/O in flight.
    if !t.zombies.borrow().is_empty() {
        t.zombies.borrow_mut().retain(|z| !z.is_idle());
    }
    work
}

/// The thread's scratch list for splitting (empty, with whatever capacity it has grown to). A
/// nested split while it is taken gets a fresh list; the larger one is kept on return.
#[allow(clippy::vec_box)]
pub(crate) fn take_split_scratch() -> Vec<Box<BdevIo>> {
    with_local(|t| std::mem::take(&mut *t.split_scratch.borrow_mut())).unwrap_or_default()
}

/// Returns the scratch list (emptied) for the next split.
#[allow(clippy::vec_box)]
pub(crate) fn put_split_scratch(mut v: Vec<Box<BdevIo>>) {
    v.clear();
    let _ = with_local(|t| {
        let mut cur = t.split_scratch.borrow_mut();
        if v.capacity() > cur.capacity() {
            *cur = v;
        }
    });
}

/// Takes a buffer address of `class`: from this thread's cache, else from `main` (the global
/// queue), counting where it came from ([`crate::buf_stats`]).
#[inline]
pub(crate) fn buf_take(class: u8, main: impl FnOnce() -> Option<usize>) -> Option<usize> {
    let mut main = Some(main);
    let local = with_local(|t| {
        if let Some(a) = t.buf_cache[class as usize].borrow_mut().pop() {
            t.buf_counts.bump_owned(class, crate::buf_stats::CACHE);
            return Some(a);
        }
        let a = main.take().and_then(|f| f());
        if a.is_some() {
            t.buf_counts.bump_owned(class, crate::buf_stats::MAIN);
        }
        a
    });
    match (local, main) {
        (Some(a), _) => a,
        // Not a lightweight thread: the global queue, counted in the shared block.
        (None, Some(f)) => {
            let a = f();
            if a.is_some() {
                crate::buf_stats::bump_other(class, crate::buf_stats::MAIN);
            }
            a
        }
        (None, None) => None,
    }
}

pub(crate) fn cache_put(class: u8, addr: usize) -> bool {
    with_local(|t| {
        let mut c = t.buf_cache[class as usize].borrow_mut();
        if c.len() < crate::options::iobuf_cache_size(class) {
            c.push(addr);
            true
        } else {
            false
        }
    })
    .unwrap_or(false)
}

/// Number of I/O objects this thread has created (pooled or out).
pub fn ios_allocated() -> usize {
    with_local(|t| t.allocated.get()).unwrap_or(0)
}
