//! A deterministic harness: N lightweight threads driven from one OS thread, in an order
//! chosen by a seeded generator, with a virtual clock. Used by the unit tests of reactor/ and
//! bdev/ (and by any module's tests) to reproduce interleavings exactly.
//!
//! Thread contract: a `Harness` lives on one OS thread; the threads it creates are only ever
//! polled by it. Messages sent to them from other OS threads are queued and run when the
//! harness polls.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{ErrorKind, ReactorError, Result};
use crate::thread::{Scheduler, ThreadHandle, ThreadInner, ThreadShared};

struct HarnessSched {
    // Boxed: a thread's address must stay stable while code runs on it.
    #[allow(clippy::vec_box)]
    adopted: Mutex<Vec<Box<ThreadInner>>>,
    wakes: AtomicU64,
}

impl Scheduler for HarnessSched {
    fn wake(&self, _thread: &ThreadShared) {
        self.wakes.fetch_add(1, Ordering::Relaxed);
    }
    fn place(&self, thread: Box<ThreadInner>, _reactor: Option<usize>) -> Result<()> {
        self.adopted
            .lock()
            .map_err(|_| ReactorError::new(ErrorKind::NotRunning, "harness poisoned"))?
            .push(thread);
        Ok(())
    }
    fn reactor_count(&self) -> usize {
        1
    }
}

/// Drives lightweight threads deterministically. Dropping it tears every thread down.
pub struct Harness {
    threads: Vec<Option<Box<ThreadInner>>>,
    sched: Arc<HarnessSched>,
    rng: u64,
    /// Virtual time in µs; `now` is its value in ticks, converted from the total so that
    /// rounding never accumulates (ten steps of 100 µs are exactly one of 1000 µs).
    now_us: u64,
    now: u64,
}

/// Spreads every bit of `seed` over the generator's state (splitmix64), so that seeds that
/// differ in any bit give unrelated orders; xorshift needs a non-zero state.
fn mix_seed(seed: u64) -> u64 {
    let mut z = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^= z >> 31;
    if z == 0 {
        0x2545_F491_4F6C_DD1D
    } else {
        z
    }
}

/// Upper bound on iterations of [`Harness::run_until_idle`] before it declares a livelock.
pub const MAX_IDLE_ROUNDS: usize = 100_000;

impl Harness {
    /// Creates `n` threads named `t0`..`tN`, with a generator seeded by `seed`.
    pub fn new(n: usize, seed: u64) -> Self {
        let sched = Arc::new(HarnessSched {
            adopted: Mutex::new(Vec::new()),
            wakes: AtomicU64::new(0),
        });
        let mut h = Harness {
            threads: Vec::new(),
            sched,
            rng: mix_seed(seed),
            now_us: 0,
            now: 0,
        };
        for i in 0..n {
            h.add_thread(&format!("t{i}"));
        }
        h
    }

    /// Adds a thread; returns its index.
    pub fn add_thread(&mut self, name: &str) -> usize {
        let t = ThreadInner::new(name, self.sched.clone(), crate::thread::DEFAULT_QUEUE_DEPTH);
        self.threads.push(Some(t));
        self.threads.len() - 1
    }

    /// Adds a thread with a message queue of `depth` entries (to test full queues).
    pub fn add_thread_with_depth(&mut self, name: &str, depth: usize) -> usize {
        let t = ThreadInner::new(name, self.sched.clone(), depth);
        self.threads.push(Some(t));
        self.threads.len() - 1
    }

    /// Tears thread `i` down now (its pollers, channels and locals are dropped on it).
    pub fn remove_thread(&mut self, i: usize) {
        if let Some(t) = self.threads.get_mut(i).and_then(Option::take) {
            t.teardown();
        }
    }

    /// Number of thread slots (removed threads keep their index).
    pub fn len(&self) -> usize {
        self.threads.len()
    }

    /// True if no thread was ever added.
    pub fn is_empty(&self) -> bool {
        self.threads.is_empty()
    }

    /// Handle of thread `i`. Panics if it was removed.
    pub fn handle(&self, i: usize) -> ThreadHandle {
        match &self.threads[i] {
            Some(t) => t.handle(),
            None => panic!("harness thread {i} was removed"),
        }
    }

