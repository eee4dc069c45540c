//! raid1: mirrored writes, reads that survive a failing member, degraded mode on failure,
//! removal and hot-remove, re-add with rebuild while I/O continues, and a returning member
//! resyncing only what it missed. The rebuild machine losing a member in every state is in
//! `raid1_rebuild_loss.rs`.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;

use common::mirror::*;
use common::*;
use ferrite_bdev::Desc;
use ferrite_raid::{RaidOpts, RebuildState};
use ferrite_reactor::harness::Harness;

#[test]
fn mirrored_writes_and_reads_spread() {
    let mut h = Harness::new(2, 21);
    let mut s = raid1(&mut h, "M1", 2);
    let v = info("M1").unwrap();
    assert_eq!(v["state"], "online");
    assert_eq!(v["strip_size_kb"], 0);
    assert_eq!(v["num_base_bdevs_operational"], 2);
    assert_eq!(ferrite_bdev::lookup("M1").unwrap().num_blocks(), BLOCKS);
    s.verify(&mut h);
    // Both members hold the raid's data (no superblock: data offset 0).
    for d in &s.disks {
        assert!(d.read(0, BLOCKS) == s.model);
    }
    // Reads are spread over both members.
    reads_reach_every_member(&mut h, &s, 16, 500);
    s.close(&mut h);
    assert!(call(&mut h, |d| ferrite_raid::delete("M1", d)).is_ok());
}

/// `n` reads of 8 blocks (tags from `tag`) all succeed, and every member served some.
fn reads_reach_every_member(h: &mut Harness, s: &Setup, n: u64, tag: u64) {
    let before: Vec<u64> = s
        .disks
        .iter()
        .map(|d| d.reads.load(Ordering::SeqCst))
        .collect();
    for i in 0..n {
        let (ch, arena) = (s.ch.as_ref().unwrap(), &s.arena);
        h.on(1, || read_at(ch, arena, i * 8, 8, tag + i));
    }
    h.run_until_idle();
    all_ok("reads");
    for (i, d) in s.disks.iter().enumerate() {
        assert!(
            d.reads.load(Ordering::SeqCst) > before[i],
            "member {i} never read"
        );
    }
}

/// Three mirrors: reads take the general least-busy search (two members take an unrolled
/// copy of it) and reach every member; the data read back is the data written.
#[test]
fn three_mirrors_spread_reads_over_every_member() {
    let mut h = Harness::new(2, 27);
    let mut s = raid1(&mut h, "M3", 3);
    s.verify(&mut h);
    reads_reach_every_member(&mut h, &s, 24, 700);
    s.verify(&mut h);
    s.close(&mut h);
    assert!(call(&mut h, |d| ferrite_raid::delete("M3", d)).is_ok());
}

/// Reads a member refuses (here: past its end, after it shrank under the raid) reach raid1's
/// hook like any other completion: each is retried on the other member and succeeds, and the
/// refusing member's read count goes back down. Afterwards, reads issued one at a time still
/// reach both members (a count left up would send every read to the other member).
#[test]
fn refused_reads_leave_the_read_counts_balanced() {
    let mut h = Harness::new(2, 28);
    let mut s = raid1(&mut h, "Mr", 2);
    let reads = |s: &Setup| -> Vec<u64> {
        s.disks
            .iter()
            .map(|d| d.reads.load(Ordering::SeqCst))
            .collect()
    };
    // Member 0 shrinks to half: the raid keeps its size; member 0 refuses reads past it.
    h.on(0, || {
        ferrite_bdev::lookup("Mrd0")
            .unwrap()
            .notify_resize(BLOCKS / 2)
    });
    h.run_until_idle();
    let before = reads(&s);
    for i in 0..16 {
        let (ch, arena) = (s.ch.as_ref().unwrap(), &s.arena);
        h.on(1, || read_at(ch, arena, BLOCKS / 2 + i * 8, 8, 900 + i));
        h.run_until_idle();
    }
    all_ok("reads refused by member 0, retried on member 1");
    let mid = reads(&s);
    assert_eq!(mid[0], before[0], "member 0 refuses them");
    assert_eq!(mid[1] - before[1], 16, "member 1 served every one");
    s.verify(&mut h);
    // Member 0 back to its size: one read at a time, both members serve some.
    h.on(0, || {
        ferrite_bdev::lookup("Mrd0").unwrap().notify_resize(BLOCKS)
    });
    h.run_until_idle();
    let mid = reads(&s);
    for i in 0..8 {
        let (ch, arena) = (s.ch.as_ref().unwrap(), &s.arena);
        h.on(1, || read_at(ch, arena, i * 8, 8, 950 + i));
        h.run_until_idle();
    }
    all_ok("reads after the refusals");
    let after = reads(&s);
    assert!(
        after[0] > mid[0] && after[1] > mid[1],
        "reads no longer spread: {mid:?} -> {after:?}"
    );
    s.close(&mut h);
    assert!(call(&mut h, |d| ferrite_raid::delete("Mr", d)).is_ok());
}

