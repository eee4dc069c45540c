//! raid0 and concat: the data layout, checked by reading the base disks directly; random
//! round trips crossing strips and members; flush/unmap fan-out; claims and their release.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::*;
use ferrite_bdev::{BdevChannel, Desc, IoStatus};
use ferrite_raid::RaidOpts;
use ferrite_reactor::harness::Harness;

fn opts(name: &str, level: &str, bases: &[String], strip_kb: u32) -> RaidOpts {
    RaidOpts {
        name: name.into(),
        raid_level: level.into(),
        base_bdevs: bases.to_vec(),
        strip_size_kb: strip_kb,
        ..Default::default()
    }
}

fn make_disks(h: &mut Harness, prefix: &str, sizes: &[u64]) -> (Vec<Arc<Disk>>, Vec<String>) {
    let disks: Vec<Arc<Disk>> = sizes.iter().map(|&s| Disk::new(512, s)).collect();
    let names: Vec<String> = (0..sizes.len()).map(|i| format!("{prefix}{i}")).collect();
    let (d2, n2) = (disks.clone(), names.clone());
    h.on(0, move || {
        for (d, n) in d2.iter().zip(&n2) {
            register_disk(n, d, None);
        }
    });
    (disks, names)
}

/// Writes random data in random (multi-segment) pieces over the whole raid, then reads it
/// back in other random pieces; returns the model of the raid's content.
fn round_trip(h: &mut Harness, ch: &BdevChannel, blocks: u64, seed: u64) -> Vec<u8> {
    let bs = 512usize;
    let mut model = vec![0u8; blocks as usize * bs];
    let mut rng = Rng(seed | 1);
    let arena = Arena::default();
    let mut tag = 0;
    // Batches of non-overlapping writes in flight together.
    for round in 0..12 {
        let mut taken: Vec<(u64, u64)> = Vec::new();
        for _ in 0..8 {
            let n = 1 + rng.below(70);
            let off = rng.below(blocks - n + 1);
            if taken.iter().any(|&(a, b)| off < b && a < off + n) {
                continue;
            }
            taken.push((off, off + n));
            let data = noise(seed ^ (round * 100 + tag), n as usize * bs);
            model[off as usize * bs..(off + n) as usize * bs].copy_from_slice(&data);
            h.on(1, || write_at(ch, &arena, off, data, tag));
            tag += 1;
        }
        h.run_until_idle();
    }
    // One big write at the start too (many strips in one I/O).
    let n = blocks.min(200);
    let data = noise(seed ^ 0xfeed, n as usize * bs);
    model[..n as usize * bs].copy_from_slice(&data);
    h.on(1, || write_at(ch, &arena, 0, data, 999));
    h.run_until_idle();
    let done = take_done();
    assert!(
        done.iter().all(|d| d.status == IoStatus::Success),
        "{done:?}"
    );
    // Reads, random and whole.
    let mut reads = Vec::new();
    for i in 0..40 {
        let n = 1 + rng.below(90);
        let off = rng.below(blocks - n + 1);
        let idx = h.on(1, || read_at(ch, &arena, off, n, 1000 + i));
        reads.push((idx, off, n));
    }
    h.run_until_idle();
    let done = take_done();
    assert_eq!(done.len(), 40);
    assert!(
        done.iter().all(|d| d.status == IoStatus::Success),
        "{done:?}"
    );
    for (idx, off, n) in reads {
        assert!(
            arena.get(idx) == model[off as usize * bs..(off + n) as usize * bs],
            "read of {n} blocks at {off} differs"
        );
    }
    model
}

