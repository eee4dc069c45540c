//! The hot-path rule for the raid data path: in steady state, reads and writes through
//! raid0 (crossing strips; and within strips over two members, the bdev layer's striped
//! route), concat (crossing members), raid1 (mixed, and writes only),
//! degraded raid1 with a persisted
//! write-intent bitmap, and raid5f (full-stripe writes, reads within a stripe) perform no heap
//! allocation. A counting global allocator counts
//! allocations made on this test's OS thread while a queue-depth-32 workload runs on a
//! harness thread (the modules' shared driver, `ferrite_bdev::testing`, with I/O of the
//! size each layout needs).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, Mutex};
use std::time::Duration;

use ferrite_bdev::testing::{check_counter, failed, Driver};
use ferrite_reactor::harness::Harness;

#[global_allocator]
static GLOBAL: ferrite_reactor::alloc_count::CountingAlloc =
    ferrite_reactor::alloc_count::CountingAlloc;

/// 32 I/O of `size` blocks (one in `write_every` a write) on `bdev` through the shared
/// driver: 500 polls of warm-up, 1000 counted; returns the allocations counted.
fn run(h: &mut Harness, bdev: &str, size: u64, write_every: u64) -> u64 {
    let blocks = ferrite_bdev::lookup(bdev).unwrap().num_blocks();
    let d = Driver::open_sized(h, bdev, blocks, size, write_every);
    d.start(h, 32);
    d.poll(h, 500, 0);
    let w = d.measure(h, |h| d.poll(h, 1000, 0));
    assert!(
        w.ios > 10_000,
        "{bdev}: steady state too short: {} I/O",
        w.ios
    );
    assert_eq!(failed(), 0, "{bdev}: failed I/O");
    d.close(h, Duration::from_secs(10));
    h.run_until_idle();
    w.allocs
}

#[test]
fn steady_state_raid_io_does_not_allocate() {
    check_counter();

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
        let allocs = run(&mut h, bdev, size, 3);
        assert_eq!(allocs, 0, "{bdev} allocated {allocs} times in steady state");
    }
    // raid1 writes only: the mirror fan-out (children kept per channel, hooks, the parent
    // completed in its last child's step) in steady state.
    let allocs = run(&mut h, "Z1r", 8, 1);
    assert_eq!(
        allocs, 0,
        "Z1r (writes only) allocated {allocs} times in steady state"
    );
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
