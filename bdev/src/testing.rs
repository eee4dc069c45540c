//! The driver of the zero-allocation steady-state tests (feature `testing`, for modules'
//! tests only): keeps a fixed number of 4 KiB reads and writes going to a bdev from one harness
//! thread, each I/O resubmitted from its completion callback, and counts the heap allocations
//! made on the test's OS thread in a window (`ferrite_reactor::alloc_count`; the test binary
//! installs `CountingAlloc` as its global allocator).
//!
//! The workload: I/O `k` of the job goes to block offset `8k mod blocks`, writes where that
//! offset is a multiple of 16, reads elsewhere; each I/O owns a 4 KiB DMA pool buffer for its
//! whole life, or a 4 KiB slice of a caller's heap area (bounced by backends that need shared
//! memory). [`Driver::open_sized`] gives another shape: I/O of `n` blocks at multiples of `n`,
//! every `w`-th one a write (for layouts whose interesting I/O is not 4 KiB: strips crossed,
//! full stripes).
//!
//! Thread contract: everything runs on the test's OS thread, which drives the harness; the
//! completion callbacks run inside `Harness::poll_thread`. One driver at a time per OS thread.
//!
//! The counts ([`completed`], [`failed`]) belong to the OS thread's current driver: they are
//! plain thread-local cells (no atomics, no allocation on the I/O path) reset when a driver is
//! opened, so tests of one binary running in parallel threads of one process (`cargo test`)
//! never count each other's I/O.

use std::cell::Cell;
use std::time::{Duration, Instant};

use ferrite_reactor::harness::Harness;

use crate::{BdevChannel, BdevIo, Desc, DmaBuf, IoStatus, IoVec};

struct Job {
    ch: BdevChannel,
    blocks: u64,
    next: Cell<u64>,
    heap: Option<*mut u8>,
    /// `open_sized`: blocks per I/O and one write in this many (0: the 4 KiB workload).
    sized: Option<(u64, u64)>,
}

/// What a driver keeps on its OS thread: one thread-local, reached once per completion.
struct Local {
    /// The job being driven on this OS thread (null: stop resubmitting).
    job: Cell<*const Job>,
    /// I/O completed since the current driver was opened.
    completed: Cell<u64>,
    /// Of those, the ones with a status other than success.
    failed: Cell<u64>,
}

thread_local! {
    static LOCAL: Local = const {
        Local {
            job: Cell::new(std::ptr::null()),
            completed: Cell::new(0),
            failed: Cell::new(0),
        }
    };
}

fn resubmit(io: Box<BdevIo>) {
    LOCAL.with(|l| resubmit_on(l, io));
}

fn resubmit_on(l: &Local, mut io: Box<BdevIo>) {
    {
        let p = l.job.get();
        if p.is_null() {
            return crate::free_io(io);
        }
        // SAFETY: the Job outlives its run: set before the first submit, cleared before it is
        // dropped or leaked (`Driver::forget` / `Driver::close`).
        let job = unsafe { &*p };
        if let Some((n, write_every)) = job.sized {
            let i = job.next.get();
            job.next.set(i + 1);
            let off = (i * n) % (job.blocks - n + 1) / n * n;
            if i % write_every == 0 {
                io.prep_write(off, n, done);
            } else {
                io.prep_read(off, n, done);
            }
            return job.ch.submit(io);
        }
        let off = job.next.get();
        job.next.set((off + 8) % job.blocks);
        if off.is_multiple_of(16) {
            io.prep_write(off, 8, done);
        } else {
            io.prep_read(off, 8, done);
        }
        if let Some(h) = job.heap {
            // SAFETY: user[0] indexes this I/O's own 4 KiB in the caller's heap area, which
            // holds one per I/O started (`Driver::open`'s contract) and outlives the run.
            let base = unsafe { h.add(io.user[0] as usize * 4096) };
            // SAFETY: the 4 KiB at `base` are owned by this I/O for the whole run.
            unsafe { io.set_iovs(&[IoVec { base, len: 4096 }]) };
        }
        job.ch.submit(io);
    }
}