/// A write whose piece one member refuses (past its end, after it shrank under the raid)
/// still completes once, with success from the other member, whether the refused piece is
/// the parent itself (member 0, the lowest usable, gets it) or the child (member 1): the
/// parent is never completed while the other piece is out.
#[test]
fn a_write_piece_refused_by_one_member_completes_from_the_other() {
    for bad in [0usize, 1] {
        let mut h = Harness::new(2, 29 + bad as u64);
        let raid = format!("Mw{bad}");
        let mut s = raid1(&mut h, &raid, 2);
        let name = format!("{raid}d{bad}");
        h.on(0, move || {
            ferrite_bdev::lookup(&name)
                .unwrap()
                .notify_resize(BLOCKS / 2)
        });
        h.run_until_idle();
        let off = BLOCKS / 2 + 8;
        // The other member holds its piece: the refused one is back first, and the write
        // waits for the held piece.
        s.disks[1 - bad].hold.store(true, Ordering::SeqCst);
        s.write(&mut h, off, 16);
        h.run_until_idle();
        assert_eq!(s.disks[1 - bad].held(), 1);
        assert_eq!(done_count(), 0, "completed before its held piece");
        s.disks[1 - bad].hold.store(false, Ordering::SeqCst);
        h.run_until_idle();
        assert_eq!(done_count(), 1);
        all_ok("write with one piece refused");
        let want = &s.model[off as usize * BS..(off + 16) as usize * BS];
        assert!(s.disks[1 - bad].read(off, 16) == want, "member {}", 1 - bad);
        assert!(
            s.disks[bad].read(off, 16) != want,
            "member {bad} refused it"
        );
        // The member that missed the write is out: it can never serve those blocks stale,
        // even once it is back to its size.
        let v = info(&raid).unwrap();
        assert_eq!(v["num_base_bdevs_operational"], 1, "{v}");
        let name = format!("{raid}d{bad}");
        h.on(0, move || {
            ferrite_bdev::lookup(&name).unwrap().notify_resize(BLOCKS)
        });
        h.run_until_idle();
        reads_reach_every_member_but(&mut h, &s, bad);
        s.verify(&mut h);
        s.close(&mut h);
        assert!(call(&mut h, move |d| ferrite_raid::delete(&raid, d)).is_ok());
    }
}

/// Reads through the raid after member `out` was dropped: all succeed and none reaches it.
fn reads_reach_every_member_but(h: &mut Harness, s: &Setup, out: usize) {
    let before = s.disks[out].reads.load(Ordering::SeqCst);
    for i in 0..16u64 {
        let (ch, arena) = (s.ch.as_ref().unwrap(), &s.arena);
        h.on(1, || {
            read_at(ch, arena, (i * 24) % (BLOCKS - 8), 8, 900 + i)
        });
    }
    h.run_until_idle();
    all_ok("reads after the member was dropped");
    assert_eq!(
        s.disks[out].reads.load(Ordering::SeqCst),
        before,
        "a dropped member served reads"
    );
}

