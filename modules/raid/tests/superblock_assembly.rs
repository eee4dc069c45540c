//! Superblocks, assembly policy: degraded start once examine settles (raid1, raid5f; never
//! raid0), returning members (waiting their turn behind a rebuild), and the persisted
//! write-intent bitmap across a restart.
//!
//! The rebuild window (`bdev_raid_set_options`) is global to the process: every test here
//! that depends on it sets 16 KiB, and none sets anything else.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;

use common::restart::*;
use common::*;
use ferrite_bdev::IoStatus;
use ferrite_raid::{MemberState, RebuildState};
use ferrite_reactor::harness::Harness;

#[test]
fn absent_member_starts_degraded_once_examine_settles_and_returns_with_a_resync() {
    let mut h = Harness::new(2, 36);
    setup(&mut h);
    let d = disks(&mut h, "P6d", 2);
    create(&mut h, "P6", "raid1", 0, &d);
    let data_blocks = DISK_BLOCKS - OFF;
    let data = noise(6, data_blocks as usize * BS);
    fill(&mut h, "P6", &data);
    let seq_before = sb_of(&d.disks[1], d.uuids[1]).seq;
    shutdown(&mut h, "P6", &d);

    // Only member 0: configuring while examine goes on, degraded once it has settled (and
    // the waiter runs only once the raid bdev is registered).
    register(&mut h, &d, 0);
    assert_eq!(info("P6").unwrap()["state"], "configuring");
    assert!(
        settle(&mut h, "P6"),
        "the waiter ran before the raid was registered"
    );
    let v = info("P6").unwrap();
    assert_eq!(v["state"], "online", "{v}");
    assert_eq!(v["num_base_bdevs_operational"], 1, "{v}");
    let sb = sb_of(&d.disks[0], d.uuids[0]);
    assert!(sb.seq > seq_before, "{sb:?}");
    assert_eq!(sb.members[1].state, MemberState::Missing);
    assert_eq!(sb.members[1].uuid, Some(d.uuids[1]));
    // Settling again changes nothing.
    assert!(settle(&mut h, "P6"));
    // Degraded writes to two 64 KiB regions.
    let (desc, ch) = io_channel(&mut h, "P6");
    let arena = Arena::default();
    let mut model = data.clone();
    for (off, seed) in [(0u64, 61u64), (1000, 62)] {
        let w = noise(seed, 10 * BS);
        model[off as usize * BS..(off as usize + 10) * BS].copy_from_slice(&w);
        write(&mut h, &ch, &arena, off, w);
    }
    close(&mut h, desc, ch);

    // Member 1 appears (older superblock, still listing itself in sync): taken back with a
    // resync of exactly the two regions written without it.
    register(&mut h, &d, 1);
    run_until(&mut h, "resync", || {
        ferrite_raid::rebuild_state("P6").is_none() && ferrite_raid::last_rebuild("P6").is_some()
    });
    h.run_until_idle();
    let rep = ferrite_raid::last_rebuild("P6").unwrap();
    assert_eq!(rep.error, None);
    assert!(rep.resync, "{rep:?}");
    assert_eq!(rep.copied_blocks, 2 * 128, "{rep:?}");
    let v = info("P6").unwrap();
    assert_eq!(v["num_base_bdevs_operational"], 2, "{v}");
    for i in 0..2 {
        assert_eq!(d.disks[i].read(OFF, data_blocks), model, "member {i}");
        let sb = sb_of(&d.disks[i], d.uuids[i]);
        assert!(
            sb.members
                .iter()
                .all(|m| m.state == MemberState::Configured),
            "{sb:?}"
        );
    }

    // Removed by RPC: its own superblock says it left, so alone it assembles nothing (its
    // data is stale), and next to member 0 it is not taken back silently.
    let r = call(&mut h, |done| ferrite_raid::remove_base_bdev("P6d1", done));
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(
        sb_of(&d.disks[1], d.uuids[1]).members[1].state,
        MemberState::Missing
    );
    shutdown(&mut h, "P6", &d);
    register(&mut h, &d, 1);
    settle(&mut h, "P6");
    assert!(
        info("P6").is_none(),
        "a member that left assembled the raid"
    );
    register(&mut h, &d, 0);
    settle(&mut h, "P6");
    let v = info("P6").unwrap();
    assert_eq!(v["state"], "online", "{v}");
    assert_eq!(v["num_base_bdevs_operational"], 1, "{v}");
    shutdown(&mut h, "P6", &d);
}

