//! Superblocks, rebuild resume: a rebuild interrupted by a restart resumes from the
//! checkpoint recorded in the superblock (raid1, raid5f).
//!
//! The rebuild window (`bdev_raid_set_options`) is global to the process: every test here
//! that depends on it sets 16 KiB, and none sets anything else.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::restart::*;
use common::*;
use ferrite_bdev::uuid::Uuid;
use ferrite_raid::{MemberState, RebuildState};
use ferrite_reactor::harness::Harness;

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
