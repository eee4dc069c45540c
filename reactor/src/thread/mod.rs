//! Lightweight threads: a message queue, pollers, I/O channels and typed locals, polled by a
//! reactor (or by the deterministic harness) one iteration at a time.
//!
//! - `handle`: the part other threads touch (handle, message queue, scheduler hook);
//! - `pollers`: the poller set and one poll iteration;
//! - `fd`: fds that wake a sleeping reactor;
//! - `pin`: keeping a thread on its reactor;
//! - `exit`: exit and teardown;
//! - here: the thread itself, the "current thread" of an OS thread, spawning.

use std::any::{Any, TypeId};
use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use crate::error::{ErrorKind, ReactorError, Result};
use crate::poller::PollerSlot;

mod exit;
mod fd;
mod handle;
mod pin;
mod pollers;

pub use fd::{register_fd, FdRegistration};
pub(crate) use handle::{send_to, Scheduler, ThreadShared, NO_REACTOR};
pub use handle::{Msg, ThreadHandle, DEFAULT_QUEUE_DEPTH, MSG_BATCH};
pub use pin::{pin_to_reactor, ReactorPin};
pub use pollers::{poller_stats, register_poller, register_poller_obj};

static NEXT_THREAD_ID: AtomicU64 = AtomicU64::new(1);

pub(crate) struct ChannelEntry {
    pub dev_id: u64,
    pub refs: u32,
    pub ctx: Box<dyn Any + Send>,
    /// Called when the channel is destroyed, to drop this thread from the device's holders.
    pub on_destroy: Option<Box<dyn FnOnce() + Send>>,
}

/// The whole of a lightweight thread. Boxed so its address is stable while it moves between
/// reactors; only the reactor (or harness) currently owning the box touches the non-shared part.
pub struct ThreadInner {
    pub(crate) shared: Arc<ThreadShared>,
    pub(crate) active: RefCell<Vec<PollerSlot>>,
    pub(crate) timed: RefCell<Vec<PollerSlot>>,
    pub(crate) pending: RefCell<Vec<PollerSlot>>,
    pub(crate) dirty: Cell<bool>,
    pub(crate) next_timed: Cell<u64>,
    pub(crate) channels: RefCell<Vec<ChannelEntry>>,
    pub(crate) locals: RefCell<Vec<(TypeId, Box<dyn Any + Send>)>>,
    pub(crate) keyed: RefCell<Vec<Option<crate::local::KeyedSlot>>>,
    pub(crate) fds: RefCell<Vec<RawFd>>,
    pub(crate) fds_changed: Cell<bool>,
    pub(crate) now: Cell<u64>,
    pub(crate) exit_requested: Cell<bool>,
}

thread_local! {
    static CURRENT: Cell<*const ThreadInner> = const { Cell::new(std::ptr::null()) };
    /// The id of the thread in `CURRENT` (0 when none), kept beside it so that the data path's
    /// thread checks (`current_id`, I/O channel ownership) read one word instead of following
    /// two pointers.
    static CURRENT_ID: Cell<u64> = const { Cell::new(0) };
}

/// The lightweight thread being polled on this OS thread, if any.
pub(crate) fn current_inner<'a>() -> Option<&'a ThreadInner> {
    let p = CURRENT.with(|c| c.get());
    // SAFETY: CURRENT is non-null only inside `ThreadInner::enter`, which keeps the boxed
    // ThreadInner alive and unmoved for its whole duration and restores the previous value on
    // exit; every reference handed out here is used within that call stack.
    unsafe { p.as_ref() }
}

/// The id of the calling lightweight thread (0 outside one). Cheaper than [`current`]: no
/// reference count is touched.
#[inline]
pub fn current_id() -> u64 {
    CURRENT_ID.with(Cell::get)
}

/// A handle to the calling lightweight thread; `None` on an OS thread that is not polling one.
pub fn current() -> Option<ThreadHandle> {
    current_inner().map(|t| ThreadHandle(t.shared.clone()))
}

/// The tick value of the calling thread's current poll (0 outside a thread). Timed pollers are
/// scheduled against this clock; the harness advances it explicitly.
pub fn now() -> u64 {
    current_inner().map(|t| t.now.get()).unwrap_or(0)
}

/// Creates a lightweight thread on reactor `reactor` (or the scheduler's choice when `None`).
/// Must be called on a lightweight thread (the new thread joins the same runtime).
pub fn spawn_thread(name: &str, reactor: Option<usize>) -> Result<ThreadHandle> {
    let t = current_inner().ok_or_else(|| {
        ReactorError::new(
            ErrorKind::WrongThread,
            "spawn_thread called outside a lightweight thread",
        )
    })?;
    let sched = t.shared.sched.clone();
    let inner = ThreadInner::new(name, sched.clone(), DEFAULT_QUEUE_DEPTH);
    let h = ThreadHandle(inner.shared.clone());
    sched.place(inner, reactor)?;
    Ok(h)
}

/// Marks the calling thread for exit: after the current poll its reactor drops it (pollers,
/// channels and locals are dropped on it). Messages already queued are run first.
pub fn exit_current() {
    if let Some(t) = current_inner() {
        t.exit_requested.set(true);
    }
}

impl ThreadInner {
    pub(crate) fn new(name: &str, sched: Arc<dyn Scheduler>, depth: usize) -> Box<Self> {
        Box::new(Self {
            shared: Arc::new(ThreadShared {
                id: NEXT_THREAD_ID.fetch_add(1, Ordering::Relaxed),
                name: name.to_string(),
                queue: ArrayQueue::new(depth.max(1)),
                exited: AtomicBool::new(false),
                reactor: AtomicUsize::new(NO_REACTOR),
                move_to: AtomicUsize::new(NO_REACTOR),
                pinned: AtomicU32::new(0),
                busy_ticks: AtomicU64::new(0),
                idle_ticks: AtomicU64::new(0),
                sched,
            }),
            active: RefCell::new(Vec::new()),
            timed: RefCell::new(Vec::new()),
            pending: RefCell::new(Vec::new()),
            dirty: Cell::new(false),
            next_timed: Cell::new(u64::MAX),
            channels: RefCell::new(Vec::new()),
            locals: RefCell::new(Vec::new()),
            keyed: RefCell::new(Vec::new()),
            fds: RefCell::new(Vec::new()),
            fds_changed: Cell::new(false),
            now: Cell::new(0),
            exit_requested: Cell::new(false),
        })
    }

    pub(crate) fn handle(&self) -> ThreadHandle {
        ThreadHandle(self.shared.clone())
    }

    /// Runs `f` with this thread installed as the current one on this OS thread.
    pub(crate) fn enter<R>(&self, f: impl FnOnce() -> R) -> R {
        struct Restore(*const ThreadInner, u64);
        impl Drop for Restore {
            fn drop(&mut self) {
                CURRENT.with(|c| c.set(self.0));
                CURRENT_ID.with(|c| c.set(self.1));
            }
        }
        let prev = CURRENT.with(|c| c.replace(self as *const ThreadInner));
        let prev_id = CURRENT_ID.with(|c| c.replace(self.shared.id));
        let _restore = Restore(prev, prev_id);
        f()
    }
}
