//! Superblocks: written on creation and on member changes; a "restart" (delete the raid,
//! unregister its disks, register them again over the same data) reassembles it from disk
//! with no RPC, in the right state; corrupt or hostile superblocks are ignored cleanly;
//! degraded start once examine settles, returning members, the persisted write-intent bitmap,
//! raid5f reassembly and rebuild resume.
//!
//! The rebuild window (`bdev_raid_set_options`) is global to the process: every test here
//! that depends on it sets 16 KiB, and none sets anything else.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use common::*;
use ferrite_bdev::uuid::Uuid;
use ferrite_bdev::{BdevChannel, Desc, IoStatus};
use ferrite_raid::superblock::{Superblock, HEADER_LEN};
use ferrite_raid::{MemberState, RaidOpts, RebuildState};
use ferrite_reactor::harness::Harness;

const BS: usize = 512;
/// 2 MiB disks: 1 MiB superblock area, 1 MiB of data.
const DISK_BLOCKS: u64 = 4096;
const OFF: u64 = 2048;

struct Disks {
    disks: Vec<Arc<Disk>>,
    names: Vec<String>,
    uuids: Vec<Uuid>,
}

fn disks(h: &mut Harness, prefix: &str, n: usize) -> Disks {
    let d = Disks {
        disks: (0..n).map(|_| Disk::new(512, DISK_BLOCKS)).collect(),
        names: (0..n).map(|i| format!("{prefix}{i}")).collect(),
        uuids: (0..n).map(|_| Uuid::new_v4()).collect(),
    };
    for i in 0..n {
        register(h, &d, i);
    }
    d
}

fn register(h: &mut Harness, d: &Disks, i: usize) {
    let (disk, name, uuid) = (d.disks[i].clone(), d.names[i].clone(), d.uuids[i]);
    h.on(0, move || {
        register_disk(&name, &disk, Some(uuid));
    });
    h.run_until_idle();
}

fn unregister(h: &mut Harness, name: &str) {
    let done = Arc::new(AtomicUsize::new(0));
    let d2 = done.clone();
    let n = name.to_string();
    h.on(0, move || {
        ferrite_bdev::unregister(&n, None, move |r| {
            assert!(r.is_ok());
            d2.store(1, Ordering::SeqCst);
        })
    });
    run_until(h, "unregister", || done.load(Ordering::SeqCst) == 1);
    h.run_until_idle();
}

fn sb_of(disk: &Disk, uuid: Uuid) -> Superblock {
    Superblock::decode(&disk.read(0, 8), 512, DISK_BLOCKS, uuid).unwrap()
}

fn io_channel(h: &mut Harness, name: &str) -> (Desc, BdevChannel) {
    let n = name.to_string();
    let desc = h.on(1, move || Desc::open(&n, true, |_| {}).unwrap());
    let ch = h.on(1, || desc.channel().unwrap());
    (desc, ch)
}

fn close(h: &mut Harness, desc: Desc, ch: BdevChannel) {
    h.on(1, move || drop(ch));
    h.on(1, move || drop(desc));
    h.run_until_idle();
}

fn write(h: &mut Harness, ch: &BdevChannel, arena: &Arena, off: u64, data: Vec<u8>) {
    h.on(1, || write_at(ch, arena, off, data, 1));
    h.run_until_idle();
    assert!(take_done().iter().all(|d| d.status == IoStatus::Success));
}

fn read(h: &mut Harness, ch: &BdevChannel, off: u64, n: u64) -> Vec<u8> {
    let arena = Arena::default();
    let i = h.on(1, || read_at(ch, &arena, off, n, 2));
    h.run_until_idle();
    assert!(take_done().iter().all(|d| d.status == IoStatus::Success));
    arena.get(i)
}

fn create(h: &mut Harness, name: &str, level: &str, strip: u32, d: &Disks) -> String {
    let uuid = Uuid::new_v4().to_string();
    let o = RaidOpts {
        name: name.into(),
        raid_level: level.into(),
        base_bdevs: d.names.clone(),
        strip_size_kb: strip,
        uuid: Some(uuid.clone()),
        superblock: true,
    };
    let r = call(h, move |done| ferrite_raid::create(&o, done));
    assert!(r.is_ok(), "{r:?}");
    uuid
}

/// Deletes the raid (superblocks stay) and unregisters its disks: the "shutdown".
fn shutdown(h: &mut Harness, name: &str, d: &Disks) {
    let n = name.to_string();
    assert!(call(h, move |done| ferrite_raid::delete(&n, done)).is_ok());
    for nm in &d.names {
        if ferrite_bdev::lookup(nm).is_some() {
            unregister(h, nm);
        }
    }
}

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

/// Writes `data` over the whole raid `name`.
fn fill(h: &mut Harness, name: &str, data: &[u8]) {
    let (desc, ch) = io_channel(h, name);
    let arena = Arena::default();
    write(h, &ch, &arena, 0, data.to_vec());
    close(h, desc, ch);
}