fn done(io: Box<BdevIo>) {
    LOCAL.with(|l| {
        l.completed.set(l.completed.get() + 1);
        if io.status() != IoStatus::Success {
            l.failed.set(l.failed.get() + 1);
        }
        resubmit_on(l, io);
    });
}

/// I/O completed by this OS thread's current driver (the last one opened on it) so far,
/// including any completed after it stopped resubmitting. Other threads' drivers are not
/// counted.
pub fn completed() -> u64 {
    LOCAL.with(|l| l.completed.get())
}

/// I/O of this OS thread's current driver that completed with a status other than success.
pub fn failed() -> u64 {
    LOCAL.with(|l| l.failed.get())
}

/// Asserts that the counting allocator sees an allocation made in its window (the test binary
/// installed it).
pub fn check_counter() {
    ferrite_reactor::alloc_count::start();
    let b = std::hint::black_box(Box::new(7u64));
    ferrite_reactor::alloc_count::stop();
    drop(b);
    assert_eq!(
        ferrite_reactor::alloc_count::take(),
        1,
        "the counting allocator missed an allocation"
    );
}

/// A job on one bdev, driven from harness thread 0.
pub struct Driver {
    job: Box<Job>,
    desc: Desc,
    started: Cell<u64>,
}

impl Driver {
    /// Opens `bdev` (writable) and a channel on harness thread 0, for I/O over its first
    /// `blocks` blocks (of 512 bytes). With `heap`, I/O number `k` reads and writes the 4 KiB at
    /// `heap + 4096 k`: the area must hold one such slice per I/O started and outlive the
    /// driver. No I/O is started yet.
    pub fn open(h: &mut Harness, bdev: &str, blocks: u64, heap: Option<*mut u8>) -> Self {
        Self::open_job(h, bdev, blocks, heap, None)
    }

    /// As [`Driver::open`] without a heap area, for I/O of `io_blocks` blocks (of 512 bytes)
    /// at block offsets that are multiples of it within the first `blocks`; I/O number `k`
    /// is a write when `k` is a multiple of `write_every` (1: writes only), a read otherwise.
    /// Each I/O [`Driver::start`] starts owns a pool buffer of `io_blocks` blocks.
    pub fn open_sized(
        h: &mut Harness,
        bdev: &str,
        blocks: u64,
        io_blocks: u64,
        write_every: u64,
    ) -> Self {
        assert!(
            io_blocks > 0 && io_blocks <= blocks && write_every > 0,
            "open_sized: {io_blocks} blocks per I/O over {blocks}, a write every {write_every}"
        );
        Self::open_job(h, bdev, blocks, None, Some((io_blocks, write_every)))
    }

    fn open_job(
        h: &mut Harness,
        bdev: &str,
        blocks: u64,
        heap: Option<*mut u8>,
        sized: Option<(u64, u64)>,
    ) -> Self {
        let desc = h.on(0, || {
            Desc::open(bdev, true, |_| {})
                .unwrap_or_else(|e| panic!("cannot open bdev '{bdev}': {e}"))
        });
        let ch = h.on(0, || {
            desc.channel()
                .unwrap_or_else(|e| panic!("no channel on '{bdev}': {e}"))
        });
        let job = Box::new(Job {
            ch,
            blocks,
            next: Cell::new(0),
            heap,
            sized,
        });
        LOCAL.with(|l| {
            l.job.set(&*job as *const Job);
            l.completed.set(0);
            l.failed.set(0);
        });
        Self {
            job,
            desc,
            started: Cell::new(0),
        }
    }

