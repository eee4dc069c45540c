//! An ABORT of an I/O submitted to a raid reaches the pieces the raid made of it where a delay
//! member holds them: a raid1 write's child on the other member (its parent went to a plain
//! member, or is held too), a raid0 write across two strips and a concat write across two
//! members (children on each member). The aborted I/O completes `Aborted`, the abort
//! succeeds, and nothing stays held (the raid completes a fanned-out I/O only once every
//! piece is back).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::*;
use ferrite_bdev::{BdevChannel, Desc, IoStatus};
use ferrite_raid::RaidOpts;
use ferrite_reactor::harness::Harness;

const BLOCKS: u64 = 4096;
/// A raid `name` of `level` over disks `{name}d{i}`, a delay bdev stacked on those with
/// `delayed[i]`; returns the descriptor and channel open on thread 1.
fn raid_over(
    h: &mut Harness,
    name: &str,
    level: &str,
    strip_size_kb: u32,
    delayed: &[bool],
) -> (Desc, BdevChannel) {
    setup(h);
    let disks: Vec<Arc<Disk>> = delayed.iter().map(|_| Disk::new(512, BLOCKS)).collect();
    let (nm, d2, dl) = (name.to_string(), disks.clone(), delayed.to_vec());
    let members = h.on(0, move || {
        ferrite_bdev::register_module(Arc::new(ferrite_delay::DelayModule));
        let mut members = Vec::new();
        for (i, d) in d2.iter().enumerate() {
            let disk = format!("{nm}d{i}");
            register_disk(&disk, d, None);
            members.push(if dl[i] { delay_on(&disk) } else { disk });
        }
        members
    });
    let o = RaidOpts {
        name: name.into(),
        raid_level: level.into(),
        base_bdevs: members,
        strip_size_kb,
        ..Default::default()
    };
    create_and_open(h, o)
}

/// Writes `blocks` at `off` (tag 500, held below), aborts it (tag 501): the write ends
/// `Aborted`, the abort `Success`, the raid has nothing in flight; then a reset (which
/// releases the reads examine left held in the delay members) and the raid is deleted.
fn abort_held_write(h: &mut Harness, name: &'static str, desc: Desc, ch: BdevChannel, off: u64) {
    let arena = Arena::default();
    take_done();
    h.on(1, || write_at(&ch, &arena, off, noise(5, 16 * 512), 500));
    h.run_until_idle();
    assert_eq!(done_count(), 0, "{name}: the write is held below the raid");
    h.on(1, || {
        plain(&ch, 501, |io| {
            io.prep_abort(500, record);
        })
    });
    run_until(h, "abort of the held write", || done_count() == 2);
    h.run_until_idle();
    let mut d = take_done();
    d.sort_by_key(|d| d.tag);
    let got: Vec<(u64, IoStatus)> = d.iter().map(|d| (d.tag, d.status)).collect();
    assert_eq!(
        got,
        vec![(500, IoStatus::Aborted), (501, IoStatus::Success)],
        "{name}"
    );
    assert_eq!(h.on(1, || ch.inflight()), 0, "{name}");
    h.on(1, || {
        plain(&ch, 502, |io| {
            io.prep_reset(record);
        })
    });
    run_until(h, "reset of the raid", || done_count() == 1);
    assert_eq!(take_done()[0].status, IoStatus::Success, "{name}");
    close_and_delete(h, name, desc, ch);
}

/// raid1, member 0 plain (it takes the parent itself and completes it), member 1 delayed
/// (it holds the child): only the child is held, and the abort reaches it.
#[test]
fn abort_reaches_a_raid1_write_child_held_in_a_member() {
    let mut h = Harness::new(2, 81);
    let (desc, ch) = raid_over(&mut h, "AF1", "raid1", 0, &[false, true]);
    abort_held_write(&mut h, "AF1", desc, ch, 8);
}

/// raid1 over two delay members: the parent and the child are both held; both are aborted.
#[test]
fn abort_reaches_both_pieces_of_a_raid1_write() {
    let mut h = Harness::new(2, 82);
    let (desc, ch) = raid_over(&mut h, "AF2", "raid1", 0, &[true, true]);
    abort_held_write(&mut h, "AF2", desc, ch, 8);
}

/// raid0 (strips of 4 KiB = 8 blocks) over two delay members: a 16-block write at block 4
/// spans three strips on both members.
#[test]
fn abort_reaches_a_raid0_write_split_across_strips() {
    let mut h = Harness::new(2, 83);
    let (desc, ch) = raid_over(&mut h, "AF3", "raid0", 4, &[true, true]);
    abort_held_write(&mut h, "AF3", desc, ch, 4);
}

/// concat over two delay members: a write across the boundary between them.
#[test]
fn abort_reaches_a_concat_write_across_members() {
    let mut h = Harness::new(2, 84);
    let (desc, ch) = raid_over(&mut h, "AF4", "concat", 4, &[true, true]);
    // Member 0 holds BLOCKS blocks (no superblock): straddle its end.
    abort_held_write(&mut h, "AF4", desc, ch, BLOCKS - 8);
}