#[test]
fn raid0_layout_and_round_trips() {
    let mut h = Harness::new(2, 11);
    setup(&mut h);
    // Strip of 4 KiB = 8 blocks; members of unequal size: the smallest, rounded down to
    // whole strips, sets the data area of each.
    let (disks, names) = make_disks(&mut h, "L0d", &[1024, 1030, 1100]);
    let o = opts("L0r", "RAID0", &names, 4);
    let r = call(&mut h, move |done| ferrite_raid::create(&o, done));
    assert!(r.is_ok(), "{r:?}");
    let v = info("L0r").unwrap();
    assert_eq!(v["state"], "online");
    assert_eq!(v["raid_level"], "raid0");
    assert_eq!(v["strip_size_kb"], 4);
    assert_eq!(v["num_base_bdevs_discovered"], 3);
    for b in v["base_bdevs_list"].as_array().unwrap() {
        assert_eq!(b["data_offset"], 0);
        assert_eq!(b["data_size"], 1024);
        assert_eq!(b["is_configured"], true);
    }
    let blocks = 3 * 1024;
    let bdev = ferrite_bdev::lookup("L0r").unwrap();
    assert_eq!(bdev.num_blocks(), blocks);
    assert_eq!(bdev.product_name(), "Raid Volume");
    // Bases are claimed, naming the holder.
    let e = h.on(0, || Desc::open("L0d1", true, |_| {}).unwrap_err());
    assert!(e.to_string().contains("'raid'"), "{e}");

    let desc = h.on(1, || Desc::open("L0r", true, |_| {}).unwrap());
    let ch = h.on(1, || desc.channel().unwrap());
    let model = round_trip(&mut h, &ch, blocks, 5);
    // Block b of the raid is on member (b / 8) % 3 at (b / 8 / 3) * 8 + b % 8.
    let bs = 512usize;
    for b in 0..blocks {
        let (m, off) = ((b / 8) % 3, (b / 8 / 3) * 8 + b % 8);
        assert!(
            disks[m as usize].read(off, 1) == model[b as usize * bs..(b as usize + 1) * bs],
            "raid block {b} is not at member {m} block {off}"
        );
    }

    // Unmap over many strips: one child per member; flush of everything: one per member.
    let unmaps: Vec<u64> = disks
        .iter()
        .map(|d| d.unmaps.load(Ordering::SeqCst))
        .collect();
    h.on(1, || {
        plain(&ch, 1, |io| {
            io.prep_unmap(5, 100, record);
        })
    });
    h.on(1, || {
        plain(&ch, 2, |io| {
            io.prep_flush(0, 0, record);
        })
    });
    h.run_until_idle();
    assert!(take_done().iter().all(|d| d.status == IoStatus::Success));
    for (i, d) in disks.iter().enumerate() {
        assert_eq!(d.unmaps.load(Ordering::SeqCst), unmaps[i] + 1, "member {i}");
        assert_eq!(d.flushes.load(Ordering::SeqCst), 1, "member {i}");
    }
    // The unmapped raid blocks read back as zeroes, their neighbours intact.
    let arena = Arena::default();
    let idx = h.on(1, || read_at(&ch, &arena, 0, 110, 3));
    h.run_until_idle();
    let got = arena.get(idx);
    assert_eq!(got[..5 * bs], model[..5 * bs]);
    assert!(got[5 * bs..105 * bs].iter().all(|b| *b == 0));
    assert_eq!(got[105 * bs..110 * bs], model[105 * bs..110 * bs]);
    take_done();

    // A member failing I/O fails the I/O that touches it (raid0 has no redundancy).
    disks[2].fail_read.store(true, Ordering::SeqCst);
    let arena = Arena::default();
    h.on(1, || read_at(&ch, &arena, 16, 8, 4)); // strip 2: member 2
    h.on(1, || read_at(&ch, &arena, 0, 16, 5)); // strips 0-1: members 0, 1
    h.run_until_idle();
    let d = take_done();
    assert_eq!(
        d.iter().find(|d| d.tag == 4).unwrap().status,
        IoStatus::Failed
    );
    assert_eq!(
        d.iter().find(|d| d.tag == 5).unwrap().status,
        IoStatus::Success
    );
    disks[2].fail_read.store(false, Ordering::SeqCst);
    assert_eq!(info("L0r").unwrap()["state"], "online");

    h.on(1, || drop(ch));
    h.on(1, || drop(desc));
    h.run_until_idle();
    let r = call(&mut h, |done| ferrite_raid::delete("L0r", done));
    assert!(r.is_ok(), "{r:?}");
    assert!(info("L0r").is_none());
    assert!(ferrite_bdev::lookup("L0r").is_none());
    // Claims released.
    h.on(0, || drop(Desc::open("L0d1", true, |_| {}).unwrap()));
}