#[test]
fn failing_member_under_load_degrades_without_errors() {
    for (what, read) in [("write failure", false), ("read failure", true)] {
        let mut h = Harness::new(2, 22 + read as u64);
        let name = if read { "F1r" } else { "F1w" };
        let mut s = raid1(&mut h, name, 2);
        // A verify-style workload: batches of writes and reads in flight together; member 1
        // starts failing while a batch is held in it.
        let mut rng = Rng(99);
        for round in 0..20 {
            if round == 5 {
                s.disks[1].hold.store(true, Ordering::SeqCst);
            }
            for _ in 0..6 {
                let n = 1 + rng.below(30);
                let off = rng.below(BLOCKS - n);
                s.write(&mut h, off, n);
            }
            h.run_until_idle();
            if round == 5 {
                assert!(s.disks[1].held() > 0);
                if read {
                    s.disks[1].fail_read.store(true, Ordering::SeqCst);
                } else {
                    s.disks[1].fail_write.store(true, Ordering::SeqCst);
                }
                s.disks[1].hold.store(false, Ordering::SeqCst);
                h.run_until_idle();
            }
            all_ok(what);
            s.verify(&mut h);
        }
        let v = info(name).unwrap();
        assert_eq!(v["state"], "online", "{what}");
        assert_eq!(v["num_base_bdevs_operational"], 1, "{what}: {v}");
        assert_eq!(v["base_bdevs_list"][1]["is_configured"], false, "{what}");
        assert!(v["base_bdevs_list"][1]["name"].is_null(), "{what}");
        // The survivor holds everything; the failed member was released.
        assert!(s.disks[0].read(0, BLOCKS) == s.model, "{what}");
        let d1 = format!("{name}d1");
        h.on(0, move || drop(Desc::open(&d1, true, |_| {}).unwrap()));
        s.close(&mut h);
        assert!(call(&mut h, move |d| ferrite_raid::delete(name, d)).is_ok());
    }
}

#[test]
fn remove_then_readd_rebuilds_while_io_continues() {
    let mut h = Harness::new(3, 23);
    let mut s = raid1(&mut h, "R1", 2);
    // Small windows: many rounds of the machine.
    assert!(ferrite_raid::set_options(Some(1024), None).is_ok());
    let r = call(&mut h, |d| ferrite_raid::remove_base_bdev("R1d1", d));
    assert!(r.is_ok(), "{r:?}");
    assert_eq!(member_names("R1"), vec![Some("R1d0".into()), None]);
    // Degraded writes.
    for i in 0..10 {
        s.write(&mut h, i * 37, 20);
    }
    h.run_until_idle();
    all_ok("degraded writes");
    s.verify(&mut h);
    // Removing again: not a member any more.
    let e = call(&mut h, |d| ferrite_raid::remove_base_bdev("R1d1", d)).unwrap_err();
    assert_eq!(e.errno(), libc::ENODEV);
    // Re-add the same disk (stale data) and rebuild while writes go on.
    ferrite_raid::set_rebuild_pause("R1", Some(RebuildState::Locking));
    let r = call(&mut h, |d| ferrite_raid::add_base_bdev("R1", "R1d1", d));
    assert!(r.is_ok(), "{r:?}");
    let v = info("R1").unwrap();
    assert_eq!(v["process"]["type"], "rebuild");
    assert_eq!(v["process"]["target"], "R1d1");
    assert_eq!(v["process"]["progress"]["blocks"], 0);
    assert_eq!(v["process"]["progress"]["percent"], 0);
    assert_eq!(v["num_base_bdevs_operational"], 2);
    // Only one rebuild at a time.
    let e = call(&mut h, |d| ferrite_raid::add_base_bdev("R1", "R1d1", d)).unwrap_err();
    assert_eq!(e.errno(), libc::EPERM, "{e}");
    ferrite_raid::set_rebuild_pause("R1", None);
    ferrite_raid::resume_rebuild("R1");
    let mut rng = Rng(5);
    let mut saw_progress = false;
    while ferrite_raid::rebuild_state("R1").is_some() {
        for _ in 0..3 {
            let n = 1 + rng.below(24);
            let off = rng.below(BLOCKS - n);
            s.write(&mut h, off, n);
        }
        for _ in 0..5 {
            h.poll_all();
        }
        if let Some(v) = info("R1") {
            if let Some(b) = v["process"]["progress"]["blocks"].as_u64() {
                saw_progress |= b > 0 && b < BLOCKS;
            }
        }
    }
    h.run_until_idle();
    all_ok("writes during rebuild");
    assert!(saw_progress, "progress never reported mid-way");
    let v = info("R1").unwrap();
    assert!(v.get("process").is_none(), "{v}");
    assert_eq!(v["num_base_bdevs_operational"], 2);
    s.verify(&mut h);
    for (i, d) in s.disks.iter().enumerate() {
        assert!(
            d.read(0, BLOCKS) == s.model,
            "member {i} differs after rebuild"
        );
    }
    // The rebuilt member serves reads now.
    let before = s.disks[1].reads.load(Ordering::SeqCst);
    for i in 0..8 {
        let (ch, arena) = (s.ch.as_ref().unwrap(), &s.arena);
        h.on(1, || read_at(ch, arena, i * 8, 8, 900 + i));
    }
    h.run_until_idle();
    all_ok("reads after rebuild");
    assert!(s.disks[1].reads.load(Ordering::SeqCst) > before);
    // Adding a third disk to a full raid1: no empty slot.
    add_disk(&mut h, "R1x");
    let e = call(&mut h, |d| ferrite_raid::add_base_bdev("R1", "R1x", d)).unwrap_err();
    assert_eq!(e.errno(), libc::EINVAL);
    s.close(&mut h);
    assert!(call(&mut h, |d| ferrite_raid::delete("R1", d)).is_ok());
    assert!(ferrite_raid::set_options(Some(1024), None).is_ok());
}

