//! Split rings against a driver-side double in real guest memory: chains direct and
//! indirect, completion out of order over many laps, EVENT_IDX and flag-based notification
//! decisions, and the enable/disable notification protocol.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use ferrite_vring::{Chain, ErrorKind, RingBase, Segment, Vring};

#[test]
fn direct_chain_round_trip() {
    let mem = memory();
    let mut drv = SplitDriver::new(&mem, 16);
    let mut dev = device(&mem, 16, false, false);
    let mut c = Chain::new();
    assert!(!dev.pop(&mem, &mut c).unwrap());
    let h = drv.add(&mem, &blk(HIGH, 2, true));
    assert!(dev.pop(&mem, &mut c).unwrap());
    assert_eq!(c.id(), h);
    assert_eq!(
        c.segments(),
        &[
            Segment {
                addr: HIGH,
                len: 16,
                device_writable: false
            },
            Segment {
                addr: HIGH + 0x100,
                len: 512,
                device_writable: true
            },
            Segment {
                addr: HIGH + 0x300,
                len: 512,
                device_writable: true
            },
            Segment {
                addr: HIGH + 0x80,
                len: 1,
                device_writable: true
            },
        ]
    );
    assert_eq!(c.readable_len(), 16);
    assert_eq!(c.writable_len(), 1025);
    assert!(!dev.pop(&mem, &mut c).unwrap());
    assert_eq!(dev.in_flight(), 1);
    dev.push_used(&mem, h, 1025).unwrap();
    assert_eq!(drv.used(&mem), None, "not visible before publish");
    assert!(dev.publish(&mem).unwrap(), "first publish notifies");
    assert_eq!(drv.used(&mem), Some((h, 1025)));
    assert!(!dev.publish(&mem).unwrap(), "nothing new");
    assert_eq!(dev.base().avail, 1);
    assert_eq!(dev.in_flight(), 0);
}

#[test]
fn indirect_chain() {
    let mem = memory();
    let mut drv = SplitDriver::new(&mem, 8);
    let mut dev = device(&mem, 8, false, false);
    let bufs = blk(HIGH, 5, false);
    let h = drv.add_indirect(&mem, TABLES, &bufs);
    let mut c = Chain::new();
    assert!(dev.pop(&mem, &mut c).unwrap());
    assert_eq!(c.id(), h);
    assert_eq!(c.segments().len(), 7);
    for (s, b) in c.segments().iter().zip(&bufs) {
        assert_eq!((s.addr, s.len, s.device_writable), (b.addr, b.len, b.write));
    }
}

#[test]
fn push_used_of_unknown_id_is_usage_error() {
    let mem = memory();
    let _drv = SplitDriver::new(&mem, 8);
    let mut dev = device(&mem, 8, false, false);
    assert_eq!(
        dev.push_used(&mem, 3, 0).unwrap_err().kind(),
        ErrorKind::Usage
    );
    assert_eq!(
        dev.push_used(&mem, 99, 0).unwrap_err().kind(),
        ErrorKind::Usage
    );
}

/// Small ring, many laps, out-of-order completion with batches of varying size: every chain
/// comes back exactly once with its length, indices wrap past 65535.
#[test]
fn many_laps_out_of_order() {
    let mem = memory();
    let size = 8u16;
    let mut drv = SplitDriver::new(&mem, size);
    // start near the u16 wrap of the indices
    let start = 65530u16;
    drv.avail_idx = start;
    drv.last_used = start;
    st16(&mem, DRIVER + 2, start);
    st16(&mem, DEVICE + 2, start);
    let base = RingBase {
        avail: start,
        used: 0,
    };
    let mut dev = Vring::new(&mem, cfg(size, false, false), base).unwrap();
    let mut c = Chain::new();
    let mut seed = 0x1234_5678u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut popped: Vec<u16> = Vec::new();
    let mut expect = std::collections::HashMap::new();
    let mut done = 0u32;
    for round in 0..2000u32 {
        // driver adds 0..3 chains of 1..3 descriptors while it has descriptors
        for _ in 0..(rnd() % 4) {
            let n = 1 + (rnd() % 3) as usize;
            if drv.free_count() < n {
                break;
            }
            let bufs: Vec<Buf> = (0..n).map(|i| w(HIGH + 0x1000 * i as u64, 64)).collect();
            let h = drv.add(&mem, &bufs);
            expect.insert(h, (n as u32) * 64 - round % 7);
        }
        while dev.pop(&mem, &mut c).unwrap() {
            popped.push(c.id());
        }
        // complete a random subset in random order
        let k = if popped.is_empty() {
            0
        } else {
            rnd() as usize % (popped.len() + 1)
        };
        for _ in 0..k {
            let i = rnd() as usize % popped.len();
            let id = popped.swap_remove(i);
            dev.push_used(&mem, id, expect[&id]).unwrap();
        }
        dev.publish(&mem).unwrap();
        while let Some((id, len)) = drv.used(&mem) {
            assert_eq!(expect.remove(&id), Some(len));
            done += 1;
        }
    }
    assert!(done > 1000, "only {done} completions");
    assert_eq!(dev.base().avail, drv.avail_idx);
}

