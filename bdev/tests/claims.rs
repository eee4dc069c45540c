//! Claims: the four kinds, what each allows and refuses, the errors (kind and holder named in
//! the message), release on descriptor drop, and `Bdev::claim` reporting.
// Helpers outside #[test] functions unwrap too: this is test code.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use common::{done_count, null64, take_done, Arena};
use ferrite_bdev::{BdevError, ClaimKind, Desc, ErrorKind, IoStatus};
use ferrite_reactor::harness::Harness;

fn open(h: &mut Harness, name: &str, write: bool) -> Desc {
    h.on(0, || Desc::open(name, write, |_| {}).unwrap())
}

fn open_err(h: &mut Harness, name: &str, write: bool) -> BdevError {
    h.on(0, || Desc::open(name, write, |_| {}).unwrap_err())
}

fn assert_claimed_by(e: &BdevError, module: &str, kind: &str) {
    assert_eq!(e.kind(), ErrorKind::Claimed, "{e}");
    assert_eq!(e.errno(), libc::EPERM);
    assert!(
        e.message().contains(&format!("'{module}'")),
        "holder not named: {e}"
    );
    assert!(e.message().contains(kind), "claim kind not named: {e}");
}

/// Writes one block through `desc` on thread 0 and returns the completion status.
fn write_status(h: &mut Harness, desc: &Desc) -> IoStatus {
    let arena = Arena::default();
    let ch = h.on(0, || desc.channel().unwrap());
    h.on(0, || common::write_at(&ch, &arena, 0, vec![7; 512], &[], 1));
    common::run_until(h, "write completion", || done_count() == 1);
    h.on(0, || drop(ch));
    h.run_until_idle();
    take_done()[0].status
}

fn cleanup(h: &mut Harness, name: &str) {
    h.on(0, || ferrite_null::delete(name, |r| r.unwrap()));
    h.run_until_idle();
    assert!(ferrite_bdev::lookup(name).is_none());
}

#[test]
fn exclusive_write() {
    let mut h = Harness::new(1, 11);
    let b = null64(&mut h, "ClEw");
    assert_eq!(b.claim(), None);
    let other_writer = open(&mut h, "ClEw", true);
    let holder = open(&mut h, "ClEw", false);
    assert!(!holder.is_writable());
    // A v1-style module claim does not care about writers already open.
    holder.claim(ClaimKind::ExclusiveWrite, "modA").unwrap();
    assert!(
        holder.is_writable(),
        "exclusive_write promotes the descriptor"
    );
    assert_eq!(
        b.claim(),
        Some((ClaimKind::ExclusiveWrite, "modA".to_string()))
    );
    // Write opens fail, naming the holder; read opens work.
    let e = open_err(&mut h, "ClEw", true);
    assert_claimed_by(&e, "modA", "exclusive_write");
    assert!(e.message().contains("ClEw"), "{e}");
    let reader = open(&mut h, "ClEw", false);
    // Every other claim conflicts, naming the holder.
    for kind in [
        ClaimKind::ExclusiveWrite,
        ClaimKind::ReadManyWriteOne,
        ClaimKind::ReadManyWriteNone,
        ClaimKind::ReadManyWriteShared(5),
    ] {
        let e = reader.claim(kind, "modB").unwrap_err();
        assert_claimed_by(&e, "modA", "exclusive_write");
    }
    assert_eq!(
        b.claim(),
        Some((ClaimKind::ExclusiveWrite, "modA".to_string()))
    );
    // A second claim through the same descriptor is refused.
    let e = holder.claim(ClaimKind::ExclusiveWrite, "modA").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    // The promoted descriptor can write.
    assert_eq!(write_status(&mut h, &holder), IoStatus::Success);
    // Dropping the holder releases the claim; a write open then succeeds.
    drop(holder);
    assert_eq!(b.claim(), None);
    let w = open(&mut h, "ClEw", true);
    assert!(w.is_writable());
    drop((w, reader, other_writer));
    cleanup(&mut h, "ClEw");
}

