//! An ABORT of an I/O submitted to a raid reaches the pieces the raid made of it where a delay
//! member holds them — a raid0 write across two strips, a concat write across two members —
//! and the aborted I/O completes `Aborted`, the abort succeeds, and nothing stays held (the
//! raid completes a fanned-out I/O only once every piece is back).
//!
//! A raid1 or raid5f write is shielded: an abort reaching the piece held on one member and
//! not the others would leave the mirrors (or data and parity) different. The abort finds
//! nothing, the write completes when the delay ends, and every member holds its part. A
//! write the raid parks itself (behind a rebuild's window) is aborted where it waits.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::*;
use ferrite_bdev::{BdevChannel, Desc, IoStatus};
use ferrite_raid::RaidOpts;
use ferrite_reactor::harness::Harness;

const BLOCKS: u64 = 4096;
/// The latency of a delay member whose held write a test waits out (the harness's clock:
/// `Harness::advance_us`).
const SHORT_US: u64 = 1_000;

/// A raid `name` of `level` over disks `{name}d{i}`, a delay bdev stacked on those with
/// `delayed[i]` (holding I/O for `us`); returns the descriptor, the channel open on thread 1
/// and the disks.
fn raid_over_for(
    h: &mut Harness,
    name: &str,
    level: &str,
    strip_size_kb: u32,
    delayed: &[bool],
    us: u64,
) -> (Desc, BdevChannel, Vec<Arc<Disk>>) {
    setup(h);
    let disks: Vec<Arc<Disk>> = delayed.iter().map(|_| Disk::new(512, BLOCKS)).collect();
    let (nm, d2, dl) = (name.to_string(), disks.clone(), delayed.to_vec());
    let members = h.on(0, move || {
        ferrite_bdev::register_module(Arc::new(ferrite_delay::DelayModule));
        let mut members = Vec::new();
        for (i, d) in d2.iter().enumerate() {
            let disk = format!("{nm}d{i}");
            register_disk(&disk, d, None);
            members.push(if dl[i] { delay_for(&disk, us) } else { disk });
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
    let (desc, ch) = create_and_open(h, o);
    (desc, ch, disks)
}

/// As [`raid_over_for`], the delay members holding I/O for [`LONG_US`].
fn raid_over(
    h: &mut Harness,
    name: &str,
    level: &str,
    strip_size_kb: u32,
    delayed: &[bool],
) -> (Desc, BdevChannel) {
    let (desc, ch, _) = raid_over_for(h, name, level, strip_size_kb, delayed, LONG_US);
    (desc, ch)
}

/// The I/O completed so far (taken), as (tag, status) in tag order.
fn taken_by_tag() -> Vec<(u64, IoStatus)> {
    let mut d: Vec<(u64, IoStatus)> = take_done().iter().map(|d| (d.tag, d.status)).collect();
    d.sort_unstable_by_key(|d| d.0);
    d
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
    let got = taken_by_tag();
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

/// Writes `data` at `off` (tag 600) to a raid whose delay members hold it for [`SHORT_US`],
/// aborts it (tag 601) while it is held: the abort finds nothing (`Failed`), the write
/// completes `Success` once the delay has passed, and the raid has nothing in flight. Then
/// the raid is deleted.
fn abort_misses_shielded_write(
    h: &mut Harness,
    name: &'static str,
    (desc, ch): (Desc, BdevChannel),
    off: u64,
    data: Vec<u8>,
) {
    let arena = Arena::default();
    take_done();
    h.on(1, || write_at(&ch, &arena, off, data, 600));
    h.run_until_idle();
    h.on(1, || {
        plain(&ch, 601, |io| {
            io.prep_abort(600, record);
        })
    });
    run_until(h, "the abort", || done_count() >= 1);
    h.run_until_idle();
    let got = taken_by_tag();
    assert_eq!(
        got,
        vec![(601, IoStatus::Failed)],
        "{name}: the abort found nothing to abort, the write is still held"
    );
    h.advance_us(SHORT_US);
    run_until(h, "the held write, once its delay has passed", || {
        done_count() == 1
    });
    assert_eq!(taken_by_tag(), vec![(600, IoStatus::Success)], "{name}");
    assert_eq!(h.on(1, || ch.inflight()), 0, "{name}");
    close_and_delete(h, name, desc, ch);
}

/// raid1, member 0 plain (it takes the parent itself and completes it), member 1 delayed
/// (it holds the child): the abort does not reach the child, and both mirrors get the data.
#[test]
fn abort_does_not_reach_a_raid1_write_held_in_one_member() {
    let mut h = Harness::new(2, 81);
    let (desc, ch, disks) = raid_over_for(&mut h, "AF1", "raid1", 0, &[false, true], SHORT_US);
    let data = noise(5, 16 * 512);
    abort_misses_shielded_write(&mut h, "AF1", (desc, ch), 8, data.clone());
    for (i, d) in disks.iter().enumerate() {
        assert_eq!(d.read(8, 16), data, "AF1: mirror {i} holds the write");
    }
}

/// raid1 over two delay members: the parent and the child are both held; neither is
/// aborted, both complete.
#[test]
fn abort_does_not_reach_a_raid1_write_held_in_both_members() {
    let mut h = Harness::new(2, 82);
    let (desc, ch, disks) = raid_over_for(&mut h, "AF2", "raid1", 0, &[true, true], SHORT_US);
    let data = noise(6, 16 * 512);
    abort_misses_shielded_write(&mut h, "AF2", (desc, ch), 8, data.clone());
    for (i, d) in disks.iter().enumerate() {
        assert_eq!(d.read(8, 16), data, "AF2: mirror {i} holds the write");
    }
}

/// raid5f over three members (strips of 4 KiB = 8 blocks: a stripe is 16 blocks of data),
/// the third delayed: the full-stripe write's strip held there is not aborted, and the
/// members end with both data strips and their parity.
#[test]
fn abort_does_not_reach_a_raid5f_stripe_write() {
    let mut h = Harness::new(2, 85);
    let (desc, ch, disks) =
        raid_over_for(&mut h, "AF5", "raid5f", 4, &[false, false, true], SHORT_US);
    let data = noise(7, 16 * 512);
    abort_misses_shielded_write(&mut h, "AF5", (desc, ch), 0, data.clone());
    // Stripe 0: every member holds strip 0 of its own (8 blocks); the two data strips are the
    // write's halves in member order, the third their XOR.
    let strips: Vec<Vec<u8>> = disks.iter().map(|d| d.read(0, 8)).collect();
    let (a, b) = data.split_at(8 * 512);
    let parity: Vec<u8> = a.iter().zip(b).map(|(x, y)| x ^ y).collect();
    let mut got = strips.clone();
    got.sort();
    let mut want = vec![a.to_vec(), b.to_vec(), parity];
    want.sort();
    assert_eq!(got, want, "AF5: data and parity written together");
}

/// A raid1 write the raid parks itself, behind the window a rebuild has locked, has no piece
/// on any member yet: an abort naming it ends it `Aborted` at once and succeeds; the rebuild
/// then finishes with every member holding the raid's content, without the aborted write.
#[test]
fn abort_ends_a_raid1_write_parked_behind_a_rebuild_window() {
    use common::mirror::{add_disk, raid1, BLOCKS as MB, BS};
    use ferrite_raid::RebuildState;
    let mut h = Harness::new(2, 86);
    let mut s = raid1(&mut h, "AF6", 2);
    assert!(call(&mut h, |d| ferrite_raid::remove_base_bdev("AF6d1", d)).is_ok());
    let target = add_disk(&mut h, "AF6t");
    ferrite_raid::set_rebuild_pause("AF6", Some(RebuildState::Reading));
    assert!(call(&mut h, |d| ferrite_raid::add_base_bdev("AF6", "AF6t", d)).is_ok());
    run_until(&mut h, "the rebuild paused, its window locked", || {
        ferrite_raid::rebuild_state("AF6") == Some((RebuildState::Reading, true))
    });
    let at = info("AF6").unwrap()["process"]["progress"]["blocks"]
        .as_u64()
        .unwrap();
    take_done();
    let (ch, arena) = (s.ch.as_ref().unwrap(), &s.arena);
    h.on(1, || write_at(ch, arena, at, noise(9, 4 * BS), 900));
    h.run_until_idle();
    assert_eq!(done_count(), 0, "the write waits behind the window");
    h.on(1, || {
        plain(ch, 901, |io| {
            io.prep_abort(900, record);
        })
    });
    run_until(&mut h, "the abort", || done_count() == 2);
    let got = taken_by_tag();
    assert_eq!(
        got,
        vec![(900, IoStatus::Aborted), (901, IoStatus::Success)]
    );
    ferrite_raid::set_rebuild_pause("AF6", None);
    ferrite_raid::resume_rebuild("AF6");
    run_until(&mut h, "the rebuild", || {
        ferrite_raid::rebuild_state("AF6").is_none()
    });
    s.verify(&mut h);
    assert!(
        s.disks[0].read(0, MB) == s.model,
        "member 0 holds the content"
    );
    assert!(
        target.read(0, MB) == s.model,
        "the rebuilt member holds it too"
    );
    s.close(&mut h);
}

/// Writes `data` at `off` (tag 700) while a delay member holds its piece, resets the raid
/// (tag 701: the reset ends the held piece, aborted below), and returns the write's status
/// once both are done.
fn write_cut_by_reset(h: &mut Harness, ch: &BdevChannel, off: u64, data: Vec<u8>) -> IoStatus {
    let arena = Arena::default();
    take_done();
    h.on(1, || write_at(ch, &arena, off, data, 700));
    h.run_until_idle();
    assert_eq!(done_count(), 0, "a piece is held below the raid");
    h.on(1, || {
        plain(ch, 701, |io| {
            io.prep_reset(record);
        })
    });
    run_until(h, "the reset", || done_count() == 2);
    let got = taken_by_tag();
    assert_eq!(got[1], (701, IoStatus::Success));
    got[0].1
}

/// Reads `blocks` at `off` through the raid (thread 1).
fn read_back(h: &mut Harness, ch: &BdevChannel, off: u64, blocks: u64) -> Vec<u8> {
    let arena = Arena::default();
    take_done();
    let i = h.on(1, || read_at(ch, &arena, off, blocks, 710));
    run_until(h, "the read", || done_count() == 1);
    assert_eq!(taken_by_tag(), vec![(710, IoStatus::Success)]);
    arena.get(i)
}

/// Waits until the raid reports `n` operational members.
fn wait_operational(h: &mut Harness, name: &str, n: u64) {
    run_until(h, "the member count", || {
        info(name).unwrap()["num_base_bdevs_operational"] == n
    });
}

/// A reset of a raid5f ends the strip of a stripe write that a delay member holds (aborted
/// there) while the other strips are written. Left in, that member would serve its old
/// strip as current; it is dropped instead, and the write succeeds: reads of its strip are
/// rebuilt from the new data strip and parity.
#[test]
fn a_stripe_write_that_lost_a_strip_to_a_reset_drops_that_member() {
    let mut h = Harness::new(2, 87);
    let (desc, ch) = raid_over(&mut h, "AF7", "raid5f", 4, &[false, false, true]);
    let data = noise(8, 16 * 512);
    let st = write_cut_by_reset(&mut h, &ch, 0, data.clone());
    assert_eq!(st, IoStatus::Success, "the other strips hold the stripe");
    wait_operational(&mut h, "AF7", 2);
    assert_eq!(read_back(&mut h, &ch, 0, 16), data, "the stripe reads back");
    close_and_delete(&mut h, "AF7", desc, ch);
}

/// raid1, member 0 plain, member 1 delayed: a reset ends the piece held on member 1 after
/// member 0 took the write. The mirrors differ on those blocks, so member 1 is dropped and
/// the write succeeds on member 0; every read returns the new data.
#[test]
fn a_mirror_write_cut_by_a_reset_on_one_member_drops_that_member() {
    let mut h = Harness::new(2, 88);
    let (desc, ch, disks) = raid_over_for(&mut h, "AF8", "raid1", 0, &[false, true], LONG_US);
    let data = noise(10, 16 * 512);
    let st = write_cut_by_reset(&mut h, &ch, 8, data.clone());
    assert_eq!(st, IoStatus::Success, "member 0 holds the write");
    wait_operational(&mut h, "AF8", 1);
    assert_eq!(disks[0].read(8, 16), data, "member 0 holds the write");
    for _ in 0..4 {
        assert_eq!(
            read_back(&mut h, &ch, 8, 16),
            data,
            "no read returns the old data"
        );
    }
    close_and_delete(&mut h, "AF8", desc, ch);
}

/// raid1 over two delay members: a reset ends both pieces. No mirror took the write, so
/// both stay in (they agree) and the write ends aborted.
#[test]
fn a_mirror_write_cut_by_a_reset_on_every_member_keeps_both() {
    let mut h = Harness::new(2, 89);
    let (desc, ch, disks) = raid_over_for(&mut h, "AF9", "raid1", 0, &[true, true], LONG_US);
    let st = write_cut_by_reset(&mut h, &ch, 8, noise(11, 16 * 512));
    assert_eq!(st, IoStatus::Aborted, "no member took the write");
    h.run_until_idle();
    assert_eq!(info("AF9").unwrap()["num_base_bdevs_operational"], 2);
    assert_eq!(
        disks[0].read(8, 16),
        disks[1].read(8, 16),
        "the mirrors agree"
    );
    close_and_delete(&mut h, "AF9", desc, ch);
}

/// raid1 with its in-sync member delayed and a new member being rebuilt (paused): a write
/// reaches the new member and is held on the in-sync one; a reset ends that piece aborted.
/// The write is aborted, and the member being rebuilt, which took data its source lacks, is
/// dropped rather than left to finish its rebuild with blocks no other copy has.
#[test]
fn a_write_only_the_rebuilt_member_took_drops_it() {
    let mut h = Harness::new(2, 90);
    let (desc, ch, _disks) = raid_over_for(&mut h, "AFB", "raid1", 0, &[true, false], SHORT_US);
    // What examine left held in the delay member goes through (the harness's clock).
    h.advance_us(SHORT_US);
    h.run_until_idle();
    assert!(call(&mut h, |d| ferrite_raid::remove_base_bdev("AFBd1", d)).is_ok());
    let t = Disk::new(512, BLOCKS);
    let t2 = t.clone();
    h.on(0, move || {
        register_disk("AFBt", &t2, None);
    });
    ferrite_raid::set_rebuild_pause("AFB", Some(ferrite_raid::RebuildState::Reading));
    assert!(call(&mut h, |d| ferrite_raid::add_base_bdev("AFB", "AFBt", d)).is_ok());
    run_until(&mut h, "the rebuild paused", || {
        ferrite_raid::rebuild_state("AFB") == Some((ferrite_raid::RebuildState::Reading, true))
    });
    // Far from the window being copied (at the start): the write is not parked.
    let data = noise(12, 16 * 512);
    let st = write_cut_by_reset(&mut h, &ch, BLOCKS - 16, data.clone());
    assert_eq!(st, IoStatus::Aborted, "the in-sync member did not take it");
    assert_eq!(
        t.read(BLOCKS - 16, 16),
        data,
        "the member being rebuilt took it"
    );
    // The paused rebuild goes on, finds its target gone and ends.
    ferrite_raid::set_rebuild_pause("AFB", None);
    ferrite_raid::resume_rebuild("AFB");
    run_until(&mut h, "the rebuild ended", || {
        ferrite_raid::rebuild_state("AFB").is_none()
    });
    wait_operational(&mut h, "AFB", 1);
    let names = info("AFB").unwrap()["base_bdevs_list"].to_string();
    assert!(
        !names.contains("AFBt"),
        "the member being rebuilt is out: {names}"
    );
    close_and_delete(&mut h, "AFB", desc, ch);
}
