//! Superblocks: written on creation and on member changes; a "restart" (delete the raid,
//! unregister its disks, register them again over the same data) reassembles it from disk
//! with no RPC, in the right state; corrupt or hostile superblocks are ignored cleanly;
//! raid0's layout and `save_config` across a restart. Degraded start, returning members and
//! the persisted bitmap are in `superblock_assembly.rs`, rebuild resume in
//! `superblock_resume.rs`.
//!
//! The rebuild window (`bdev_raid_set_options`) is global to the process: every test here
//! that depends on it sets 16 KiB, and none sets anything else.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::restart::*;
use common::*;
use ferrite_bdev::{Desc, IoType};
use ferrite_raid::superblock::HEADER_LEN;
use ferrite_raid::{MemberState, RaidOpts, RebuildState};
use ferrite_reactor::harness::Harness;
use std::sync::atomic::Ordering;

#[test]
fn raid1_reassembles_after_restart_with_the_same_identity() {
    let mut h = Harness::new(2, 31);
    setup(&mut h);
    let d = disks(&mut h, "P1d", 2);
    let uuid = create(&mut h, "P1", "raid1", 0, &d);
    let v = info("P1").unwrap();
    assert_eq!(v["superblock"], true);
    assert_eq!(v["state"], "online");
    for b in v["base_bdevs_list"].as_array().unwrap() {
        assert_eq!(b["data_offset"], OFF);
        assert_eq!(b["data_size"], DISK_BLOCKS - OFF);
    }
    assert_eq!(
        ferrite_bdev::lookup("P1").unwrap().num_blocks(),
        DISK_BLOCKS - OFF
    );
    // Every member carries a valid superblock describing the raid and itself.
    for i in 0..2 {
        let sb = sb_of(&d.disks[i], d.uuids[i]);
        assert_eq!(sb.uuid.to_string(), uuid);
        assert_eq!(sb.name, "P1");
        assert_eq!(sb.slot as usize, i);
        assert_eq!(sb.members.len(), 2);
        assert!(sb
            .members
            .iter()
            .all(|m| m.state == MemberState::Configured));
        assert_eq!(sb.members[1 - i].uuid, Some(d.uuids[1 - i]));
    }
    // Data goes after the superblock area.
    let (desc, ch) = io_channel(&mut h, "P1");
    let arena = Arena::default();
    let data = noise(1, 64 * BS);
    write(&mut h, &ch, &arena, 10, data.clone());
    assert_eq!(d.disks[0].read(OFF + 10, 64), data);
    assert_eq!(d.disks[1].read(OFF + 10, 64), data);
    close(&mut h, desc, ch);
    // save_config does not recreate a raid with a superblock (its members do).
    let cfg = h.on(0, ferrite_bdev::config::subsystem_config);
    assert!(
        !cfg.iter().any(|e| e["method"] == "bdev_raid_create"),
        "{cfg:?}"
    );

    // Restart: the raid reassembles itself from the superblocks, no RPC.
    shutdown(&mut h, "P1", &d);
    assert!(info("P1").is_none());
    register(&mut h, &d, 1);
    let v = info("P1").unwrap();
    assert_eq!(v["state"], "configuring");
    assert_eq!(v["num_base_bdevs_discovered"], 1);
    assert_eq!(v["superblock"], true);
    register(&mut h, &d, 0);
    let v = info("P1").unwrap();
    assert_eq!(v["state"], "online", "{v}");
    assert_eq!(v["uuid"], uuid.as_str());
    assert_eq!(v["num_base_bdevs_operational"], 2);
    let b = ferrite_bdev::lookup("P1").unwrap();
    assert_eq!(b.uuid().to_string(), uuid);
    let (desc, ch) = io_channel(&mut h, "P1");
    assert_eq!(read(&mut h, &ch, 10, 64), data);
    close(&mut h, desc, ch);
    shutdown(&mut h, "P1", &d);
}

