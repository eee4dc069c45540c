//! A hostile driver on a packed ring: malformed chains are reported with their
//! `ChainDefect`, consumed whole (every descriptor of the chain, so the ring stays in step),
//! and can be completed; breaking the ring's structure is `ErrorKind::Broken`.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use ferrite_vring::{Chain, ChainDefect, ErrorKind, GuestMemory, Vring, MAX_SEGS};

/// Offers the raw chain, expects `want` on pop, completes it, then checks that a good chain
/// right after it is served (so exactly the bad chain's descriptors were consumed).
fn check_cfg(size: u16, indirect: bool, descs: &[(u64, u32, u16)], want: ChainDefect) {
    check_full(size, indirect, |_| {}, descs, want, None)
}

/// As [`check_cfg`] on a ring of 16 with indirect descriptors, after `setup` wrote guest
/// memory (indirect tables), expecting the status hint `hint` (address, length).
fn check_hint(
    setup: impl FnOnce(&GuestMemory),
    descs: &[(u64, u32, u16)],
    want: ChainDefect,
    hint: Option<(u64, u32)>,
) {
    check_full(16, true, setup, descs, want, hint)
}

fn check_full(
    size: u16,
    indirect: bool,
    setup: impl FnOnce(&GuestMemory),
    descs: &[(u64, u32, u16)],
    want: ChainDefect,
    hint: Option<(u64, u32)>,
) {
    let mem = memory();
    setup(&mem);
    let mut drv = PackedDriver::new(&mem, size);
    let mut c = cfg(size, true, false);
    c.indirect = indirect;
    let mut dev = Vring::new(&mem, c, ferrite_vring::RingBase::initial(true)).unwrap();
    let id = drv.add_raw(&mem, descs, None);
    let mut ch = Chain::new();
    let e = dev.pop(&mem, &mut ch).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Chain);
    assert_eq!(e.chain_defect(), Some(want), "{e}");
    let got = e.status_hint();
    assert_eq!(got.map(|s| (s.addr, s.len)), hint, "status hint for {e}");
    assert!(got.is_none_or(|s| s.device_writable));
    assert_eq!(ch.id(), id);
    assert!(ch.segments().is_empty());
    dev.push_used(&mem, id, 0).unwrap();
    assert!(dev.publish(&mem).unwrap());
    assert_eq!(drv.used(&mem), Some((id, 0)));
    let good = drv.add(&mem, &[r(HIGH, 8), w(HIGH, 8)]);
    assert!(dev.pop(&mem, &mut ch).unwrap());
    assert_eq!(ch.id(), good);
    assert_eq!(ch.segments().len(), 2);
}

fn check(descs: &[(u64, u32, u16)], want: ChainDefect) {
    check_cfg(16, true, descs, want)
}

/// A well-formed status descriptor's address.
const ST: u64 = HIGH + 0x1000;

fn table(mem: &GuestMemory, at: u64, entries: &[(u64, u32, u16)]) {
    for (i, &(a, l, f)) in entries.iter().enumerate() {
        write_desc(mem, at + 16 * i as u64, a, l, 0, f);
    }
}

#[test]
fn buffer_in_hole_mid_chain() {
    check_hint(
        |_| {},
        &[
            (HIGH, 16, F_NEXT),
            (HOLE, 8, F_NEXT | F_WRITE),
            (HIGH, 1, F_WRITE),
        ],
        ChainDefect::OutOfMemory { addr: HOLE, len: 8 },
        Some((HIGH, 1)),
    );
}

#[test]
fn zero_length() {
    check(
        &[(HIGH, 16, F_NEXT), (HIGH, 0, F_WRITE)],
        ChainDefect::ZeroLength,
    );
}

#[test]
fn readable_after_writable() {
    check(
        &[(HIGH, 16, F_NEXT | F_WRITE), (HIGH, 8, 0)],
        ChainDefect::WrongDirection,
    );
}

#[test]
fn oversize() {
    check(
        &[(HIGH, 16, F_NEXT), (HIGH, u32::MAX, F_WRITE)],
        ChainDefect::Oversize,
    );
}

#[test]
fn too_long() {
    let descs: Vec<(u64, u32, u16)> = (0..=MAX_SEGS)
        .map(|i| (HIGH, 8, if i < MAX_SEGS { F_NEXT } else { 0 }))
        .collect();
    check_cfg(512, true, &descs, ChainDefect::TooLong { max: MAX_SEGS });
}

#[test]
fn indirect_not_negotiated() {
    // a well-formed table ending in a writable status: not read, indirect not negotiated
    check_full(
        16,
        false,
        |m| table(m, TABLES, &[(HIGH, 8, 0), (ST, 1, F_WRITE)]),
        &[(TABLES, 32, F_INDIRECT)],
        ChainDefect::IndirectNotNegotiated,
        None,
    );
}

#[test]
fn indirect_with_next() {
    check(
        &[(TABLES, 16, F_INDIRECT | F_NEXT), (HIGH, 8, F_WRITE)],
        ChainDefect::IndirectChained,
    );
}

#[test]
fn indirect_after_direct() {
    check(
        &[(HIGH, 8, F_NEXT), (TABLES, 16, F_INDIRECT)],
        ChainDefect::IndirectChained,
    );
}

