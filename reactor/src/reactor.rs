//! Reactors: one pinned OS thread per core of the mask, each polling its lightweight threads
//! and sleeping on epoll when they are all idle (adaptive and interrupt modes).
//!
//! Sleep protocol (no lost wake-up): the reactor stores `sleeping = true`, issues a SeqCst
//! fence, then checks every thread once more (messages queued, pollers that refuse to sleep,
//! threads arriving). A sender pushes its message, fences, then reads `sleeping`; so either the
//! reactor sees the message in its last check, or the sender sees the flag and writes the
//! eventfd, which ends the epoll wait.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_queue::ArrayQueue;

use crate::clock;
use crate::cpumask::CpuMask;
use crate::error::{ErrorKind, ReactorError, Result};
use crate::sys::{Epoll, EventFd};
use crate::thread::{Scheduler, ThreadHandle, ThreadInner, ThreadShared, NO_REACTOR};

/// How a reactor waits when it has nothing to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollMode {
    /// Never sleep (lowest latency, one full core per reactor).
    Poll,
    /// Sleep after every thread has been idle for the configured time (default).
    Adaptive,
    /// Sleep as soon as an iteration finds no work.
    Interrupt,
}

impl std::str::FromStr for PollMode {
    type Err = ReactorError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "poll" => Ok(Self::Poll),
            "adaptive" => Ok(Self::Adaptive),
            "interrupt" => Ok(Self::Interrupt),
            other => Err(ReactorError::new(
                ErrorKind::NotRunning,
                format!("unknown poll mode '{other}' (expected poll, adaptive or interrupt)"),
            )),
        }
    }
}

impl PollMode {
    /// The name used on the command line and in RPC output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Poll => "poll",
            Self::Adaptive => "adaptive",
            Self::Interrupt => "interrupt",
        }
    }
}

/// Runtime configuration.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Cores to run reactors on; the first is the main reactor.
    pub cpumask: CpuMask,
    /// Sleep behaviour.
    pub mode: PollMode,
    /// In adaptive mode, how long every thread must be idle before the reactor sleeps.
    pub idle_threshold_us: u64,
    /// Capacity of each thread's message queue.
    pub queue_depth: usize,
    /// Pin reactors to their cores (turn off only for tests on machines with fewer cores).
    pub pin: bool,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            cpumask: CpuMask::from_cores(&[0]),
            mode: PollMode::Adaptive,
            idle_threshold_us: 1000,
            queue_depth: crate::thread::DEFAULT_QUEUE_DEPTH,
            pin: true,
        }
    }
}

/// Per-reactor state other threads may read or signal.
pub(crate) struct ReactorShared {
    pub index: usize,
    pub core: usize,
    pub sleeping: AtomicBool,
    pub eventfd: EventFd,
    pub incoming: ArrayQueue<Box<ThreadInner>>,
    pub busy_ticks: AtomicU64,
    pub idle_ticks: AtomicU64,
    pub sleeps: AtomicU64,
    pub wakeups: AtomicU64,
    pub tid: AtomicU64,
    pub in_interrupt: AtomicBool,
    pub threads: Mutex<Vec<ThreadHandle>>,
}

impl ReactorShared {
    fn wake(&self) {
        if self.sleeping.load(Ordering::SeqCst) {
            self.eventfd.notify();
        }
    }
}

pub(crate) struct RuntimeShared {
    pub reactors: Vec<Arc<ReactorShared>>,
    pub stop: AtomicBool,
    pub mode: PollMode,
    pub idle_threshold_ticks: u64,
    pub queue_depth: usize,
    pub next_rr: AtomicUsize,
}