#[test]
fn event_idx_decisions() {
    let mem = memory();
    let mut drv = SplitDriver::new(&mem, 16);
    let mut dev = device(&mem, 16, false, true);
    let mut c = Chain::new();
    let mut ids = Vec::new();
    for i in 0..8 {
        drv.add(&mem, &[w(HIGH + 0x100 * i, 8)]);
    }
    while dev.pop(&mem, &mut c).unwrap() {
        ids.push(c.id());
    }
    // used_event = 0: notify when used idx passes 0
    drv.set_used_event(&mem, 0);
    dev.push_used(&mem, ids[0], 1).unwrap();
    assert!(dev.publish(&mem).unwrap());
    // driver wants an interrupt only once used idx passes 4 (i.e. after entry 4 is used)
    drv.set_used_event(&mem, 4);
    dev.push_used(&mem, ids[1], 1).unwrap(); // idx 2
    assert!(!dev.publish(&mem).unwrap());
    dev.push_used(&mem, ids[2], 1).unwrap();
    dev.push_used(&mem, ids[3], 1).unwrap(); // idx 4: event 4 not yet passed
    assert!(!dev.publish(&mem).unwrap());
    dev.push_used(&mem, ids[4], 1).unwrap(); // idx 5: entry 4 used
    assert!(dev.publish(&mem).unwrap());
    dev.push_used(&mem, ids[5], 1).unwrap();
    assert!(!dev.publish(&mem).unwrap(), "event already passed");
    // a batch crossing the event notifies once
    drv.set_used_event(&mem, 6);
    dev.push_used(&mem, ids[6], 1).unwrap();
    dev.push_used(&mem, ids[7], 1).unwrap();
    assert!(dev.publish(&mem).unwrap());
}

#[test]
fn no_interrupt_flag_without_event_idx() {
    let mem = memory();
    let mut drv = SplitDriver::new(&mem, 8);
    let mut dev = device(&mem, 8, false, false);
    let mut c = Chain::new();
    for i in 0..3 {
        drv.add(&mem, &[w(HIGH + 0x100 * i, 8)]);
    }
    let mut ids = Vec::new();
    while dev.pop(&mem, &mut c).unwrap() {
        ids.push(c.id());
    }
    dev.push_used(&mem, ids[0], 1).unwrap();
    assert!(dev.publish(&mem).unwrap());
    drv.set_avail_flags(&mem, 1);
    dev.push_used(&mem, ids[1], 1).unwrap();
    assert!(!dev.publish(&mem).unwrap());
    drv.set_avail_flags(&mem, 0);
    dev.push_used(&mem, ids[2], 1).unwrap();
    assert!(dev.publish(&mem).unwrap());
}

#[test]
fn notify_enable_disable_flags() {
    let mem = memory();
    let mut drv = SplitDriver::new(&mem, 8);
    let mut dev = device(&mem, 8, false, false);
    dev.disable_notify(&mem).unwrap();
    assert_eq!(drv.used_flags(&mem), 1);
    assert!(!dev.enable_notify(&mem).unwrap());
    assert_eq!(drv.used_flags(&mem), 0);
    // the race: the driver adds a buffer while notifications are disabled (it sees
    // NO_NOTIFY and does not kick); enable_notify must report it so the reactor does not sleep
    dev.disable_notify(&mem).unwrap();
    drv.add(&mem, &[w(HIGH, 8)]);
    assert!(dev.enable_notify(&mem).unwrap());
    let mut c = Chain::new();
    assert!(dev.pop(&mem, &mut c).unwrap());
    assert!(!dev.enable_notify(&mem).unwrap());
}

#[test]
fn notify_with_event_idx_sets_avail_event() {
    let mem = memory();
    let mut drv = SplitDriver::new(&mem, 8);
    let mut dev = device(&mem, 8, false, true);
    let mut c = Chain::new();
    for round in 0..20u16 {
        dev.disable_notify(&mem).unwrap();
        assert_eq!(drv.used_flags(&mem), 0, "EVENT_IDX does not use the flag");
        let added_before = round % 2 == 0;
        if added_before {
            drv.add(&mem, &[w(HIGH, 8)]);
        }
        let work = dev.enable_notify(&mem).unwrap();
        assert_eq!(work, added_before);
        assert_eq!(drv.avail_event(&mem), dev.base().avail);
        if !added_before {
            // a buffer added after enable: the driver's rule (avail_event in [old, new))
            // tells it to kick
            let old = drv.avail_idx;
            drv.add(&mem, &[w(HIGH, 8)]);
            let ev = drv.avail_event(&mem);
            assert!(
                drv.avail_idx.wrapping_sub(ev).wrapping_sub(1) < drv.avail_idx.wrapping_sub(old)
            );
        }
        assert!(dev.pop(&mem, &mut c).unwrap());
        dev.push_used(&mem, c.id(), 0).unwrap();
        dev.publish(&mem).unwrap();
        drv.used(&mem).unwrap();
    }
}