/// On members with a volatile write cache, a rebuild's copies are flushed before a
/// superblock records them (a checkpoint or the final "configured" state): a power loss
/// cannot leave a superblock that vouches for blocks still in the cache.
#[test]
fn rebuild_copies_are_flushed_before_a_superblock_records_them() {
    let mut h = Harness::new(2, 40);
    setup(&mut h);
    let d = disks_with_cache(&mut h, "PCd", 2, true);
    create(&mut h, "PC", "raid1", 0, &d);
    let data_blocks = DISK_BLOCKS - OFF;
    let model = noise(12, data_blocks as usize * BS);
    fill(&mut h, "PC", &model);
    // Member 1 leaves with a failure (a full rebuild when it is added again).
    d.disks[1].fail_write.store(true, Ordering::SeqCst);
    let (desc, ch) = io_channel(&mut h, "PC");
    let arena = Arena::default();
    write(&mut h, &ch, &arena, 0, model[..8 * BS].to_vec());
    close(&mut h, desc, ch);
    assert_eq!(info("PC").unwrap()["num_base_bdevs_operational"], 1);
    d.disks[1].fail_write.store(false, Ordering::SeqCst);
    d.disks[1].log.lock().unwrap().clear();
    assert!(call(&mut h, |done| ferrite_raid::add_base_bdev(
        "PC", "PCd1", done
    ))
    .is_ok());
    let rep = rebuild_report(&mut h, "PC");
    assert_eq!(rep.error, None, "{rep:?}");
    assert_eq!(rep.copied_blocks, data_blocks, "{rep:?}");
    // The copies run in order, a window at a time, and a checkpoint vouches only for the
    // windows before it: when a superblock goes out, at most the window being copied now is
    // unflushed, and none when the last one (the member in sync) does.
    let log = d.disks[1].log.lock().unwrap().clone();
    let mut unflushed = 0;
    let mut at_sb = Vec::new();
    for &(t, off) in &log {
        match t {
            IoType::Write if off >= OFF => unflushed += 1,
            IoType::Write if off == 0 => at_sb.push(unflushed),
            IoType::Flush => unflushed = 0,
            _ => {}
        }
    }
    assert!(
        at_sb.len() > 2,
        "checkpoints and the final superblock: {log:?}"
    );
    assert!(at_sb.iter().all(|&n| n <= 1), "{at_sb:?}: {log:?}");
    assert_eq!(at_sb.last(), Some(&0), "{log:?}");
    assert_eq!(d.disks[1].read(OFF, data_blocks), model);
    let sb = sb_of(&d.disks[1], d.uuids[1]);
    assert!(
        sb.members
            .iter()
            .all(|m| m.state == MemberState::Configured),
        "{sb:?}"
    );
    shutdown(&mut h, "PC", &d);
}

#[test]
fn missing_member_reassembles_degraded_then_rebuilds() {
    let mut h = Harness::new(2, 32);
    setup(&mut h);
    let d = disks(&mut h, "P2d", 2);
    create(&mut h, "P2", "raid1", 0, &d);
    let seq0 = sb_of(&d.disks[0], d.uuids[0]).seq;
    // Member 1 goes away while the raid runs: member 0's superblock records it missing.
    let r = call(&mut h, |done| ferrite_raid::remove_base_bdev("P2d1", done));
    assert!(r.is_ok(), "{r:?}");
    let sb = sb_of(&d.disks[0], d.uuids[0]);
    assert!(sb.seq > seq0);
    assert_eq!(sb.members[1].state, MemberState::Missing);
    assert_eq!(sb.members[0].state, MemberState::Configured);
    let (desc, ch) = io_channel(&mut h, "P2");
    let arena = Arena::default();
    let data = noise(2, 128 * BS);
    write(&mut h, &ch, &arena, 0, data.clone());
    close(&mut h, desc, ch);

    // Restart with only member 0: online at once, degraded.
    shutdown(&mut h, "P2", &d);
    register(&mut h, &d, 0);
    let v = info("P2").unwrap();
    assert_eq!(v["state"], "online", "{v}");
    assert_eq!(v["num_base_bdevs_operational"], 1);
    assert_eq!(v["base_bdevs_list"][1]["is_configured"], false);
    // Member 1 comes back with its old superblock: not taken back silently.
    register(&mut h, &d, 1);
    let v = info("P2").unwrap();
    assert_eq!(v["num_base_bdevs_operational"], 1);
    assert!(h.on(0, || Desc::open("P2d1", true, |_| {}).is_ok()));
    // Re-added by RPC: rebuilt, recorded in sync.
    ferrite_raid::set_rebuild_pause("P2", Some(RebuildState::Reading));
    let r = call(&mut h, |done| {
        ferrite_raid::add_base_bdev("P2", "P2d1", done)
    });
    assert!(r.is_ok(), "{r:?}");
    // While rebuilding, the superblocks record the target as rebuilding.
    let sb = sb_of(&d.disks[0], d.uuids[0]);
    assert_eq!(sb.members[1].state, MemberState::Rebuilding);
    assert_eq!(sb.members[1].uuid, Some(d.uuids[1]));
    ferrite_raid::set_rebuild_pause("P2", None);
    ferrite_raid::resume_rebuild("P2");
    run_until(&mut h, "rebuild", || {
        ferrite_raid::rebuild_state("P2").is_none()
    });
    h.run_until_idle();
    for i in 0..2 {
        let sb = sb_of(&d.disks[i], d.uuids[i]);
        assert!(
            sb.members
                .iter()
                .all(|m| m.state == MemberState::Configured),
            "{sb:?}"
        );
        assert_eq!(d.disks[i].read(OFF, 128), data, "member {i}");
    }
    // Restart again: both members, online, not degraded.
    shutdown(&mut h, "P2", &d);
    register(&mut h, &d, 0);
    register(&mut h, &d, 1);
    let v = info("P2").unwrap();
    assert_eq!(v["state"], "online");
    assert_eq!(v["num_base_bdevs_operational"], 2);
    shutdown(&mut h, "P2", &d);
}

