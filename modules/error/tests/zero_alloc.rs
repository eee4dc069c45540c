//! The hot-path rule for the error bdev: in steady state, I/O through error-on-null performs
//! no heap allocation — with nothing armed (the fast path) and with `corrupt_data` armed on
//! every read and write (the injection path: a compare-and-swap per I/O, the corruption of a
//! write before it goes down and of a read after it came back). A counting global allocator
//! counts allocations made on this test's OS thread while a queue-depth-64 workload runs.

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

/// Runs a queue-depth-`depth` mix of 4 KiB reads and writes on `bdev` and returns the number of
/// allocations made in steady state. `step_us` advances the virtual clock before each poll;
/// `at_window_start` runs once the warm-up is over, just before counting starts.
fn run(
    bdev: &str,
    depth: usize,
    step_us: u64,
    min_io: u64,
    at_window_start: impl FnOnce(&mut Harness),
) -> u64 {
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
        for _ in 0..depth {
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
    at_window_start(h);
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
fn steady_state_error_io_does_not_allocate() {
    check_counter();
    let mut h = Harness::new(1, 1);
    h.on(0, || {
        ferrite_bdev::register_module(Arc::new(ferrite_error::ErrorModule));
        null("ZNull0");
        null("ZNull1");
        ferrite_error::create(&ferrite_error::ErrorOpts {
            base_name: "ZNull0".into(),
            uuid: None,
        })
        .unwrap();
        ferrite_error::create(&ferrite_error::ErrorOpts {
            base_name: "ZNull1".into(),
            uuid: None,
        })
        .unwrap();
        ferrite_error::inject_error(
            "EE_ZNull1",
            &ferrite_error::InjectOpts {
                io_type: ferrite_error::InjectIoType::All,
                error_type: ferrite_error::ErrorType::CorruptData,
                num: u32::MAX,
                queue_depth: 0,
                corrupt_offset: 100,
                corrupt_value: 0x80,
            },
        )
        .unwrap();
    });
    let allocs = run("EE_ZNull0", 64, 0, 20_000, |_| {});
    assert_eq!(
        allocs, 0,
        "error-on-null (nothing armed) allocated {allocs} times in steady state"
    );
    let allocs = run("EE_ZNull1", 64, 0, 20_000, |_| {});
    assert_eq!(
        allocs, 0,
        "error-on-null (corrupt_data armed) allocated {allocs} times in steady state"
    );
    let s = h
        .on(0, || ferrite_error::injection_status("EE_ZNull1"))
        .unwrap();
    assert!(s[0].injected > 10_000 && s[1].injected > 1_000, "{s:?}");
    drop(h);
}

/// Back-pressure: while the backend answers NOMEM, the bdev layer parks the I/O and retries it
/// every poll; that loop must not allocate either. `nomem` is armed for a fixed number of I/O
/// that lasts through the warm-up into the measured window, then the I/O goes through.
///
/// The depth is above the default per-thread prefill (`bdev_io_cache_size` 256): when the
/// backend recovers, every parked I/O goes down at once, each taking a child, so parents and
/// children need twice the depth. With `bdev_io_cache_size` set to cover that, the recovery
/// burst takes them from the prefilled pool instead of allocating in the measured window.
#[test]
fn nomem_retries_do_not_allocate() {
    check_counter();
    ferrite_bdev::set_options(&ferrite_bdev::BdevOptions {
        bdev_io_pool_size: 65_535,
        bdev_io_cache_size: 2 * NOMEM_DEPTH as u32 + 64,
    })
    .unwrap();
    let mut h = Harness::new(1, 1);
    h.on(0, || {
        ferrite_bdev::register_module(Arc::new(ferrite_error::ErrorModule));
        null("ZNull2");
        ferrite_error::create(&ferrite_error::ErrorOpts {
            base_name: "ZNull2".into(),
            uuid: None,
        })
        .unwrap();
        ferrite_error::inject_error(
            "EE_ZNull2",
            &ferrite_error::InjectOpts {
                io_type: ferrite_error::InjectIoType::All,
                error_type: ferrite_error::ErrorType::Nomem,
                num: NOMEM_INJECTIONS,
                queue_depth: 0,
                corrupt_offset: 0,
                corrupt_value: 0,
            },
        )
        .unwrap();
    });
    let status = |h: &mut Harness| {
        h.on(0, || ferrite_error::injection_status("EE_ZNull2"))
            .unwrap()
    };
    let mut at_start = None;
    let allocs = run("EE_ZNull2", NOMEM_DEPTH, 0, 1_000, |h| {
        at_start = Some(status(h))
    });
    let at_start = at_start.unwrap();
    let at_end = status(&mut h);
    // Reads and writes each have their own count (`All` arms every type): the I/O start as
    // reads, so the read count runs down first, then the write count.
    let injected = |s: &[ferrite_error::SlotStatus]| s[0].injected + s[1].injected;
    assert!(
        at_start[0].remaining > 0 && injected(&at_start) < injected(&at_end),
        "the NOMEM phase did not reach into the measured window: {at_start:?} / {at_end:?}"
    );
    assert!(
        at_end[0].remaining == 0 && at_end[1].remaining == 0,
        "the NOMEM phase did not end inside the run: {at_end:?}"
    );
    assert_eq!(
        allocs, 0,
        "error-on-null answering NOMEM allocated {allocs} times in steady state"
    );
    drop(h);
}

/// Queue depth of the NOMEM test: above the default per-thread prefill of 256.
const NOMEM_DEPTH: usize = 320;

/// How many reads (and then writes) the nomem injection refuses. The parked reads, retried
/// every poll or two, take most of the read count in the 500-poll warm-up; the rest, then the
/// whole write count, go in the first part of the 1500 measured polls (the test asserts both:
/// the phase overlaps the window and ends inside it).
const NOMEM_INJECTIONS: u32 = 125_000;
