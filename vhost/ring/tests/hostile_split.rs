//! A hostile driver on a split ring: every malformed chain is reported with its own
//! `ChainDefect`, consumed, and can be completed; the ring keeps working afterwards. Breaking
//! the ring itself is reported as `ErrorKind::Broken`.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use ferrite_vring::{Chain, ChainDefect, ErrorKind, RingBase, Vring, MAX_SEGS};

const SIZE: u16 = 16;

/// Offers `head` (whose descriptors the closure wrote), pops, expects `want` and no status
/// hint, completes the chain with 0 bytes, and checks the ring still serves a good chain.
fn check(setup: impl FnOnce(&ferrite_vring::GuestMemory, &SplitDriver), want: ChainDefect) {
    check_cfg(SIZE, true, setup, want, None)
}

fn check_cfg(
    size: u16,
    indirect: bool,
    setup: impl FnOnce(&ferrite_vring::GuestMemory, &SplitDriver),
    want: ChainDefect,
    hint: Option<(u64, u32)>,
) {
    let mem = memory();
    let mut drv = SplitDriver::new(&mem, size);
    let mut c = cfg(size, false, false);
    c.indirect = indirect;
    let mut dev = Vring::new(&mem, c, RingBase::initial(false)).unwrap();
    setup(&mem, &drv);
    // head 0 holds the bad chain; keep the driver's allocator away from the bad descriptors
    drv.free.clear();
    drv.free.push(size - 1);
    drv.offer(&mem, 0);
    let mut ch = Chain::new();
    let e = dev.pop(&mem, &mut ch).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Chain);
    assert_eq!(e.chain_defect(), Some(want), "{e}");
    let got = e.status_hint();
    assert_eq!(got.map(|s| (s.addr, s.len)), hint, "status hint for {e}");
    assert!(got.is_none_or(|s| s.device_writable));
    assert_eq!(ch.id(), 0);
    assert!(ch.segments().is_empty());
    assert_eq!(dev.in_flight(), 1);
    dev.push_used(&mem, 0, 0).unwrap();
    assert!(dev.publish(&mem).unwrap());
    assert_eq!(drv.used(&mem), Some((0, 0)));
    // the ring goes on
    let h = drv.add(&mem, &[w(HIGH, 8)]);
    assert!(dev.pop(&mem, &mut ch).unwrap());
    assert_eq!(ch.id(), h);
}

#[test]
fn next_index_out_of_range() {
    check(
        |m, d| d.raw(m, 0, HIGH, 8, F_NEXT, SIZE),
        ChainDefect::IndexOutOfRange {
            index: SIZE,
            size: SIZE,
        },
    );
}

#[test]
fn chain_loop() {
    check(
        |m, d| {
            d.raw(m, 0, HIGH, 8, F_NEXT, 1);
            d.raw(m, 1, HIGH, 8, F_NEXT, 2);
            d.raw(m, 2, HIGH, 8, F_NEXT, 0);
        },
        ChainDefect::Loop,
    );
}

#[test]
fn self_loop() {
    check(|m, d| d.raw(m, 0, HIGH, 8, F_NEXT, 0), ChainDefect::Loop);
}

#[test]
fn chain_longer_than_max_segs() {
    // a ring larger than MAX_SEGS holding one chain of MAX_SEGS + 1 descriptors
    let n = (MAX_SEGS + 1) as u16;
    check_cfg(
        512,
        true,
        |m, d| {
            for i in 0..n {
                let f = if i + 1 < n { F_NEXT } else { 0 };
                d.raw(m, i, HIGH, 8, f, i + 1);
            }
        },
        ChainDefect::TooLong { max: MAX_SEGS },
        None,
    );
}

#[test]
fn buffer_in_hole() {
    check(
        |m, d| d.raw(m, 0, HOLE, 8, 0, 0),
        ChainDefect::OutOfMemory { addr: HOLE, len: 8 },
    );
}

#[test]
fn buffer_across_region_end() {
    let a = HIGH + HIGH_LEN - 4;
    check(
        |m, d| d.raw(m, 0, a, 8, 0, 0),
        ChainDefect::OutOfMemory { addr: a, len: 8 },
    );
}

#[test]
fn buffer_address_overflows() {
    let a = u64::MAX - 3;
    check(
        |m, d| d.raw(m, 0, a, 8, 0, 0),
        ChainDefect::OutOfMemory { addr: a, len: 8 },
    );
}

#[test]
fn zero_length() {
    check(|m, d| d.raw(m, 0, HIGH, 0, 0, 0), ChainDefect::ZeroLength);
}

#[test]
fn oversize_total() {
    check(
        |m, d| {
            d.raw(m, 0, HIGH, 16, F_NEXT, 1);
            d.raw(m, 1, HIGH, u32::MAX, F_WRITE, 0);
        },
        ChainDefect::Oversize,
    );
}

