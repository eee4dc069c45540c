//! Reset of a delay bdev: as SPDK's delay bdev, a reset aborts every I/O waiting out its
//! latency, on every thread, before it goes on; while it runs, I/O coming back from the base
//! is completed at once (aborted) instead of waiting. Control path only: the data path reads
//! one flag, in the same place as the latency it would otherwise add. An abort naming an I/O
//! waiting out its latency aborts it at once (see `io::abort_named_on_thread`).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use ferrite_bdev::{AbortTarget, HeldIo, HolderThreads};

use crate::control::Latencies;

/// The threads holding a channel of one delay bdev, and its resets in progress.
#[derive(Default)]
pub(crate) struct Holders {
    /// Threads with a channel.
    pub(crate) threads: HolderThreads,
    /// Resets in progress (non-zero: nothing is delayed).
    resetting: AtomicU32,
}

impl Holders {
    /// True while a reset runs (data path: one relaxed load).
    #[inline]
    pub(crate) fn resetting(&self) -> bool {
        self.resetting.load(Ordering::Relaxed) != 0
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
        let (lat, name) = (self.lat.clone(), self.name.clone());
        let what = format!("delay bdev '{}': aborting delayed I/O", self.name);
        h.threads.run_on_each(
            &what,
            move || {
                let n = crate::io::abort_on_thread(&lat);
                if n > 0 {
                    tracing::info!("delay bdev '{name}': reset aborted {n} delayed I/O");
                }
            },
            done,
        );
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
