//! Per-lightweight-thread state of the bdev layer: the I/O pool, the completion queue, the
//! buffer cache and the I/O parked for buffers, and the poller that drains them.
//!
//! Every completion goes through the completion queue, so a submitter's callback never runs
//! inside its submit call. The poller reports `can_sleep() == false` while anything is queued,
//! so an adaptive reactor never sleeps on pending completions.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;

use ferrite_reactor::{register_poller_obj, with_local, Poll, PollerHandle};

use crate::io::BdevIo;

/// Most I/O objects a thread may have out at once (a limit on everything).
pub const MAX_IOS_PER_THREAD: usize = 65_536;
/// Most completions handled in one poll, so other pollers are not starved.
const CQ_BATCH: usize = 4096;

/// A channel state pointer parked in this thread's retry list.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct ChanPtr(pub std::ptr::NonNull<crate::channel::ChannelState>);

// SAFETY: only stored in and read from the owning lightweight thread's BdevThread; the state it
// points to is freed only when idle, and a channel in the retry list is never idle.
unsafe impl Send for ChanPtr {}

#[derive(Default)]
pub(crate) struct BdevThread {
    pool: RefCell<Vec<Box<BdevIo>>>,
    allocated: Cell<usize>,
    cq: RefCell<VecDeque<Box<BdevIo>>>,
    buf_cache: [RefCell<Vec<usize>>; 2],
    pub(crate) buf_waiters: RefCell<VecDeque<Box<BdevIo>>>,
    pub(crate) retry: RefCell<Vec<ChanPtr>>,
    poller: RefCell<Option<PollerHandle>>,
    pub(crate) zombies: RefCell<Vec<Box<crate::channel::ChannelState>>>,
}

impl Drop for BdevThread {
    fn drop(&mut self) {
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
        with_local(|t: &BdevThread| {
            t.cq.borrow().is_empty()
                && t.buf_waiters.borrow().is_empty()
                && t.retry.borrow().is_empty()
        })
        .unwrap_or(true)
    }
}

fn ensure_poller(t: &BdevThread) {
    if t.poller.borrow().is_some() {
        return;
    }
    match register_poller_obj("bdev_completions", 0, Box::new(CqPoller)) {
        Ok(h) => *t.poller.borrow_mut() = Some(h),
        Err(e) => tracing::error!("cannot register the bdev completion poller: {e}"),
    }
}

/// Takes an I/O object from the calling thread's pool. `None` outside a lightweight thread or
/// when the thread already has [`MAX_IOS_PER_THREAD`] out.
pub fn alloc_io() -> Option<Box<BdevIo>> {
    with_local(|t: &BdevThread| {
        ensure_poller(t);
        if let Some(mut io) = t.pool.borrow_mut().pop() {
            io.reset();
            return Some(io);
        }
        if t.allocated.get() >= MAX_IOS_PER_THREAD {
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
    let back = with_local(|t: &BdevThread| {
        t.pool.borrow_mut().push(io);
    });
    if back.is_none() {
        tracing::debug!("I/O freed outside a lightweight thread; dropped");
    }
}

pub(crate) fn enqueue_completion(io: Box<BdevIo>) {
    let cur = ferrite_reactor::current().map(|h| h.id()).unwrap_or(0);
    assert!(
        io.thread_id == 0 || io.thread_id == cur,
        "I/O completed on thread {cur}, but it was submitted on thread {}",
        io.thread_id
    );
    let r = with_local(|t: &BdevThread| {
        ensure_poller(t);
        t.cq.borrow_mut().push_back(io);
    });
    assert!(r.is_some(), "I/O completed outside a lightweight thread");
}

pub(crate) fn park_for_buf(io: Box<BdevIo>) {
    crate::buf::note_wait();
    let _ = with_local(|t: &BdevThread| {
        ensure_poller(t);
        t.buf_waiters.borrow_mut().push_back(io);
    });
}

pub(crate) fn park_for_buf_front(io: Box<BdevIo>) {
    let _ = with_local(|t: &BdevThread| {
        t.buf_waiters.borrow_mut().push_front(io);
    });
}

pub(crate) fn schedule_retry(ch: std::ptr::NonNull<crate::channel::ChannelState>) {
    let _ = with_local(|t: &BdevThread| {
        ensure_poller(t);
        let mut r = t.retry.borrow_mut();
        if !r.contains(&ChanPtr(ch)) {
            r.push(ChanPtr(ch));
        }
    });
}

fn drain() -> usize {
    with_local(|t: &BdevThread| {
        let mut work = 0;
        // Completions first: they free resources the parked I/O waits for.
        for _ in 0..CQ_BATCH {
            let io = t.cq.borrow_mut().pop_front();
            match io {
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
        let chans: Vec<_> = std::mem::take(&mut *t.retry.borrow_mut());
        for ch in chans {
            work += crate::channel::retry_nomem(ch.0);
        }
        // Channel states whose handles were dropped with I/O in flight.
        if !t.zombies.borrow().is_empty() {
            t.zombies.borrow_mut().retain(|z| !z.is_idle());
        }
        work
    })
    .unwrap_or(0)
}

pub(crate) fn cache_get(class: u8) -> Option<usize> {
    with_local(|t: &BdevThread| t.buf_cache[class as usize].borrow_mut().pop()).flatten()
}

pub(crate) fn cache_put(class: u8, addr: usize) -> bool {
    with_local(|t: &BdevThread| {
        let mut c = t.buf_cache[class as usize].borrow_mut();
        if c.len() < crate::buf::cache_limit() {
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
    with_local(|t: &BdevThread| t.allocated.get()).unwrap_or(0)
}