#[test]
fn corrupt_superblocks_are_ignored() {
    let mut h = Harness::new(2, 33);
    setup(&mut h);
    let d = disks(&mut h, "P3d", 2);
    create(&mut h, "P3", "raid1", 0, &d);
    shutdown(&mut h, "P3", &d);
    // Member 0: one flipped bit in the member table (CRC mismatch).
    d.disks[0].poke(HEADER_LEN + 3, &[d.disks[0].read(0, 1)[HEADER_LEN + 3] ^ 1]);
    register(&mut h, &d, 0);
    assert!(
        info("P3").is_none(),
        "a corrupt superblock assembled a raid"
    );
    assert!(h.on(0, || Desc::open("P3d0", true, |_| {}).is_ok()));
    // Member 1 valid: the raid waits (configuring) for member 0, which it cannot trust.
    register(&mut h, &d, 1);
    let v = info("P3").unwrap();
    assert_eq!(v["state"], "configuring");
    assert_eq!(v["num_base_bdevs_discovered"], 1);
    assert!(call(&mut h, |done| ferrite_raid::delete("P3", done)).is_ok());
    unregister(&mut h, "P3d1");
    unregister(&mut h, "P3d0");

    // Hostile headers with a valid magic: lengths, counts, block size, slot, level.
    let good = d.disks[1].read(0, 8);
    let mut cases: Vec<(usize, Vec<u8>)> = Vec::new();
    for (at, bytes) in [
        (12usize, u32::MAX.to_le_bytes().to_vec()), // length
        (132, 1000u32.to_le_bytes().to_vec()),      // members
        (132, 0u32.to_le_bytes().to_vec()),         // no members
        (120, 4096u32.to_le_bytes().to_vec()),      // block size
        (136, 7u32.to_le_bytes().to_vec()),         // slot
        (124, 42u32.to_le_bytes().to_vec()),        // level
        (8, 9u32.to_le_bytes().to_vec()),           // version
    ] {
        let mut b = good.clone();
        b[at..at + bytes.len()].copy_from_slice(&bytes);
        cases.push((at, b));
    }
    for (i, (_, bytes)) in cases.into_iter().enumerate() {
        let disk = Disk::new(512, DISK_BLOCKS);
        disk.poke(0, &bytes);
        let name = format!("P3h{i}");
        let (d2, n2, u) = (disk.clone(), name.clone(), d.uuids[1]);
        h.on(0, move || {
            register_disk(&n2, &d2, Some(u));
        });
        h.run_until_idle();
        assert!(info("P3").is_none(), "case {i} assembled a raid");
        unregister(&mut h, &name);
    }
    // A disk smaller than the data area its (otherwise valid) superblock claims.
    let small = Disk::new(512, 1000);
    small.poke(0, &good[..4096]);
    let u = d.uuids[1];
    h.on(0, move || {
        register_disk("P3s", &small, Some(u));
    });
    h.run_until_idle();
    assert!(info("P3").is_none());
    unregister(&mut h, "P3s");
}