#[test]
fn raid0_missing_a_member_stays_configuring_after_examine_settles() {
    let mut h = Harness::new(2, 37);
    setup(&mut h);
    let d = disks(&mut h, "P7d", 2);
    create(&mut h, "P7", "raid0", 64, &d);
    shutdown(&mut h, "P7", &d);
    register(&mut h, &d, 1);
    assert!(!settle(&mut h, "P7"));
    let v = info("P7").unwrap();
    assert_eq!(v["state"], "configuring", "{v}");
    register(&mut h, &d, 0);
    assert_eq!(info("P7").unwrap()["state"], "online");
    shutdown(&mut h, "P7", &d);
}

/// The write-intent bitmap is made durable with a flush on members with a write cache; a
/// member whose flush fails may hold its bits only in that cache, so it is dropped before
/// the writes waiting for the bitmap go out (before, the failure was ignored).
#[test]
fn a_member_whose_bitmap_flush_fails_is_dropped() {
    let mut h = Harness::new(2, 39);
    setup(&mut h);
    let d = disks_with_cache(&mut h, "PFd", 3, true);
    create(&mut h, "PF", "raid1", 0, &d);
    assert!(call(&mut h, |done| ferrite_raid::remove_base_bdev("PFd2", done)).is_ok());
    assert_eq!(info("PF").unwrap()["num_base_bdevs_operational"], 2);
    d.disks[1].fail_flush.store(true, Ordering::SeqCst);
    let flushes = d.disks[0].flushes.load(Ordering::SeqCst);
    // A write to a clean region: its bit goes to disk (write, then flush) first.
    let (desc, ch) = io_channel(&mut h, "PF");
    let arena = Arena::default();
    let w = noise(91, 8 * BS);
    write(&mut h, &ch, &arena, 0, w.clone());
    assert!(
        d.disks[0].flushes.load(Ordering::SeqCst) > flushes,
        "the bitmap was flushed"
    );
    let v = info("PF").unwrap();
    assert_eq!(v["num_base_bdevs_operational"], 1, "{v}");
    assert_eq!(v["state"], "online", "{v}");
    assert_eq!(read(&mut h, &ch, 0, 8), w);
    assert_eq!(d.disks[0].read(OFF, 8), w);
    close(&mut h, desc, ch);
    d.disks[1].fail_flush.store(false, Ordering::SeqCst);
    shutdown(&mut h, "PF", &d);
}

/// A raid assembled from its superblocks and still waiting for a member takes only its
/// recorded members by `bdev_raid_add_base_bdev`: a blank bdev offered for the slot of a
/// member recorded missing would have become an in-sync copy, read from when the raid came
/// online. Once online, the same call adds it and rebuilds it.
#[test]
fn an_assembling_raid_refuses_a_bdev_it_does_not_expect() {
    let mut h = Harness::new(2, 41);
    setup(&mut h);
    let d = disks(&mut h, "PQd", 3);
    create(&mut h, "PQ", "raid1", 0, &d);
    let data_blocks = DISK_BLOCKS - OFF;
    let model = noise(41, data_blocks as usize * BS);
    fill(&mut h, "PQ", &model);
    // Member 2 leaves (recorded missing); after a restart only member 0 is there yet.
    assert!(call(&mut h, |done| ferrite_raid::remove_base_bdev("PQd2", done)).is_ok());
    shutdown(&mut h, "PQ", &d);
    register(&mut h, &d, 0);
    assert_eq!(info("PQ").unwrap()["state"], "configuring");
    let blank = Disk::new(512, DISK_BLOCKS);
    h.on(0, move || {
        register_disk("PQx", &blank, None);
    });
    let e = call(&mut h, |done| {
        ferrite_raid::add_base_bdev("PQ", "PQx", done)
    })
    .unwrap_err();
    assert_eq!(e.errno(), libc::EINVAL);
    assert!(
        e.to_string().contains("assembled from its superblocks"),
        "{e}"
    );
    // Its recorded member is taken; the raid comes online with the two in-sync copies.
    register(&mut h, &d, 1);
    let v = info("PQ").unwrap();
    assert_eq!(v["state"], "online", "{v}");
    assert_eq!(v["num_base_bdevs_operational"], 2, "{v}");
    // Now the blank bdev is added as a new member: rebuilt before it is read from.
    assert!(call(&mut h, |done| ferrite_raid::add_base_bdev(
        "PQ", "PQx", done
    ))
    .is_ok());
    assert_eq!(rebuild_report(&mut h, "PQ").error, None);
    let (desc, ch) = io_channel(&mut h, "PQ");
    for i in 0..8 {
        let off = i * (data_blocks / 8);
        assert!(
            read(&mut h, &ch, off, 8) == model[off as usize * BS..(off as usize + 8) * BS],
            "raid blocks at {off}"
        );
    }
    close(&mut h, desc, ch);
    unregister(&mut h, "PQx");
    shutdown(&mut h, "PQ", &d);
}