/// Steps a rebuild paused on entering Locking by `windows` windows.
fn step_rebuild(h: &mut Harness, name: &str, windows: usize) {
    for w in 0..windows {
        ferrite_raid::resume_rebuild(name);
        h.run_until_idle();
        assert_eq!(
            ferrite_raid::rebuild_state(name),
            Some((RebuildState::Locking, true)),
            "window {w}: {:?} {:?}",
            ferrite_raid::last_rebuild(name),
            info(name)
        );
    }
}

#[test]
fn interrupted_rebuild_resumes_from_its_checkpoint_after_restart() {
    let mut h = Harness::new(2, 33);
    setup(&mut h);
    // 16 KiB windows: 64 windows over the 1 MiB raid, a checkpoint every 128 blocks.
    assert!(ferrite_raid::set_options(Some(16), None).is_ok());
    let d = disks(&mut h, "P3d", 2);
    create(&mut h, "P3", "raid1", 0, &d);
    let data_blocks = DISK_BLOCKS - OFF;
    let r = call(&mut h, |done| ferrite_raid::remove_base_bdev("P3d1", done));
    assert!(r.is_ok(), "{r:?}");
    // Written everywhere while member 1 is away: all of it must be copied back.
    let data = noise(3, data_blocks as usize * BS);
    fill(&mut h, "P3", &data);
    assert_eq!(d.disks[0].read(OFF, data_blocks), data);
    assert_ne!(d.disks[1].read(OFF, data_blocks), data);

    ferrite_raid::set_rebuild_pause("P3", Some(RebuildState::Locking));
    let r = call(&mut h, |done| {
        ferrite_raid::add_base_bdev("P3", "P3d1", done)
    });
    assert!(r.is_ok(), "{r:?}");
    h.run_until_idle();
    step_rebuild(&mut h, "P3", 40);
    // 40 windows of 32 blocks copied; the last checkpoint written is 1280.
    for i in 0..2 {
        let sb = sb_of(&d.disks[i], d.uuids[i]);
        assert_eq!(sb.members[1].state, MemberState::Rebuilding, "{sb:?}");
        assert_eq!(sb.members[1].rebuilt, 1280, "{sb:?}");
        assert_eq!(sb.members[0].rebuilt, 0, "{sb:?}");
    }
    assert_eq!(d.disks[1].read(OFF, 1280), d.disks[0].read(OFF, 1280));
    ferrite_raid::set_rebuild_pause("P3", None);

    // "Crash" mid-rebuild: the superblocks stay as they are.
    shutdown(&mut h, "P3", &d);
    // The member being rebuilt appears first: it is taken back (not as a source) and the raid
    // waits for its in-sync member; then the rebuild resumes at the checkpoint.
    register(&mut h, &d, 1);
    let v = info("P3").unwrap();
    assert_eq!(v["state"], "configuring", "{v}");
    register(&mut h, &d, 0);
    run_until(&mut h, "resumed rebuild", || {
        ferrite_raid::rebuild_state("P3").is_none()
    });
    h.run_until_idle();
    let rep = ferrite_raid::last_rebuild("P3").unwrap();
    assert_eq!(rep.error, None);
    assert_eq!(rep.copied_blocks, data_blocks - 1280, "{rep:?}");
    let v = info("P3").unwrap();
    assert_eq!(v["state"], "online", "{v}");
    assert_eq!(v["num_base_bdevs_operational"], 2, "{v}");
    for i in 0..2 {
        let sb = sb_of(&d.disks[i], d.uuids[i]);
        assert!(
            sb.members
                .iter()
                .all(|m| m.state == MemberState::Configured && m.rebuilt == 0),
            "{sb:?}"
        );
        assert_eq!(d.disks[i].read(OFF, data_blocks), data, "member {i}");
    }

    // Interrupted again, and this time the in-sync member appears first: the raid comes
    // online degraded (writes may reach it), so the returning member is rebuilt from 0.
    let r = call(&mut h, |done| ferrite_raid::remove_base_bdev("P3d1", done));
    assert!(r.is_ok(), "{r:?}");
    let data = noise(4, data_blocks as usize * BS);
    fill(&mut h, "P3", &data);
    ferrite_raid::set_rebuild_pause("P3", Some(RebuildState::Locking));
    let r = call(&mut h, |done| {
        ferrite_raid::add_base_bdev("P3", "P3d1", done)
    });
    assert!(r.is_ok(), "{r:?}");
    h.run_until_idle();
    step_rebuild(&mut h, "P3", 10);
    ferrite_raid::set_rebuild_pause("P3", None);
    shutdown(&mut h, "P3", &d);
    register(&mut h, &d, 0);
    register(&mut h, &d, 1);
    run_until(&mut h, "full rebuild", || {
        ferrite_raid::rebuild_state("P3").is_none() && ferrite_raid::last_rebuild("P3").is_some()
    });
    h.run_until_idle();
    let rep = ferrite_raid::last_rebuild("P3").unwrap();
    assert_eq!(rep.error, None);
    assert_eq!(rep.copied_blocks, data_blocks, "{rep:?}");
    assert_eq!(info("P3").unwrap()["num_base_bdevs_operational"], 2);
    for i in 0..2 {
        assert_eq!(d.disks[i].read(OFF, data_blocks), data, "member {i}");
    }
    shutdown(&mut h, "P3", &d);
}

