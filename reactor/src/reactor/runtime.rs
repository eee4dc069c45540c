//! The running set of reactors: start, spawn threads, snapshots, stop.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_queue::ArrayQueue;

use super::event_loop::run_reactor;
use super::shared::{ReactorShared, RuntimeShared};
use super::{PollMode, RuntimeConfig};
use crate::clock;
use crate::error::{ReactorError, Result};
use crate::sys::EventFd;
use crate::thread::{Scheduler, ThreadHandle, ThreadInner};

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
            kernel_wait_ticks: clock::us_to_ticks(cfg.kernel_wait_us),
            queue_depth: cfg.queue_depth,
            next_rr: AtomicUsize::new(0),
            // Bounded, so the cast below cannot wrap.
            max_sleep_ms: cfg.max_sleep_ms.clamp(1, super::config::MAX_SLEEP_MS_LIMIT) as i32,
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