/// A member removed by RPC leaves in sync (writes from then on mark the bitmap, and it is
/// resynced from it when it comes back), but a write that began before the removal and
/// fails on it while it leaves is in no bitmap: the member is recorded as failed instead,
/// and added again it gets a full rebuild, so it does not keep the old data there.
#[test]
fn a_member_that_fails_a_write_as_it_leaves_is_recorded_failed() {
    let mut h = Harness::new(2, 42);
    setup(&mut h);
    let d = disks(&mut h, "PMd", 2);
    create(&mut h, "PM", "raid1", 0, &d);
    let data_blocks = DISK_BLOCKS - OFF;
    let mut model = noise(42, data_blocks as usize * BS);
    fill(&mut h, "PM", &model);
    // A write reaches member 0 and is held on member 1...
    let (desc, ch) = io_channel(&mut h, "PM");
    let arena = Arena::default();
    d.disks[1].hold.store(true, Ordering::SeqCst);
    let w = noise(420, 8 * BS);
    h.on(1, || write_at(&ch, &arena, 64, w.clone(), 1));
    h.run_until_idle();
    assert_eq!(d.disks[1].held(), 1);
    model[64 * BS..72 * BS].copy_from_slice(&w);
    // ...when member 1 is removed: the removal waits for the write, which fails there.
    let removed: std::sync::Arc<std::sync::Mutex<Option<bool>>> = Default::default();
    let r2 = removed.clone();
    h.on(0, move || {
        ferrite_raid::remove_base_bdev("PMd1", move |r| *r2.lock().unwrap() = Some(r.is_ok()))
    });
    h.run_until_idle();
    assert!(
        removed.lock().unwrap().is_none(),
        "the removal waits for the write"
    );
    d.disks[1].fail_write.store(true, Ordering::SeqCst);
    d.disks[1].hold.store(false, Ordering::SeqCst);
    run_until(&mut h, "removal", || removed.lock().unwrap().is_some());
    assert_eq!(*removed.lock().unwrap(), Some(true));
    assert!(take_done().iter().all(|x| x.status == IoStatus::Success));
    close(&mut h, desc, ch);
    let sb = sb_of(&d.disks[0], d.uuids[0]);
    assert_eq!(sb.members[1].state, MemberState::Failed, "{sb:?}");
    assert!(!sb.members[1].tracked, "{sb:?}");
    // Added again: a full rebuild, after which it holds the write it failed.
    d.disks[1].fail_write.store(false, Ordering::SeqCst);
    assert!(call(&mut h, |done| ferrite_raid::add_base_bdev(
        "PM", "PMd1", done
    ))
    .is_ok());
    let rep = rebuild_report(&mut h, "PM");
    assert_eq!(rep.error, None, "{rep:?}");
    assert!(!rep.resync, "{rep:?}");
    for i in 0..2 {
        assert!(d.disks[i].read(OFF, data_blocks) == model, "member {i}");
    }
    shutdown(&mut h, "PM", &d);
}

