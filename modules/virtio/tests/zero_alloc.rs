//! The hot-path rule for the virtio-user bdev: in steady state, reads and writes through a
//! virtio-user bdev attached to qemu-storage-daemon's vhost-user-blk export perform no heap
//! allocation on the submitting thread (submit, ring, bounce copies, used-ring polling,
//! completion). A counting global allocator counts allocations made on the test's OS thread
//! while a queue-depth-32 workload runs on a harness thread. Also reports how many kicks
//! (eventfd writes) the run needed per request: EVENT_IDX decides, not every submit.
//! Needs `qemu-storage-daemon` (Debian package qemu-system-common).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::time::Duration;

use ferrite_bdev::testing::{check_counter, failed, Driver};
use ferrite_reactor::harness::Harness;

#[global_allocator]
static GLOBAL: ferrite_reactor::alloc_count::CountingAlloc =
    ferrite_reactor::alloc_count::CountingAlloc;

#[test]
fn steady_state_io_does_not_allocate() {
    check_counter();

    let (_qsd, sock) = common::start_qsd("zero-alloc", "");
    let mut h = Harness::new(1, 1);
    let opts = ferrite_virtio::AttachOpts {
        name: "VZ".into(),
        traddr: sock,
        vq_count: 1,
        vq_size: 256,
        timeout_us: 0,
    };
    assert_eq!(common::attach(&mut h, opts), Ok(vec!["VZ".to_string()]));

    let mut heap = vec![0u8; 32 * 4096];
    // Pool buffers (shared with the server: zero-copy), then heap buffers (bounced).
    let (n, info) = steady_state(&mut h, None);
    assert_eq!(info["bounces"], 0, "pool buffers were bounced: {info}");
    assert!(info["requests"].as_u64().unwrap() >= n, "{info}");
    let before = info["bounces"].as_u64().unwrap();
    let (n, info) = steady_state(&mut h, Some(heap.as_mut_ptr()));
    assert!(
        info["bounces"].as_u64().unwrap() - before >= n,
        "heap buffers were not bounced: {info}"
    );
    assert!(
        info["kicks"].as_u64().unwrap() <= info["requests"].as_u64().unwrap(),
        "{info}"
    );
}

/// Runs a queue-depth-32 workload, counts allocations in steady state (must be 0), and
/// returns the I/O counted and the controller's counters.
fn steady_state(h: &mut Harness, heap: Option<*mut u8>) -> (u64, serde_json::Value) {
    let d = Driver::open(h, "VZ", 8192, heap);
    let limit = Duration::from_secs(60);
    d.start(h, 1);
    d.poll_for(h, 200, limit);
    d.start(h, 31);
    d.poll_for(h, 5_000, limit);
    let w = d.measure(h, |h| d.poll_for(h, 20_000, limit));
    assert_eq!(failed(), 0, "I/O failed");
    assert!(w.ios >= 20_000, "steady state too short: {} I/O", w.ios);
    assert_eq!(
        w.allocs,
        0,
        "virtio-user allocated {} times in {} I/O (heap buffers: {})",
        w.allocs,
        w.ios,
        heap.is_some()
    );
    d.close(h, Duration::from_secs(30));
    let info = ferrite_virtio::list(Some("VZ")).unwrap().remove(0);
    eprintln!(
        "controller after the run (heap buffers: {}): {info}",
        heap.is_some()
    );
    (w.ios, info)
}