#[test]
fn read_many_write_one() {
    let mut h = Harness::new(1, 12);
    let b = null64(&mut h, "ClRwo");
    let writer = open(&mut h, "ClRwo", true);
    let d = open(&mut h, "ClRwo", false);
    // Another descriptor open for writing: refused.
    let e = d.claim(ClaimKind::ReadManyWriteOne, "modA").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Claimed, "{e}");
    assert!(e.message().contains("open for writing"), "{e}");
    // The writer is found by the thread it was opened on (the harness's `t0`).
    assert!(e.message().contains("opened on thread t0"), "{e}");
    assert_eq!(b.claim(), None, "a refused claim leaves nothing behind");
    drop(writer);
    // The claiming descriptor may itself be writable.
    let dw = open(&mut h, "ClRwo", true);
    dw.claim(ClaimKind::ReadManyWriteOne, "modA").unwrap();
    assert_eq!(
        b.claim(),
        Some((ClaimKind::ReadManyWriteOne, "modA".to_string()))
    );
    // Readers may open, writers may not.
    let reader = open(&mut h, "ClRwo", false);
    let e = open_err(&mut h, "ClRwo", true);
    assert_claimed_by(&e, "modA", "read_many_write_one");
    for kind in [
        ClaimKind::ExclusiveWrite,
        ClaimKind::ReadManyWriteOne,
        ClaimKind::ReadManyWriteNone,
        ClaimKind::ReadManyWriteShared(9),
    ] {
        let e = d.claim(kind, "modB").unwrap_err();
        assert_claimed_by(&e, "modA", "read_many_write_one");
    }
    drop(dw);
    assert_eq!(b.claim(), None);
    // Promotion of a read-only descriptor.
    d.claim(ClaimKind::ReadManyWriteOne, "modC").unwrap();
    assert!(d.is_writable());
    assert_eq!(write_status(&mut h, &d), IoStatus::Success);
    // release_claim releases it too.
    d.release_claim();
    assert_eq!(b.claim(), None);
    drop((d, reader));
    let w = open(&mut h, "ClRwo", true);
    drop(w);
    cleanup(&mut h, "ClRwo");
}

#[test]
fn read_many_write_none() {
    let mut h = Harness::new(1, 13);
    let b = null64(&mut h, "ClRwn");
    // A writable descriptor cannot take it.
    let dw = open(&mut h, "ClRwn", true);
    let e = dw.claim(ClaimKind::ReadManyWriteNone, "modA").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert!(e.message().contains("read-only"), "{e}");
    // Nor a read-only one while a writer is open.
    let r1 = open(&mut h, "ClRwn", false);
    let e = r1.claim(ClaimKind::ReadManyWriteNone, "modA").unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Claimed, "{e}");
    assert!(e.message().contains("open for writing"), "{e}");
    drop(dw);
    // Shared among read-only claimers; no promotion.
    r1.claim(ClaimKind::ReadManyWriteNone, "modA").unwrap();
    let r2 = open(&mut h, "ClRwn", false);
    r2.claim(ClaimKind::ReadManyWriteNone, "modB").unwrap();
    assert!(!r1.is_writable() && !r2.is_writable());
    assert_eq!(
        b.claim(),
        Some((ClaimKind::ReadManyWriteNone, "modA".to_string()))
    );
    // No writer can appear.
    let e = open_err(&mut h, "ClRwn", true);
    assert_claimed_by(&e, "modA", "read_many_write_none");
    let r3 = open(&mut h, "ClRwn", false);
    for kind in [
        ClaimKind::ExclusiveWrite,
        ClaimKind::ReadManyWriteOne,
        ClaimKind::ReadManyWriteShared(3),
    ] {
        let e = r3.claim(kind, "modC").unwrap_err();
        assert_claimed_by(&e, "modA", "read_many_write_none");
    }
    // Writes through a claimer are rejected (read-only), via the callback.
    assert_eq!(write_status(&mut h, &r1), IoStatus::Invalid);
    // Released one descriptor at a time; the report follows the remaining claimer.
    drop(r1);
    assert_eq!(
        b.claim(),
        Some((ClaimKind::ReadManyWriteNone, "modB".to_string()))
    );
    let e = open_err(&mut h, "ClRwn", true);
    assert_claimed_by(&e, "modB", "read_many_write_none");
    drop(r2);
    assert_eq!(b.claim(), None);
    let w = open(&mut h, "ClRwn", true);
    drop((w, r3));
    cleanup(&mut h, "ClRwn");
}

