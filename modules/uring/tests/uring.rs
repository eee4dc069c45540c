//! The uring bdev on real files (on the disk under the target dir, in the system temp dir, on
//! tmpfs) and, where the machine allows, on a loop block device: random data round trips from
//! two reactors checked against the file itself, back-pressure, flush / unmap / write-zeroes,
//! rescan after growth, the buffered fallback, create errors, short reads of a file that shrank
//! underneath (on tmpfs through the memory-copy path, elsewhere through the ring), and an
//! interrupt-mode reactor woken by the ring's eventfd.
//!
//! These tests need io_uring: on a kernel or sandbox without it they fail (they do not skip).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

#[path = "../../aio/tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::scenarios::{self, completions_wake_the_reactor, RoundTripParams};
use common::*;
use ferrite_bdev::{BdevEvent, IoStatus, IoType};
use ferrite_reactor::PollMode;
use ferrite_uring::UringOpts;

fn create(env: &Env, opts: UringOpts) -> Result<String, ferrite_aio::FileError> {
    env.app(move || ferrite_uring::create(&opts))
}

fn opts(name: &str, file: &str) -> UringOpts {
    UringOpts {
        name: name.into(),
        filename: file.into(),
        ..Default::default()
    }
}

fn delete(env: &Env, name: &str) {
    env.delete(ferrite_uring::delete, name).unwrap();
}

#[test]
fn io_uring_is_available() {
    // A failure here means this kernel (or a seccomp filter) refuses io_uring_setup: the
    // uring bdev cannot work on this machine.
    let fallocate_op = ferrite_uring::probe("probe").unwrap();
    eprintln!("io_uring available; IORING_OP_FALLOCATE: {fallocate_op}");
}

/// Round trips and a burst past the channel's slots (see `common::scenarios`).
fn round_trips_and_file_contents(env: &Env, name: &str, path: &str) {
    let p = RoundTripParams {
        slots: ferrite_uring::URING_SLOTS,
        seed: 0x4321,
        burst_worker: 1,
        // The memory-copy path (tmpfs) holds no request in a slot: nothing to run out of.
        slot_bound: info(name)["driver_specific"]["uring"]["io_path"] == "ring",
    };
    scenarios::round_trips_and_file_contents(env, name, path, &p);
}

fn non_data_ops(env: &Env, name: &str, path: &str) {
    scenarios::non_data_ops(env, name, path, 77);
}

#[test]
fn random_round_trips_on_disk_and_tmpfs() {
    let env = Env::start(PollMode::Adaptive);
    for (k, (label, parent)) in test_dirs().into_iter().enumerate() {
        let dir = Dir::new(&parent, "uring-rt");
        let path = dir.file("disk.img", 4 << 20);
        let name = format!("UringRt{k}");
        create(&env, opts(&name, &path)).unwrap();
        let ds = &info(&name)["driver_specific"]["uring"];
        eprintln!("{label}: {ds}");
        assert_eq!(ds["filename"], path.as_str());
        // Memory-backed filesystems copy at submission; every other file goes through the ring.
        let want = if label == "tmpfs" {
            "memory_copy"
        } else {
            "ring"
        };
        assert_eq!(ds["io_path"], want, "{label}");
        round_trips_and_file_contents(&env, &name, &path);
        if ds["o_direct"] == true {
            assert!(
                ferrite_uring::bounces(&name).unwrap() > 0,
                "{label}: no bounce"
            );
        }
        delete(&env, &name);
        assert!(ferrite_bdev::lookup(&name).is_none());
    }
}

#[test]
fn flush_unmap_write_zeroes() {
    let env = Env::start(PollMode::Adaptive);
    for (k, (label, parent)) in test_dirs().into_iter().enumerate() {
        let dir = Dir::new(&parent, "uring-ops");
        let path = dir.file("disk.img", 1 << 20);
        let name = format!("UringOps{k}");
        create(&env, opts(&name, &path)).unwrap();
        let b = ferrite_bdev::lookup(&name).unwrap();
        assert!(b.io_type_supported(IoType::Unmap), "{label}: unmap");
        assert!(b.io_type_supported(IoType::Flush), "{label}: flush");
        assert!(
            b.io_type_supported(IoType::WriteZeroes),
            "{label}: write_zeroes"
        );
        eprintln!(
            "{label}: write_zeroes native (fallocate ZERO_RANGE): {}",
            b.backend().io_type_supported(IoType::WriteZeroes)
        );
        drop(b);
        non_data_ops(&env, &name, &path);
        delete(&env, &name);
    }
}

#[test]
fn rescan_picks_up_a_grown_file() {
    let env = Env::start(PollMode::Adaptive);
    for (k, (_label, parent)) in test_dirs().into_iter().enumerate() {
        let dir = Dir::new(&parent, "uring-resize");
        let path = dir.file("disk.img", 1 << 20);
        let name = format!("UringResize{k}");
        create(&env, opts(&name, &path)).unwrap();
        let w = &env.workers[1];
        open(w, &name).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(2 << 20)
            .unwrap();
        let n2 = name.clone();
        assert_eq!(env.app(move || ferrite_uring::rescan(&n2)).unwrap(), 4096);
        assert_eq!(info(&name)["num_blocks"], 4096);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(events(w, &name), vec![BdevEvent::Resize]);
        let data = random_bytes(4096, 6);
        assert_eq!(
            io(w, &name, Op::write(4088, data.clone())).status,
            IoStatus::Success
        );
        let file = std::fs::read(&path).unwrap();
        assert!(file[4088 * 512..] == data[..]);
        delete(&env, &name);
    }
}

