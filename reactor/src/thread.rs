//! Lightweight threads: a message queue, pollers, I/O channels and typed locals, polled by a
//! reactor (or by the deterministic harness) one iteration at a time.

use std::any::{Any, TypeId};
use std::cell::{Cell, RefCell};
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use crossbeam_queue::ArrayQueue;

use crate::clock;
use crate::error::{ErrorKind, ReactorError, Result};
use crate::poller::{FnPoller, Poll, PollerHandle, PollerSlot, PollerState, PollerStats};

/// A message: a closure run once on the target thread.
pub type Msg = Box<dyn FnOnce() + Send>;

/// Default capacity of a thread's message queue.
pub const DEFAULT_QUEUE_DEPTH: usize = 16 * 1024;
/// Messages run per poll, so that pollers are not starved by a flood of messages.
pub const MSG_BATCH: usize = 32;
/// A poller that runs longer than this many µs in one call is named in a warning.
pub const STALL_BUDGET_US: u64 = 10_000;

static NEXT_THREAD_ID: AtomicU64 = AtomicU64::new(1);
static NEXT_POLLER_ID: AtomicU64 = AtomicU64::new(1);

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
    current_inner().map(|t| t.shared.id).unwrap_or(0)
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

/// Registers an active poller (`period_us == 0`) or a timed poller on the calling thread.
/// The poller runs on this thread only, after this returns. Dropping the handle unregisters it.
pub fn register_poller(
    name: &str,
    period_us: u64,
    f: impl FnMut() -> usize + Send + 'static,
) -> Result<PollerHandle> {
    register_poller_obj(name, period_us, Box::new(FnPoller(f)))
}

/// As [`register_poller`], for a [`Poll`] implementation that takes part in sleep decisions.
pub fn register_poller_obj(name: &str, period_us: u64, p: Box<dyn Poll>) -> Result<PollerHandle> {
    let t = current_inner().ok_or_else(|| {
        ReactorError::new(
            ErrorKind::WrongThread,
            format!("poller '{name}' registered outside a thread"),
        )
    })?;
    let id = NEXT_POLLER_ID.fetch_add(1, Ordering::Relaxed);
    let period_ticks = if period_us == 0 {
        0
    } else {
        clock::us_to_ticks(period_us).max(1)
    };
    t.pending.borrow_mut().push(PollerSlot {
        id,
        name: name.to_string(),
        period_ticks,
        period_us,
        next_run: t.now.get().saturating_add(period_ticks),
        state: PollerState::Running,
        poller: Some(p),
        run_count: 0,
        busy_count: 0,
        ticks: 0,
        stalls: 0,
        last_stall_warn: 0,
    });
    t.dirty.set(true);
    Ok(PollerHandle {
        id,
        thread: t.shared.clone(),
    })
}

/// Statistics of every poller of the calling thread (empty outside a thread).
pub fn poller_stats() -> Vec<PollerStats> {
    let Some(t) = current_inner() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (list, kind) in [
        (&t.active, "active"),
        (&t.timed, "timed"),
        (&t.pending, "active"),
    ] {
        for s in list.borrow().iter() {
            let state = match s.state {
                PollerState::Paused => "paused",
                PollerState::Unregistered => continue,
                PollerState::Running if s.period_ticks > 0 => "timed",
                PollerState::Running => kind,
            };
            out.push(PollerStats {
                name: s.name.clone(),
                id: s.id,
                state,
                run_count: s.run_count,
                busy_count: s.busy_count,
                period_us: s.period_us,
                ticks: s.ticks,
            });
        }
    }
    out
}

/// Registers `fd` so that a reactor sleeping with this thread wakes when it becomes readable.
/// Calling thread only; the registration follows the thread if it moves. Dropping the
/// returned guard unregisters it.
pub fn register_fd(fd: RawFd) -> Result<FdRegistration> {
    let t = current_inner()
        .ok_or_else(|| ReactorError::new(ErrorKind::WrongThread, "register_fd outside a thread"))?;
    t.fds.borrow_mut().push(fd);
    t.fds_changed.set(true);
    Ok(FdRegistration {
        fd,
        thread: t.shared.id,
    })
}

