//! raid5f: layout and rotating parity checked on the base disks, full-stripe-only writes,
//! reads across stripes, degraded reads reconstructed from parity, degraded writes.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::*;
use ferrite_bdev::{BdevChannel, Desc, IoStatus};
use ferrite_raid::RaidOpts;
use ferrite_reactor::harness::Harness;

const BS: usize = 512;
const STRIP: u64 = 8; // 4 KiB

fn reads_match(h: &mut Harness, ch: &BdevChannel, model: &[u8], blocks: u64, seed: u64) {
    let arena = Arena::default();
    let mut rng = Rng(seed | 1);
    let mut reads = Vec::new();
    for i in 0..30 {
        let n = 1 + rng.below(40);
        let off = rng.below(blocks - n + 1);
        let idx = h.on(1, || read_at(ch, &arena, off, n, 100 + i));
        reads.push((idx, off, n));
    }
    let whole = h.on(1, || read_at(ch, &arena, 0, blocks, 999));
    h.run_until_idle();
    let d = take_done();
    assert!(d.iter().all(|d| d.status == IoStatus::Success), "{d:?}");
    for (idx, off, n) in reads {
        assert!(
            arena.get(idx) == model[off as usize * BS..(off + n) as usize * BS],
            "read of {n} at {off}"
        );
    }
    assert!(arena.get(whole) == model);
}

fn check_layout(disks: &[Arc<Disk>], model: &[u8], blocks: u64) {
    let n = disks.len();
    let stripe = STRIP * (n as u64 - 1);
    let sbytes = STRIP as usize * BS;
    for s in 0..blocks / stripe {
        let p = n - 1 - (s % n as u64) as usize;
        let mut parity = vec![0u8; sbytes];
        for k in 0..n - 1 {
            let m = if k < p { k } else { k + 1 };
            let at = (s * stripe + k as u64 * STRIP) as usize * BS;
            let want = &model[at..at + sbytes];
            assert!(
                disks[m].read(s * STRIP, STRIP) == want,
                "stripe {s} strip {k} not on member {m}"
            );
            for (x, y) in parity.iter_mut().zip(want) {
                *x ^= *y;
            }
        }
        assert!(
            disks[p].read(s * STRIP, STRIP) == parity,
            "stripe {s}: parity on member {p} is wrong"
        );
    }
}

fn run(n: usize, seed: u64) {
    let mut h = Harness::new(2, seed);
    setup(&mut h);
    let name = format!("F5r{n}");
    let disks: Vec<Arc<Disk>> = (0..n).map(|_| Disk::new(512, 1027)).collect();
    let names: Vec<String> = (0..n).map(|i| format!("{name}d{i}")).collect();
    let (d2, n2) = (disks.clone(), names.clone());
    h.on(0, move || {
        for (d, nm) in d2.iter().zip(&n2) {
            register_disk(nm, d, None);
        }
    });
    let o = RaidOpts {
        name: name.clone(),
        raid_level: "5f".into(),
        base_bdevs: names.clone(),
        strip_size_kb: 4,
        ..Default::default()
    };
    let r = call(&mut h, move |done| ferrite_raid::create(&o, done));
    assert!(r.is_ok(), "{r:?}");
    let v = info(&name).unwrap();
    assert_eq!(v["raid_level"], "raid5f");
    let stripe = STRIP * (n as u64 - 1);
    // Members rounded down to whole strips: 1024 blocks each, n - 1 of them hold data.
    let blocks = 1024 * (n as u64 - 1);
    let bdev = ferrite_bdev::lookup(&name).unwrap();
    assert_eq!(bdev.num_blocks(), blocks);
    assert_eq!(u64::from(bdev.optimal_io_boundary()), stripe);
    let nm = name.clone();
    let desc = h.on(1, move || Desc::open(&nm, true, |_| {}).unwrap());
    let ch = h.on(1, || desc.channel().unwrap());

    // Full stripes, several per I/O (cut on stripes by the bdev layer).
    let mut model = vec![0u8; blocks as usize * BS];
    let arena = Arena::default();
    let per = stripe * 5;
    let mut off = 0;
    let mut tag = 0;
    while off < blocks {
        let len = per.min(blocks - off);
        let data = noise(seed * 1000 + tag, len as usize * BS);
        model[off as usize * BS..(off + len) as usize * BS].copy_from_slice(&data);
        h.on(1, || write_at(&ch, &arena, off, data, tag));
        off += len;
        tag += 1;
    }
    h.run_until_idle();
    let d = take_done();
    assert!(d.iter().all(|d| d.status == IoStatus::Success), "{d:?}");
    check_layout(&disks, &model, blocks);
    reads_match(&mut h, &ch, &model, blocks, seed);

    // Anything but whole stripes is refused, and changes nothing.
    h.on(1, || {
        write_at(&ch, &arena, 0, vec![1; STRIP as usize * BS], 50)
    });
    h.on(1, || {
        write_at(&ch, &arena, 1, vec![2; stripe as usize * BS], 51)
    });
    h.run_until_idle();
    let d = take_done();
    assert_eq!(d.len(), 2);
    assert!(d.iter().all(|d| d.status == IoStatus::Invalid), "{d:?}");
    // Unmap and flush are not offered.
    assert!(!bdev.io_type_supported(ferrite_bdev::IoType::Unmap));

    // Degraded: member 1 goes. Reads of its strips are rebuilt from the others.
    let victim = names[1].clone();
    let r = call(&mut h, move |d| ferrite_raid::remove_base_bdev(&victim, d));
    assert!(r.is_ok(), "{r:?}");
    let v = info(&name).unwrap();
    assert_eq!(v["state"], "online");
    assert_eq!(v["num_base_bdevs_operational"], n - 1);
    let reads_before = disks[1].reads.load(Ordering::SeqCst);
    reads_match(&mut h, &ch, &model, blocks, seed + 1);
    assert_eq!(disks[1].reads.load(Ordering::SeqCst), reads_before);
    // Degraded writes, read back (some strips only exist as parity now).
    for s in [0u64, 1, 2, 7] {
        let data = noise(seed * 77 + s, stripe as usize * BS);
        let at = (s * stripe) as usize * BS;
        model[at..at + data.len()].copy_from_slice(&data);
        h.on(1, || write_at(&ch, &arena, s * stripe, data, 60 + s));
    }
    h.run_until_idle();
    assert!(take_done().iter().all(|d| d.status == IoStatus::Success));
    reads_match(&mut h, &ch, &model, blocks, seed + 2);
    // A second member failing: that read fails, and the raid cannot go on.
    disks[0].fail_read.store(true, Ordering::SeqCst);
    let arena2 = Arena::default();
    h.on(1, || read_at(&ch, &arena2, 0, stripe, 7));
    h.run_until_idle();
    assert_eq!(take_done()[0].status, IoStatus::Failed);
    h.on(1, || drop(ch));
    h.on(1, || drop(desc));
    h.run_until_idle();
    let v = info(&name).unwrap();
    assert_eq!(v["state"], "offline", "{v}");
    let nm = name.clone();
    assert!(call(&mut h, move |d| ferrite_raid::delete(&nm, d)).is_ok());
}

#[test]
fn raid5f_three_members() {
    run(3, 51);
}

#[test]
fn raid5f_five_members() {
    run(5, 52);
}
