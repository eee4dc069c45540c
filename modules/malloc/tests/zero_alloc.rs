//! The hot-path rule, proven: in steady state, I/O through passthru-on-null and on malloc
//! performs no heap allocation. A counting global allocator counts allocations made on this
//! test's OS thread while a queue-depth-64 workload runs on harness threads.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use ferrite_bdev::testing::{check_counter, steady_state};
use ferrite_reactor::harness::Harness;

#[global_allocator]
static GLOBAL: ferrite_reactor::alloc_count::CountingAlloc =
    ferrite_reactor::alloc_count::CountingAlloc;

/// A queue-depth-64 mix of 4 KiB reads and writes on `bdev`: the allocations in steady state.
fn run(bdev: &str) -> u64 {
    steady_state(bdev, 64, 0, 50_000, |_| {})
}

#[test]
fn steady_state_io_does_not_allocate() {
    // The counter works: an allocation in the window is seen.
    check_counter();

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
