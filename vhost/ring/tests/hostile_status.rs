//! Status hints of refused chains (`RingError::status_hint`), split and packed: a chain
//! refused for a defective buffer (outside guest memory, zero length, wrong direction, too
//! many, too large) still reports its last descriptor as the place for the error status when
//! the links are sound and that descriptor is device-writable, non-empty and in guest
//! memory; read-only, empty or outside statuses, loops, bad links and malformed indirect
//! tables give none. (The hint of every case in hostile_split.rs and hostile_packed.rs is
//! checked there: none.)

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use ferrite_vring::{
    Chain, ChainDefect, ErrorKind, GuestMemory, RingBase, RingError, Vring, MAX_SEGS,
};

/// Where the well-formed status descriptors live.
const ST: u64 = HIGH + 0x1000;
/// Split ring size of most cases.
const SIZE: u16 = 16;

fn assert_hint(e: &RingError, want: ChainDefect, hint: Option<(u64, u32)>) {
    assert_eq!(e.kind(), ErrorKind::Chain);
    assert_eq!(e.chain_defect(), Some(want), "{e}");
    let got = e.status_hint();
    assert_eq!(got.map(|s| (s.addr, s.len)), hint, "status hint for {e}");
    assert!(got.is_none_or(|s| s.device_writable));
}

/// Split ring of `size`: head 0 holds the chain the closure wrote; pops it, checks error and
/// hint, completes it and checks the ring goes on.
fn split_cfg(
    size: u16,
    indirect: bool,
    setup: impl FnOnce(&GuestMemory, &SplitDriver),
    want: ChainDefect,
    hint: Option<(u64, u32)>,
) {
    let mem = memory();
    let mut drv = SplitDriver::new(&mem, size);
    let mut c = cfg(size, false, false);
    c.indirect = indirect;
    let mut dev = Vring::new(&mem, c, RingBase::initial(false)).unwrap();
    setup(&mem, &drv);
    drv.free.clear();
    drv.free.push(size - 1);
    drv.offer(&mem, 0);
    let mut ch = Chain::new();
    let e = dev.pop(&mem, &mut ch).unwrap_err();
    assert_hint(&e, want, hint);
    assert_eq!(ch.id(), 0);
    dev.push_used(&mem, 0, u32::from(hint.is_some())).unwrap();
    assert!(dev.publish(&mem).unwrap());
    let h = drv.add(&mem, &[w(HIGH, 8)]);
    assert!(dev.pop(&mem, &mut ch).unwrap());
    assert_eq!(ch.id(), h);
}

fn split_hint(
    setup: impl FnOnce(&GuestMemory, &SplitDriver),
    want: ChainDefect,
    hint: Option<(u64, u32)>,
) {
    split_cfg(SIZE, true, setup, want, hint)
}

fn split_none(setup: impl FnOnce(&GuestMemory, &SplitDriver), want: ChainDefect) {
    split_cfg(SIZE, true, setup, want, None)
}

/// Packed ring of `size` (indirect negotiated as given): `setup` writes memory (tables),
/// the chain `descs` is offered, popped, checked, completed, and a good chain follows.
fn packed_full(
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
    let mut dev = Vring::new(&mem, c, RingBase::initial(true)).unwrap();
    let id = drv.add_raw(&mem, descs, None);
    let mut ch = Chain::new();
    let e = dev.pop(&mem, &mut ch).unwrap_err();
    assert_hint(&e, want, hint);
    assert_eq!(ch.id(), id);
    dev.push_used(&mem, id, u32::from(hint.is_some())).unwrap();
    assert!(dev.publish(&mem).unwrap());
    let good = drv.add(&mem, &[r(HIGH, 8), w(HIGH, 8)]);
    assert!(dev.pop(&mem, &mut ch).unwrap());
    assert_eq!(ch.id(), good);
}

fn packed_hint(
    setup: impl FnOnce(&GuestMemory),
    descs: &[(u64, u32, u16)],
    want: ChainDefect,
    hint: Option<(u64, u32)>,
) {
    packed_full(16, true, setup, descs, want, hint)
}

fn packed_none(descs: &[(u64, u32, u16)], want: ChainDefect) {
    packed_full(16, true, |_| {}, descs, want, None)
}

fn table(mem: &GuestMemory, at: u64, entries: &[(u64, u32, u16)]) {
    for (i, &(a, l, f)) in entries.iter().enumerate() {
        write_desc(mem, at + 16 * i as u64, a, l, 0, f);
    }
}

