//! Reset of a delay bdev: as SPDK's delay bdev, a reset aborts every I/O waiting out its
//! latency, on every thread, before it goes on; while it runs, I/O coming back from the base
//! is completed at once (aborted) instead of waiting. Control path only: the data path reads
//! one flag, in the same place as the latency it would otherwise add. An abort naming an I/O
//! waiting out its latency aborts it at once (see `io::abort_named_on_thread`).

use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ferrite_bdev::{AbortTarget, HeldIo};
use ferrite_reactor::ThreadHandle;

use crate::control::Latencies;

/// The threads holding a channel of one delay bdev, and its resets in progress.
#[derive(Default)]
pub(crate) struct Holders {
    /// Threads with a channel, with their channel count.
    threads: Mutex<Vec<(ThreadHandle, usize)>>,
    /// Resets in progress (non-zero: nothing is delayed).
    resetting: AtomicU32,
}

impl Holders {
    /// True while a reset runs (data path: one relaxed load).
    #[inline]
    pub(crate) fn resetting(&self) -> bool {
        self.resetting.load(Ordering::Relaxed) != 0
    }

    /// Notes a channel on the calling thread (at channel creation).
    pub(crate) fn add_thread(&self) {
        let Some(me) = ferrite_reactor::current() else {
            return;
        };
        if let Ok(mut t) = self.threads.lock() {
            match t.iter_mut().find(|(h, _)| h.id() == me.id()) {
                Some((_, n)) => *n += 1,
                None => t.push((me, 1)),
            }
        }
    }

    /// Forgets a channel of the calling thread (at channel drop).
    pub(crate) fn remove_thread(&self) {
        let id = ferrite_reactor::current_id();
        if let Ok(mut t) = self.threads.lock() {
            if let Some(pos) = t.iter().position(|(h, _)| h.id() == id) {
                t[pos].1 -= 1;
                if t[pos].1 == 0 {
                    t.swap_remove(pos);
                }
            }
        }
    }
}

/// The reset hook of one delay bdev (registered with `ferrite_bdev::set_held_io`).
pub(crate) struct ResetHook {
    pub(crate) name: String,
    pub(crate) lat: Arc<Latencies>,
}

impl HeldIo for ResetHook {
    fn reset_start(&self, done: Box<dyn FnOnce() + Send>) {
        let h = &self.lat.holders;
        // The flag first (SeqCst, before the messages): on each thread, an I/O coming back
        // after that thread's abort pass sees it and is not queued.
        h.resetting.fetch_add(1, Ordering::SeqCst);
        let threads: Vec<ThreadHandle> = h
            .threads
            .lock()
            .map(|t| t.iter().map(|(h, _)| h.clone()).collect())
            .unwrap_or_default();
        let join = Arc::new(Join {
            left: AtomicUsize::new(threads.len() + 1),
            done: Mutex::new(Some(done)),
        });
        for t in threads {
            let lat = self.lat.clone();
            let name = self.name.clone();
            let j = join.clone();
            if let Err(e) = t.send(move || {
                let n = crate::io::abort_on_thread(&lat);
                if n > 0 {
                    tracing::info!("delay bdev '{name}': reset aborted {n} delayed I/O");
                }
                j.one_done();
            }) {
                tracing::warn!(
                    "delay bdev '{}': cannot abort delayed I/O on thread '{}': {e}",
                    self.name,
                    t.name()
                );
                join.one_done();
            }
        }
        join.one_done();
    }

    fn reset_end(&self) {
        self.lat.holders.resetting.fetch_sub(1, Ordering::SeqCst);
    }

    /// As SPDK's delay bdev: an abort naming an I/O waiting out its latency completes it
    /// Aborted at once; the others keep waiting.
    fn abort(&self, target: &AbortTarget) -> usize {
        crate::io::abort_named_on_thread(&self.lat, target)
    }
}

/// Counts the threads' answers; the last runs `done`.
struct Join {
    left: AtomicUsize,
    done: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl Join {
    fn one_done(&self) {
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            let d = self.done.lock().ok().and_then(|mut d| d.take());
            if let Some(d) = d {
                d();
            }
        }
    }
}
