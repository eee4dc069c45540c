//! A reset of a raid reaches the I/O a module holds inside its members (the raid names its
//! members as its bases, `ferrite_bdev::set_held_io_bases`): raid1 over an error bdev with a
//! `pending` injection, and over a delay bdev with a long latency, each beside a healthy
//! member. The held I/O is completed by the module and the reset completes; nothing hangs.
//! After the member is removed and added back, the raid names it again. An abort reaching a
//! raid1 read held in a member ends the read aborted (no retry on the other member).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::*;
use ferrite_bdev::{BdevChannel, Desc, IoStatus};
use ferrite_error::{ErrorType, InjectIoType, InjectOpts};
use ferrite_raid::RaidOpts;
use ferrite_reactor::harness::Harness;

const BLOCKS: u64 = 4096;

/// raid1 `name` over `first` (a bdev the caller stacks on disk `{name}d0`) and the plain disk
/// `{name}d1`; returns the descriptor and channel open on thread 1.
fn raid1_over(h: &mut Harness, name: &str, stack: fn(&str) -> String) -> (Desc, BdevChannel) {
    setup(h);
    let disks: Vec<Arc<Disk>> = (0..2).map(|_| Disk::new(512, BLOCKS)).collect();
    let (nm, d2) = (name.to_string(), disks.clone());
    let first = h.on(0, move || {
        ferrite_bdev::register_module(Arc::new(ferrite_error::ErrorModule));
        ferrite_bdev::register_module(Arc::new(ferrite_delay::DelayModule));
        register_disk(&format!("{nm}d0"), &d2[0], None);
        register_disk(&format!("{nm}d1"), &d2[1], None);
        stack(&format!("{nm}d0"))
    });
    let o = RaidOpts {
        name: name.into(),
        raid_level: "raid1".into(),
        base_bdevs: vec![first, format!("{name}d1")],
        ..Default::default()
    };
    create_and_open(h, o)
}

fn error_on(base: &str) -> String {
    ferrite_error::create(&ferrite_error::ErrorOpts {
        base_name: base.into(),
        uuid: None,
    })
    .unwrap()
}

fn hold_writes(h: &mut Harness, bdev: &str, num: u32) {
    let o = InjectOpts {
        io_type: InjectIoType::Write,
        error_type: ErrorType::Pending,
        num,
        queue_depth: 0,
        corrupt_offset: 0,
        corrupt_value: 0,
    };
    let b = bdev.to_string();
    h.on(0, move || ferrite_error::inject_error(&b, &o))
        .unwrap();
    h.run_until_idle();
}

/// Submits a write (tag `tag`) and a reset (tag `tag + 1`) of the raid; the write is held
/// below until the reset; both complete, once each, without time passing.
fn write_then_reset(h: &mut Harness, ch: &BdevChannel, arena: &Arena, tag: u64) -> Vec<Done> {
    take_done();
    h.on(1, || write_at(ch, arena, 8, noise(tag, 4096), tag));
    h.run_until_idle();
    assert_eq!(done_count(), 0, "the write is held below the raid");
    h.on(1, || {
        plain(ch, tag + 1, |io| {
            io.prep_reset(record);
        })
    });
    run_until(h, "reset of the raid", || done_count() == 2);
    h.run_until_idle();
    let d = take_done();
    assert_eq!(d.len(), 2, "{d:?}");
    let reset = d.iter().find(|d| d.tag == tag + 1).unwrap();
    assert_eq!(reset.status, IoStatus::Success);
    assert!(d.iter().any(|d| d.tag == tag), "{d:?}");
    d
}

#[test]
fn reset_of_raid1_reaches_pending_io_in_an_error_member() {
    let mut h = Harness::new(2, 61);
    let (desc, ch) = raid1_over(&mut h, "HR1", error_on);
    let arena = Arena::default();
    hold_writes(&mut h, "EE_HR1d0", 1);
    write_then_reset(&mut h, &ch, &arena, 100);
    assert_eq!(h.on(1, || ch.inflight()), 0);
    // The raid goes on: a write completes.
    h.on(1, || write_at(&ch, &arena, 16, noise(7, 4096), 110));
    run_until(&mut h, "write after the reset", || done_count() == 1);
    assert_eq!(take_done()[0].status, IoStatus::Success);
    close_and_delete(&mut h, "HR1", desc, ch);
}

#[test]
fn reset_of_raid1_reaches_io_delayed_in_a_delay_member() {
    let mut h = Harness::new(2, 62);
    let (desc, ch) = raid1_over(&mut h, "HR2", delay_on);
    let arena = Arena::default();
    write_then_reset(&mut h, &ch, &arena, 200);
    assert_eq!(h.on(1, || ch.inflight()), 0);
    close_and_delete(&mut h, "HR2", desc, ch);
}