#[test]
fn split_chain_longer_than_max_segs_with_status() {
    // the status descriptor lies past MAX_SEGS: still found, the links being sound
    let n = (MAX_SEGS + 1) as u16;
    split_cfg(
        512,
        true,
        |m, d| {
            for i in 0..n {
                let f = if i + 1 < n { F_NEXT } else { F_WRITE };
                d.raw(m, i, HIGH, 8, f, i + 1);
            }
        },
        ChainDefect::TooLong { max: MAX_SEGS },
        Some((HIGH, 8)),
    );
}

#[test]
fn split_data_in_hole_then_status() {
    split_hint(
        |m, d| {
            d.raw(m, 0, HIGH, 16, F_NEXT, 1);
            d.raw(m, 1, HOLE, 8, F_WRITE | F_NEXT, 2);
            d.raw(m, 2, ST, 1, F_WRITE, 0);
        },
        ChainDefect::OutOfMemory { addr: HOLE, len: 8 },
        Some((ST, 1)),
    );
}

#[test]
fn split_zero_length_data_then_status() {
    split_hint(
        |m, d| {
            d.raw(m, 0, HIGH, 16, F_NEXT, 1);
            d.raw(m, 1, HIGH, 0, F_WRITE | F_NEXT, 2);
            d.raw(m, 2, ST, 4, F_WRITE, 0);
        },
        ChainDefect::ZeroLength,
        Some((ST, 4)),
    );
}

#[test]
fn split_oversize_data_then_status() {
    split_hint(
        |m, d| {
            d.raw(m, 0, HIGH, 16, F_NEXT, 1);
            d.raw(m, 1, HIGH, u32::MAX, F_WRITE | F_NEXT, 2);
            d.raw(m, 2, ST, 1, F_WRITE, 0);
        },
        ChainDefect::Oversize,
        Some((ST, 1)),
    );
}

#[test]
fn split_wrong_direction_then_status() {
    split_hint(
        |m, d| {
            d.raw(m, 0, HIGH, 16, F_WRITE | F_NEXT, 1);
            d.raw(m, 1, HIGH, 8, F_NEXT, 2);
            d.raw(m, 2, ST, 1, F_WRITE, 0);
        },
        ChainDefect::WrongDirection,
        Some((ST, 1)),
    );
}

#[test]
fn split_readonly_status_gives_no_hint() {
    split_none(
        |m, d| {
            d.raw(m, 0, HIGH, 16, F_NEXT, 1);
            d.raw(m, 1, HOLE, 8, F_WRITE | F_NEXT, 2);
            d.raw(m, 2, ST, 1, 0, 0);
        },
        ChainDefect::OutOfMemory { addr: HOLE, len: 8 },
    );
}

#[test]
fn split_status_outside_memory_gives_no_hint() {
    split_none(
        |m, d| {
            d.raw(m, 0, HIGH, 16, F_NEXT, 1);
            d.raw(m, 1, HOLE, 1, F_WRITE, 0);
        },
        ChainDefect::OutOfMemory { addr: HOLE, len: 1 },
    );
}

#[test]
fn split_bad_buffer_then_loop_gives_no_hint() {
    split_none(
        |m, d| {
            d.raw(m, 0, HOLE, 8, F_NEXT, 1);
            d.raw(m, 1, ST, 1, F_WRITE | F_NEXT, 0);
        },
        ChainDefect::OutOfMemory { addr: HOLE, len: 8 },
    );
}

#[test]
fn split_bad_buffer_then_index_out_of_range_gives_no_hint() {
    split_none(
        |m, d| d.raw(m, 0, HOLE, 8, F_NEXT, SIZE + 1),
        ChainDefect::OutOfMemory { addr: HOLE, len: 8 },
    );
}

#[test]
fn split_indirect_data_in_hole_then_status() {
    split_hint(
        |m, d| {
            let (a, l) = indirect_table(m, TABLES, &[r(HIGH, 16), w(HOLE, 8), w(ST, 1)], false);
            d.raw(m, 0, a, l, F_INDIRECT, 0);
        },
        ChainDefect::OutOfMemory { addr: HOLE, len: 8 },
        Some((ST, 1)),
    );
}

