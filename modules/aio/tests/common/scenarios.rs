//! Checks the aio and uring tests both run, parameterised by what differs between the two
//! modules (a channel's slot count, seeds, which worker submits).

use std::time::Duration;

use ferrite_bdev::IoStatus;
use ferrite_reactor::ThreadHandle;

use super::*;

const BS: u64 = 512;

/// What a round-trip check varies by module.
pub struct RoundTripParams {
    /// Requests a channel holds at once (the burst is three times this).
    pub slots: usize,
    /// Seed of the first worker's workload (the next worker adds 1).
    pub seed: u64,
    /// Index of the worker that submits the burst.
    pub burst_worker: usize,
    /// The burst must run out of slots (false for a path that holds no request in a slot,
    /// such as the uring bdev's memory-copy path on tmpfs).
    pub slot_bound: bool,
}

/// Round trips from both workers (4 I/O in flight each), then a burst larger than a channel's
/// slots; the file must hold exactly what was written.
pub fn round_trips_and_file_contents(env: &Env, name: &str, path: &str, p: &RoundTripParams) {
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
                    seed: p.seed + i as u64,
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
    // Back-pressure: more reads at once than the channel has slots.
    let n = p.slots * 3;
    let ops = (0..n)
        .map(|i| Op::Read {
            off: (i as u64 * 7) % 2048,
            blocks: 1,
        })
        .collect();
    let outs = batch(&env.workers[p.burst_worker], name, ops);
    assert!(
        outs.iter().all(|o| o.status == IoStatus::Success),
        "{name}: a read of the burst failed"
    );
    // The slots ran out: I/O was refused with NOMEM and retried by the bdev layer.
    if p.slot_bound {
        assert!(nomem_retries(env, name) > 0, "{name}: no NOMEM retry");
    }
    for (i, o) in outs.iter().enumerate() {
        let off = ((i as u64 * 7) % 2048 * BS) as usize;
        assert_eq!(
            o.data[..],
            file[off..off + BS as usize],
            "{name}: burst read {i}"
        );
    }
}

/// Flush, unmap (holes read as zeroes) and write-zeroes from the second worker, checked
/// through the bdev and in the file; `seed` makes the data written.
pub fn non_data_ops(env: &Env, name: &str, path: &str, seed: u64) {
    let w = &env.workers[1];
    let data = random_bytes(64 * BS as usize, seed);
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

/// On an interrupt-mode runtime: I/O from `w` completes promptly (the channel's eventfd wakes
/// the sleeping reactor), and the reactor sleeps with I/O in flight rather than spinning.
pub fn completions_wake_the_reactor(env: &Env, name: &str, w: &ThreadHandle) {
    let sleeps0: u64 = env.rt.reactors().iter().map(|r| r.sleeps).sum();
    let mut worst = Duration::ZERO;
    for i in 0..40u64 {
        let data = random_bytes(4096, i + 1);
        let o = io(w, name, Op::write(i * 8, data.clone()));
        assert_eq!(o.status, IoStatus::Success);
        worst = worst.max(o.latency);
        let r = io(
            w,
            name,
            Op::Read {
                off: i * 8,
                blocks: 8,
            },
        );
        assert!(r.data == data);
        worst = worst.max(r.latency);
        // Let the reactor fall asleep between requests.
        std::thread::sleep(Duration::from_millis(2));
    }
    assert_eq!(io(w, name, Op::Flush).status, IoStatus::Success);
    assert_eq!(
        io(w, name, Op::Unmap { off: 0, blocks: 8 }).status,
        IoStatus::Success
    );
    // With I/O in flight the reactor sleeps (the eventfd wakes it) rather than spinning.
    let mut slept = 0;
    for i in 0..10u64 {
        let data = random_bytes(1 << 20, i + 100);
        let o = batch_watching(&env.rt, w, name, vec![Op::write(0, data)])
            .pop()
            .unwrap();
        assert_eq!(o.status, IoStatus::Success);
        slept += usize::from(o.slept_in_flight);
    }
    eprintln!("the reactor slept during {slept} of 10 writes of 1 MiB");
    assert!(slept > 0, "the reactor never slept with I/O in flight");
    let sleeps1: u64 = env.rt.reactors().iter().map(|r| r.sleeps).sum();
    assert!(sleeps1 > sleeps0, "the reactors never slept");
    // Without the eventfd a sleeping reactor would only notice a completion at its safety
    // timeout (raised to a minute here); half of that separates the two on any machine.
    assert!(
        worst < Duration::from_millis(u64::from(super::LOST_WAKEUP_MS) / 2),
        "slowest I/O took {worst:?}: completions did not wake the reactor"
    );
}