/// The raid names its members as they change: once the error member is removed, a reset of
/// the raid no longer touches I/O held in it (another user's, held on the bdev itself); once it
/// is added back (rebuilt), a reset of the raid reaches I/O held in it again.
#[test]
fn members_named_as_they_leave_and_come_back() {
    let mut h = Harness::new(2, 63);
    let (desc, ch) = raid1_over(&mut h, "HR3", error_on);
    let arena = Arena::default();
    assert!(call(&mut h, |d| ferrite_raid::remove_base_bdev("EE_HR3d0", d)).is_ok());
    // Another user writes to the removed member directly; its write is held there.
    let d0 = h.on(1, || Desc::open("EE_HR3d0", true, |_| {}).unwrap());
    let c0 = h.on(1, || d0.channel().unwrap());
    hold_writes(&mut h, "EE_HR3d0", 1);
    take_done();
    h.on(1, || write_at(&c0, &arena, 0, noise(3, 512), 300));
    h.run_until_idle();
    h.on(1, || {
        plain(&ch, 301, |io| {
            io.prep_reset(record);
        })
    });
    run_until(&mut h, "reset of the degraded raid", || done_count() == 1);
    h.run_until_idle();
    let d = take_done();
    assert_eq!(
        (d.len(), d[0].tag, d[0].status),
        (1, 301, IoStatus::Success)
    );
    // Not the raid's any more: its held write is untouched; a clear releases it.
    let clear = InjectOpts {
        io_type: InjectIoType::Clear,
        error_type: ErrorType::Pending,
        num: 0,
        queue_depth: 0,
        corrupt_offset: 0,
        corrupt_value: 0,
    };
    h.on(0, move || ferrite_error::inject_error("EE_HR3d0", &clear))
        .unwrap();
    run_until(&mut h, "release by clear", || done_count() == 1);
    let d = take_done();
    assert_eq!((d[0].tag, d[0].status), (300, IoStatus::Aborted));
    h.on(1, move || {
        drop(c0);
        drop(d0);
    });
    h.run_until_idle();
    // Back in the raid (rebuilt): a reset reaches what it holds again.
    assert!(call(&mut h, |d| ferrite_raid::add_base_bdev(
        "HR3", "EE_HR3d0", d
    ))
    .is_ok());
    run_until(&mut h, "rebuild", || {
        ferrite_raid::rebuild_state("HR3").is_none()
    });
    h.run_until_idle();
    assert_eq!(ferrite_raid::last_rebuild("HR3").unwrap().error, None);
    hold_writes(&mut h, "EE_HR3d0", 1);
    write_then_reset(&mut h, &ch, &arena, 310);
    assert_eq!(h.on(1, || ch.inflight()), 0);
    close_and_delete(&mut h, "HR3", desc, ch);
}

/// An abort that reaches a raid1 read held in a member ends that read aborted: raid1 does not
/// retry it on the other member (which would complete it after the abort answered success).
#[test]
fn aborted_raid1_read_is_not_retried_on_another_member() {
    let mut h = Harness::new(2, 64);
    let (desc, ch) = raid1_over(&mut h, "HR4", delay_on);
    let arena = Arena::default();
    take_done();
    // Two reads: the less busy member takes each, so one is held in the delay member and the
    // other completes from the plain one.
    h.on(1, || {
        read_at(&ch, &arena, 0, 8, 400);
        read_at(&ch, &arena, 8, 8, 401);
    });
    run_until(&mut h, "the read on the plain member", || done_count() == 1);
    h.run_until_idle();
    let d = take_done();
    assert_eq!((d.len(), d[0].status), (1, IoStatus::Success), "{d:?}");
    let held = if d[0].tag == 400 { 401 } else { 400 };
    h.on(1, || {
        plain(&ch, 402, |io| {
            io.prep_abort(held, record);
        })
    });
    run_until(&mut h, "abort of the held read", || done_count() == 2);
    h.run_until_idle();
    let mut d = take_done();
    d.sort_by_key(|d| d.tag);
    let got: Vec<(u64, IoStatus)> = d.iter().map(|d| (d.tag, d.status)).collect();
    let mut want = vec![(held, IoStatus::Aborted), (402, IoStatus::Success)];
    want.sort_by_key(|w| w.0);
    assert_eq!(got, want);
    assert_eq!(h.on(1, || ch.inflight()), 0);
    // Reads made when the raid appeared (examine) are still held in the delay member: a reset
    // releases them so the raid can be deleted without waiting out the latency.
    h.on(1, || {
        plain(&ch, 403, |io| {
            io.prep_reset(record);
        })
    });
    run_until(&mut h, "reset of the raid", || done_count() == 1);
    assert_eq!(take_done()[0].status, IoStatus::Success);
    close_and_delete(&mut h, "HR4", desc, ch);
}