#[test]
fn split_indirect_too_long_with_status() {
    let n = MAX_SEGS + 1;
    split_hint(
        |m, d| {
            let mut bufs: Vec<Buf> = (0..n - 1).map(|_| r(HIGH, 8)).collect();
            bufs.push(w(ST, 1));
            let (a, l) = indirect_table(m, TABLES, &bufs, false);
            d.raw(m, 0, a, l, F_INDIRECT, 0);
        },
        ChainDefect::TooLong { max: MAX_SEGS },
        Some((ST, 1)),
    );
}

#[test]
fn split_indirect_loop_after_bad_buffer_gives_no_hint() {
    split_none(
        |m, d| {
            write_desc(m, TABLES, HOLE, 8, F_NEXT, 1);
            write_desc(m, TABLES + 16, ST, 1, F_WRITE | F_NEXT, 0);
            d.raw(m, 0, TABLES, 32, F_INDIRECT, 0);
        },
        ChainDefect::OutOfMemory { addr: HOLE, len: 8 },
    );
}

#[test]
fn packed_zero_length_data_then_status() {
    packed_hint(
        |_| {},
        &[
            (HIGH, 16, F_NEXT),
            (HIGH, 0, F_NEXT | F_WRITE),
            (ST, 2, F_WRITE),
        ],
        ChainDefect::ZeroLength,
        Some((ST, 2)),
    );
}

#[test]
fn packed_oversize_data_then_status() {
    packed_hint(
        |_| {},
        &[
            (HIGH, 16, F_NEXT),
            (HIGH, u32::MAX, F_NEXT | F_WRITE),
            (ST, 1, F_WRITE),
        ],
        ChainDefect::Oversize,
        Some((ST, 1)),
    );
}

#[test]
fn packed_wrong_direction_then_status() {
    packed_hint(
        |_| {},
        &[
            (HIGH, 16, F_NEXT | F_WRITE),
            (HIGH, 8, F_NEXT),
            (ST, 1, F_WRITE),
        ],
        ChainDefect::WrongDirection,
        Some((ST, 1)),
    );
}

#[test]
fn packed_too_long_with_status() {
    let descs: Vec<(u64, u32, u16)> = (0..=MAX_SEGS)
        .map(|i| {
            if i < MAX_SEGS {
                (HIGH, 8, F_NEXT)
            } else {
                (ST, 1, F_WRITE)
            }
        })
        .collect();
    packed_full(
        512,
        true,
        |_| {},
        &descs,
        ChainDefect::TooLong { max: MAX_SEGS },
        Some((ST, 1)),
    );
}

#[test]
fn packed_readonly_status_gives_no_hint() {
    packed_none(
        &[(HIGH, 16, F_NEXT), (HOLE, 8, F_NEXT | F_WRITE), (ST, 1, 0)],
        ChainDefect::OutOfMemory { addr: HOLE, len: 8 },
    );
}

#[test]
fn packed_status_outside_memory_gives_no_hint() {
    packed_none(
        &[(HIGH, 16, F_NEXT), (HOLE, 1, F_WRITE)],
        ChainDefect::OutOfMemory { addr: HOLE, len: 1 },
    );
}

#[test]
fn packed_indirect_chained_with_writable_status_gives_no_hint() {
    // indirect_with_next's last descriptor is a good writable buffer; the structure is not
    packed_none(
        &[(TABLES, 16, F_INDIRECT | F_NEXT), (ST, 1, F_WRITE)],
        ChainDefect::IndirectChained,
    );
}

#[test]
fn packed_indirect_data_in_hole_then_status() {
    packed_hint(
        |m| {
            table(
                m,
                TABLES,
                &[(HIGH, 16, 0), (HOLE, 8, F_WRITE), (ST, 1, F_WRITE)],
            )
        },
        &[(TABLES, 48, F_INDIRECT)],
        ChainDefect::OutOfMemory { addr: HOLE, len: 8 },
        Some((ST, 1)),
    );
}

#[test]
fn packed_indirect_nested_after_bad_buffer_gives_no_hint() {
    packed_hint(
        |m| {
            table(
                m,
                TABLES,
                &[(HOLE, 8, 0), (TABLES, 16, F_INDIRECT), (ST, 1, F_WRITE)],
            )
        },
        &[(TABLES, 48, F_INDIRECT)],
        ChainDefect::OutOfMemory { addr: HOLE, len: 8 },
        None,
    );
}
