//! Steady-state reads and writes through an aio bdev on a file allocate nothing, on the direct
//! path and on the bounce path (see `common/zero_alloc.rs`).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

#[path = "common/zero_alloc.rs"]
mod za;

use ferrite_reactor::harness::Harness;

#[test]
fn steady_state_io_does_not_allocate() {
    za::check_counter();
    let (_cleanup, f) = za::disk_file("aio-zero-alloc");
    let mut h = Harness::new(1, 1);
    h.on(0, || {
        ferrite_aio::create(&ferrite_aio::AioOpts {
            name: "AioZ".into(),
            filename: f,
            ..Default::default()
        })
        .unwrap();
    });
    for misaligned in [false, true] {
        let (allocs, n) = za::steady_state_allocs(&mut h, "AioZ", misaligned);
        assert!(n >= 20_000, "steady state too short: {n} I/O");
        assert_eq!(
            allocs, 0,
            "aio allocated {allocs} times in {n} I/O (misaligned: {misaligned})"
        );
    }
    // The misaligned run went through bounce buffers (the file is opened with O_DIRECT on
    // this filesystem) or needed none (buffered).
    eprintln!("bounces: {}", ferrite_aio::bounces("AioZ").unwrap());
}
