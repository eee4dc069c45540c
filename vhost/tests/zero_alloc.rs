//! The steady-state request path does not allocate: reads, writes and flushes through a
//! running queue on a null bdev, with the allocations of the reactor's OS thread counted
//! (`ferrite_reactor::alloc_count`). The runtime has one reactor, so the app thread and the
//! queue's thread share the counted OS thread.
#![allow(clippy::unwrap_used)] // tests

#[global_allocator]
static GLOBAL: ferrite_reactor::alloc_count::CountingAlloc =
    ferrite_reactor::alloc_count::CountingAlloc;

mod common;

use common::*;
use ferrite_vhost::blk::request::{req_type, status};

#[test]
fn steady_state_requests_do_not_allocate() {
    let env = env();
    env.app(|| {
        ferrite_null::create(&ferrite_null::NullOpts {
            name: "Null0".into(),
            num_blocks: 1 << 16,
            block_size: 512,
            uuid: None,
            md_size: 0,
        })
        .unwrap()
    });
    env.create("za.0", "Null0", false).unwrap();
    let mut d = Driver::connect(&env.dir.join("za.0"));
    let round = |d: &mut Driver| {
        for i in 0..8u64 {
            let segs: Vec<(u64, u32)> = (0..4).map(|k| (0x20000 + k * 0x1000, 4096)).collect();
            assert_eq!(d.request(req_type::OUT, i * 64, &segs, false).0, status::OK);
            assert_eq!(d.request(req_type::IN, i * 64, &segs, true).0, status::OK);
        }
        assert_eq!(d.request(req_type::FLUSH, 0, &[], false).0, status::OK);
    };
    // Warm-up: pools, queues and per-thread state reach their steady size.
    for _ in 0..4 {
        round(&mut d);
    }
    env.app(|| {
        ferrite_reactor::alloc_count::take();
        ferrite_reactor::alloc_count::start();
    });
    for _ in 0..16 {
        round(&mut d);
    }
    let allocs = env.app(|| {
        ferrite_reactor::alloc_count::stop();
        ferrite_reactor::alloc_count::take()
    });
    assert_eq!(
        allocs, 0,
        "allocations on the reactor during 272 steady-state requests"
    );
    drop(d);
    env.delete("za.0").unwrap();
}