/// Keeps an fd registered with the calling thread's reactor; see [`register_fd`].
#[derive(Debug)]
pub struct FdRegistration {
    fd: RawFd,
    thread: u64,
}

impl Drop for FdRegistration {
    fn drop(&mut self) {
        if let Some(t) = current_inner() {
            if t.shared.id == self.thread {
                let mut fds = t.fds.borrow_mut();
                if let Some(p) = fds.iter().position(|f| *f == self.fd) {
                    fds.swap_remove(p);
                    t.fds_changed.set(true);
                }
            }
        }
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
        struct Restore(*const ThreadInner);
        impl Drop for Restore {
            fn drop(&mut self) {
                CURRENT.with(|c| c.set(self.0));
            }
        }
        let prev = CURRENT.with(|c| c.replace(self as *const ThreadInner));
        let _restore = Restore(prev);
        f()
    }

    pub(crate) fn set_poller_state(&self, id: u64, st: PollerState) {
        for list in [&self.active, &self.timed, &self.pending] {
            if let Ok(mut l) = list.try_borrow_mut() {
                if let Some(s) = l.iter_mut().find(|s| s.id == id) {
                    if s.state != PollerState::Unregistered {
                        s.state = st;
                    }
                    self.dirty.set(true);
                    return;
                }
            }
        }
    }

    /// One iteration: up to `MSG_BATCH` messages, every active poller, then due timed pollers.
    /// Returns the amount of work done (0 = idle).
    pub(crate) fn poll(&self, now: u64) -> usize {
        self.enter(|| self.poll_inner(now))
    }

    fn poll_inner(&self, now: u64) -> usize {
        self.now.set(now);
        let mut work = 0usize;
        for _ in 0..MSG_BATCH {
            match self.shared.queue.pop() {
                Some(m) => {
                    m();
                    work += 1;
                }
                None => break,
            }
        }
        if self.dirty.get() {
            self.maintain();
        }
        work += run_list(&self.active, now, false);
        if now >= self.next_timed.get() {
            work += run_list(&self.timed, now, true);
            self.next_timed.set(next_due(&self.timed.borrow()));
        }
        if self.dirty.get() {
            self.maintain();
        }
        work
    }

    /// Moves newly registered pollers into their lists and drops unregistered ones.
    fn maintain(&self) {
        self.dirty.set(false);
        let pending: Vec<PollerSlot> = std::mem::take(&mut *self.pending.borrow_mut());
        let mut dropped: Vec<PollerSlot> = Vec::new();
        {
            let mut active = self.active.borrow_mut();
            let mut timed = self.timed.borrow_mut();
            for s in pending {
                if s.period_ticks == 0 {
                    active.push(s);
                } else {
                    timed.push(s);
                }
            }
            for list in [&mut *active, &mut *timed] {
                let mut i = 0;
                while i < list.len() {
                    if list[i].state == PollerState::Unregistered && list[i].poller.is_some() {
                        dropped.push(list.remove(i));
                    } else {
                        i += 1;
                    }
                }
            }
            self.next_timed.set(next_due(&timed));
        }
        // Pollers are dropped with no list borrowed: their destructors may unregister others.
        drop(dropped);
    }

    /// True if a message is waiting or a poller refuses to sleep. Called by the reactor after
    /// it has set its sleeping flag and fenced ("poll once more").
    pub(crate) fn has_pending_work(&self) -> bool {
        if !self.shared.queue.is_empty() || self.exit_requested.get() {
            return true;
        }
        self.enter(|| {
            if !self.pending.borrow().is_empty() {
                return true;
            }
            for list in [&self.active, &self.timed] {
                let n = list.borrow().len();
                for i in 0..n {
                    let p = {
                        let mut l = list.borrow_mut();
                        if l[i].state != PollerState::Running {
                            continue;
                        }
                        l[i].poller.take()
                    };
                    if let Some(mut p) = p {
                        let ok = p.can_sleep();
                        list.borrow_mut()[i].poller = Some(p);
                        if !ok {
                            return true;
                        }
                    }
                }
            }
            false
        })
    }

    /// Earliest timed-poller deadline, in ticks.
    pub(crate) fn next_deadline(&self) -> u64 {
        let pend = self
            .pending
            .borrow()
            .iter()
            .map(|s| s.next_run)
            .min()
            .unwrap_or(u64::MAX);
        self.next_timed.get().min(pend)
    }