/// A member whose superblock update fails keeps an older superblock, which may list as in
/// sync a member that has since left: it is dropped, and the others record it failed.
#[test]
fn a_member_whose_superblock_write_fails_is_dropped() {
    let mut h = Harness::new(2, 43);
    setup(&mut h);
    let d = disks(&mut h, "PSd", 3);
    create(&mut h, "PS", "raid1", 0, &d);
    d.disks[1].fail_block0.store(true, Ordering::SeqCst);
    assert!(call(&mut h, |done| ferrite_raid::remove_base_bdev("PSd2", done)).is_ok());
    run_until(&mut h, "member 1 dropped", || {
        info("PS").unwrap()["num_base_bdevs_operational"] == 1
    });
    h.run_until_idle();
    let sb = sb_of(&d.disks[0], d.uuids[0]);
    assert_eq!(sb.members[1].state, MemberState::Failed, "{sb:?}");
    assert_eq!(sb.members[2].state, MemberState::Missing, "{sb:?}");
    assert_eq!(info("PS").unwrap()["state"], "online");
    d.disks[1].fail_block0.store(false, Ordering::SeqCst);
    shutdown(&mut h, "PS", &d);
}

/// With the buffer pool empty, a removal's superblock update waits for buffers instead of
/// going ahead unrecorded (which left every superblock listing the departed member in sync).
#[test]
fn a_superblock_update_waits_for_a_buffer() {
    let mut h = Harness::new(2, 44);
    setup(&mut h);
    let d = disks(&mut h, "PWd", 3);
    create(&mut h, "PW", "raid1", 0, &d);
    let seq = sb_of(&d.disks[0], d.uuids[0]).seq;
    let held: Vec<ferrite_bdev::DmaBuf> = h.on(0, || {
        let mut v = Vec::new();
        while let Ok(Some(b)) = ferrite_bdev::DmaBuf::get(512) {
            v.push(b);
        }
        v
    });
    assert!(!held.is_empty());
    let removed: std::sync::Arc<std::sync::Mutex<Option<bool>>> = Default::default();
    let r2 = removed.clone();
    h.on(0, move || {
        ferrite_raid::remove_base_bdev("PWd2", move |r| *r2.lock().unwrap() = Some(r.is_ok()))
    });
    for _ in 0..200 {
        h.poll_all();
    }
    assert!(
        removed.lock().unwrap().is_none(),
        "the removal went on without its superblock"
    );
    assert_eq!(sb_of(&d.disks[0], d.uuids[0]).seq, seq);
    h.on(0, move || drop(held));
    run_until(&mut h, "removal", || removed.lock().unwrap().is_some());
    assert_eq!(*removed.lock().unwrap(), Some(true));
    let sb = sb_of(&d.disks[0], d.uuids[0]);
    assert!(sb.seq > seq);
    assert_eq!(sb.members[2].state, MemberState::Missing, "{sb:?}");
    shutdown(&mut h, "PW", &d);
}