#[test]
fn avail_index_jump_breaks_the_ring() {
    let mem = memory();
    let _drv = SplitDriver::new(&mem, 8);
    let mut dev = device(&mem, 8, false, false);
    st16(&mem, DRIVER + 2, 9);
    let mut c = Chain::new();
    assert_eq!(dev.pop(&mem, &mut c).unwrap_err().kind(), ErrorKind::Broken);
}

#[test]
fn bad_config_rejected() {
    let mem = memory();
    let mut c = cfg(12, false, false);
    assert_eq!(
        Vring::new(&mem, c, RingBase::initial(false))
            .err()
            .unwrap()
            .kind(),
        ErrorKind::Config
    );
    c = cfg(16, false, false);
    c.addrs.desc = HOLE;
    assert_eq!(
        Vring::new(&mem, c, RingBase::initial(false))
            .err()
            .unwrap()
            .kind(),
        ErrorKind::Config
    );
    c = cfg(16, false, false);
    c.addrs.device = DEVICE + 2;
    assert_eq!(
        Vring::new(&mem, c, RingBase::initial(false))
            .err()
            .unwrap()
            .kind(),
        ErrorKind::Config
    );
    c = cfg(16, false, false);
    c.addrs.driver = LOW_LEN - 8; // runs off the end of the low region
    assert_eq!(
        Vring::new(&mem, c, RingBase::initial(false))
            .err()
            .unwrap()
            .kind(),
        ErrorKind::Config
    );
    c = cfg(0, false, false);
    assert_eq!(
        Vring::new(&mem, c, RingBase::initial(false))
            .err()
            .unwrap()
            .kind(),
        ErrorKind::Config
    );
}

/// virtio-queue's own mock driver lays out a ring and chain; we pop it.
#[test]
fn virtio_queue_mock_chain() {
    use ferrite_vring::vm_memory::GuestAddress;
    use virtio_queue::desc::{split::Descriptor, RawDescriptor};
    use virtio_queue::mock::MockSplitQueue;
    let mem = memory();
    let q = MockSplitQueue::create(&mem, GuestAddress(0x4000), 16);
    let descs = [
        RawDescriptor::from(Descriptor::new(HIGH, 16, 0, 0)),
        RawDescriptor::from(Descriptor::new(HIGH + 0x1000, 4096, F_WRITE, 0)),
        RawDescriptor::from(Descriptor::new(HIGH + 0x80, 1, F_WRITE, 0)),
    ];
    // virtio-queue's own parse of the chain is the oracle for ours
    let theirs: Vec<(u64, u32, bool)> = q
        .build_desc_chain(&descs)
        .unwrap()
        .map(|d| (d.addr().0, d.len(), d.is_write_only()))
        .collect();
    let mut c = cfg(16, false, false);
    c.addrs.desc = q.desc_table_addr().0;
    c.addrs.driver = q.avail_addr().0;
    c.addrs.device = q.used_addr().0;
    let mut dev = Vring::new(&mem, c, RingBase::initial(false)).unwrap();
    let mut ch = Chain::new();
    assert!(dev.pop(&mem, &mut ch).unwrap());
    let ours: Vec<(u64, u32, bool)> = ch
        .segments()
        .iter()
        .map(|s| (s.addr, s.len, s.device_writable))
        .collect();
    assert_eq!(ours, theirs);
    assert_eq!(ours.len(), 3);
    dev.push_used(&mem, ch.id(), 4097).unwrap();
    assert!(dev.publish(&mem).unwrap());
    assert_eq!(q.used().idx().load(), 1);
}

/// Used entries are written to the used ring at `publish`; a driver that re-offers a head
/// before the device published it (more pushes than the ring has entries between two
/// publishes) gets the entries written in order, the last `size` of them visible, and the
/// index counting all of them.
#[test]
fn more_pushes_than_entries_between_publishes() {
    let mem = memory();
    let size = 4u16;
    let mut drv = SplitDriver::new(&mem, size);
    let mut dev = device(&mem, size, false, false);
    let mut c = Chain::new();
    let h = drv.write_chain(&mem, &[w(HIGH, 64)]);
    let n = 2 * u32::from(size) + 1;
    for i in 0..n {
        drv.offer(&mem, h);
        assert!(dev.pop(&mem, &mut c).unwrap());
        assert_eq!(c.id(), h);
        dev.push_used(&mem, h, 100 + i).unwrap();
        assert_eq!(drv.used_idx(&mem), 0, "nothing visible before publish");
    }
    assert!(dev.publish(&mem).unwrap());
    assert_eq!(drv.used_idx(&mem), n as u16);
    for k in (n - u32::from(size))..n {
        let e = DEVICE + 4 + 8 * u64::from(k as u16 % size);
        assert_eq!(ld32(&mem, e), u32::from(h));
        assert_eq!(ld32(&mem, e + 4), 100 + k, "entry {k}");
    }
    assert!(!dev.publish(&mem).unwrap(), "nothing new to publish");
}
