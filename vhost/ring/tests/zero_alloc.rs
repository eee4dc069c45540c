//! The hot-path rule, proven: in steady state pop / push_used / publish / enable_notify /
//! disable_notify perform no heap allocation, for split and packed rings, direct and indirect
//! chains, with and without an inflight region attached. The driver side of this test is
//! written with plain stores so that it allocates nothing either.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use ferrite_reactor::alloc_count;
use ferrite_vring::{Chain, GuestMemory, InflightRegion, Vring};

#[global_allocator]
static GLOBAL: alloc_count::CountingAlloc = alloc_count::CountingAlloc;

const SIZE: u16 = 64;
const BATCH: u16 = 16;
const PER_CHAIN: u16 = 4; // split: descriptors per direct chain

/// Split: chain k uses descriptors 4k..4k+3 (or one indirect descriptor at 4k).
fn split_setup(mem: &GuestMemory, indirect: bool) {
    let drv = SplitDriver::new(mem, SIZE);
    for k in 0..BATCH {
        let h = k * PER_CHAIN;
        let bufs = blk(HIGH + 0x2000 * u64::from(k), 2, true);
        if indirect {
            let (a, l) = indirect_table(mem, TABLES + 0x100 * u64::from(k), &bufs, false);
            drv.raw(mem, h, a, l, F_INDIRECT, 0);
        } else {
            for (i, b) in bufs.iter().enumerate() {
                let next = if i + 1 < bufs.len() { F_NEXT } else { 0 };
                let f = if b.write { F_WRITE } else { 0 };
                drv.raw(mem, h + i as u16, b.addr, b.len, f | next, h + i as u16 + 1);
            }
        }
    }
}

fn split_round(
    mem: &GuestMemory,
    dev: &mut Vring,
    c: &mut Chain,
    avail: &mut u16,
    last_used: &mut u16,
) {
    for k in 0..BATCH {
        st16(
            mem,
            DRIVER + 4 + 2 * u64::from(*avail % SIZE),
            k * PER_CHAIN,
        );
        *avail = avail.wrapping_add(1);
    }
    st16(mem, DRIVER + 2, *avail);
    dev.disable_notify(mem).unwrap();
    while dev.pop(mem, c).unwrap() {
        let n = c.writable_len() as u32;
        dev.push_used(mem, c.id(), n).unwrap();
    }
    dev.publish(mem).unwrap();
    assert!(!dev.enable_notify(mem).unwrap());
    let used = ld16(mem, DEVICE + 2);
    assert_eq!(used.wrapping_sub(*last_used), BATCH);
    *last_used = used;
}

fn split(indirect: bool, inflight: bool) -> u64 {
    let mem = memory();
    split_setup(&mem, indirect);
    let mut dev = device(&mem, SIZE, false, true);
    let _region = inflight.then(|| {
        let (reg, _fd, _) = InflightRegion::create(1, SIZE, false).unwrap();
        dev.attach_inflight(&mem, reg.queue(0).unwrap()).unwrap();
        reg
    });
    let mut c = Chain::new();
    let (mut avail, mut used) = (0u16, 0u16);
    for _ in 0..8 {
        split_round(&mem, &mut dev, &mut c, &mut avail, &mut used);
    }
    alloc_count::take();
    alloc_count::start();
    for _ in 0..500 {
        split_round(&mem, &mut dev, &mut c, &mut avail, &mut used);
    }
    alloc_count::stop();
    alloc_count::take()
}

/// Packed: BATCH chains of one descriptor each (direct with 1 segment, or indirect).
fn packed_round(
    mem: &GuestMemory,
    dev: &mut Vring,
    c: &mut Chain,
    pos: &mut (u16, bool),
    indirect: bool,
) {
    let start = *pos;
    for k in 0..BATCH {
        let at = DESC + 16 * u64::from(pos.0);
        let (a, l, f) = if indirect {
            (TABLES + 0x100 * u64::from(k), 16 * 4, F_INDIRECT)
        } else {
            (HIGH + 0x2000 * u64::from(k), 4096, F_WRITE)
        };
        write_desc(mem, at, a, l, k, 0);
        let flags = f | if pos.1 { P_AVAIL } else { P_USED };
        st16(mem, at + 14, flags);
        pos.0 += 1;
        if pos.0 == SIZE {
            *pos = (0, !pos.1);
        }
    }
    dev.disable_notify(mem).unwrap();
    while dev.pop(mem, c).unwrap() {
        let n = c.writable_len() as u32;
        dev.push_used(mem, c.id(), n).unwrap();
    }
    dev.publish(mem).unwrap();
    assert!(!dev.enable_notify(mem).unwrap());
    let f = ld16(mem, DESC + 16 * u64::from(start.0) + 14);
    assert_eq!(
        f & (P_AVAIL | P_USED) != 0,
        start.1,
        "first of the batch used"
    );
}

fn packed(indirect: bool, inflight: bool) -> u64 {
    let mem = memory();
    PackedDriver::new(&mem, SIZE);
    for k in 0..BATCH {
        let bufs = blk(HIGH + 0x2000 * u64::from(k), 2, true);
        indirect_table(&mem, TABLES + 0x100 * u64::from(k), &bufs, true);
    }
    let mut dev = device(&mem, SIZE, true, true);
    let _region = inflight.then(|| {
        let (reg, _fd, _) = InflightRegion::create(1, SIZE, true).unwrap();
        dev.attach_inflight(&mem, reg.queue(0).unwrap()).unwrap();
        reg
    });
    let mut c = Chain::new();
    let mut pos = (0u16, true);
    for _ in 0..8 {
        packed_round(&mem, &mut dev, &mut c, &mut pos, indirect);
    }
    alloc_count::take();
    alloc_count::start();
    for _ in 0..500 {
        packed_round(&mem, &mut dev, &mut c, &mut pos, indirect);
    }
    alloc_count::stop();
    alloc_count::take()
}

#[test]
fn steady_state_allocates_nothing() {
    for indirect in [false, true] {
        for inflight in [false, true] {
            assert_eq!(
                split(indirect, inflight),
                0,
                "split indirect={indirect} inflight={inflight}"
            );
            assert_eq!(
                packed(indirect, inflight),
                0,
                "packed indirect={indirect} inflight={inflight}"
            );
        }
    }
}
