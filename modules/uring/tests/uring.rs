//! The uring bdev on real files (on the disk under the target dir, in the system temp dir, on
//! tmpfs) and, where the machine allows, on a loop block device: random data round trips from
//! two reactors checked against the file itself, back-pressure, flush / unmap / write-zeroes,
//! rescan after growth, the buffered fallback, create errors, and an interrupt-mode reactor
//! woken by the ring's eventfd.
//!
//! These tests need io_uring: on a kernel or sandbox without it they fail (they do not skip).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

#[path = "../../aio/tests/common/mod.rs"]
mod common;

use std::time::Duration;

use common::*;
use ferrite_bdev::{BdevEvent, IoStatus, IoType};
use ferrite_reactor::PollMode;
use ferrite_uring::UringOpts;

const BS: u64 = 512;

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

fn round_trips_and_file_contents(env: &Env, name: &str, path: &str) {
    let region = 256u64;
    let lanes = 4usize;
    let rxs: Vec<_> = env
        .workers
        .iter()
        .enumerate()
        .map(|(i, w)| {
            start_round_trips(
                w,
                RoundTrips {
                    bdev: name.into(),
                    first_block: i as u64 * lanes as u64 * region,
                    region_blocks: region,
                    lanes,
                    rounds: 60,
                    max_blocks: 32,
                    seed: 0x4321 + i as u64,
                },
            )
        })
        .collect();
    let mut shadows = Vec::new();
    for rx in rxs {
        shadows.push(rx.recv_timeout(WAIT).unwrap().unwrap());
    }
    let file = std::fs::read(path).unwrap();
    for (i, lanes_shadow) in shadows.iter().enumerate() {
        for (l, shadow) in lanes_shadow.iter().enumerate() {
            let start = ((i * lanes + l) as u64 * region * BS) as usize;
            assert!(
                file[start..start + shadow.len()] == shadow[..],
                "{name}: file contents of worker {i} lane {l} differ from what was written"
            );
        }
    }
    let n = ferrite_uring::URING_SLOTS * 3;
    let ops = (0..n)
        .map(|i| Op::Read {
            off: (i as u64 * 7) % 2048,
            blocks: 1,
        })
        .collect();
    let outs = batch(&env.workers[1], name, ops);
    assert!(
        outs.iter().all(|o| o.status == IoStatus::Success),
        "{name}: a read of the burst failed"
    );
    // The slots ran out: I/O was refused with NOMEM and retried by the bdev layer.
    assert!(nomem_retries(env, name) > 0, "{name}: no NOMEM retry");
    for (i, o) in outs.iter().enumerate() {
        let off = ((i as u64 * 7) % 2048 * BS) as usize;
        assert_eq!(
            o.data[..],
            file[off..off + BS as usize],
            "{name}: burst read {i}"
        );
    }
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

fn non_data_ops(env: &Env, name: &str, path: &str) {
    let w = &env.workers[1];
    let data = random_bytes(64 * BS as usize, 77);
    assert_eq!(
        io(w, name, Op::write(0, data.clone())).status,
        IoStatus::Success
    );
    assert_eq!(io(w, name, Op::Flush).status, IoStatus::Success);
    assert_eq!(
        io(w, name, Op::Unmap { off: 8, blocks: 8 }).status,
        IoStatus::Success,
        "{name}: unmap"
    );
    assert_eq!(
        io(
            w,
            name,
            Op::Zeroes {
                off: 24,
                blocks: 16
            }
        )
        .status,
        IoStatus::Success,
        "{name}: write zeroes"
    );
    let r = io(w, name, Op::Read { off: 0, blocks: 64 });
    assert_eq!(r.status, IoStatus::Success);
    let mut want = data.clone();
    want[8 * BS as usize..16 * BS as usize].fill(0);
    want[24 * BS as usize..40 * BS as usize].fill(0);
    assert!(
        r.data == want,
        "{name}: read-back after unmap / write-zeroes"
    );
    assert_eq!(io(w, name, Op::Flush).status, IoStatus::Success);
    let file = std::fs::read(path).unwrap();
    assert!(
        file[..want.len()] == want[..],
        "{name}: file after unmap / write-zeroes"
    );
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
    let w = &env.workers[1];
    let sleeps0: u64 = env.rt.reactors().iter().map(|r| r.sleeps).sum();
    let mut worst = Duration::ZERO;
    for i in 0..40u64 {
        let data = random_bytes(4096, i + 1);
        let o = io(w, "UringIntr", Op::write(i * 8, data.clone()));
        assert_eq!(o.status, IoStatus::Success);
        worst = worst.max(o.latency);
        let r = io(
            w,
            "UringIntr",
            Op::Read {
                off: i * 8,
                blocks: 8,
            },
        );
        assert!(r.data == data);
        worst = worst.max(r.latency);
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(io(w, "UringIntr", Op::Flush).status, IoStatus::Success);
    assert_eq!(
        io(w, "UringIntr", Op::Unmap { off: 0, blocks: 8 }).status,
        IoStatus::Success
    );
    // With I/O in flight the reactor sleeps (the eventfd wakes it) rather than spinning.
    let mut slept = 0;
    for i in 0..10u64 {
        let data = random_bytes(1 << 20, i + 100);
        let o = batch_watching(&env.rt, w, "UringIntr", vec![Op::write(0, data)])
            .pop()
            .unwrap();
        assert_eq!(o.status, IoStatus::Success);
        slept += usize::from(o.slept_in_flight);
    }
    eprintln!("the reactor slept during {slept} of 10 writes of 1 MiB");
    assert!(slept > 0, "the reactor never slept with I/O in flight");
    let sleeps1: u64 = env.rt.reactors().iter().map(|r| r.sleeps).sum();
    assert!(sleeps1 > sleeps0, "the reactors never slept");
    assert!(
        worst < Duration::from_millis(500),
        "slowest I/O took {worst:?}: completions did not wake the reactor"
    );
    delete(&env, "UringIntr");
}