impl RuntimeShared {
    /// Hands `thread` to reactor `idx` (which must exist). On failure the thread is given
    /// back, so that the caller can keep it rather than drop it without a teardown.
    #[allow(clippy::result_large_err)]
    fn try_place(
        &self,
        thread: Box<ThreadInner>,
        idx: usize,
    ) -> std::result::Result<(), (Box<ThreadInner>, ReactorError)> {
        if self.stop.load(Ordering::Acquire) {
            return Err((
                thread,
                ReactorError::new(ErrorKind::NotRunning, "runtime is stopping"),
            ));
        }
        let r = &self.reactors[idx];
        let prev = thread.shared.reactor.swap(idx, Ordering::SeqCst);
        if let Err(thread) = r.incoming.push(thread) {
            thread.shared.reactor.store(prev, Ordering::SeqCst);
            let e = ReactorError::new(
                ErrorKind::QueueFull,
                format!("reactor {idx} cannot take more threads right now"),
            );
            return Err((thread, e));
        }
        std::sync::atomic::fence(Ordering::SeqCst);
        r.eventfd.notify();
        Ok(())
    }
}

impl Scheduler for RuntimeShared {
    fn wake(&self, thread: &ThreadShared) {
        let r = thread.reactor.load(Ordering::SeqCst);
        if let Some(r) = self.reactors.get(r) {
            r.wake();
        }
    }

    fn place(&self, thread: Box<ThreadInner>, reactor: Option<usize>) -> Result<()> {
        let n = self.reactors.len();
        let idx = match reactor {
            Some(i) if i < n => i,
            Some(i) => {
                return Err(ReactorError::new(
                    ErrorKind::InvalidCpuMask,
                    format!("no reactor {i} (there are {n})"),
                ))
            }
            None => self.next_rr.fetch_add(1, Ordering::Relaxed) % n,
        };
        self.try_place(thread, idx).map_err(|(t, e)| {
            // Never placed: tear it down properly so that it reports itself exited.
            t.teardown();
            e
        })
    }

    fn reactor_count(&self) -> usize {
        self.reactors.len()
    }
}

/// Snapshot of one reactor for `framework_get_reactors`.
#[derive(Debug, Clone)]
pub struct ReactorInfo {
    /// Reactor index (0 = main).
    pub index: usize,
    /// Core it is pinned to.
    pub lcore: usize,
    /// OS thread id.
    pub tid: u64,
    /// Ticks spent polling threads that did work.
    pub busy: u64,
    /// Ticks spent polling with no work, or sleeping.
    pub idle: u64,
    /// True while it sleeps in epoll.
    pub in_interrupt: bool,
    /// Times it went to sleep.
    pub sleeps: u64,
    /// Lightweight threads it polls now.
    pub threads: Vec<ThreadHandle>,
}

/// The running set of reactors.
pub struct Runtime {
    shared: Arc<RuntimeShared>,
    joins: Mutex<Vec<std::thread::JoinHandle<()>>>,
    app_thread: ThreadHandle,
}

impl Runtime {
    /// Starts one reactor per core of the mask and an "app_thread" on the main reactor.
    /// Fails with `InvalidCpuMask` if a core is not present.
    pub fn start(cfg: RuntimeConfig) -> Result<Arc<Runtime>> {
        cfg.cpumask.check_present()?;
        let _ = clock::tick_rate();
        let mut reactors = Vec::new();
        for (index, core) in cfg.cpumask.cores().iter().enumerate() {
            reactors.push(Arc::new(ReactorShared {
                index,
                core: *core,
                sleeping: AtomicBool::new(false),
                eventfd: EventFd::new().map_err(|e| ReactorError::os("eventfd for reactor", e))?,
                incoming: ArrayQueue::new(4096),
                busy_ticks: AtomicU64::new(0),
                idle_ticks: AtomicU64::new(0),
                sleeps: AtomicU64::new(0),
                wakeups: AtomicU64::new(0),
                tid: AtomicU64::new(0),
                in_interrupt: AtomicBool::new(false),
                threads: Mutex::new(Vec::new()),
            }));
        }
        let shared = Arc::new(RuntimeShared {
            reactors,
            stop: AtomicBool::new(false),
            mode: cfg.mode,
            idle_threshold_ticks: clock::us_to_ticks(cfg.idle_threshold_us),
            queue_depth: cfg.queue_depth,
            next_rr: AtomicUsize::new(0),
        });
        let app = ThreadInner::new("app_thread", shared.clone(), cfg.queue_depth);
        let app_thread = app.handle();
        shared.place(app, Some(0))?;
        let mut joins = Vec::new();
        for r in &shared.reactors {
            let rs = r.clone();
            let rt = shared.clone();
            let pin = cfg.pin;
            let j = std::thread::Builder::new()
                .name(format!("reactor_{}", r.index))
                .spawn(move || run_reactor(rt, rs, pin))
                .map_err(|e| ReactorError::os("spawning reactor thread", e))?;
            joins.push(j);
        }
        tracing::info!(
            "started {} reactor(s) on cores {} in {} mode",
            shared.reactors.len(),
            cfg.cpumask,
            cfg.mode.as_str()
        );
        Ok(Arc::new(Runtime {
            shared,
            joins: Mutex::new(joins),
            app_thread,
        }))
    }