/// Runs `wait_for_examine` and waits for its callback; returns whether raid `name` was
/// registered when the waiter ran.
fn settle(h: &mut Harness, name: &str) -> bool {
    let seen: Arc<std::sync::Mutex<Option<bool>>> = Arc::default();
    let (s2, n2) = (seen.clone(), name.to_string());
    h.on(0, move || {
        ferrite_bdev::wait_for_examine(move || {
            *s2.lock().unwrap() = Some(ferrite_bdev::lookup(&n2).is_some());
        })
    });
    run_until(h, "examine settled", || seen.lock().unwrap().is_some());
    h.run_until_idle();
    let r = seen.lock().unwrap().unwrap();
    r
}

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

/// The bitmap's first bits on `disk` (byte 64 KiB + 64: the first region byte).
fn bitmap_byte(disk: &Disk) -> u8 {
    disk.read(128, 1)[64]
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
    run_until(&mut h, "rebuild", || {
        ferrite_raid::rebuild_state("PA").is_none() && ferrite_raid::last_rebuild("PA").is_some()
    });
    h.run_until_idle();
    let rep = ferrite_raid::last_rebuild("PA").unwrap();
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

#[test]
fn raid5f_interrupted_rebuild_resumes_from_its_checkpoint() {
    let mut h = Harness::new(2, 41);
    setup(&mut h);
    // 16 KiB windows: four strip rows (64 raid blocks) per window, a checkpoint every 256.
    assert!(ferrite_raid::set_options(Some(16), None).is_ok());
    let d = disks(&mut h, "PBd", 3);
    create(&mut h, "PB", "raid5f", 4, &d);
    let blocks = 2 * (DISK_BLOCKS - OFF);
    let model = noise(11, blocks as usize * BS);
    fill(&mut h, "PB", &model);
    assert!(call(&mut h, |done| ferrite_raid::remove_base_bdev("PBd1", done)).is_ok());
    let fresh = Disk::new(512, DISK_BLOCKS);
    fresh.poke(OFF as usize * BS, &noise(12, 100 * BS));
    let nu = Uuid::new_v4();
    let f2 = fresh.clone();
    h.on(0, move || {
        register_disk("PBn", &f2, Some(nu));
    });
    h.run_until_idle();
    ferrite_raid::set_rebuild_pause("PB", Some(RebuildState::Locking));
    assert!(call(&mut h, |done| ferrite_raid::add_base_bdev(
        "PB", "PBn", done
    ))
    .is_ok());
    h.run_until_idle();
    step_rebuild(&mut h, "PB", 10);
    ferrite_raid::set_rebuild_pause("PB", None);
    let sb = sb_of(&d.disks[0], d.uuids[0]);
    assert_eq!(sb.members[1].state, MemberState::Rebuilding, "{sb:?}");
    assert_eq!(sb.members[1].rebuilt, 512, "{sb:?}");
    // "Crash": the new member appears first, then the others: the rebuild resumes at 512.
    shutdown(&mut h, "PB", &d);
    unregister(&mut h, "PBn");
    let f2 = fresh.clone();
    h.on(0, move || {
        register_disk("PBn", &f2, Some(nu));
    });
    h.run_until_idle();
    register(&mut h, &d, 0);
    register(&mut h, &d, 2);
    run_until(&mut h, "resumed rebuild", || {
        ferrite_raid::rebuild_state("PB").is_none() && ferrite_raid::last_rebuild("PB").is_some()
    });
    h.run_until_idle();
    let rep = ferrite_raid::last_rebuild("PB").unwrap();
    assert_eq!(rep.error, None);
    assert_eq!(rep.copied_blocks, blocks - 512, "{rep:?}");
    assert_eq!(info("PB").unwrap()["num_base_bdevs_operational"], 3);
    let (desc, ch) = io_channel(&mut h, "PB");
    assert!(read(&mut h, &ch, 0, blocks) == model);
    close(&mut h, desc, ch);
    let areas = [
        d.disks[0].read(OFF, DISK_BLOCKS - OFF),
        fresh.read(OFF, DISK_BLOCKS - OFF),
        d.disks[2].read(OFF, DISK_BLOCKS - OFF),
    ];
    assert!((0..areas[0].len()).all(|i| areas[0][i] ^ areas[1][i] ^ areas[2][i] == 0));
    shutdown(&mut h, "PB", &d);
    unregister(&mut h, "PBn");
}