#[test]
fn concat_layout_and_round_trips() {
    let mut h = Harness::new(2, 12);
    setup(&mut h);
    // Members end to end, each rounded down to whole strips (8 blocks): 1000, 520, 776.
    let (disks, names) = make_disks(&mut h, "C0d", &[1000, 520, 777]);
    let o = opts("C0r", "concat", &names, 4);
    let r = call(&mut h, move |done| ferrite_raid::create(&o, done));
    assert!(r.is_ok(), "{r:?}");
    let v = info("C0r").unwrap();
    assert_eq!(v["raid_level"], "concat");
    let sizes: Vec<u64> = v["base_bdevs_list"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["data_size"].as_u64().unwrap())
        .collect();
    assert_eq!(sizes, vec![1000, 520, 776]);
    let blocks = 2296;
    assert_eq!(ferrite_bdev::lookup("C0r").unwrap().num_blocks(), blocks);
    let desc = h.on(1, || Desc::open("C0r", true, |_| {}).unwrap());
    let ch = h.on(1, || desc.channel().unwrap());
    let model = round_trip(&mut h, &ch, blocks, 9);
    let bs = 512usize;
    let starts = [0u64, 1000, 1520];
    for b in 0..blocks {
        let m = starts.iter().rposition(|s| *s <= b).unwrap();
        let off = b - starts[m];
        assert!(
            disks[m].read(off, 1) == model[b as usize * bs..(b as usize + 1) * bs],
            "raid block {b} is not at member {m} block {off}"
        );
    }
    // An unmap across the boundary of members 0 and 1 reaches exactly those two.
    h.on(1, || {
        plain(&ch, 1, |io| {
            io.prep_unmap(990, 20, record);
        })
    });
    h.run_until_idle();
    assert!(take_done().iter().all(|d| d.status == IoStatus::Success));
    let u: Vec<u64> = disks
        .iter()
        .map(|d| d.unmaps.load(Ordering::SeqCst))
        .collect();
    assert_eq!(u, vec![1, 1, 0]);
    assert!(disks[0].read(990, 10).iter().all(|b| *b == 0));
    assert!(disks[1].read(0, 10).iter().all(|b| *b == 0));
    h.on(1, || drop(ch));
    h.on(1, || drop(desc));
    h.run_until_idle();
    assert!(call(&mut h, |done| ferrite_raid::delete("C0r", done)).is_ok());
}

#[test]
fn configuring_until_the_last_base_appears_and_hot_remove_takes_raid0_offline() {
    let mut h = Harness::new(2, 13);
    setup(&mut h);
    let names: Vec<String> = (0..2).map(|i| format!("W0d{i}")).collect();
    let o = opts("W0r", "0", &names, 8);
    // No base exists yet: created, configuring.
    assert!(call(&mut h, move |done| ferrite_raid::create(&o, done)).is_ok());
    let v = info("W0r").unwrap();
    assert_eq!(v["state"], "configuring");
    assert_eq!(v["num_base_bdevs_discovered"], 0);
    assert_eq!(v["num_base_bdevs_operational"], 2);
    assert!(ferrite_bdev::lookup("W0r").is_none());
    let d0 = Disk::new(512, 512);
    let d1 = Disk::new(512, 512);
    let d0b = d0.clone();
    h.on(0, move || {
        register_disk("W0d0", &d0b, None);
    });
    h.run_until_idle();
    let v = info("W0r").unwrap();
    assert_eq!(v["state"], "configuring");
    assert_eq!(v["num_base_bdevs_discovered"], 1);
    assert_eq!(v["base_bdevs_list"][0]["is_configured"], true);
    assert_eq!(v["base_bdevs_list"][1]["is_configured"], false);
    let d1b = d1.clone();
    h.on(0, move || {
        register_disk("W0d1", &d1b, None);
    });
    h.run_until_idle();
    assert_eq!(info("W0r").unwrap()["state"], "online");
    assert_eq!(ferrite_bdev::lookup("W0r").unwrap().num_blocks(), 1024);
    // Hot-remove of a member: raid0 cannot continue; it goes offline (bdev unregistered),
    // keeps the other member claimed, and the removed base finishes its removal.
    let gone = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let g2 = gone.clone();
    h.on(0, move || {
        ferrite_bdev::unregister("W0d1", None, move |r| {
            assert!(r.is_ok());
            g2.store(true, Ordering::SeqCst);
        })
    });
    run_until(&mut h, "base removal", || gone.load(Ordering::SeqCst));
    h.run_until_idle();
    assert!(ferrite_bdev::lookup("W0r").is_none());
    let v = info("W0r").unwrap();
    assert_eq!(v["state"], "offline");
    assert_eq!(v["num_base_bdevs_discovered"], 1);
    assert!(h.on(0, || Desc::open("W0d0", true, |_| {}).is_err()));
    let off: Vec<String> = ferrite_raid::get_bdevs("offline")
        .unwrap()
        .iter()
        .map(|v| v["name"].as_str().unwrap().to_string())
        .collect();
    assert!(off.contains(&"W0r".to_string()));
    assert!(call(&mut h, |done| ferrite_raid::delete("W0r", done)).is_ok());
    assert!(info("W0r").is_none());
    h.on(0, || drop(Desc::open("W0d0", true, |_| {}).unwrap()));
}

