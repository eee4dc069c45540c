//! raid1: a member removed in sync comes back resynced from the write-intent bitmap only if
//! nothing else could have written it while it was away. A read-only open in between keeps
//! the resync; a write open (or a writing claim) by anyone else means a full rebuild, after
//! which every member holds the same data again. After a restart the raid counts from the
//! member's new registration: a write open before it is re-added forces a full rebuild too.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::mirror::*;
use common::*;
use ferrite_bdev::{ClaimKind, Desc};
use ferrite_reactor::harness::Harness;

/// Removes member 1 of `name` by RPC and writes `off..off + 8` through the raid (marked).
fn leave(h: &mut Harness, s: &mut Setup, name: &str, off: u64) {
    let m = format!("{name}d1");
    assert!(call(h, move |d| ferrite_raid::remove_base_bdev(&m, d)).is_ok());
    s.write(h, off, 8);
    h.run_until_idle();
    all_ok("write while away");
}

/// Adds member 1 back; returns (resync, copied blocks) of the rebuild that follows.
fn back(h: &mut Harness, name: &str) -> (bool, u64) {
    let (r, m) = (name.to_string(), format!("{name}d1"));
    assert!(call(h, move |d| ferrite_raid::add_base_bdev(&r, &m, d)).is_ok());
    run_until(h, "rebuild", || ferrite_raid::rebuild_state(name).is_none());
    h.run_until_idle();
    let rep = ferrite_raid::last_rebuild(name).unwrap();
    assert_eq!(rep.error, None, "{rep:?}");
    (rep.resync, rep.copied_blocks)
}

/// Every member holds the model (what the raid's users wrote), block for block.
fn members_agree(s: &Setup, what: &str) {
    for (i, d) in s.disks.iter().enumerate() {
        let got = d.read(0, BLOCKS);
        let bad = (0..BLOCKS as usize)
            .filter(|b| got[b * BS..(b + 1) * BS] != s.model[b * BS..(b + 1) * BS])
            .count();
        assert_eq!(
            bad, 0,
            "{what}: member {i} differs from the model in {bad} blocks"
        );
    }
}

#[test]
fn foreign_writer_while_away_forces_a_full_rebuild() {
    let mut h = Harness::new(2, 410);
    let mut s = raid1(&mut h, "A1", 2);

    // Nobody touched it: the resync copies the one region written meanwhile (128 blocks).
    leave(&mut h, &mut s, "A1", 0);
    assert_eq!(back(&mut h, "A1"), (true, 128));
    members_agree(&s, "plain resync");

    // Opened read-only and read while away: still a resync.
    leave(&mut h, &mut s, "A1", 130);
    let ro = h.on(1, || Desc::open("A1d1", false, |_| {}).unwrap());
    let ch = h.on(1, || ro.channel().unwrap());
    let arena = Arena::default();
    h.on(1, || read_at(&ch, &arena, 0, 16, 9_001));
    h.run_until_idle();
    all_ok("read-only read of the away member");
    h.on(1, move || drop(ch));
    h.on(1, move || drop(ro));
    h.run_until_idle();
    assert_eq!(back(&mut h, "A1"), (true, 128));
    members_agree(&s, "resync after a read-only open");

    // Opened for writing and written (in a region the raid did not touch meanwhile): the
    // bitmap knows nothing of it, so everything is copied.
    leave(&mut h, &mut s, "A1", 260);
    let rw = h.on(1, || Desc::open("A1d1", true, |_| {}).unwrap());
    let ch = h.on(1, || rw.channel().unwrap());
    h.on(1, || write_at(&ch, &arena, 400, vec![0xAB; 8 * BS], 9_002));
    h.run_until_idle();
    all_ok("foreign write to the away member");
    h.on(1, move || drop(ch));
    h.on(1, move || drop(rw));
    h.run_until_idle();
    assert!(s.disks[1].read(400, 8) != s.model[400 * BS..408 * BS]);
    assert_eq!(back(&mut h, "A1"), (false, BLOCKS));
    members_agree(&s, "full rebuild after a foreign write");
    s.verify(&mut h);

    // A claim that allows writing, taken and released without a write: the raid cannot
    // know, so a full rebuild too.
    leave(&mut h, &mut s, "A1", 0);
    let c = h.on(1, || Desc::open("A1d1", false, |_| {}).unwrap());
    c.claim(ClaimKind::ExclusiveWrite, "other").unwrap();
    h.on(1, move || drop(c));
    h.run_until_idle();
    assert_eq!(back(&mut h, "A1"), (false, BLOCKS));
    members_agree(&s, "full rebuild after a writing claim");

    // And the guard does not stick: the next clean departure resyncs again.
    leave(&mut h, &mut s, "A1", 300);
    assert_eq!(back(&mut h, "A1"), (true, 128));
    members_agree(&s, "resync after the full rebuilds");
    s.verify(&mut h);
    s.close(&mut h);
    assert!(call(&mut h, |d| ferrite_raid::delete("A1", d)).is_ok());
}

/// After a restart nothing is known of the member's past (another process may have written
/// it: the documented limit), but a write open in this process before it is taken back is
/// seen: a full rebuild instead of the resync the loaded bitmap would allow.
#[test]
fn write_open_after_a_restart_forces_a_full_rebuild() {
    use common::restart as rs;
    let mut h = Harness::new(2, 411);
    setup(&mut h);
    let d = rs::disks(&mut h, "R8d", 2);
    rs::create(&mut h, "R8", "raid1", 0, &d);
    let data_blocks = rs::DISK_BLOCKS - rs::OFF;
    let mut model = noise(9, data_blocks as usize * BS);
    rs::fill(&mut h, "R8", &model);
    assert!(call(&mut h, |done| ferrite_raid::remove_base_bdev("R8d1", done)).is_ok());
    let (desc, ch) = rs::io_channel(&mut h, "R8");
    let arena = Arena::default();
    let w = noise(91, 10 * BS);
    rs::write(&mut h, &ch, &arena, 0, w.clone());
    model[..10 * BS].copy_from_slice(&w);
    rs::close(&mut h, desc, ch);

    rs::shutdown(&mut h, "R8", &d);
    rs::register(&mut h, &d, 0);
    rs::register(&mut h, &d, 1);
    rs::settle(&mut h, "R8");
    assert_eq!(info("R8").unwrap()["num_base_bdevs_operational"], 1);
    // Someone writes the absent member's data area before it is added back.
    let (fd, fch) = rs::io_channel(&mut h, "R8d1");
    rs::write(&mut h, &fch, &arena, rs::OFF + 300, vec![0xCD; 8 * BS]);
    rs::close(&mut h, fd, fch);
    assert!(call(&mut h, |done| ferrite_raid::add_base_bdev(
        "R8", "R8d1", done
    ))
    .is_ok());
    let rep = rs::rebuild_report(&mut h, "R8");
    assert_eq!(rep.error, None);
    assert!(!rep.resync, "{rep:?}");
    assert_eq!(rep.copied_blocks, data_blocks, "{rep:?}");
    for i in 0..2 {
        assert!(
            d.disks[i].read(rs::OFF, data_blocks) == model,
            "member {i} differs from the model"
        );
    }
    rs::shutdown(&mut h, "R8", &d);
}
