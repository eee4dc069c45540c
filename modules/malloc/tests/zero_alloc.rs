//! The hot-path rule, proven: in steady state, I/O through passthru-on-null and on malloc
//! performs no heap allocation. A counting global allocator counts allocations made on this
//! test's OS thread while a queue-depth-64 workload runs on harness threads.

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
        // SAFETY: the Job outlives the run; set before the first submit, cleared after.
        let job = unsafe { &*j.get() };
        let off = job.next.get();
        job.next.set((off + 8) % job.blocks);
        let write = off % 16 == 0;
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

fn run(bdev: &str) -> u64 {
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
        h.poll_thread(0);
    }
    let before = COMPLETED.load(Ordering::Relaxed);
    ferrite_reactor::alloc_count::start();
    for _ in 0..1500 {
        h.poll_thread(0);
    }
    ferrite_reactor::alloc_count::stop();
    let n = COMPLETED.load(Ordering::Relaxed) - before;
    let allocs = ferrite_reactor::alloc_count::take();
    assert!(n > 50_000, "steady state too short: {n} I/O");
    assert_eq!(FAILED.load(Ordering::Relaxed), 0);
    // Stop: the callbacks must not resubmit any more.
    JOB.with(|j| j.set(std::ptr::null()));
    std::mem::forget(job); // in-flight I/O still refers to its channel; the process ends soon
    std::mem::forget(desc);
    // The harness's threads are torn down without polling: no callback runs after this.
    allocs
}

#[test]
fn steady_state_io_does_not_allocate() {
    // The counter works: an allocation in the window is seen.
    ferrite_reactor::alloc_count::start();
    let b = std::hint::black_box(Box::new(7u64));
    ferrite_reactor::alloc_count::stop();
    drop(b);
    assert_eq!(
        ferrite_reactor::alloc_count::take(),
        1,
        "the counting allocator missed an allocation"
    );

    let mut h = Harness::new(1, 1);
    h.on(0, || {
        ferrite_bdev::register_module(Arc::new(ferrite_passthru::PassthruModule));
        ferrite_null::create(&ferrite_null::NullOpts {
            name: "Null0".into(),
            num_blocks: 1024,
            block_size: 512,
            uuid: None,
            md_size: 0,
        })
        .unwrap();
        ferrite_passthru::create(&ferrite_passthru::PassthruOpts {
            base_bdev_name: "Null0".into(),
            name: "PT0".into(),
            uuid: None,
        })
        .unwrap();
    });
    h.on(0, || {
        ferrite_null::create(&ferrite_null::NullOpts {
            name: "Null1".into(),
            num_blocks: 1024,
            block_size: 512,
            uuid: None,
            md_size: 0,
        })
        .unwrap();
        ferrite_malloc::create(&ferrite_malloc::MallocOpts {
            name: Some("Mal0".into()),
            num_blocks: 1024,
            block_size: 512,
            ..Default::default()
        })
        .unwrap();
        ferrite_malloc::create(&ferrite_malloc::MallocOpts {
            name: Some("MalSplit".into()),
            num_blocks: 1024,
            block_size: 512,
            optimal_io_boundary: 4,
            ..Default::default()
        })
        .unwrap();
    });
    let allocs = run("PT0");
    assert_eq!(
        allocs, 0,
        "passthru-on-null allocated {allocs} times in steady state"
    );
    let allocs = run("Null1");
    assert_eq!(allocs, 0, "null allocated {allocs} times in steady state");
    let allocs = run("Mal0");
    assert_eq!(allocs, 0, "malloc allocated {allocs} times in steady state");
    // Every 8-block I/O crosses the 4-block boundary: the split path, in steady state.
    let allocs = run("MalSplit");
    assert_eq!(
        allocs, 0,
        "malloc with splitting allocated {allocs} times in steady state"
    );
    drop(h);
}
