//! Steady-state reads and writes through a uring bdev on a file allocate nothing, on the
//! direct path and on the bounce path (see `aio/tests/common/zero_alloc.rs`), through the ring
//! (a file on the disk) and through the memory-copy path (a file on tmpfs).

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

#[test]
fn steady_state_io_on_tmpfs_does_not_allocate() {
    za::check_counter();
    let shm = std::path::Path::new("/dev/shm");
    let dir = shm.join(format!("ferrite-uring-zero-alloc-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("/dev/shm (a tmpfs) is needed for this test");
    let _cleanup = za::RemoveOnDrop(dir.clone());
    let f = dir.join("disk.img");
    std::fs::File::create(&f).unwrap().set_len(1 << 20).unwrap();
    let f = f.display().to_string();
    let mut h = Harness::new(1, 1);
    let path = h.on(0, || {
        ferrite_uring::create(&ferrite_uring::UringOpts {
            name: "UringShmZ".into(),
            filename: f,
            ..Default::default()
        })
        .unwrap();
        let b = ferrite_bdev::lookup("UringShmZ").unwrap();
        let ds = b.backend().driver_specific().unwrap().1;
        ds["io_path"].clone()
    });
    assert_eq!(path, "memory_copy", "/dev/shm is not a tmpfs?");
    for misaligned in [false, true] {
        let (allocs, n) = za::steady_state_allocs(&mut h, "UringShmZ", misaligned);
        assert!(n >= 20_000, "steady state too short: {n} I/O");
        assert_eq!(
            allocs, 0,
            "uring (memory copy) allocated {allocs} times in {n} I/O (misaligned: {misaligned})"
        );
    }
}