#[test]
fn raid0_with_superblock_keeps_its_layout_across_restart() {
    let mut h = Harness::new(2, 34);
    setup(&mut h);
    let d = disks(&mut h, "P4d", 3);
    let uuid = create(&mut h, "P4", "raid0", 64, &d);
    // 2048 data blocks per member, strip 128 blocks: 6144 blocks.
    assert_eq!(ferrite_bdev::lookup("P4").unwrap().num_blocks(), 6144);
    let (desc, ch) = io_channel(&mut h, "P4");
    let arena = Arena::default();
    let data = noise(4, 1000 * BS);
    write(&mut h, &ch, &arena, 100, data.clone());
    close(&mut h, desc, ch);
    // Raid block b is on member (b / 128) % 3 at OFF + (b / 128 / 3) * 128 + b % 128.
    for b in [100u64, 127, 128, 383, 384, 700, 1099] {
        let (m, o) = ((b / 128) % 3, (b / 128 / 3) * 128 + b % 128);
        let i = (b - 100) as usize * BS;
        assert_eq!(
            d.disks[m as usize].read(OFF + o, 1),
            data[i..i + BS],
            "block {b}"
        );
    }
    shutdown(&mut h, "P4", &d);
    for i in [2, 0, 1] {
        register(&mut h, &d, i);
    }
    let v = info("P4").unwrap();
    assert_eq!(v["state"], "online");
    assert_eq!(v["uuid"], uuid.as_str());
    assert_eq!(v["strip_size_kb"], 64);
    assert_eq!(v["raid_level"], "raid0");
    let (desc, ch) = io_channel(&mut h, "P4");
    assert_eq!(read(&mut h, &ch, 100, 1000), data);
    close(&mut h, desc, ch);
    shutdown(&mut h, "P4", &d);
}

#[test]
fn save_config_recreates_raids_without_superblock() {
    let mut h = Harness::new(2, 35);
    setup(&mut h);
    let d = disks(&mut h, "P5d", 2);
    let o = RaidOpts {
        name: "P5".into(),
        raid_level: "concat".into(),
        base_bdevs: d.names.clone(),
        strip_size_kb: 16,
        ..Default::default()
    };
    assert!(call(&mut h, move |done| ferrite_raid::create(&o, done)).is_ok());
    // One waiting for a base that does not exist.
    let o = RaidOpts {
        name: "P5w".into(),
        raid_level: "raid1".into(),
        base_bdevs: vec!["P5x0".into(), "P5x1".into()],
        ..Default::default()
    };
    assert!(call(&mut h, move |done| ferrite_raid::create(&o, done)).is_ok());
    let cfg = h.on(0, ferrite_bdev::config::subsystem_config);
    let creates: Vec<&serde_json::Value> = cfg
        .iter()
        .filter(|e| e["method"] == "bdev_raid_create")
        .collect();
    let p5 = creates
        .iter()
        .find(|e| e["params"]["name"] == "P5")
        .unwrap();
    assert_eq!(p5["params"]["raid_level"], "concat");
    assert_eq!(p5["params"]["strip_size_kb"], 16);
    assert_eq!(
        p5["params"]["base_bdevs"],
        serde_json::json!(["P5d0", "P5d1"])
    );
    assert_eq!(
        p5["params"]["uuid"],
        ferrite_bdev::lookup("P5").unwrap().uuid().to_string()
    );
    let w = creates
        .iter()
        .find(|e| e["params"]["name"] == "P5w")
        .unwrap();
    assert!(w["params"].get("strip_size_kb").is_none());
    // The raid entry comes after its bases' entries would (bdev registration order).
    let pos = |m: &str| cfg.iter().position(|e| e["params"]["name"] == m);
    assert!(pos("P5").is_some());
    assert!(call(&mut h, |done| ferrite_raid::delete("P5", done)).is_ok());
    assert!(call(&mut h, |done| ferrite_raid::delete("P5w", done)).is_ok());
}
