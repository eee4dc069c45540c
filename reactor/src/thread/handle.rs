//! The part of a lightweight thread that other threads touch: its handle, its message queue
//! and the scheduler that wakes whatever polls it.

use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use super::ThreadInner;
use crate::error::{ErrorKind, ReactorError, Result};

/// A message: a closure run once on the target thread.
pub type Msg = Box<dyn FnOnce() + Send>;

/// Default capacity of a thread's message queue.
pub const DEFAULT_QUEUE_DEPTH: usize = 16 * 1024;
/// Messages run per poll, so that pollers are not starved by a flood of messages.
pub const MSG_BATCH: usize = 32;
/// Where a thread lives and how to wake it. Implemented by the runtime and by the harness.
pub(crate) trait Scheduler: Send + Sync {
    /// A message was queued for `thread`: wake whatever polls it if it sleeps.
    fn wake(&self, thread: &ThreadShared);
    /// Adopt a new thread; `reactor` is a preferred reactor index.
    fn place(&self, thread: Box<ThreadInner>, reactor: Option<usize>) -> Result<()>;
    /// Number of reactors (1 for the harness).
    fn reactor_count(&self) -> usize;
}

/// Reactor index meaning "not placed on any reactor".
pub(crate) const NO_REACTOR: usize = usize::MAX;

/// The part of a thread that other threads may touch.
pub(crate) struct ThreadShared {
    pub id: u64,
    pub name: String,
    pub queue: ArrayQueue<Msg>,
    pub exited: AtomicBool,
    pub reactor: AtomicUsize,
    pub move_to: AtomicUsize,
    /// Pins held ([`super::pin_to_reactor`]): while non-zero, moves are refused.
    pub pinned: AtomicU32,
    pub busy_ticks: AtomicU64,
    pub idle_ticks: AtomicU64,
    pub sched: Arc<dyn Scheduler>,
}

/// A cheap, cloneable reference to a lightweight thread, usable from any thread to send it
/// messages.
#[derive(Clone)]
pub struct ThreadHandle(pub(crate) Arc<ThreadShared>);

impl std::fmt::Debug for ThreadHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Thread({}, {:?})", self.0.id, self.0.name)
    }
}

impl PartialEq for ThreadHandle {
    fn eq(&self, other: &Self) -> bool {
        self.0.id == other.0.id
    }
}
impl Eq for ThreadHandle {}

pub(crate) fn send_to(t: &Arc<ThreadShared>, msg: Msg) -> Result<()> {
    if t.exited.load(Ordering::Acquire) {
        return Err(ReactorError::new(
            ErrorKind::ThreadGone,
            format!("thread '{}' has exited", t.name),
        ));
    }
    if t.queue.push(msg).is_err() {
        return Err(ReactorError::new(
            ErrorKind::QueueFull,
            format!(
                "message queue of thread '{}' is full ({} entries)",
                t.name,
                t.queue.capacity()
            ),
        ));
    }
    // Publish the message before reading where the thread lives and whether its reactor
    // sleeps: pairs with the fence in the reactor's sleep protocol and in migration.
    std::sync::atomic::fence(Ordering::SeqCst);
    t.sched.wake(t);
    Ok(())
}

impl ThreadHandle {
    /// Queues `f` to run on this thread. Callable from any thread, including reactors and
    /// non-reactor threads. `f` runs after this returns, never inside it; messages from one
    /// sender run in the order sent. A full queue or an exited thread is an error and `f` is
    /// dropped unrun.
    pub fn send(&self, f: impl FnOnce() + Send + 'static) -> Result<()> {
        send_to(&self.0, Box::new(f))
    }

    /// The thread's process-unique id.
    pub fn id(&self) -> u64 {
        self.0.id
    }

    /// The thread's name.
    pub fn name(&self) -> &str {
        &self.0.name
    }

    /// Index of the reactor currently polling the thread, if any.
    pub fn reactor(&self) -> Option<usize> {
        match self.0.reactor.load(Ordering::Acquire) {
            NO_REACTOR => None,
            r => Some(r),
        }
    }

    /// Asks the thread to move to reactor `index` after its current poll. Any thread may call
    /// this; the move happens asynchronously.
    pub fn move_to(&self, index: usize) -> Result<()> {
        if index >= self.0.sched.reactor_count() {
            return Err(ReactorError::new(
                ErrorKind::InvalidCpuMask,
                format!("no reactor {index} to move thread '{}' to", self.0.name),
            ));
        }
        self.0.move_to.store(index, Ordering::Release);
        self.0.sched.wake(&self.0);
        Ok(())
    }

    /// Busy and idle ticks accumulated by the thread.
    pub fn busy_idle_ticks(&self) -> (u64, u64) {
        (
            self.0.busy_ticks.load(Ordering::Relaxed),
            self.0.idle_ticks.load(Ordering::Relaxed),
        )
    }

    /// True once the thread has exited.
    pub fn is_exited(&self) -> bool {
        self.0.exited.load(Ordering::Acquire)
    }
}
