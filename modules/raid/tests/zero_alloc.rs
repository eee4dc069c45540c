//! The hot-path rule for the raid data path: in steady state, reads and writes through
//! raid0 (crossing strips; and within strips over two members, the bdev layer's striped
//! route), concat (crossing members), raid1 (mixed, and writes only),
//! degraded raid1 with a persisted
//! write-intent bitmap, and raid5f (full-stripe writes, reads within a stripe) perform no heap
//! allocation. A counting global allocator counts
//! allocations made on this test's OS thread while a queue-depth-32 workload runs on a
//! harness thread.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ferrite_bdev::{BdevChannel, BdevIo, Desc, DmaBuf, IoStatus};
use ferrite_reactor::harness::Harness;

#[global_allocator]
static GLOBAL: ferrite_reactor::alloc_count::CountingAlloc =
    ferrite_reactor::alloc_count::CountingAlloc;

static COMPLETED: AtomicU64 = AtomicU64::new(0);
/// One I/O in this many is a write (1: writes only).
static WRITE_EVERY: AtomicU64 = AtomicU64::new(3);
static FAILED: AtomicU64 = AtomicU64::new(0);

struct Job {
    ch: BdevChannel,
    blocks: u64,
    /// Blocks per I/O; writes go to multiples of it.
    size: u64,
    next: Cell<u64>,
}

thread_local! {
    static JOB: Cell<*const Job> = const { Cell::new(std::ptr::null()) };
}

fn resubmit(mut io: Box<BdevIo>) {
    JOB.with(|j| {
        if j.get().is_null() {
            // The run is over: let the I/O go.
            return ferrite_bdev::free_io(io);
        }
        // SAFETY: the Job outlives the run; set before the first submit, cleared after.
        let job = unsafe { &*j.get() };
        let i = job.next.get();
        job.next.set(i + 1);
        let off = (i * job.size) % (job.blocks - job.size + 1) / job.size * job.size;
        if i % WRITE_EVERY.load(Ordering::Relaxed) == 0 {
            io.prep_write(off, job.size, done);
        } else {
            io.prep_read(off, job.size, done);
        }
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

fn run(h: &mut Harness, bdev: &str, size: u64) -> u64 {
    let name = bdev.to_string();
    let desc = h.on(0, move || Desc::open(&name, true, |_| {}).unwrap());
    let blocks = desc.bdev().num_blocks();
    let job = Box::new(Job {
        ch: h.on(0, || desc.channel().unwrap()),
        blocks,
        size,
        next: Cell::new(0),
    });
    JOB.with(|j| j.set(&*job as *const Job));
    h.on(0, || {
        for _ in 0..32 {
            let mut io = job.ch.alloc_io().unwrap();
            io.attach_buf(DmaBuf::get(size as usize * 512).unwrap().unwrap());
            io.prep_read(0, size, done);
            job.ch.submit(io);
        }
    });
    for _ in 0..500 {
        h.poll_thread(0);
    }
    let before = COMPLETED.load(Ordering::Relaxed);
    ferrite_reactor::alloc_count::start();
    for _ in 0..1000 {
        h.poll_thread(0);
    }
    ferrite_reactor::alloc_count::stop();
    let n = COMPLETED.load(Ordering::Relaxed) - before;
    let allocs = ferrite_reactor::alloc_count::take();
    assert!(n > 10_000, "{bdev}: steady state too short: {n} I/O");
    assert_eq!(FAILED.load(Ordering::Relaxed), 0, "{bdev}: failed I/O");
    // Stop: the callbacks free the I/O from now on; drain, then close.
    JOB.with(|j| j.set(std::ptr::null()));
    h.run_until_idle();
    assert_eq!(h.on(0, || job.ch.inflight()), 0);
    h.on(0, move || drop(job));
    h.on(0, move || drop(desc));
    h.run_until_idle();
    allocs
}

#[test]
fn steady_state_raid_io_does_not_allocate() {
    ferrite_reactor::alloc_count::start();
    let b = std::hint::black_box(Box::new(7u64));
    ferrite_reactor::alloc_count::stop();
    drop(b);
    assert_eq!(
        ferrite_reactor::alloc_count::take(),
        1,
        "the counter missed an allocation"
    );

    let mut h = Harness::new(1, 1);
    let made: Arc<Mutex<Vec<String>>> = Arc::default();
    let m2 = made.clone();
    h.on(0, move || {
        ferrite_bdev::register_module(Arc::new(ferrite_raid::RaidModule));
        for i in 0..14 {
            let name = format!("Z{i}");
            ferrite_null::create(&ferrite_null::NullOpts {
                name: name.clone(),
                num_blocks: 4096,
                block_size: 512,
                uuid: None,
                md_size: 0,
            })
            .unwrap();
            m2.lock().unwrap().push(name);
        }
        for (name, level, strip, bases) in [
            ("Z0r", "raid0", 4, 0..3),
            ("Zcr", "concat", 4, 3..5),
            ("Z1r", "raid1", 0, 5..7),
            ("Z5r", "raid5f", 4, 7..10),
            ("Z2r", "raid0", 4, 12..14),
        ] {
            let o = ferrite_raid::RaidOpts {
                name: name.into(),
                raid_level: level.into(),
                base_bdevs: bases.map(|i| format!("Z{i}")).collect(),
                strip_size_kb: strip,
                ..Default::default()
            };
            ferrite_raid::create(&o, |r| assert!(r.is_ok(), "{r:?}"));
        }
        // raid1 with a superblock, degraded: writes mark the persisted write-intent bitmap
        // (every region gets marked and persisted during warm-up).
        let o = ferrite_raid::RaidOpts {
            name: "Z1s".into(),
            raid_level: "raid1".into(),
            base_bdevs: vec!["Z10".into(), "Z11".into()],
            superblock: true,
            ..Default::default()
        };
        ferrite_raid::create(&o, |r| assert!(r.is_ok(), "{r:?}"));
    });
    h.run_until_idle();
    h.on(0, || {
        ferrite_raid::remove_base_bdev("Z11", |r| assert!(r.is_ok(), "{r:?}"));
    });
    h.run_until_idle();
    // raid0 / concat: 12-block I/O cross 8-block strips (and concat's member boundary).
    for (bdev, size) in [
        ("Z0r", 12),
        ("Zcr", 12),
        ("Z1r", 8),
        ("Z5r", 16),
        ("Z1s", 8),
        // raid0 over two members, 8-block I/O within 8-block strips: the bdev layer's
        // striped route (no call into the module).
        ("Z2r", 8),
    ] {
        let allocs = run(&mut h, bdev, size);
        assert_eq!(allocs, 0, "{bdev} allocated {allocs} times in steady state");
    }
    // raid1 writes only: the mirror fan-out (children kept per channel, hooks, the parent
    // completed in its last child's step) in steady state.
    WRITE_EVERY.store(1, Ordering::Relaxed);
    let allocs = run(&mut h, "Z1r", 8);
    assert_eq!(
        allocs, 0,
        "Z1r (writes only) allocated {allocs} times in steady state"
    );
    WRITE_EVERY.store(3, Ordering::Relaxed);
    let z1s = ferrite_raid::get_bdevs("online")
        .unwrap()
        .into_iter()
        .find(|v| v["name"] == "Z1s")
        .unwrap();
    assert_eq!(z1s["num_base_bdevs_operational"], 1, "{z1s}");
    assert_eq!(z1s["write_intent_bitmap"]["persistent"], true, "{z1s}");
    assert_eq!(z1s["write_intent_bitmap"]["dirty_regions"], 16, "{z1s}");
    drop(h);
}