#[test]
fn create_errors() {
    let mut h = Harness::new(1, 14);
    setup(&mut h);
    let (_, names) = make_disks(&mut h, "E0d", &[256, 256]);
    let cases: Vec<(RaidOpts, &str)> = vec![
        (opts("E0a", "raid6", &names, 4), "unknown raid level"),
        (opts("E0a", "raid0", &names, 3), "not a power of two"),
        (opts("E0a", "raid0", &names, 0), "not a power of two"),
        (opts("E0a", "raid1", &names, 4), "not supported by raid1"),
        (opts("E0a", "raid5f", &names, 4), "needs 3"),
        (opts("E0a", "raid0", &[], 4), "needs 1"),
        (
            opts("E0a", "raid0", &["E0d0".into(), "E0d0".into()], 4),
            "listed twice",
        ),
        (opts("E0a", "raid0", &["".into()], 4), "cannot be empty"),
        (opts("E0d0", "raid0", &names, 4), "already exists"),
        // 2^31 KiB on 512-byte blocks is 2^32 blocks: it once became a strip of 0 blocks.
        (opts("E0a", "raid0", &names, 1 << 31), "too large"),
        (opts("E0a", "raid5f", &names3(&names), 1 << 21), "too large"),
        (
            RaidOpts {
                uuid: Some("00000000-0000-0000-0000-000000000000".into()),
                ..opts("E0a", "raid1", &names, 0)
            },
            "nil UUID",
        ),
    ];
    for (o, want) in cases {
        let r = call(&mut h, move |done| ferrite_raid::create(&o, done));
        let e = r.unwrap_err();
        assert!(e.to_string().contains(want), "{e} (wanted {want})");
    }
    // A base held by someone else: EPERM, naming the holder; nothing left behind.
    let d = h.on(0, || {
        let d = Desc::open("E0d1", true, |_| {}).unwrap();
        d.claim(ferrite_bdev::ClaimKind::ExclusiveWrite, "someone")
            .unwrap();
        d
    });
    let o = opts("E0b", "raid0", &names, 4);
    let e = call(&mut h, move |done| ferrite_raid::create(&o, done)).unwrap_err();
    assert_eq!(e.errno(), libc::EPERM);
    assert!(e.to_string().contains("someone"), "{e}");
    assert!(info("E0b").is_none());
    // E0d0 was claimed before the failure: released again.
    h.on(0, || drop(Desc::open("E0d0", true, |_| {}).unwrap()));
    drop(d);
    // Duplicate raid name.
    let o = opts("E0c", "raid1", &names, 0);
    assert!(call(&mut h, move |done| ferrite_raid::create(&o, done)).is_ok());
    let o = opts("E0c", "raid1", &["x".into(), "y".into()], 0);
    let e = call(&mut h, move |done| ferrite_raid::create(&o, done)).unwrap_err();
    assert_eq!(e.errno(), libc::EEXIST);
    assert!(call(&mut h, |done| ferrite_raid::delete("E0c", done)).is_ok());
    let e = call(&mut h, |done| ferrite_raid::delete("E0c", done)).unwrap_err();
    assert_eq!(e.errno(), libc::ENODEV);
}

/// Three member names for a raid5f case (the third need not exist: validation comes first).
fn names3(names: &[String]) -> Vec<String> {
    let mut v = names.to_vec();
    v.push("E0dx".into());
    v
}