#[test]
fn hot_remove_of_a_member_degrades_and_last_member_loss_goes_offline() {
    let mut h = Harness::new(2, 24);
    let mut s = raid1(&mut h, "H1", 2);
    let gone = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let g2 = gone.clone();
    h.on(0, move || {
        ferrite_bdev::unregister("H1d0", None, move |r| {
            assert!(r.is_ok());
            g2.store(true, Ordering::SeqCst);
        })
    });
    run_until(&mut h, "member hot-remove", || gone.load(Ordering::SeqCst));
    h.run_until_idle();
    assert_eq!(info("H1").unwrap()["state"], "online");
    assert_eq!(info("H1").unwrap()["num_base_bdevs_operational"], 1);
    s.write(&mut h, 3, 9);
    h.run_until_idle();
    all_ok("writes after hot-remove");
    s.verify(&mut h);
    // Losing the last member: offline. The raid bdev goes away once its user closes it.
    let p = start_call(&mut h, |d| ferrite_raid::remove_base_bdev("H1d1", d));
    h.run_until_idle();
    assert!(
        p.lock().unwrap().is_none(),
        "waits for the raid bdev's user"
    );
    s.close(&mut h);
    run_until(&mut h, "offline", || p.lock().unwrap().is_some());
    assert!(p.lock().unwrap().take().unwrap().is_ok());
    h.run_until_idle();
    assert!(ferrite_bdev::lookup("H1").is_none());
    // Offline with no member left: forgotten (as SPDK).
    assert!(info("H1").is_none());
    let e = call(&mut h, |d| ferrite_raid::delete("H1", d)).unwrap_err();
    assert_eq!(e.errno(), libc::ENODEV);
}