#[test]
fn read_many_write_shared() {
    let mut h = Harness::new(1, 14);
    let b = null64(&mut h, "ClRws");
    let d1 = open(&mut h, "ClRws", false);
    // Key 0 is invalid.
    let e = d1
        .claim(ClaimKind::ReadManyWriteShared(0), "modA")
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidArgument, "{e}");
    assert_eq!(b.claim(), None);
    // SPDK: the first shared claim needs no other writer open.
    let writer = open(&mut h, "ClRws", true);
    let e = d1
        .claim(ClaimKind::ReadManyWriteShared(7), "modA")
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Claimed, "{e}");
    assert!(e.message().contains("open for writing"), "{e}");
    assert_eq!(b.claim(), None);
    drop(writer);
    d1.claim(ClaimKind::ReadManyWriteShared(7), "modA").unwrap();
    assert!(d1.is_writable(), "shared claim promotes");
    // Same key shares (and also promotes).
    let d2 = open(&mut h, "ClRws", false);
    d2.claim(ClaimKind::ReadManyWriteShared(7), "modB").unwrap();
    assert!(d2.is_writable());
    assert_eq!(
        b.claim(),
        Some((ClaimKind::ReadManyWriteShared(7), "modA".to_string()))
    );
    // A different key conflicts, as does any other kind.
    let d3 = open(&mut h, "ClRws", false);
    for kind in [
        ClaimKind::ReadManyWriteShared(8),
        ClaimKind::ExclusiveWrite,
        ClaimKind::ReadManyWriteOne,
        ClaimKind::ReadManyWriteNone,
    ] {
        let e = d3.claim(kind, "modC").unwrap_err();
        assert_claimed_by(&e, "modA", "read_many_write_shared");
    }
    // Write opens still fail.
    let e = open_err(&mut h, "ClRws", true);
    assert_claimed_by(&e, "modA", "read_many_write_shared");
    assert_eq!(write_status(&mut h, &d2), IoStatus::Success);
    drop(d1);
    assert_eq!(
        b.claim(),
        Some((ClaimKind::ReadManyWriteShared(7), "modB".to_string()))
    );
    drop(d2);
    assert_eq!(b.claim(), None);
    // With every claim gone a new key is fine.
    d3.claim(ClaimKind::ReadManyWriteShared(8), "modC").unwrap();
    drop(d3);
    let w = open(&mut h, "ClRws", true);
    drop(w);
    cleanup(&mut h, "ClRws");
}

#[test]
fn claims_released_when_descriptor_drops_each_kind() {
    let mut h = Harness::new(1, 15);
    let b = null64(&mut h, "ClDrop");
    for kind in [
        ClaimKind::ExclusiveWrite,
        ClaimKind::ReadManyWriteOne,
        ClaimKind::ReadManyWriteNone,
        ClaimKind::ReadManyWriteShared(42),
    ] {
        let d = open(&mut h, "ClDrop", false);
        d.claim(kind, "holder").unwrap();
        assert_eq!(b.claim(), Some((kind, "holder".to_string())));
        let e = open_err(&mut h, "ClDrop", true);
        assert_claimed_by(&e, "holder", kind.spdk_name());
        assert_eq!(b.open_count(), 1);
        drop(d);
        assert_eq!(b.claim(), None, "{kind:?} not released on drop");
        assert_eq!(b.open_count(), 0);
        let w = open(&mut h, "ClDrop", true);
        assert!(w.is_writable());
        drop(w);
    }
    cleanup(&mut h, "ClDrop");
}

#[test]
fn passthru_claim_blocks_writers_and_other_claims() {
    let mut h = Harness::new(1, 16);
    null64(&mut h, "ClBase");
    h.on(0, || {
        ferrite_bdev::register_module(Arc::new(ferrite_passthru::PassthruModule));
        ferrite_passthru::create(&ferrite_passthru::PassthruOpts {
            base_bdev_name: "ClBase".into(),
            name: "ClPt".into(),
            uuid: None,
        })
        .unwrap();
    });
    let base = ferrite_bdev::lookup("ClBase").unwrap();
    assert_eq!(
        base.claim(),
        Some((ClaimKind::ExclusiveWrite, "passthru".to_string()))
    );
    let e = open_err(&mut h, "ClBase", true);
    assert_claimed_by(&e, "passthru", "exclusive_write");
    // A second passthru on the same base fails to attach, naming the holder, and is forgotten.
    let e = h.on(0, || {
        ferrite_passthru::create(&ferrite_passthru::PassthruOpts {
            base_bdev_name: "ClBase".into(),
            name: "ClPt2".into(),
            uuid: None,
        })
        .unwrap_err()
    });
    assert_eq!(e.kind(), ErrorKind::Claimed, "{e}");
    assert!(e.message().contains("'passthru'"), "{e}");
    assert!(ferrite_bdev::lookup("ClPt2").is_none());
    h.on(0, || ferrite_passthru::delete("ClPt", |r| r.unwrap()));
    h.run_until_idle();
    assert_eq!(base.claim(), None);
    let w = open(&mut h, "ClBase", true);
    drop(w);
    cleanup(&mut h, "ClBase");
}
