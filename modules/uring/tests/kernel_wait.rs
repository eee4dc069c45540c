//! Adaptive mode with disk I/O in flight: the aio and uring channels report their requests as
//! waiting in the kernel (`Poll::waits_on_kernel`), so an adaptive reactor sleeps on their
//! completion eventfd between completions instead of spinning until its generic idle threshold
//! (set to 1 s here, far longer than any request), and every read still completes with the
//! file's data.
//!
//! The file is under the target dir (a disk filesystem with O_DIRECT, where reads are real
//! asynchronous requests); on a memory filesystem requests complete inside their submission
//! and the reactor has nothing to wait for.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

#[path = "../../aio/tests/common/mod.rs"]
mod common;

use std::io::Write;
use std::path::PathBuf;

use common::*;
use ferrite_bdev::IoStatus;
use ferrite_reactor::{CpuMask, PollMode, Runtime, RuntimeConfig};

const FILE_LEN: usize = 4 << 20;
const ROUNDS: usize = 16;
const DEPTH: usize = 2;
/// Bytes per read: large enough that the device is still busy when the reactor finds nothing
/// else to do (reads are handed to the kernel in their submit call, so small reads on a fast
/// virtual disk can complete before the reactor is ever idle).
const READ_LEN: usize = 1 << 20;

/// One adaptive reactor whose generic idle threshold (1 s) never passes during the test, and
/// one worker thread on it.
fn env() -> Env {
    let rt = Runtime::start(RuntimeConfig {
        cpumask: CpuMask::from_cores(&[0]),
        mode: PollMode::Adaptive,
        idle_threshold_us: 1_000_000,
        kernel_wait_us: 0,
        pin: false,
        ..Default::default()
    })
    .unwrap();
    let workers = vec![rt.spawn_thread("worker0", Some(0)).unwrap()];
    Env { rt, workers }
}

/// A file of random data on the disk (written and synced: reads hit allocated blocks).
fn data_file(dir: &Dir) -> (String, Vec<u8>) {
    let path = PathBuf::from(dir.file("kw.img", 0));
    let data = random_bytes(FILE_LEN, 0x5eed);
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(&data).unwrap();
    f.sync_all().unwrap();
    (path.display().to_string(), data)
}

/// Runs `ROUNDS` batches of `DEPTH` random 4 KiB reads on bdev `name`, checks every one
/// against `data`, and returns how often the reactor slept meanwhile.
fn reads_sleep(env: &Env, name: &str, data: &[u8]) -> u64 {
    let w = &env.workers[0];
    // Open the channel first (not counted).
    let o = batch(w, name, vec![Op::Read { off: 0, blocks: 8 }]);
    assert_eq!(o[0].status, IoStatus::Success);
    let sleeps0 = env.rt.reactors()[0].sleeps;
    let mut rng = 0x2545_f491_4f6c_dd1du64;
    for _ in 0..ROUNDS {
        let offs: Vec<u64> = (0..DEPTH)
            .map(|_| {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                (rng % ((FILE_LEN - READ_LEN) as u64 / 4096)) * 8
            })
            .collect();
        let ops = offs
            .iter()
            .map(|&off| Op::Read {
                off,
                blocks: (READ_LEN / 512) as u64,
            })
            .collect();
        let outs = batch(w, name, ops);
        assert_eq!(outs.len(), DEPTH);
        for (o, off) in outs.iter().zip(&offs) {
            assert_eq!(o.status, IoStatus::Success, "read at block {off}");
            let at = *off as usize * 512;
            assert!(
                o.data == data[at..at + READ_LEN],
                "wrong data at block {off}"
            );
        }
    }
    env.rt.reactors()[0].sleeps - sleeps0
}

fn check(sleeps: u64, what: &str) {
    eprintln!("{what}: the reactor slept {sleeps} times over {ROUNDS} batches of {DEPTH} reads");
    // Without the kernel-wait report the reactor would not sleep at all (1 s threshold); one
    // sleep per batch is typical, fewer when the device answers before the reactor is idle.
    assert!(
        sleeps > 0,
        "{what}: an adaptive reactor with only disk reads in flight never slept in {ROUNDS} \
         batches (the file must be on a disk filesystem with O_DIRECT, as the target dir \
         normally is)"
    );
}

#[test]
fn aio_reads_let_an_adaptive_reactor_sleep() {
    let env = env();
    let dir = Dir::new(&PathBuf::from(env!("CARGO_TARGET_TMPDIR")), "aio-kw");
    let (path, data) = data_file(&dir);
    let opts = ferrite_aio::AioOpts {
        name: "AioKw".into(),
        filename: path,
        ..Default::default()
    };
    env.app(move || ferrite_aio::create(&opts)).unwrap();
    let sleeps = reads_sleep(&env, "AioKw", &data);
    env.delete(ferrite_aio::delete, "AioKw").unwrap();
    check(sleeps, "aio");
}

#[test]
fn uring_reads_let_an_adaptive_reactor_sleep() {
    let env = env();
    let dir = Dir::new(&PathBuf::from(env!("CARGO_TARGET_TMPDIR")), "uring-kw");
    let (path, data) = data_file(&dir);
    let opts = ferrite_uring::UringOpts {
        name: "UringKw".into(),
        filename: path,
        ..Default::default()
    };
    env.app(move || ferrite_uring::create(&opts)).unwrap();
    let sleeps = reads_sleep(&env, "UringKw", &data);
    env.delete(ferrite_uring::delete, "UringKw").unwrap();
    check(sleeps, "uring");
}
