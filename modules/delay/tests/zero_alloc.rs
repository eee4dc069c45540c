//! The hot-path rule for the delay bdev: in steady state, I/O through delay-on-null performs
//! no heap allocation — every I/O is forwarded, held in its channel's pre-sized queue until its
//! delay expires on the harness's virtual clock, and released by the channel's poller. A
//! counting global allocator counts allocations made on this test's OS thread while a
//! queue-depth-64 workload runs.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ferrite_bdev::{BdevChannel, BdevIo, Desc, DmaBuf, IoStatus};
use ferrite_reactor::harness::Harness;

#[global_allocator]
static GLOBAL: ferrite_reactor::alloc_count::CountingAlloc =
    ferrite_reactor::alloc_count::CountingAlloc;

static COMPLETED: AtomicU64 = AtomicU64::new(0);
static FAILED: AtomicU64 = AtomicU64::new(0);

struct Job {
    ch: BdevChannel,
    blocks: u64,
    next: Cell<u64>,
}

thread_local! {
    // The job of the harness thread being driven (one job, one OS thread in this test).
    static JOB: Cell<*const Job> = const { Cell::new(std::ptr::null()) };
}

fn resubmit(mut io: Box<BdevIo>) {
    JOB.with(|j| {
        let p = j.get();
        if p.is_null() {
            return ferrite_bdev::free_io(io);
        }
        // SAFETY: the Job outlives the run; set before the first submit, cleared after.
        let job = unsafe { &*p };
        let off = job.next.get();
        job.next.set((off + 8) % job.blocks);
        let write = off.is_multiple_of(16);
        let t = if write {
            BdevIo::prep_write
        } else {
            BdevIo::prep_read
        };
        t(&mut io, off, 8, done);
        job.ch.submit(io);
    });
}

fn done(io: Box<BdevIo>) {
    COMPLETED.fetch_add(1, Ordering::Relaxed);
    if io.status() != IoStatus::Success {
        FAILED.fetch_add(1, Ordering::Relaxed);
    }
    resubmit(io);
}

/// Runs a queue-depth-64 mix of 4 KiB reads and writes on `bdev` and returns the number of
/// allocations made in steady state. `step_us` advances the virtual clock before each poll.
fn run(bdev: &str, step_us: u64, min_io: u64) -> u64 {
    let mut h = Harness::new(1, 1);
    let h = &mut h;
    let desc = h.on(0, || Desc::open(bdev, true, |_| {}).unwrap());
    let job = Box::new(Job {
        ch: h.on(0, || desc.channel().unwrap()),
        blocks: 1024,
        next: Cell::new(0),
    });
    JOB.with(|j| j.set(&*job as *const Job));
    h.on(0, || {
        for _ in 0..64 {
            let mut io = job.ch.alloc_io().unwrap();
            // Each I/O owns a 4 KiB buffer for its whole life: reads and writes reuse it.
            io.attach_buf(DmaBuf::get(4096).unwrap().unwrap());
            io.prep_read(0, 8, done);
            job.ch.submit(io);
        }
    });
    // Warm up: pools, queues and caches reach their steady size.
    for _ in 0..500 {
        h.advance_us(step_us);
        h.poll_thread(0);
    }
    let before = COMPLETED.load(Ordering::Relaxed);
    ferrite_reactor::alloc_count::start();
    for _ in 0..1500 {
        h.advance_us(step_us);
        h.poll_thread(0);
    }
    ferrite_reactor::alloc_count::stop();
    let n = COMPLETED.load(Ordering::Relaxed) - before;
    let allocs = ferrite_reactor::alloc_count::take();
    assert!(n > min_io, "steady state too short: {n} I/O");
    assert_eq!(FAILED.load(Ordering::Relaxed), 0);
    // Stop: the callbacks must not resubmit any more.
    JOB.with(|j| j.set(std::ptr::null()));
    std::mem::forget(job); // in-flight I/O still refers to its channel; the process ends soon
    std::mem::forget(desc);
    // The harness's threads are torn down without polling: no callback runs after this.
    allocs
}

/// The counter works: an allocation in the window is seen.
fn check_counter() {
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

fn null(name: &str) {
    ferrite_null::create(&ferrite_null::NullOpts {
        name: name.into(),
        num_blocks: 1024,
        block_size: 512,
        uuid: None,
        md_size: 0,
    })
    .unwrap();
}

#[test]
fn steady_state_delay_io_does_not_allocate() {
    check_counter();
    let mut h = Harness::new(1, 1);
    h.on(0, || {
        ferrite_bdev::register_module(Arc::new(ferrite_delay::DelayModule));
        null("DNull0");
        ferrite_delay::create(&ferrite_delay::DelayOpts {
            base_bdev_name: "DNull0".into(),
            name: "ZDelay0".into(),
            uuid: None,
            avg_read_latency: 3,
            p99_read_latency: 20,
            avg_write_latency: 4,
            p99_write_latency: 30,
        })
        .unwrap();
    });
    // One virtual microsecond per poll: every I/O is held for several polls.
    let allocs = run("ZDelay0", 1, 5_000);
    assert_eq!(
        allocs, 0,
        "delay-on-null allocated {allocs} times in steady state"
    );
    drop(h);
}
