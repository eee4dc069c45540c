//! Queue threads that outlive their controller while an abandoned queue waits for its I/O.
//!
//! A queue abandoned at a ring stop (`queue` module docs) still has requests its bdev holds;
//! the completions will run on the queue's thread and point at the queue. If the thread
//! exited when the controller is deleted, the queue could never be freed (it would keep the
//! guest's memory mapped and its bdev channel open until the process exits) and the module
//! below would lose its poller with the I/O in it. So a deleted controller's queue thread
//! exits at once only if no abandoned queue lives on it; otherwise the last such queue to get
//! its I/O back makes it exit, after which the queue, its mapping and its channel are gone.
//! A bdev that never completes keeps the thread (and the queue) until the target stops.
//!
//! Thread contract: every counter of thread `i` is read and written on that thread only
//! (the abandon, the queue's finish and the exit request all run there); atomics only
//! because `CtrlShared` is shared.

use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::Arc;

use super::CtrlShared;

/// One queue thread's abandoned queues and whether its controller asked it to exit.
#[derive(Default)]
pub(crate) struct Lingering {
    queues: AtomicU32,
    exit: AtomicBool,
}

impl CtrlShared {
    /// The queue thread's entry for queue `q` (queue `q` runs on `threads[q % n]`).
    fn lingering_of(&self, q: u16) -> Option<&Lingering> {
        let n = self.threads.len().max(1);
        self.lingering.get(usize::from(q) % n)
    }

    /// Queue `q` was abandoned with I/O outstanding. On the queue's thread.
    pub(crate) fn linger_begin(&self, q: u16) {
        if let Some(l) = self.lingering_of(q) {
            l.queues.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Abandoned queue `q` got its I/O back and finishes: if the controller was deleted
    /// meanwhile and it was the thread's last one, the thread exits (after this poll). On
    /// the queue's thread.
    pub(crate) fn linger_end(&self, q: u16) {
        let Some(l) = self.lingering_of(q) else {
            return;
        };
        let before = l.queues.fetch_sub(1, Ordering::Relaxed);
        debug_assert!(before > 0, "linger_end without linger_begin");
        if before == 1 && l.exit.load(Ordering::Relaxed) {
            tracing::info!(
                "vhost controller '{}': abandoned queue {q} got its I/O back; its thread exits",
                self.name
            );
            ferrite_reactor::exit_current();
        }
    }

    /// Asks queue thread `i` to exit: now, or when its last abandoned queue finishes. On
    /// thread `i`.
    fn exit_thread(&self, i: usize) {
        let Some(l) = self.lingering.get(i) else {
            return ferrite_reactor::exit_current();
        };
        let n = l.queues.load(Ordering::Relaxed);
        if n == 0 {
            return ferrite_reactor::exit_current();
        }
        l.exit.store(true, Ordering::Relaxed);
        tracing::warn!(
            "vhost controller '{}': queue thread {i} stays until the bdev gives back the I/O of its {n} abandoned queue(s)",
            self.name
        );
    }
}

/// Makes every queue thread of the controller exit (see the module docs). Any thread.
pub(crate) fn exit_threads(shared: &Arc<CtrlShared>) {
    for (i, t) in shared.threads.iter().enumerate() {
        let s = shared.clone();
        let _ = t.send(move || s.exit_thread(i));
    }
}