/// The write-intent bitmap: a member removed in sync and added back copies only the regions
/// written while it was away (64 KiB regions: 128 blocks); a failed member, or another disk
/// in its slot, gets a full rebuild.
#[test]
fn returning_member_resyncs_only_what_it_missed() {
    const BIG: u64 = 8192;
    let mut h = Harness::new(2, 400);
    setup(&mut h);
    let disks: Vec<Arc<Disk>> = (0..2).map(|_| Disk::new(512, BIG)).collect();
    let (d2, names) = (disks.clone(), ["W1d0", "W1d1"]);
    h.on(0, move || {
        for (d, n) in d2.iter().zip(names) {
            register_disk(n, d, None);
        }
    });
    let o = RaidOpts {
        name: "W1".into(),
        raid_level: "raid1".into(),
        base_bdevs: names.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    };
    assert!(call(&mut h, move |d| ferrite_raid::create(&o, d)).is_ok());
    let desc = h.on(1, || Desc::open("W1", true, |_| {}).unwrap());
    let ch = h.on(1, || desc.channel().unwrap());
    let mut s = Setup {
        disks,
        desc: Some(desc),
        ch: Some(ch),
        model: vec![0; BIG as usize * BS],
        arena: Arena::default(),
        tag: 0,
    };
    for i in 0..16 {
        s.write(&mut h, i * 512, 64);
    }
    h.run_until_idle();
    all_ok("fill");

    // Removed in sync; writes touch regions 0, 7 and 39-41 while it is away.
    assert!(call(&mut h, |d| ferrite_raid::remove_base_bdev("W1d1", d)).is_ok());
    s.write(&mut h, 0, 10);
    s.write(&mut h, 1000, 10);
    s.write(&mut h, 5000, 300);
    h.run_until_idle();
    all_ok("writes while away");
    // Back: a resync. Writes meanwhile, to clean and to marked regions, reach it directly.
    ferrite_raid::set_rebuild_pause("W1", Some(RebuildState::Reading));
    assert!(call(&mut h, |d| ferrite_raid::add_base_bdev("W1", "W1d1", d)).is_ok());
    s.write(&mut h, 3000, 20); // clean region 23
    s.write(&mut h, 5100, 8); // marked region 39
    h.run_until_idle();
    ferrite_raid::set_rebuild_pause("W1", None);
    ferrite_raid::resume_rebuild("W1");
    run_until(&mut h, "resync", || {
        ferrite_raid::rebuild_state("W1").is_none()
    });
    h.run_until_idle();
    all_ok("writes during resync");
    let rep = ferrite_raid::last_rebuild("W1").unwrap();
    assert!(rep.resync, "{rep:?}");
    assert_eq!(rep.error, None);
    assert_eq!(rep.total_blocks, BIG);
    // Regions 0, 7, 39, 40, 41 (the write to region 23 came after the return).
    assert_eq!(rep.copied_blocks, 5 * 128, "{rep:?}");
    for (i, d) in s.disks.iter().enumerate() {
        let got = d.read(0, BIG);
        let bad: Vec<usize> = (0..BIG as usize)
            .filter(|b| got[b * BS..(b + 1) * BS] != s.model[b * BS..(b + 1) * BS])
            .collect();
        assert!(
            bad.is_empty(),
            "member {i}: {} blocks differ, first {:?}",
            bad.len(),
            &bad[..bad.len().min(10)]
        );
    }
    s.verify(&mut h);
    for (i, d) in s.disks.iter().enumerate() {
        assert!(d.read(0, BIG) == s.model, "member {i} after resync");
    }

    // Nobody away any more: a later departure starts from a clean bitmap.
    assert!(call(&mut h, |d| ferrite_raid::remove_base_bdev("W1d1", d)).is_ok());
    s.write(&mut h, 8000, 1);
    h.run_until_idle();
    assert!(call(&mut h, |d| ferrite_raid::add_base_bdev("W1", "W1d1", d)).is_ok());
    run_until(&mut h, "resync 2", || {
        ferrite_raid::rebuild_state("W1").is_none()
    });
    h.run_until_idle();
    let rep = ferrite_raid::last_rebuild("W1").unwrap();
    assert!(rep.resync);
    assert_eq!(rep.copied_blocks, 128, "{rep:?}");

    // A member that failed comes back: everything is copied.
    s.disks[1].fail_write.store(true, Ordering::SeqCst);
    s.write(&mut h, 64, 8);
    h.run_until_idle();
    all_ok("write with a failing member");
    assert_eq!(info("W1").unwrap()["num_base_bdevs_operational"], 1);
    s.disks[1].fail_write.store(false, Ordering::SeqCst);
    assert!(call(&mut h, |d| ferrite_raid::add_base_bdev("W1", "W1d1", d)).is_ok());
    run_until(&mut h, "rebuild", || {
        ferrite_raid::rebuild_state("W1").is_none()
    });
    h.run_until_idle();
    let rep = ferrite_raid::last_rebuild("W1").unwrap();
    assert!(!rep.resync, "{rep:?}");
    assert_eq!(rep.copied_blocks, BIG);

    // Another disk in the slot of one that left in sync: a full rebuild too.
    assert!(call(&mut h, |d| ferrite_raid::remove_base_bdev("W1d1", d)).is_ok());
    let other = Disk::new(512, BIG);
    let o2 = other.clone();
    h.on(0, move || {
        register_disk("W1x", &o2, None);
    });
    assert!(call(&mut h, |d| ferrite_raid::add_base_bdev("W1", "W1x", d)).is_ok());
    run_until(&mut h, "rebuild x", || {
        ferrite_raid::rebuild_state("W1").is_none()
    });
    h.run_until_idle();
    let rep = ferrite_raid::last_rebuild("W1").unwrap();
    assert!(!rep.resync);
    assert_eq!(rep.copied_blocks, BIG);
    assert!(other.read(0, BIG) == s.model);
    s.close(&mut h);
    assert!(call(&mut h, |d| ferrite_raid::delete("W1", d)).is_ok());
}