#[test]
fn buffered_fallback_when_o_direct_is_refused() {
    let env = Env::start(PollMode::Adaptive);
    let dir = Dir::new(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")),
        "uring-buf",
    );
    let path = dir.file("disk.img", 2 << 20);
    ferrite_aio::file::simulate_no_direct(true);
    let r = create(&env, opts("UringBuf", &path));
    ferrite_aio::file::simulate_no_direct(false);
    r.unwrap();
    assert_eq!(
        info("UringBuf")["driver_specific"]["uring"]["o_direct"],
        false
    );
    round_trips_and_file_contents(&env, "UringBuf", &path);
    assert_eq!(ferrite_uring::bounces("UringBuf").unwrap(), 0);
    delete(&env, "UringBuf");
}

#[test]
fn create_errors_name_the_file_and_the_reason() {
    let env = Env::start(PollMode::Adaptive);
    let dir = Dir::new(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")),
        "uring-err",
    );
    let err = |o: UringOpts| create(&env, o).unwrap_err();
    let missing = dir.path.join("nope.img").display().to_string();
    let e = err(opts("U0", &missing));
    assert_eq!(e.errno(), libc::ENOENT, "{e}");
    assert_eq!(
        e.message(),
        format!("bdev 'U0': cannot open '{missing}' read-write: No such file or directory")
    );
    let d = dir.path.display().to_string();
    assert_eq!(err(opts("U0", &d)).errno(), libc::EISDIR);
    let odd = dir.file("odd.img", 4096 + 100);
    let e = err(opts("U0", &odd));
    assert_eq!(e.errno(), libc::EINVAL, "{e}");
    assert!(
        e.message().contains("not a multiple of the block size 512"),
        "{e}"
    );
    let empty = dir.file("empty.img", 0);
    assert_eq!(err(opts("U0", &empty)).errno(), libc::EINVAL);
    let ok = dir.file("ok.img", 1 << 20);
    create(&env, opts("U0", &ok)).unwrap();
    assert_eq!(err(opts("U0", &ok)).errno(), libc::EEXIST);
    let b = ferrite_bdev::lookup("U0").unwrap();
    assert_eq!(b.product_name(), "URING bdev");
    let e = b.backend().config_entry(&b).unwrap();
    assert_eq!(e["method"], "bdev_uring_create");
    assert_eq!(e["params"]["filename"], ok.as_str());
    assert_eq!(e["params"]["block_size"], 512);
    assert_eq!(e["params"]["uuid"], b.uuid().to_string());
    drop(b);
    delete(&env, "U0");
}

#[test]
fn block_device_via_loop() {
    let env = Env::start(PollMode::Adaptive);
    let dir = Dir::new(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")),
        "uring-loop",
    );
    let backing = dir.file("backing.img", 4 << 20);
    let Some(lo) = Loop::attach(&backing) else {
        return;
    };
    create(&env, opts("UringLoop", &lo.dev)).unwrap();
    let v = info("UringLoop");
    assert_eq!(v["block_size"], 512, "{v}");
    assert_eq!(v["num_blocks"], 8192, "{v}");
    round_trips_and_file_contents(&env, "UringLoop", &lo.dev);
    non_data_ops(&env, "UringLoop", &lo.dev);
    delete(&env, "UringLoop");
}

#[test]
fn interrupt_mode_reactor_is_woken_by_completions() {
    let env = Env::start(PollMode::Interrupt);
    let dir = Dir::new(
        std::path::Path::new(env!("CARGO_TARGET_TMPDIR")),
        "uring-intr",
    );
    let path = dir.file("disk.img", 1 << 20);
    create(&env, opts("UringIntr", &path)).unwrap();
    completions_wake_the_reactor(&env, "UringIntr", &env.workers[1]);
    delete(&env, "UringIntr");
}

/// A file truncated under an open bdev: a read past the new end (a short or empty transfer)
/// fails with an I/O error, reads before it still succeed and a write past it extends the file
/// again — on tmpfs through the memory-copy path, on the other filesystems through the ring.
#[test]
fn short_reads_of_a_shrunk_file_fail_cleanly() {
    let env = Env::start(PollMode::Adaptive);
    for (k, (label, parent)) in test_dirs().into_iter().enumerate() {
        let dir = Dir::new(&parent, "uring-short");
        let path = dir.file("disk.img", 1 << 20);
        let name = format!("UringShort{k}");
        create(&env, opts(&name, &path)).unwrap();
        let path_kind = info(&name)["driver_specific"]["uring"]["io_path"].clone();
        let w = &env.workers[1];
        let data = random_bytes(64 << 10, 9);
        assert_eq!(
            io(w, &name, Op::write(0, data.clone())).status,
            IoStatus::Success
        );
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(64 << 10)
            .unwrap();
        let read = |off, blocks| io(w, &name, Op::Read { off, blocks });
        let past = read(1000, 8);
        assert_eq!(
            past.status,
            IoStatus::Failed,
            "{label} ({path_kind}): past EOF"
        );
        let across = read(124, 8);
        assert_eq!(
            across.status,
            IoStatus::Failed,
            "{label} ({path_kind}): across EOF"
        );
        let inside = read(0, 128);
        assert_eq!(inside.status, IoStatus::Success, "{label} ({path_kind})");
        assert!(inside.data == data, "{label}: data before EOF changed");
        let more = random_bytes(4096, 10);
        assert_eq!(
            io(w, &name, Op::write(1000, more.clone())).status,
            IoStatus::Success,
            "{label} ({path_kind}): write past EOF"
        );
        let back = read(1000, 8);
        assert_eq!(back.status, IoStatus::Success, "{label} ({path_kind})");
        assert!(back.data == more, "{label}: written data not read back");
        delete(&env, &name);
    }
}