    /// The app thread on the main reactor (where control-plane work runs).
    pub fn app_thread(&self) -> ThreadHandle {
        self.app_thread.clone()
    }

    /// Creates a lightweight thread on reactor `reactor` (round robin when `None`). Any thread.
    pub fn spawn_thread(&self, name: &str, reactor: Option<usize>) -> Result<ThreadHandle> {
        let t = ThreadInner::new(name, self.shared.clone(), self.shared.queue_depth);
        let h = t.handle();
        self.shared.place(t, reactor)?;
        Ok(h)
    }

    /// Number of reactors.
    pub fn reactor_count(&self) -> usize {
        self.shared.reactors.len()
    }

    /// Poll mode in force.
    pub fn mode(&self) -> PollMode {
        self.shared.mode
    }

    /// Snapshot of every reactor. Any thread.
    pub fn reactors(&self) -> Vec<ReactorInfo> {
        self.shared
            .reactors
            .iter()
            .map(|r| ReactorInfo {
                index: r.index,
                lcore: r.core,
                tid: r.tid.load(Ordering::Relaxed),
                busy: r.busy_ticks.load(Ordering::Relaxed),
                idle: r.idle_ticks.load(Ordering::Relaxed),
                in_interrupt: r.in_interrupt.load(Ordering::Relaxed),
                sleeps: r.sleeps.load(Ordering::Relaxed),
                threads: r.threads.lock().map(|t| t.clone()).unwrap_or_default(),
            })
            .collect()
    }

    /// Every lightweight thread, reactor by reactor.
    pub fn threads(&self) -> Vec<ThreadHandle> {
        self.reactors()
            .into_iter()
            .flat_map(|r| r.threads)
            .collect()
    }

    /// Stops every reactor: each runs its threads' queued messages, drops its threads (their
    /// pollers, channels and locals, on the thread), and exits. Blocks until all have exited.
    /// Call from a non-reactor thread after the application has drained its I/O.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        for r in &self.shared.reactors {
            r.eventfd.notify();
        }
        let joins = self
            .joins
            .lock()
            .map(|mut j| std::mem::take(&mut *j))
            .unwrap_or_default();
        for j in joins {
            let _ = j.join();
        }
        // A thread handed to a reactor that had already shut down (a migration racing with
        // stop) is still waiting in its queue: tear it down here, on this thread.
        for r in &self.shared.reactors {
            while let Some(t) = r.incoming.pop() {
                t.teardown();
            }
        }
    }
}

struct ReactorLocal {
    shared: Arc<ReactorShared>,
    rt: Arc<RuntimeShared>,
    epoll: Epoll,
    // Boxed: a thread's address must stay stable while code runs on it, and it moves
    // between reactors.
    #[allow(clippy::vec_box)]
    threads: Vec<Box<ThreadInner>>,
    registered: Vec<RawFd>,
}

