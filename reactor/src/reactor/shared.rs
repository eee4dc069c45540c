//! Reactor and runtime state that other threads read or signal, and placing a thread on a
//! reactor.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crossbeam_queue::ArrayQueue;

use super::PollMode;
use crate::error::{ErrorKind, ReactorError, Result};
use crate::sys::EventFd;
use crate::thread::{Scheduler, ThreadHandle, ThreadInner, ThreadShared};

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

pub(crate) struct RuntimeShared {
    pub reactors: Vec<Arc<ReactorShared>>,
    pub stop: AtomicBool,
    pub mode: PollMode,
    pub idle_threshold_ticks: u64,
    pub kernel_wait_ticks: u64,
    pub queue_depth: usize,
    pub next_rr: AtomicUsize,
    /// [`crate::RuntimeConfig::max_sleep_ms`], bounded.
    pub max_sleep_ms: i32,
}

impl RuntimeShared {
    /// Hands `thread` to reactor `idx` (which must exist). On failure the thread is given
    /// back, so that the caller can keep it rather than drop it without a teardown.
    #[allow(clippy::result_large_err)]
    pub(super) fn try_place(
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
