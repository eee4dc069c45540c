//! Steady-state reads and writes through a uring bdev on a file allocate nothing, on the
//! direct path and on the bounce path (see `aio/tests/common/zero_alloc.rs`).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

#[path = "../../aio/tests/common/zero_alloc.rs"]
mod za;

use ferrite_reactor::harness::Harness;

#[test]
fn steady_state_io_does_not_allocate() {
    za::check_counter();
    let (_cleanup, f) = za::disk_file("uring-zero-alloc");
    let mut h = Harness::new(1, 1);
    h.on(0, || {
        ferrite_uring::create(&ferrite_uring::UringOpts {
            name: "UringZ".into(),
            filename: f,
            ..Default::default()
        })
        .unwrap();
    });
    for misaligned in [false, true] {
        let (allocs, n) = za::steady_state_allocs(&mut h, "UringZ", misaligned);
        assert!(n >= 20_000, "steady state too short: {n} I/O");
        assert_eq!(
            allocs, 0,
            "uring allocated {allocs} times in {n} I/O (misaligned: {misaligned})"
        );
    }
}
