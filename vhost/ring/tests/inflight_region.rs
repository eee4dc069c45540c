//! The inflight region's bytes follow QEMU's documented layout (checked through the memfd,
//! as the front-end would see them), and a corrupt region — shared memory written by a
//! process that may have died half-way, or by anyone else — is refused with an error, never
//! a panic, and leaves the ring usable.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::fs::File;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileExt;

use common::*;
use ferrite_vring::{Chain, ErrorKind, InflightRegion, RingBase, Vring};

const SIZE: u16 = 8;

fn rd<const N: usize>(f: &File, off: u64) -> [u8; N] {
    let mut b = [0u8; N];
    f.read_exact_at(&mut b, off).unwrap();
    b
}
fn rd8(f: &File, off: u64) -> u8 {
    rd::<1>(f, off)[0]
}
fn rd16(f: &File, off: u64) -> u16 {
    u16::from_le_bytes(rd(f, off))
}
fn rd32(f: &File, off: u64) -> u32 {
    u32::from_le_bytes(rd(f, off))
}
fn rd64(f: &File, off: u64) -> u64 {
    u64::from_le_bytes(rd(f, off))
}
fn wr(f: &File, off: u64, b: &[u8]) {
    f.write_all_at(b, off).unwrap();
}

fn region(packed: bool) -> (InflightRegion, File, OwnedFd, u64) {
    let (reg, fd, size) = InflightRegion::create(1, SIZE, packed).unwrap();
    let f = File::from(fd.try_clone().unwrap());
    (reg, f, fd, size)
}

#[test]
fn split_layout() {
    let mem = memory();
    let mut drv = SplitDriver::new(&mem, SIZE);
    let (reg, f, _fd, size) = region(false);
    assert_eq!(size, 192, "16-byte header + 8 × 16, rounded up to 64");
    assert_eq!(rd16(&f, 8), 0, "version 0 until a ring attaches");
    assert_eq!(rd16(&f, 10), SIZE, "desc_num");
    let mut dev = device(&mem, SIZE, false, false);
    dev.attach_inflight(&mem, reg.queue(0).unwrap()).unwrap();
    assert_eq!(rd16(&f, 8), 1, "version");
    let h0 = drv.add(&mem, &[w(HIGH, 8)]);
    let h1 = drv.add(&mem, &[w(HIGH, 8)]);
    let mut c = Chain::new();
    assert!(dev.pop(&mem, &mut c).unwrap());
    assert!(dev.pop(&mem, &mut c).unwrap());
    let d = |h: u16| 16 + 16 * u64::from(h);
    assert_eq!(rd8(&f, d(h0)), 1, "inflight");
    assert_eq!(rd64(&f, d(h0) + 8), 0, "counter");
    assert_eq!(rd8(&f, d(h1)), 1);
    assert_eq!(rd64(&f, d(h1) + 8), 1);
    dev.push_used(&mem, h1, 8).unwrap();
    assert_eq!(rd16(&f, 12), h1, "last_batch_head");
    assert_eq!(rd8(&f, d(h1)), 1, "still in flight until published");
    assert!(dev.publish(&mem).unwrap());
    assert_eq!(rd8(&f, d(h1)), 0);
    assert_eq!(rd16(&f, 14), 1, "used_idx");
    assert_eq!(rd8(&f, d(h0)), 1);
}