#[test]
fn persisted_bitmap_resyncs_a_member_after_restart_and_garbage_means_full_rebuild() {
    let mut h = Harness::new(2, 38);
    setup(&mut h);
    let d = disks(&mut h, "P8d", 2);
    create(&mut h, "P8", "raid1", 0, &d);
    let data_blocks = DISK_BLOCKS - OFF;
    let mut model = noise(8, data_blocks as usize * BS);
    fill(&mut h, "P8", &model);
    assert!(call(&mut h, |done| ferrite_raid::remove_base_bdev("P8d1", done)).is_ok());
    assert!(sb_of(&d.disks[0], d.uuids[0]).members[1].tracked);

    // A write to a clean region waits until its bit is on disk: with member 0 holding its
    // I/O, only the bitmap write has reached it.
    let (desc, ch) = io_channel(&mut h, "P8");
    let arena = Arena::default();
    d.disks[0].hold.store(true, Ordering::SeqCst);
    let w0 = noise(81, 10 * BS);
    h.on(1, || write_at(&ch, &arena, 0, w0.clone(), 1));
    h.run_until_idle();
    assert_eq!(
        d.disks[0].held(),
        1,
        "the data write went before its bitmap bit"
    );
    assert_eq!(done_count(), 0);
    d.disks[0].hold.store(false, Ordering::SeqCst);
    run_until(&mut h, "write", || done_count() == 1);
    assert!(take_done().iter().all(|x| x.status == IoStatus::Success));
    assert_eq!(
        bitmap_byte(&d.disks[0]) & 1,
        1,
        "region 0 not marked on disk"
    );
    model[..10 * BS].copy_from_slice(&w0);
    let w1 = noise(82, 10 * BS);
    write(&mut h, &ch, &arena, 1000, w1.clone());
    model[1000 * BS..1010 * BS].copy_from_slice(&w1);
    assert_eq!(bitmap_byte(&d.disks[0]), 0b1000_0001);
    close(&mut h, desc, ch);

    // Restart: member 1 (removed by RPC) is not assembled; re-added, it is resynced from the
    // bitmap loaded from disk: exactly the two regions.
    shutdown(&mut h, "P8", &d);
    register(&mut h, &d, 0);
    register(&mut h, &d, 1);
    settle(&mut h, "P8");
    assert_eq!(info("P8").unwrap()["num_base_bdevs_operational"], 1);
    assert!(call(&mut h, |done| ferrite_raid::add_base_bdev(
        "P8", "P8d1", done
    ))
    .is_ok());
    run_until(&mut h, "resync", || {
        ferrite_raid::rebuild_state("P8").is_none() && ferrite_raid::last_rebuild("P8").is_some()
    });
    h.run_until_idle();
    let rep = ferrite_raid::last_rebuild("P8").unwrap();
    assert_eq!(rep.error, None);
    assert!(rep.resync, "{rep:?}");
    assert_eq!(rep.copied_blocks, 2 * 128, "{rep:?}");
    for i in 0..2 {
        assert_eq!(d.disks[i].read(OFF, data_blocks), model, "member {i}");
    }
    // Nobody away: the bitmap is cleared on disk too (lazily, by the next round).
    run_until(&mut h, "bitmap cleared", || bitmap_byte(&d.disks[0]) == 0);

    // Again, but the bitmap on disk is damaged: never trusted, a full rebuild.
    assert!(call(&mut h, |done| ferrite_raid::remove_base_bdev("P8d1", done)).is_ok());
    let (desc, ch) = io_channel(&mut h, "P8");
    let arena = Arena::default();
    let w2 = noise(83, 8 * BS);
    write(&mut h, &ch, &arena, 1500, w2.clone());
    model[1500 * BS..1508 * BS].copy_from_slice(&w2);
    close(&mut h, desc, ch);
    shutdown(&mut h, "P8", &d);
    // A bit of the region bytes (16 regions: two bytes) flipped.
    d.disks[0].poke(64 * 1024 + 65, &[d.disks[0].read(128, 1)[65] ^ 0x20]);
    register(&mut h, &d, 0);
    register(&mut h, &d, 1);
    settle(&mut h, "P8");
    assert!(call(&mut h, |done| ferrite_raid::add_base_bdev(
        "P8", "P8d1", done
    ))
    .is_ok());
    run_until(&mut h, "rebuild", || {
        ferrite_raid::rebuild_state("P8").is_none()
            && ferrite_raid::last_rebuild("P8").is_some_and(|r| !r.resync)
    });
    h.run_until_idle();
    let rep = ferrite_raid::last_rebuild("P8").unwrap();
    assert_eq!(rep.error, None);
    assert_eq!(rep.copied_blocks, data_blocks, "{rep:?}");
    for i in 0..2 {
        assert_eq!(d.disks[i].read(OFF, data_blocks), model, "member {i}");
    }
    shutdown(&mut h, "P8", &d);
}

