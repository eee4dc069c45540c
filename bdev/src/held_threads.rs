//! The threads that hold channels of one bdev whose module holds I/O (error, delay): what a
//! reset or a release must reach, one message per thread.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ferrite_reactor::ThreadHandle;

/// The threads with a channel of one bdev, with their channel count.
///
/// Thread contract: `add_thread` and `remove_thread` are called on the channel's thread (at
/// its creation and drop); `run_on_each` on any thread. Control path only: the mutex guards
/// the list, touched when a channel comes or goes and once per reset or release.
#[derive(Default)]
pub struct HolderThreads {
    threads: Mutex<Vec<(ThreadHandle, usize)>>,
}

impl HolderThreads {
    /// Notes a channel on the calling thread (at channel creation).
    pub fn add_thread(&self) {
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
    pub fn remove_thread(&self) {
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

    /// Sends `f` to every thread with a channel; `done` runs once each has run it (on the last
    /// thread to answer, or before this returns). A thread that cannot be reached (gone, with
    /// its channels, or its queue full) is logged, naming `what`, and counted as answered.
    pub fn run_on_each<F>(&self, what: &str, f: F, done: Box<dyn FnOnce() + Send>)
    where
        F: Fn() + Clone + Send + 'static,
    {
        let threads: Vec<ThreadHandle> = self
            .threads
            .lock()
            .map(|t| t.iter().map(|(h, _)| h.clone()).collect())
            .unwrap_or_default();
        // One count per thread, and one for this call, dropped after every message is sent.
        let join = Arc::new(Join {
            left: AtomicUsize::new(threads.len() + 1),
            done: Mutex::new(Some(done)),
        });
        for t in threads {
            let (f, j) = (f.clone(), join.clone());
            if let Err(e) = t.send(move || {
                f();
                j.one_done();
            }) {
                tracing::warn!("{what}: cannot reach thread '{}': {e}", t.name());
                join.one_done();
            }
        }
        join.one_done();
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