    /// Runs `f` on thread `i` now, as if from one of its messages, and returns its result.
    /// The thread sees the current virtual time (timed pollers registered here are due one
    /// period from now).
    pub fn on<R>(&mut self, i: usize, f: impl FnOnce() -> R) -> R {
        match &self.threads[i] {
            Some(t) => {
                t.now.set(self.now);
                t.enter(f)
            }
            None => panic!("harness thread {i} was removed"),
        }
    }

    /// The virtual clock, in ticks.
    pub fn now(&self) -> u64 {
        self.now
    }

    /// Advances the virtual clock by `us` microseconds (timed pollers become due).
    pub fn advance_us(&mut self, us: u64) {
        self.now_us = self.now_us.saturating_add(us);
        self.now = crate::clock::us_to_ticks(self.now_us);
    }

    /// Number of wake-ups requested (messages sent to harness threads).
    pub fn wakes(&self) -> u64 {
        self.sched.wakes.load(Ordering::Relaxed)
    }

    fn adopt(&mut self) {
        let adopted = self
            .sched
            .adopted
            .lock()
            .map(|mut a| std::mem::take(&mut *a))
            .unwrap_or_default();
        for t in adopted {
            self.threads.push(Some(t));
        }
    }

    fn next_rand(&mut self) -> u64 {
        // xorshift64*: tiny, deterministic, good enough to shuffle poll order.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Polls thread `i` once; returns its work. The real time the poll took is added to the
    /// thread's busy or idle ticks, as a reactor does.
    pub fn poll_thread(&mut self, i: usize) -> usize {
        self.adopt();
        let now = self.now;
        let w = match &self.threads[i] {
            Some(t) => {
                let t0 = crate::clock::ticks();
                let w = t.poll(now);
                let d = crate::clock::ticks().wrapping_sub(t0).max(1);
                let counter = if w > 0 {
                    &t.shared.busy_ticks
                } else {
                    &t.shared.idle_ticks
                };
                counter.fetch_add(d, Ordering::Relaxed);
                w
            }
            None => 0,
        };
        self.reap(i);
        w
    }

    /// True when no thread has a message queued or a poller waiting to be installed (a round
    /// that did no work may still have queued some, e.g. from a destructor).
    fn quiescent(&self) -> bool {
        self.sched
            .adopted
            .lock()
            .map(|a| a.is_empty())
            .unwrap_or(true)
            && self
                .threads
                .iter()
                .flatten()
                .all(|t| t.shared.queue.is_empty() && t.pending.borrow().is_empty())
    }

    fn reap(&mut self, i: usize) {
        let exit = self.threads[i]
            .as_ref()
            .map(|t| t.exit_requested.get())
            .unwrap_or(false);
        if exit {
            self.remove_thread(i);
        }
    }

    /// Polls every live thread once, in a seeded random order; returns the total work.
    pub fn poll_all(&mut self) -> usize {
        self.adopt();
        let mut order: Vec<usize> = (0..self.threads.len()).collect();
        for k in (1..order.len()).rev() {
            let j = (self.next_rand() % (k as u64 + 1)) as usize;
            order.swap(k, j);
        }
        let mut work = 0;
        for i in order {
            work += self.poll_thread(i);
        }
        work
    }

    /// Polls until a full round does no work. Panics (a livelock is a test failure) after
    /// [`MAX_IDLE_ROUNDS`] rounds.
    pub fn run_until_idle(&mut self) -> usize {
        let mut total = 0;
        for _ in 0..MAX_IDLE_ROUNDS {
            let w = self.poll_all();
            total += w;
            if w == 0 && self.quiescent() {
                return total;
            }
        }
        panic!("harness did not become idle after {MAX_IDLE_ROUNDS} rounds");
    }

    /// Polls until `cond` holds, at most `max_rounds` rounds; returns whether it held.
    pub fn run_until(&mut self, max_rounds: usize, mut cond: impl FnMut() -> bool) -> bool {
        for _ in 0..max_rounds {
            if cond() {
                return true;
            }
            self.poll_all();
        }
        cond()
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        for i in 0..self.threads.len() {
            self.remove_thread(i);
        }
        self.adopt();
        for i in 0..self.threads.len() {
            self.remove_thread(i);
        }
    }
}