#[test]
fn member_returning_during_a_rebuild_waits_its_turn() {
    let mut h = Harness::new(2, 39);
    setup(&mut h);
    assert!(ferrite_raid::set_options(Some(16), None).is_ok());
    let d = disks(&mut h, "P9d", 3);
    create(&mut h, "P9", "raid1", 0, &d);
    let data_blocks = DISK_BLOCKS - OFF;
    let mut model = noise(9, data_blocks as usize * BS);
    fill(&mut h, "P9", &model);
    // Member 2 disappears (hot-remove: it may come back); member 1 is replaced by a new
    // disk, whose rebuild is held at its first window.
    unregister(&mut h, "P9d2");
    assert_eq!(info("P9").unwrap()["num_base_bdevs_operational"], 2);
    assert!(call(&mut h, |done| ferrite_raid::remove_base_bdev("P9d1", done)).is_ok());
    let (desc, ch) = io_channel(&mut h, "P9");
    let arena = Arena::default();
    let w = noise(91, 16 * BS);
    write(&mut h, &ch, &arena, 300, w.clone());
    model[300 * BS..316 * BS].copy_from_slice(&w);
    let fresh = Disk::new(512, DISK_BLOCKS);
    let f2 = fresh.clone();
    h.on(0, move || {
        register_disk("P9n", &f2, None);
    });
    h.run_until_idle();
    ferrite_raid::set_rebuild_pause("P9", Some(RebuildState::Locking));
    assert!(call(&mut h, |done| ferrite_raid::add_base_bdev(
        "P9", "P9n", done
    ))
    .is_ok());
    h.run_until_idle();
    assert_eq!(
        ferrite_raid::rebuild_state("P9"),
        Some((RebuildState::Locking, true))
    );
    // Member 2 comes back in the middle: queued, not claimed yet.
    register(&mut h, &d, 2);
    assert!(ferrite_bdev::lookup("P9d2").unwrap().claim().is_none());
    assert_eq!(info("P9").unwrap()["process"]["target"], "P9n");
    // The rebuild goes on and finishes; then member 2's resync runs by itself.
    ferrite_raid::set_rebuild_pause("P9", None);
    ferrite_raid::resume_rebuild("P9");
    run_until(&mut h, "both done", || {
        ferrite_raid::rebuild_state("P9").is_none()
            && ferrite_raid::last_rebuild("P9").is_some_and(|r| r.target == "P9d2")
    });
    h.run_until_idle();
    let rep = ferrite_raid::last_rebuild("P9").unwrap();
    assert_eq!(rep.error, None);
    assert!(rep.resync, "{rep:?}");
    // Only the region written while it was away (16 blocks inside one 128-block region).
    assert_eq!(rep.copied_blocks, 128, "{rep:?}");
    let v = info("P9").unwrap();
    assert_eq!(v["num_base_bdevs_operational"], 3, "{v}");
    for (i, disk) in [&d.disks[0], &fresh, &d.disks[2]].iter().enumerate() {
        assert_eq!(disk.read(OFF, data_blocks), model, "member {i}");
    }
    close(&mut h, desc, ch);
    shutdown(&mut h, "P9", &d);
    unregister(&mut h, "P9n");
}

#[test]
fn raid5f_missing_a_member_starts_degraded_and_rebuilds_it_when_it_returns() {
    let mut h = Harness::new(2, 40);
    setup(&mut h);
    let d = disks(&mut h, "PAd", 3);
    create(&mut h, "PA", "raid5f", 4, &d);
    // 2048 data blocks per member, strips of 8 blocks: stripes of 16 raid blocks.
    let blocks = 2 * (DISK_BLOCKS - OFF);
    let mut model = noise(10, blocks as usize * BS);
    fill(&mut h, "PA", &model);
    shutdown(&mut h, "PA", &d);
    register(&mut h, &d, 0);
    register(&mut h, &d, 2);
    assert!(settle(&mut h, "PA"));
    let v = info("PA").unwrap();
    assert_eq!(v["state"], "online", "{v}");
    assert_eq!(v["num_base_bdevs_operational"], 2, "{v}");
    // Degraded: member 1's strips are reconstructed; full-stripe writes go on.
    let (desc, ch) = io_channel(&mut h, "PA");
    let arena = Arena::default();
    let w = noise(101, 32 * BS);
    write(&mut h, &ch, &arena, 64, w.clone());
    model[64 * BS..96 * BS].copy_from_slice(&w);
    assert!(read(&mut h, &ch, 0, blocks) == model);
    // Member 1 comes back: rebuilt in full (raid5f keeps no bitmap), then read normally.
    register(&mut h, &d, 1);
    let rep = rebuild_report(&mut h, "PA");
    assert_eq!(rep.error, None);
    assert_eq!(rep.copied_blocks, blocks, "{rep:?}");
    assert_eq!(info("PA").unwrap()["num_base_bdevs_operational"], 3);
    let before = d.disks[1].reads.load(Ordering::SeqCst);
    assert!(read(&mut h, &ch, 0, blocks) == model);
    assert!(d.disks[1].reads.load(Ordering::SeqCst) > before);
    // Every stripe XORs to zero across the members.
    let areas: Vec<Vec<u8>> = (0..3)
        .map(|i| d.disks[i].read(OFF, DISK_BLOCKS - OFF))
        .collect();
    assert!((0..areas[0].len()).all(|i| areas[0][i] ^ areas[1][i] ^ areas[2][i] == 0));
    close(&mut h, desc, ch);
    shutdown(&mut h, "PA", &d);
}
