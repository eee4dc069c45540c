//! The hot-path rule for file bdevs (shared by the aio and uring tests): in steady state, reads
//! and writes through a file bdev perform no heap allocation — neither with aligned buffers
//! (direct path) nor with misaligned ones (bounced through pool buffers). A counting global
//! allocator counts allocations made on the test's OS thread while a queue-depth-64 workload
//! runs on a harness thread, whose polls also reap the kernel's completions.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use ferrite_bdev::{BdevChannel, BdevIo, Desc, DmaBuf, IoStatus, IoVec};
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
    misaligned: bool,
}

thread_local! {
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
        let write = off % 16 == 0;
        let t = if write {
            BdevIo::prep_write
        } else {
            BdevIo::prep_read
        };
        t(&mut io, off, 8, done);
        // The attached 8 KiB buffer: from its start, or one byte in (every I/O bounced).
        let base = io.buf().map(|b| b.as_ptr()).unwrap_or(std::ptr::null_mut());
        let skew = usize::from(job.misaligned);
        let v = IoVec {
            // SAFETY: the buffer is 8 KiB and owned by the I/O for its whole life.
            base: unsafe { base.add(skew) },
            len: 4096,
        };
        // SAFETY: as above.
        unsafe { io.set_iovs(&[v]) };
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

/// Checks that the counter works.
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

/// Runs the workload on `bdev` (created on thread 0 of `h`) and returns the allocations seen
/// in steady state (after a warm-up) and the I/O completed meanwhile.
pub fn steady_state_allocs(h: &mut Harness, bdev: &str, misaligned: bool) -> (u64, u64) {
    let desc = h.on(0, || Desc::open(bdev, true, |_| {}).expect("open"));
    let job = Box::new(Job {
        ch: h.on(0, || desc.channel().expect("channel")),
        blocks: 1024,
        next: Cell::new(0),
        misaligned,
    });
    JOB.with(|j| j.set(&*job as *const Job));
    let start_ios = |h: &mut Harness, n: usize| {
        h.on(0, || {
            for _ in 0..n {
                let mut io = job.ch.alloc_io().expect("io");
                io.attach_buf(DmaBuf::get(8192).expect("pool").expect("a buffer"));
                resubmit(io);
            }
        })
    };
    let poll_for = |h: &mut Harness, ios: u64| {
        let start = COMPLETED.load(Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(30);
        while COMPLETED.load(Ordering::Relaxed) - start < ios && Instant::now() < deadline {
            h.poll_thread(0);
        }
    };
    // Warm up: pools, queues, caches and the slots' iovec arrays reach their steady size.
    // First one I/O at a time: the bdev layer's two alternating ready lists each get their
    // first (allocating) push only when polls without completions come between completions,
    // which a deep queue on a fast device may never produce before the measurement starts.
    start_ios(h, 1);
    poll_for(h, 200);
    start_ios(h, 63);
    poll_for(h, 5_000);
    let before = COMPLETED.load(Ordering::Relaxed);
    ferrite_reactor::alloc_count::start();
    poll_for(h, 20_000);
    ferrite_reactor::alloc_count::stop();
    let n = COMPLETED.load(Ordering::Relaxed) - before;
    let allocs = ferrite_reactor::alloc_count::take();
    assert_eq!(FAILED.load(Ordering::Relaxed), 0, "I/O failed");
    // Stop: callbacks give their I/O back from now on; drain what is in flight.
    JOB.with(|j| j.set(std::ptr::null()));
    let deadline = Instant::now() + Duration::from_secs(30);
    while h.on(0, || job.ch.inflight()) > 0 && Instant::now() < deadline {
        h.poll_thread(0);
    }
    h.on(0, || drop(job));
    h.on(0, || drop(desc));
    (allocs, n)
}

/// Removes a directory when dropped (also when the test fails).
pub struct RemoveOnDrop(pub std::path::PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A 1 MiB file in a fresh directory under the target's temp dir (`<tag>-<pid>`), and the
/// guard that removes the directory.
pub fn disk_file(tag: &str) -> (RemoveOnDrop, String) {
    let dir = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cleanup = RemoveOnDrop(dir.clone());
    let file = dir.join("disk.img");
    std::fs::File::create(&file)
        .unwrap()
        .set_len(1 << 20)
        .unwrap();
    (cleanup, file.display().to_string())
}