#[test]
fn packed_layout() {
    let mem = memory();
    let mut drv = PackedDriver::new(&mem, SIZE);
    let (reg, f, _fd, size) = region(true);
    assert_eq!(size, 320, "32-byte header + 8 × 32, rounded up to 64");
    let mut dev = device(&mem, SIZE, true, false);
    dev.attach_inflight(&mem, reg.queue(0).unwrap()).unwrap();
    assert_eq!(rd16(&f, 8), 1, "version");
    assert_eq!(rd16(&f, 10), SIZE, "desc_num");
    assert_eq!(rd8(&f, 20), 1, "used_wrap_counter starts at 1");
    let id = drv.add(&mem, &[r(HIGH, 16), w(HIGH + 0x100, 512)]);
    let mut c = Chain::new();
    assert!(dev.pop(&mem, &mut c).unwrap());
    let e = |i: u64| 32 + 32 * i;
    assert_eq!(rd8(&f, e(0)), 1, "head entry in flight");
    assert_eq!(rd16(&f, e(0) + 4), 1, "last");
    assert_eq!(rd16(&f, e(0) + 6), 2, "num");
    assert_eq!(rd64(&f, e(0) + 8), 0, "counter");
    assert_eq!(rd64(&f, e(0) + 24), HIGH, "addr");
    assert_eq!(rd32(&f, e(0) + 20), 16, "len");
    assert_eq!(rd16(&f, e(0) + 18) & F_NEXT, F_NEXT, "flags");
    assert_eq!(rd64(&f, e(1) + 24), HIGH + 0x100);
    assert_eq!(rd16(&f, e(1) + 18) & (F_NEXT | F_WRITE), F_WRITE);
    assert_eq!(rd16(&f, e(1) + 16), id, "id");
    assert_eq!(
        (rd16(&f, 12), rd16(&f, 14)),
        (2, 2),
        "free_head, old_free_head"
    );
    dev.push_used(&mem, id, 512).unwrap();
    assert!(dev.publish(&mem).unwrap());
    assert_eq!(rd8(&f, e(0)), 0);
    assert_eq!(
        (rd16(&f, 12), rd16(&f, 14)),
        (0, 0),
        "entries back on the free list"
    );
    assert_eq!(
        rd16(&f, e(1) + 2),
        2,
        "chain's last entry links to the old free head"
    );
    assert_eq!(
        (rd16(&f, 16), rd16(&f, 18)),
        (2, 2),
        "used_idx, old_used_idx"
    );
    assert_eq!((rd8(&f, 20), rd8(&f, 21)), (1, 1));
}

/// A used region corrupted by `corrupt` is refused, and the ring still works without it.
fn refused(
    packed: bool,
    setup: impl FnOnce(&mut Vring, &ferrite_vring::GuestMemory),
    corrupt: impl FnOnce(&File),
) {
    let mem = memory();
    let (reg, f, _fd, _) = region(packed);
    if packed {
        PackedDriver::new(&mem, SIZE);
    } else {
        SplitDriver::new(&mem, SIZE);
    }
    let mut dev = device(&mem, SIZE, packed, false);
    dev.attach_inflight(&mem, reg.queue(0).unwrap()).unwrap();
    setup(&mut dev, &mem);
    drop(dev);
    corrupt(&f);
    let base = if packed {
        RingBase::initial(true)
    } else {
        RingBase { avail: 0, used: 0 }
    };
    let mut dev = Vring::new(&mem, cfg(SIZE, packed, false), base).unwrap();
    let e = dev
        .attach_inflight(&mem, reg.queue(0).unwrap())
        .unwrap_err();
    assert_eq!(e.kind(), ErrorKind::Inflight, "{e}");
    let mut c = Chain::new();
    assert!(
        dev.pop(&mem, &mut c).is_ok(),
        "ring usable without the region"
    );
}

fn nothing(_: &mut Vring, _: &ferrite_vring::GuestMemory) {}

#[test]
fn split_bad_version() {
    refused(false, nothing, |f| wr(f, 8, &7u16.to_le_bytes()));
}

#[test]
fn split_unknown_features() {
    refused(false, nothing, |f| wr(f, 0, &1u64.to_le_bytes()));
}

#[test]
fn split_desc_num_too_small() {
    refused(false, nothing, |f| wr(f, 10, &4u16.to_le_bytes()));
}

#[test]
fn split_desc_num_beyond_region() {
    refused(false, nothing, |f| wr(f, 10, &9u16.to_le_bytes()));
}

#[test]
fn split_used_idx_far_from_guest() {
    refused(false, nothing, |f| wr(f, 14, &100u16.to_le_bytes()));
}

#[test]
fn split_inflight_flag_not_boolean() {
    refused(false, nothing, |f| wr(f, 16 + 16 * 3, &[2]));
}

#[test]
fn split_batch_list_out_of_range() {
    // the used ring is one ahead of the region: recovery walks a batch from last_batch_head
    refused(
        false,
        |_, mem| st16(mem, DEVICE + 2, 1),
        |f| wr(f, 12, &99u16.to_le_bytes()),
    );
}