fn run_reactor(rt: Arc<RuntimeShared>, shared: Arc<ReactorShared>, pin: bool) {
    if pin && !crate::sys::pin_current(shared.core) {
        tracing::warn!(
            "could not pin reactor {} to core {}",
            shared.index,
            shared.core
        );
    }
    // SAFETY: gettid has no arguments and cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u64;
    shared.tid.store(tid, Ordering::Relaxed);
    let epoll = match Epoll::new() {
        Ok(e) => e,
        Err(e) => {
            tracing::error!("reactor {}: epoll_create failed: {e}", shared.index);
            return;
        }
    };
    if let Err(e) = epoll.add(shared.eventfd.as_raw_fd(), u64::MAX) {
        tracing::error!("reactor {}: cannot watch its eventfd: {e}", shared.index);
        return;
    }
    let mut r = ReactorLocal {
        shared,
        rt,
        epoll,
        threads: Vec::new(),
        registered: Vec::new(),
    };
    r.run();
}

impl ReactorLocal {
    fn adopt_incoming(&mut self) -> usize {
        let mut n = 0;
        while let Some(t) = self.shared.incoming.pop() {
            t.fds_changed.set(true);
            self.threads.push(t);
            n += 1;
        }
        if n > 0 {
            self.publish_threads();
        }
        n
    }

    fn publish_threads(&self) {
        if let Ok(mut l) = self.shared.threads.lock() {
            *l = self.threads.iter().map(|t| t.handle()).collect();
        }
    }

    fn sync_fds(&mut self) {
        if !self.threads.iter().any(|t| t.fds_changed.get()) {
            return;
        }
        let mut want: Vec<RawFd> = Vec::new();
        for t in &self.threads {
            t.fds_changed.set(false);
            want.extend(t.fds.borrow().iter().copied());
        }
        for fd in &self.registered {
            if !want.contains(fd) {
                let _ = self.epoll.remove(*fd);
            }
        }
        for fd in &want {
            if !self.registered.contains(fd) {
                if let Err(e) = self.epoll.add(*fd, *fd as u64) {
                    tracing::warn!("reactor {}: cannot watch fd {fd}: {e}", self.shared.index);
                }
            }
        }
        self.registered = want;
    }

    /// Stops watching the fds `t` registered (it is leaving this reactor or exiting). Threads
    /// that remain re-register theirs in `sync_fds` if they shared one.
    fn release_fds(&mut self, t: &ThreadInner) {
        for fd in t.fds.borrow().iter() {
            if self.registered.contains(fd) {
                let _ = self.epoll.remove(*fd);
                self.registered.retain(|x| x != fd);
            }
        }
    }

    /// Removes exited threads and hands migrating ones to their new reactor.
    fn housekeeping(&mut self) {
        let mut i = 0;
        let mut changed = false;
        let mut outgoing: Vec<(Box<ThreadInner>, usize)> = Vec::new();
        while i < self.threads.len() {
            let t = &self.threads[i];
            if t.exit_requested.get() {
                let t = self.threads.swap_remove(i);
                // Before teardown: its fds must not keep waking this reactor (sync_fds does
                // nothing when no thread is left to notice a change).
                self.release_fds(&t);
                t.teardown();
                changed = true;
                continue;
            }
            let target = t.shared.move_to.swap(NO_REACTOR, Ordering::AcqRel);
            if target != NO_REACTOR && target != self.shared.index {
                let t = self.threads.swap_remove(i);
                self.release_fds(&t);
                changed = true;
                outgoing.push((t, target));
                continue;
            }
            i += 1;
        }
        if !changed {
            return;
        }
        // Publish before handing threads over, so that no snapshot lists a moving thread on
        // two reactors at once.
        self.publish_threads();
        let mut kept = false;
        for (t, target) in outgoing {
            if let Err((t, e)) = self.rt.try_place(t, target) {
                // Keep it here (a stopping runtime tears it down with this reactor's threads)
                // instead of dropping it without a teardown.
                tracing::error!(
                    "thread '{}' could not move to reactor {target}: {e}",
                    t.shared.name
                );
                self.threads.push(t);
                kept = true;
            }
        }
        if kept {
            self.publish_threads();
        }
        for t in &self.threads {
            t.fds_changed.set(true);
        }
    }