/// raid0 over two members (a power of two): reads and writes within one strip take the bdev
/// layer's striped route (no call into the raid module); the layout, data offset included
/// (with a superblock), is the same as the raid's own path gives, and I/O across strips
/// still goes through the module.
#[test]
fn raid0_striped_route_keeps_the_layout() {
    let mut h = Harness::new(2, 17);
    setup(&mut h);
    let (disks, names) = make_disks(&mut h, "S0d", &[4096, 4096]);
    let mut o = opts("S0r", "raid0", &names, 4);
    o.superblock = true;
    let r = call(&mut h, move |done| ferrite_raid::create(&o, done));
    assert!(r.is_ok(), "{r:?}");
    let v = info("S0r").unwrap();
    assert_eq!(v["state"], "online");
    let data_offset = v["base_bdevs_list"][0]["data_offset"].as_u64().unwrap();
    assert_eq!(v["base_bdevs_list"][1]["data_offset"], data_offset);
    assert!(data_offset > 0, "a superblock puts the data after it");
    let blocks = ferrite_bdev::lookup("S0r").unwrap().num_blocks();
    let desc = h.on(1, || Desc::open("S0r", true, |_| {}).unwrap());
    let ch = h.on(1, || desc.channel().unwrap());
    // Every block written by 4-block writes aligned to 4 (never across an 8-block strip), 64
    // in flight at a time.
    let bs = 512usize;
    let mut model = vec![0u8; blocks as usize * bs];
    let arena = Arena::default();
    for batch in 0..blocks / 4 / 64 {
        for i in 0..64 {
            let off = (batch * 64 + i) * 4;
            let data = noise(off + 1, 4 * bs);
            model[off as usize * bs..(off + 4) as usize * bs].copy_from_slice(&data);
            h.on(1, || write_at(&ch, &arena, off, data, off));
        }
        h.run_until_idle();
        let done = take_done();
        assert_eq!(done.len(), 64);
        assert!(done.iter().all(|d| d.status == IoStatus::Success));
    }
    // Block b of the raid is on member (b / 8) % 2 at data_offset + (b / 16) * 8 + b % 8.
    for b in 0..blocks {
        let (m, off) = ((b / 8) % 2, data_offset + (b / 16) * 8 + b % 8);
        assert!(
            disks[m as usize].read(off, 1) == model[b as usize * bs..(b as usize + 1) * bs],
            "raid block {b} is not at member {m} block {off}"
        );
    }
    // Single-block and whole-strip reads (the route) and reads across strips (the module).
    let mut rng = Rng(99);
    let mut reads = Vec::new();
    for i in 0..64 {
        let (off, n) = match i % 3 {
            0 => (rng.below(blocks), 1),
            1 => (rng.below(blocks / 8) * 8, 8),
            _ => (rng.below(blocks - 40), 12 + rng.below(28)),
        };
        reads.push((h.on(1, || read_at(&ch, &arena, off, n, i)), off, n));
    }
    h.run_until_idle();
    let done = take_done();
    assert_eq!(done.len(), 64);
    assert!(done.iter().all(|d| d.status == IoStatus::Success));
    for (idx, off, n) in reads {
        assert!(
            arena.get(idx) == model[off as usize * bs..(off + n) as usize * bs],
            "read of {n} blocks at {off} differs"
        );
    }
    // A member failing reads fails the reads within its strips (forwarded as before).
    disks[1].fail_read.store(true, Ordering::SeqCst);
    h.on(1, || read_at(&ch, &arena, 8, 4, 500)); // strip 1: member 1
    h.on(1, || read_at(&ch, &arena, 0, 4, 501)); // strip 0: member 0
    h.run_until_idle();
    let d = take_done();
    let st = |t| d.iter().find(|d| d.tag == t).unwrap().status;
    assert_eq!(st(500), IoStatus::Failed);
    assert_eq!(st(501), IoStatus::Success);
    disks[1].fail_read.store(false, Ordering::SeqCst);
    h.on(1, || drop(ch));
    h.on(1, || drop(desc));
    h.run_until_idle();
    let r = call(&mut h, |done| ferrite_raid::delete("S0r", done));
    assert!(r.is_ok(), "{r:?}");
    assert!(ferrite_bdev::lookup("S0r").is_none());
}
