//! The hot-path rule for the delay bdev: in steady state, I/O through delay-on-null performs
//! no heap allocation — every I/O is forwarded, held in its channel's pre-sized queue until its
//! delay expires on the harness's virtual clock, and released by the channel's poller. A
//! counting global allocator counts allocations made on this test's OS thread while a
//! queue-depth-64 workload runs.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use ferrite_bdev::testing::{check_counter, steady_state as run};
use ferrite_reactor::harness::Harness;

#[global_allocator]
static GLOBAL: ferrite_reactor::alloc_count::CountingAlloc =
    ferrite_reactor::alloc_count::CountingAlloc;

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
    let allocs = run("ZDelay0", 64, 1, 5_000, |_| {});
    assert_eq!(
        allocs, 0,
        "delay-on-null allocated {allocs} times in steady state"
    );
    drop(h);
}
