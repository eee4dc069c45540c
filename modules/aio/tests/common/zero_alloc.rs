//! The hot-path rule for file bdevs (shared by the aio and uring tests): in steady state, reads
//! and writes through a file bdev perform no heap allocation — neither with aligned buffers
//! (direct path) nor with misaligned ones (bounced through pool buffers). The shared driver
//! (`ferrite_bdev::testing`) keeps a queue-depth-64 workload going on a harness thread, whose
//! polls also reap the kernel's completions, and the counting global allocator counts the
//! allocations made on the test's OS thread.

use std::time::Duration;

use ferrite_bdev::testing::{failed, Driver};
use ferrite_reactor::harness::Harness;

pub use ferrite_bdev::testing::check_counter;

#[global_allocator]
static GLOBAL: ferrite_reactor::alloc_count::CountingAlloc =
    ferrite_reactor::alloc_count::CountingAlloc;

/// I/O kept in flight.
const DEPTH: usize = 64;
/// How long any phase may take (the kernel completes in real time).
const LIMIT: Duration = Duration::from_secs(30);

/// Runs the workload on `bdev` (created on thread 0 of `h`) and returns the allocations seen
/// in steady state (after a warm-up) and the I/O completed meanwhile. Misaligned: each I/O's
/// 4 KiB start one byte into a heap area (every I/O bounced on a file opened with O_DIRECT);
/// else each I/O uses its own aligned pool buffer.
pub fn steady_state_allocs(h: &mut Harness, bdev: &str, misaligned: bool) -> (u64, u64) {
    let mut area = vec![0u8; DEPTH * 4096 + 1];
    let heap = misaligned.then(|| area.as_mut_ptr().wrapping_add(1));
    let d = Driver::open(h, bdev, 1024, heap);
    // Warm up: pools, queues, caches and the slots' iovec arrays reach their steady size.
    // First one I/O at a time: the bdev layer's two alternating ready lists each get their
    // first (allocating) push only when polls without completions come between completions,
    // which a deep queue on a fast device may never produce before the measurement starts.
    d.start(h, 1);
    d.poll_for(h, 200, LIMIT);
    d.start(h, DEPTH - 1);
    d.poll_for(h, 5_000, LIMIT);
    let w = d.measure(h, |h| d.poll_for(h, 20_000, LIMIT));
    assert_eq!(failed(), 0, "'{bdev}': I/O failed");
    // Stop: callbacks give their I/O back from now on; drain what is in flight.
    d.close(h, LIMIT);
    // The I/O used the area until the drain above.
    drop(area);
    (w.allocs, w.ios)
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
