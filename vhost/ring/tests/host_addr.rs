//! `Chain::host_addr`: the host address the walk found for each segment is the one vm-memory
//! gives for the segment's guest address, for split and packed rings, direct and indirect
//! chains, buffers alternating between regions from request to request (the ring remembers
//! which region the last buffers were in), and a buffer spanning two adjacent regions (no
//! single host address: `None`, and the chain is still accepted).

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use ferrite_vring::vm_memory::{GuestAddress, GuestMemoryBackend as _};
use ferrite_vring::{Chain, GuestMemory};

fn host(mem: &GuestMemory, addr: u64) -> *mut u8 {
    mem.get_host_address(GuestAddress(addr)).unwrap()
}

fn check(mem: &GuestMemory, c: &Chain) {
    for (i, s) in c.segments().iter().enumerate() {
        assert_eq!(
            c.host_addr(i),
            Some(host(mem, s.addr)),
            "segment {i}: {s:?}"
        );
    }
    assert_eq!(
        c.host_addr(c.segments().len()),
        None,
        "past the last segment"
    );
}

#[test]
fn split_and_packed_direct_chains_alternating_regions() {
    for packed in [false, true] {
        let mem = memory();
        let mut dev = device(&mem, 16, packed, false);
        let mut split = (!packed).then(|| SplitDriver::new(&mem, 16));
        let mut pk = packed.then(|| PackedDriver::new(&mem, 16));
        let mut c = Chain::new();
        for n in 0..40u64 {
            // Header and status next to the rings (LOW), data in HIGH, or all in HIGH, or
            // data in LOW: the region of the data changes from request to request.
            let bufs = match n % 3 {
                0 => vec![r(0x3a000, 16), w(HIGH + 0x1000 * n, 4096), w(0x3a010, 1)],
                1 => blk(HIGH + 0x400 * n, 2, true),
                _ => vec![r(HIGH, 16), w(0x3b000, 512), w(HIGH + 0x20, 1)],
            };
            let id = match (&mut split, &mut pk) {
                (Some(d), _) => d.add(&mem, &bufs),
                (_, Some(d)) => d.add(&mem, &bufs),
                _ => unreachable!(),
            };
            assert!(dev.pop(&mem, &mut c).unwrap(), "request {n}");
            assert_eq!(c.segments().len(), bufs.len());
            check(&mem, &c);
            dev.push_used(&mem, id, 1).unwrap();
            dev.publish(&mem).unwrap();
            match (&mut split, &mut pk) {
                (Some(d), _) => assert!(d.used(&mem).is_some()),
                (_, Some(d)) => assert!(d.used(&mem).is_some()),
                _ => unreachable!(),
            }
        }
    }
}

#[test]
fn split_indirect_chain() {
    let mem = memory();
    let mut drv = SplitDriver::new(&mem, 8);
    let mut dev = device(&mem, 8, false, false);
    let h = drv.add_indirect(&mem, TABLES, &blk(HIGH, 5, false));
    let mut c = Chain::new();
    assert!(dev.pop(&mem, &mut c).unwrap());
    assert_eq!(c.id(), h);
    check(&mem, &c);
}

/// Two adjacent regions: a buffer across their boundary is in guest memory (accepted) but has
/// no single host address.
#[test]
fn buffer_across_adjacent_regions() {
    let mem = GuestMemory::from_ranges(&[
        (GuestAddress(LOW), LOW_LEN as usize),
        (GuestAddress(LOW_LEN), 0x10000),
    ])
    .unwrap();
    let mut drv = SplitDriver::new(&mem, 8);
    let mut dev = device(&mem, 8, false, false);
    let bufs = [r(0x3a000, 16), w(LOW_LEN - 0x100, 0x200), w(0x3a010, 1)];
    drv.add(&mem, &bufs);
    let mut c = Chain::new();
    assert!(dev.pop(&mem, &mut c).unwrap());
    assert_eq!(c.segments().len(), 3);
    assert_eq!(c.host_addr(0), Some(host(&mem, 0x3a000)));
    assert_eq!(c.host_addr(1), None, "spans two regions");
    assert_eq!(c.host_addr(2), Some(host(&mem, 0x3a010)));
}

/// The same requests popped through one `PopBatch` (the regions found by one pop serve the
/// next): every segment's host address is still vm-memory's, whichever region the data of
/// the previous request lay in, and push/publish between the batch's pops change nothing.
#[test]
fn one_batch_of_pops_alternating_regions() {
    for packed in [false, true] {
        let mem = memory();
        let mut dev = device(&mem, 128, packed, false);
        let mut split = (!packed).then(|| SplitDriver::new(&mem, 128));
        let mut pk = packed.then(|| PackedDriver::new(&mem, 128));
        let mut ids = Vec::new();
        for n in 0..30u64 {
            let bufs = match n % 3 {
                0 => vec![r(0x3a000, 16), w(HIGH + 0x1000 * n, 4096), w(0x3a010, 1)],
                1 => blk(HIGH + 0x400 * n, 2, true),
                _ => vec![r(HIGH, 16), w(0x3b000, 512), w(HIGH + 0x20, 1)],
            };
            ids.push(match (&mut split, &mut pk) {
                (Some(d), _) => d.add(&mem, &bufs),
                (_, Some(d)) => d.add(&mem, &bufs),
                _ => unreachable!(),
            });
        }
        let mut batch = ferrite_vring::PopBatch::new(&mem);
        let mut c = Chain::new();
        for (n, id) in ids.iter().enumerate() {
            assert!(dev.pop_in(&mut batch, &mut c).unwrap(), "request {n}");
            assert_eq!(c.id(), *id);
            check(&mem, &c);
            if n % 5 == 0 {
                dev.push_used(&mem, *id, 1).unwrap();
                dev.publish(&mem).unwrap();
            }
        }
        assert!(!dev.pop_in(&mut batch, &mut c).unwrap(), "ring empty");
    }
}