    fn run(&mut self) {
        let mut last_busy = clock::ticks();
        loop {
            if self.rt.stop.load(Ordering::Acquire) {
                self.shutdown();
                return;
            }
            let mut work = self.adopt_incoming();
            let start = clock::ticks();
            let mut t0 = start;
            for t in &self.threads {
                let w = t.poll(t0);
                let t1 = clock::ticks();
                let d = t1.wrapping_sub(t0);
                let counter = if w > 0 {
                    &t.shared.busy_ticks
                } else {
                    &t.shared.idle_ticks
                };
                // Single writer (this reactor): a plain load/store avoids a locked add.
                counter.store(
                    counter.load(Ordering::Relaxed).wrapping_add(d),
                    Ordering::Relaxed,
                );
                work += w;
                t0 = t1;
            }
            let d = t0.wrapping_sub(start);
            let counter = if work > 0 {
                &self.shared.busy_ticks
            } else {
                &self.shared.idle_ticks
            };
            counter.store(
                counter.load(Ordering::Relaxed).wrapping_add(d),
                Ordering::Relaxed,
            );
            self.housekeeping();
            self.sync_fds();
            if work > 0 {
                last_busy = t0;
                continue;
            }
            match self.rt.mode {
                PollMode::Poll => continue,
                PollMode::Adaptive if t0.wrapping_sub(last_busy) < self.rt.idle_threshold_ticks => {
                    std::hint::spin_loop();
                    continue;
                }
                _ => {}
            }
            self.try_sleep();
            last_busy = clock::ticks();
        }
    }

    fn try_sleep(&mut self) {
        self.shared.sleeping.store(true, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        let pending = !self.shared.incoming.is_empty()
            || self.rt.stop.load(Ordering::SeqCst)
            || self.threads.iter().any(|t| {
                t.has_pending_work() || t.shared.move_to.load(Ordering::SeqCst) != NO_REACTOR
            });
        if pending {
            self.shared.sleeping.store(false, Ordering::SeqCst);
            return;
        }
        let now = clock::ticks();
        let deadline = self
            .threads
            .iter()
            .map(|t| t.next_deadline())
            .min()
            .unwrap_or(u64::MAX);
        let timeout_ms: i32 = if deadline == u64::MAX {
            1000 // wake once a second anyway, so a bug elsewhere cannot hang us forever
        } else if deadline <= now {
            0
        } else {
            let ns = clock::ticks_to_ns(deadline - now);
            (ns.div_ceil(1_000_000)).min(1000) as i32
        };
        self.shared.sleeps.fetch_add(1, Ordering::Relaxed);
        self.shared.in_interrupt.store(true, Ordering::Relaxed);
        let t0 = clock::ticks();
        if timeout_ms > 0 {
            self.epoll.wait(timeout_ms);
        }
        let slept = clock::ticks().wrapping_sub(t0);
        self.shared.in_interrupt.store(false, Ordering::Relaxed);
        self.shared.sleeping.store(false, Ordering::SeqCst);
        if self.shared.eventfd.drain() {
            self.shared.wakeups.fetch_add(1, Ordering::Relaxed);
        }
        let c = &self.shared.idle_ticks;
        c.store(
            c.load(Ordering::Relaxed).wrapping_add(slept),
            Ordering::Relaxed,
        );
    }

    fn shutdown(&mut self) {
        // Run what is queued (bounded), then drop every thread on this reactor.
        for _ in 0..16 {
            self.adopt_incoming();
            let now = clock::ticks();
            let mut work = 0;
            for t in &self.threads {
                work += t.poll(now);
            }
            if work == 0 {
                break;
            }
        }
        for t in self.threads.drain(..) {
            t.teardown();
        }
        while let Some(t) = self.shared.incoming.pop() {
            t.teardown();
        }
        self.publish_threads();
    }
}