#[test]
fn indirect_bad_length() {
    check(
        &[(TABLES, 0, F_INDIRECT)],
        ChainDefect::BadIndirectLength { len: 0 },
    );
    check(
        &[(TABLES, 40, F_INDIRECT)],
        ChainDefect::BadIndirectLength { len: 40 },
    );
}

#[test]
fn indirect_table_in_hole() {
    check(
        &[(HOLE, 32, F_INDIRECT)],
        ChainDefect::OutOfMemory {
            addr: HOLE,
            len: 32,
        },
    );
}

/// The check functions build a fresh memory, so tables are written through a ring whose
/// memory we keep: a nested indirect entry.
#[test]
fn nested_indirect() {
    let mem = memory();
    let mut drv = PackedDriver::new(&mem, 8);
    let mut dev = device(&mem, 8, true, false);
    table(&mem, TABLES, &[(HIGH, 8, 0), (TABLES, 32, F_INDIRECT)]);
    let id = drv.add_raw(&mem, &[(TABLES, 32, F_INDIRECT)], None);
    let mut ch = Chain::new();
    let e = dev.pop(&mem, &mut ch).unwrap_err();
    assert_eq!(e.chain_defect(), Some(ChainDefect::NestedIndirect));
    assert_eq!(e.status_hint(), None);
    assert_eq!(ch.id(), id);
}

#[test]
fn indirect_table_entry_outside_memory() {
    let mem = memory();
    let mut drv = PackedDriver::new(&mem, 8);
    let mut dev = device(&mem, 8, true, false);
    table(&mem, TABLES, &[(HIGH, 8, 0), (u64::MAX - 8, 16, F_WRITE)]);
    drv.add_raw(&mem, &[(TABLES, 32, F_INDIRECT)], None);
    let mut ch = Chain::new();
    let e = dev.pop(&mem, &mut ch).unwrap_err();
    assert_eq!(
        e.chain_defect(),
        Some(ChainDefect::OutOfMemory {
            addr: u64::MAX - 8,
            len: 16
        })
    );
    assert_eq!(e.status_hint(), None, "the status itself is outside memory");
}

fn broken(setup: impl FnOnce(&GuestMemory, &mut PackedDriver)) {
    let mem = memory();
    let mut drv = PackedDriver::new(&mem, 8);
    let mut dev = device(&mem, 8, true, false);
    setup(&mem, &mut drv);
    let mut ch = Chain::new();
    let res = loop {
        match dev.pop(&mem, &mut ch) {
            Ok(true) => {}
            other => break other,
        }
    };
    assert_eq!(res.unwrap_err().kind(), ErrorKind::Broken);
}

#[test]
fn buffer_id_out_of_range() {
    broken(|m, d| {
        d.add_raw(m, &[(HIGH, 8, 0)], Some(8));
    });
}

#[test]
fn buffer_id_reused_while_in_flight() {
    broken(|m, d| {
        d.add_raw(m, &[(HIGH, 8, 0)], Some(3));
        d.add_raw(m, &[(HIGH, 8, 0)], Some(3));
    });
}

#[test]
fn chain_runs_into_unavailable_descriptor() {
    broken(|m, d| {
        // NEXT on the last descriptor offered: the following one is not available
        d.add_raw(m, &[(HIGH, 8, F_NEXT), (HIGH, 8, F_NEXT)], None);
    });
}

#[test]
fn chain_around_the_whole_ring() {
    broken(|m, d| {
        let descs: Vec<(u64, u32, u16)> = (0..8).map(|_| (HIGH, 8, F_NEXT)).collect();
        d.add_raw(m, &descs, None);
    });
}

#[test]
fn more_descriptors_offered_than_the_ring_holds() {
    let mem = memory();
    let mut drv = PackedDriver::new(&mem, 8);
    let mut dev = device(&mem, 8, true, false);
    let mut ch = Chain::new();
    for _ in 0..4 {
        drv.add_raw(&mem, &[(HIGH, 8, F_NEXT), (HIGH, 8, F_WRITE)], None);
        assert!(dev.pop(&mem, &mut ch).unwrap());
    }
    // the ring is full of buffers in flight; a driver offering more is reusing descriptors
    // the device has not returned
    drv.add_raw(&mem, &[(HIGH, 8, 0)], Some(7));
    assert_eq!(
        dev.pop(&mem, &mut ch).unwrap_err().kind(),
        ErrorKind::Broken
    );
    // returned but not yet published: still not the driver's to reuse
    let mem = memory();
    let mut drv = PackedDriver::new(&mem, 4);
    let mut dev = device(&mem, 4, true, false);
    for _ in 0..4 {
        drv.add_raw(&mem, &[(HIGH, 8, 0)], None);
        assert!(dev.pop(&mem, &mut ch).unwrap());
    }
    dev.push_used(&mem, ch.id(), 0).unwrap();
    drv.add_raw(&mem, &[(HIGH, 8, 0)], Some(ch.id()));
    assert_eq!(
        dev.pop(&mem, &mut ch).unwrap_err().kind(),
        ErrorKind::Broken
    );
}