    /// Starts `n` more I/O, each with its own 4 KiB pool buffer (`open_sized`: of its I/O
    /// size).
    pub fn start(&self, h: &mut Harness, n: usize) {
        let bytes = self.job.sized.map_or(4096, |(b, _)| b as usize * 512);
        h.on(0, || {
            for _ in 0..n {
                let mut io = self.job.ch.alloc_io().expect("an I/O object");
                io.attach_buf(
                    DmaBuf::get(bytes)
                        .expect("the DMA pool")
                        .expect("a buffer of the I/O size"),
                );
                io.user[0] = self.started.get();
                self.started.set(self.started.get() + 1);
                resubmit(io);
            }
        });
    }

    /// Polls harness thread 0 `polls` times, advancing the virtual clock by `step_us` before
    /// each poll.
    pub fn poll(&self, h: &mut Harness, polls: usize, step_us: u64) {
        for _ in 0..polls {
            h.advance_us(step_us);
            h.poll_thread(0);
        }
    }

    /// Polls harness thread 0 until `ios` more I/O completed or `limit` passed (for backends
    /// that complete in real time).
    pub fn poll_for(&self, h: &mut Harness, ios: u64, limit: Duration) {
        let start = completed();
        let deadline = Instant::now() + limit;
        while completed() - start < ios && Instant::now() < deadline {
            h.poll_thread(0);
        }
    }

    /// Runs `f` with the allocation counter on; returns the allocations counted and the I/O
    /// completed meanwhile.
    pub fn measure(&self, h: &mut Harness, f: impl FnOnce(&mut Harness)) -> Window {
        let before = completed();
        ferrite_reactor::alloc_count::start();
        f(h);
        ferrite_reactor::alloc_count::stop();
        Window {
            ios: completed() - before,
            allocs: ferrite_reactor::alloc_count::take(),
        }
    }

    /// Stops resubmitting, waits up to `limit` for the I/O in flight, then closes the channel
    /// and the descriptor on harness thread 0.
    pub fn close(self, h: &mut Harness, limit: Duration) {
        LOCAL.with(|l| l.job.set(std::ptr::null()));
        let deadline = Instant::now() + limit;
        while h.on(0, || self.job.ch.inflight()) > 0 && Instant::now() < deadline {
            h.poll_thread(0);
        }
        let Self { job, desc, .. } = self;
        h.on(0, || drop(job));
        h.on(0, || drop(desc));
    }

    /// Stops resubmitting and leaks the job and descriptor: I/O still in flight refers to its
    /// channel, and the harness is torn down without polling again (no callback runs after
    /// this; the test process ends soon).
    pub fn forget(self) {
        LOCAL.with(|l| l.job.set(std::ptr::null()));
        std::mem::forget(self);
    }
}

/// What a measured window saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    /// I/O completed in the window.
    pub ios: u64,
    /// Heap allocations on this OS thread in the window.
    pub allocs: u64,
}

/// The usual run: on a new one-thread harness, `depth` I/O over 1024 blocks of `bdev`, 500
/// polls of warm-up and 1500 measured, the virtual clock advancing `step_us` before each poll;
/// `at_window_start` runs just before the counting starts. Asserts that more than `min_io` I/O
/// completed in the window and none failed; returns the allocations counted.
pub fn steady_state(
    bdev: &str,
    depth: usize,
    step_us: u64,
    min_io: u64,
    at_window_start: impl FnOnce(&mut Harness),
) -> u64 {
    let mut h = Harness::new(1, 1);
    let d = Driver::open(&mut h, bdev, 1024, None);
    d.start(&mut h, depth);
    d.poll(&mut h, 500, step_us);
    at_window_start(&mut h);
    let w = d.measure(&mut h, |h| d.poll(h, 1500, step_us));
    assert!(
        w.ios > min_io,
        "'{bdev}': steady state too short: {} I/O",
        w.ios
    );
    assert_eq!(failed(), 0, "'{bdev}': I/O failed");
    d.forget();
    // The harness's threads are torn down without polling: no callback runs after this.
    w.allocs
}