    /// Drops everything the thread owns, with the thread installed as current so that
    /// destructors can unregister pollers and release channels. Runs queued messages first
    /// (bounded).
    pub(crate) fn teardown(self: Box<Self>) {
        // Whatever runs or is dropped from here on can tell that the thread is exiting.
        self.exit_requested.set(true);
        self.enter(|| {
            for _ in 0..1024 {
                match self.shared.queue.pop() {
                    Some(m) => m(),
                    None => break,
                }
            }
            self.shared.exited.store(true, Ordering::Release);
            let locals = std::mem::take(&mut *self.locals.borrow_mut());
            drop(locals);
            let keyed = std::mem::take(&mut *self.keyed.borrow_mut());
            drop(keyed);
            for list in [&self.active, &self.timed, &self.pending] {
                let l = std::mem::take(&mut *list.borrow_mut());
                drop(l);
            }
            // Channels last: pollers and locals may have held them. One at a time, an
            // unreferenced one first: a channel's state may hold (and use, when dropped)
            // channels of other devices, which must outlive it. Channels still referenced from
            // outside the thread go newest first (a stacked device's channel is created after
            // the channels it holds). Bounded, in case destructors keep creating channels.
            for _ in 0..4096 {
                let entry = {
                    let mut chans = self.channels.borrow_mut();
                    let Some(last) = chans.len().checked_sub(1) else {
                        break;
                    };
                    let pos = chans.iter().rposition(|e| e.refs == 0).unwrap_or(last);
                    chans.remove(pos)
                };
                destroy_channel(entry);
            }
            let rest = std::mem::take(&mut *self.channels.borrow_mut());
            for c in rest.into_iter().rev() {
                destroy_channel(c);
            }
            while self.shared.queue.pop().is_some() {}
        });
    }
}

/// Drops one channel's state (no borrow of the channel list may be held: its destructor may
/// release other channels).
fn destroy_channel(mut c: ChannelEntry) {
    if let Some(f) = c.on_destroy.take() {
        f();
    }
    drop(c);
}

/// Earliest deadline among the timed pollers that can run. Paused ones are left out: their
/// stale deadline would otherwise look permanently overdue and keep a reactor from sleeping.
fn next_due(timed: &[PollerSlot]) -> u64 {
    timed
        .iter()
        .filter(|s| s.state == PollerState::Running)
        .map(|s| s.next_run)
        .min()
        .unwrap_or(u64::MAX)
}

fn run_list(list: &RefCell<Vec<PollerSlot>>, now: u64, timed: bool) -> usize {
    let mut work = 0;
    let n = list.borrow().len();
    for i in 0..n {
        let p = {
            let mut l = list.borrow_mut();
            let s = &mut l[i];
            if s.state != PollerState::Running || (timed && s.next_run > now) {
                continue;
            }
            s.poller.take()
        };
        let Some(mut p) = p else { continue };
        let t0 = clock::ticks();
        let w = p.poll();
        let dt = clock::ticks().wrapping_sub(t0);
        let mut l = list.borrow_mut();
        let s = &mut l[i];
        s.poller = Some(p);
        s.run_count += 1;
        s.ticks += dt;
        if w > 0 {
            s.busy_count += 1;
        }
        if timed {
            s.next_run = now.saturating_add(s.period_ticks);
        }
        if dt > stall_budget_ticks() {
            s.stalls += 1;
            // At most one warning per poller per second; the count says how many were folded.
            if now.wrapping_sub(s.last_stall_warn) >= clock::tick_rate() || s.last_stall_warn == 0 {
                tracing::warn!(
                    poller = %s.name,
                    us = clock::ticks_to_ns(dt) / 1000,
                    overruns = s.stalls,
                    "poller overran its budget of {} us",
                    STALL_BUDGET_US
                );
                s.last_stall_warn = now.max(1);
                s.stalls = 0;
            }
        }
        work += w;
    }
    work
}

fn stall_budget_ticks() -> u64 {
    static B: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *B.get_or_init(|| clock::us_to_ticks(STALL_BUDGET_US))
}