#[test]
fn packed_region_on_split_ring() {
    let mem = memory();
    SplitDriver::new(&mem, SIZE);
    let (reg, _f, _fd, _) = region(true);
    let mut dev = device(&mem, SIZE, false, false);
    assert_eq!(
        dev.attach_inflight(&mem, reg.queue(0).unwrap())
            .unwrap_err()
            .kind(),
        ErrorKind::Inflight
    );
}

#[test]
fn packed_bad_wrap_counter() {
    refused(true, nothing, |f| wr(f, 20, &[5]));
}

#[test]
fn packed_used_idx_out_of_ring() {
    refused(true, nothing, |f| {
        wr(f, 16, &8u16.to_le_bytes());
        wr(f, 18, &8u16.to_le_bytes());
    });
}

#[test]
fn packed_free_list_loop() {
    refused(true, nothing, |f| {
        wr(f, 32 + 32 * 3 + 2, &0u16.to_le_bytes())
    });
}

/// One chain in flight (entry 0, two descriptors), then its head entry corrupted.
fn one_in_flight(dev: &mut Vring, mem: &ferrite_vring::GuestMemory) {
    let mut drv = PackedDriver::new(mem, SIZE);
    drv.add(mem, &[r(HIGH, 16), w(HIGH, 16)]);
    let mut c = Chain::new();
    assert!(dev.pop(mem, &mut c).unwrap());
}

#[test]
fn packed_chain_num_zero() {
    refused(true, one_in_flight, |f| wr(f, 32 + 6, &0u16.to_le_bytes()));
}

#[test]
fn packed_chain_num_beyond_ring() {
    refused(true, one_in_flight, |f| wr(f, 32 + 6, &9u16.to_le_bytes()));
}

#[test]
fn packed_chain_last_mismatch() {
    refused(true, one_in_flight, |f| wr(f, 32 + 4, &5u16.to_le_bytes()));
}

#[test]
fn packed_chain_id_out_of_range() {
    refused(true, one_in_flight, |f| {
        wr(f, 64 + 16, &200u16.to_le_bytes())
    });
}

#[test]
fn packed_chain_overlaps_free_list() {
    // the chain's second entry links into the free list
    refused(true, one_in_flight, |f| wr(f, 32 + 2, &5u16.to_le_bytes()));
}

#[test]
fn packed_inflight_survives_valid_region() {
    // control: the same setup without corruption recovers the chain
    let mem = memory();
    let (reg, _f, _fd, _) = region(true);
    let mut dev = device(&mem, SIZE, true, false);
    dev.attach_inflight(&mem, reg.queue(0).unwrap()).unwrap();
    one_in_flight(&mut dev, &mem);
    drop(dev);
    let mut dev = device(&mem, SIZE, true, false);
    dev.attach_inflight(&mem, reg.queue(0).unwrap()).unwrap();
    assert_eq!(dev.resubmit_pending(), 1);
    let mut c = Chain::new();
    assert!(dev.pop(&mem, &mut c).unwrap());
    assert_eq!(c.segments().len(), 2);
}

#[test]
fn map_checks_size_and_file() {
    let (_reg, f, fd, size) = region(false);
    let e = InflightRegion::map(fd.try_clone().unwrap(), size - 64, 0, 1, SIZE, false)
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Inflight);
    let e = InflightRegion::map(fd.try_clone().unwrap(), size, 0, 2, SIZE, false)
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Inflight);
    let e = InflightRegion::map(fd.try_clone().unwrap(), size, 4096, 1, SIZE, false)
        .err()
        .unwrap();
    assert_eq!(
        e.kind(),
        ErrorKind::Inflight,
        "file shorter than offset + size"
    );
    f.set_len(64).unwrap();
    let e = InflightRegion::map(fd.try_clone().unwrap(), size, 0, 1, SIZE, false)
        .err()
        .unwrap();
    assert_eq!(e.kind(), ErrorKind::Inflight, "truncated file would fault");
    let reg = {
        f.set_len(size).unwrap();
        InflightRegion::map(fd, size, 0, 1, SIZE, false).unwrap()
    };
    assert_eq!(reg.queue(1).err().unwrap().kind(), ErrorKind::Inflight);
    assert_eq!(
        InflightRegion::create(0, 8, false).err().unwrap().kind(),
        ErrorKind::Inflight
    );
}