#[test]
fn readable_after_writable() {
    check(
        |m, d| {
            d.raw(m, 0, HIGH, 16, F_WRITE | F_NEXT, 1);
            d.raw(m, 1, HIGH, 16, 0, 0);
        },
        ChainDefect::WrongDirection,
    );
}

#[test]
fn indirect_not_negotiated() {
    check_cfg(
        SIZE,
        false,
        |m, d| {
            let (a, l) = indirect_table(m, TABLES, &[r(HIGH, 8)], false);
            d.raw(m, 0, a, l, F_INDIRECT, 0);
        },
        ChainDefect::IndirectNotNegotiated,
        None,
    );
}

#[test]
fn indirect_with_next() {
    check(
        |m, d| {
            let (a, l) = indirect_table(m, TABLES, &[r(HIGH, 8)], false);
            d.raw(m, 0, a, l, F_INDIRECT | F_NEXT, 1);
            d.raw(m, 1, HIGH, 8, 0, 0);
        },
        ChainDefect::IndirectChained,
    );
}

#[test]
fn indirect_after_direct() {
    check(
        |m, d| {
            let (a, l) = indirect_table(m, TABLES, &[w(HIGH, 8)], false);
            d.raw(m, 0, HIGH, 8, F_NEXT, 1);
            d.raw(m, 1, a, l, F_INDIRECT, 0);
        },
        ChainDefect::IndirectChained,
    );
}

#[test]
fn indirect_length_zero() {
    check(
        |m, d| d.raw(m, 0, TABLES, 0, F_INDIRECT, 0),
        ChainDefect::BadIndirectLength { len: 0 },
    );
}

#[test]
fn indirect_length_not_multiple_of_16() {
    check(
        |m, d| d.raw(m, 0, TABLES, 24, F_INDIRECT, 0),
        ChainDefect::BadIndirectLength { len: 24 },
    );
}

#[test]
fn indirect_table_in_hole() {
    check(
        |m, d| d.raw(m, 0, HOLE, 32, F_INDIRECT, 0),
        ChainDefect::OutOfMemory {
            addr: HOLE,
            len: 32,
        },
    );
}

#[test]
fn nested_indirect() {
    check(
        |m, d| {
            write_desc(m, TABLES, HIGH, 8, F_NEXT, 1);
            write_desc(m, TABLES + 16, TABLES, 32, F_INDIRECT, 0);
            d.raw(m, 0, TABLES, 32, F_INDIRECT, 0);
        },
        ChainDefect::NestedIndirect,
    );
}

#[test]
fn indirect_table_loop() {
    check(
        |m, d| {
            write_desc(m, TABLES, HIGH, 8, F_NEXT, 1);
            write_desc(m, TABLES + 16, HIGH, 8, F_NEXT, 0);
            d.raw(m, 0, TABLES, 32, F_INDIRECT, 0);
        },
        ChainDefect::Loop,
    );
}

#[test]
fn indirect_next_out_of_range() {
    check(
        |m, d| {
            write_desc(m, TABLES, HIGH, 8, F_NEXT, 2);
            write_desc(m, TABLES + 16, HIGH, 8, 0, 0);
            d.raw(m, 0, TABLES, 32, F_INDIRECT, 0);
        },
        ChainDefect::IndexOutOfRange { index: 2, size: 2 },
    );
}

#[test]
fn indirect_table_too_long() {
    let n = MAX_SEGS + 1;
    check(
        |m, d| {
            let bufs: Vec<Buf> = (0..n).map(|_| r(HIGH, 8)).collect();
            let (a, l) = indirect_table(m, TABLES, &bufs, false);
            d.raw(m, 0, a, l, F_INDIRECT, 0);
        },
        ChainDefect::TooLong { max: MAX_SEGS },
    );
}

#[test]
fn indirect_wrong_direction() {
    check(
        |m, d| {
            let (a, l) = indirect_table(m, TABLES, &[w(HIGH, 8), r(HIGH, 8)], false);
            d.raw(m, 0, a, l, F_INDIRECT, 0);
        },
        ChainDefect::WrongDirection,
    );
}

#[test]
fn head_out_of_range_breaks_the_ring() {
    let mem = memory();
    let mut drv = SplitDriver::new(&mem, SIZE);
    let mut dev = device(&mem, SIZE, false, false);
    drv.offer(&mem, SIZE + 3);
    let mut ch = Chain::new();
    assert_eq!(
        dev.pop(&mem, &mut ch).unwrap_err().kind(),
        ErrorKind::Broken
    );
}

#[test]
fn head_offered_twice_breaks_the_ring() {
    let mem = memory();
    let mut drv = SplitDriver::new(&mem, SIZE);
    let mut dev = device(&mem, SIZE, false, false);
    let h = drv.add(&mem, &[w(HIGH, 8)]);
    drv.offer(&mem, h);
    let mut ch = Chain::new();
    assert!(dev.pop(&mem, &mut ch).unwrap());
    assert_eq!(
        dev.pop(&mem, &mut ch).unwrap_err().kind(),
        ErrorKind::Broken
    );
}
