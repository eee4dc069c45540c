//! Packed rings against a driver-side double in real guest memory: chains direct and
//! indirect, completion out of order over many laps (chains of several descriptors, so used
//! positions skip), event suppression in both directions, ring base round trip.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use ferrite_vring::{Chain, ErrorKind, RingBase, Segment, Vring};

#[test]
fn direct_chain_round_trip() {
    let mem = memory();
    let mut drv = PackedDriver::new(&mem, 16);
    let mut dev = device(&mem, 16, true, false);
    let mut c = Chain::new();
    assert!(!dev.pop(&mem, &mut c).unwrap());
    let id = drv.add(&mem, &blk(HIGH, 2, true));
    assert!(dev.pop(&mem, &mut c).unwrap());
    assert_eq!(c.id(), id);
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
    assert!(!dev.pop(&mem, &mut c).unwrap());
    dev.push_used(&mem, id, 1025).unwrap();
    assert_eq!(drv.used(&mem), None, "not visible before publish");
    assert!(dev.publish(&mem).unwrap());
    assert_eq!(drv.used(&mem), Some((id, 1025)));
    assert!(!dev.publish(&mem).unwrap());
    assert_eq!(
        dev.base(),
        RingBase {
            avail: 4 | 1 << 15,
            used: 4 | 1 << 15
        }
    );
}

#[test]
fn indirect_chain() {
    let mem = memory();
    let mut drv = PackedDriver::new(&mem, 8);
    let mut dev = device(&mem, 8, true, false);
    let bufs = blk(HIGH, 5, false);
    let id = drv.add_indirect(&mem, TABLES, &bufs);
    let mut c = Chain::new();
    assert!(dev.pop(&mem, &mut c).unwrap());
    assert_eq!(c.id(), id);
    assert_eq!(c.segments().len(), 7);
    for (s, b) in c.segments().iter().zip(&bufs) {
        assert_eq!((s.addr, s.len, s.device_writable), (b.addr, b.len, b.write));
    }
    dev.push_used(&mem, id, 0).unwrap();
    dev.publish(&mem).unwrap();
    assert_eq!(drv.used(&mem), Some((id, 0)));
    assert_eq!(dev.base().used, 1 | 1 << 15);
}

#[test]
fn many_laps_out_of_order() {
    let mem = memory();
    let size = 8u16;
    let mut drv = PackedDriver::new(&mem, size);
    let mut dev = device(&mem, size, true, false);
    let mut c = Chain::new();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut popped: Vec<u16> = Vec::new();
    let mut expect = std::collections::HashMap::new();
    let mut done = 0u32;
    for round in 0..3000u32 {
        for _ in 0..(rnd() % 4) {
            let n = 1 + (rnd() % 3) as u16;
            if drv.free_descs < n || drv.free_ids.is_empty() {
                break;
            }
            let bufs: Vec<Buf> = (0..n).map(|i| w(HIGH + 0x1000 * i as u64, 64)).collect();
            let id = if rnd() % 4 == 0 {
                drv.add_indirect(&mem, TABLES + 0x100 * (round as u64 % 16), &bufs)
            } else {
                drv.add(&mem, &bufs)
            };
            expect.insert(id, n as u32 * 64 - round % 5);
        }
        while dev.pop(&mem, &mut c).unwrap() {
            popped.push(c.id());
        }
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
    assert!(done > 1500, "only {done} completions");
    let b = dev.base();
    assert_eq!(b.avail, drv.next_avail | (u16::from(drv.avail_wrap) << 15));
}

#[test]
fn driver_event_suppression() {
    let mem = memory();
    let size = 8u16;
    let mut drv = PackedDriver::new(&mem, size);
    let mut dev = device(&mem, size, true, true);
    let mut c = Chain::new();
    let mut complete = |drv: &mut PackedDriver, dev: &mut Vring| -> bool {
        drv.add(&mem, &[w(HIGH, 8)]);
        assert!(dev.pop(&mem, &mut c).unwrap());
        dev.push_used(&mem, c.id(), 8).unwrap();
        let n = dev.publish(&mem).unwrap();
        drv.used(&mem).unwrap();
        n
    };
    assert!(complete(&mut drv, &mut dev), "first publish notifies"); // pos 0
    drv.set_driver_event(&mem, 0, 1); // DISABLE
    assert!(!complete(&mut drv, &mut dev)); // pos 1
    drv.set_driver_event(&mem, 0, 0); // ENABLE
    assert!(complete(&mut drv, &mut dev)); // pos 2
                                           // DESC: event when position 4 of this lap (wrap 1) is used
    drv.set_driver_event(&mem, 4 | 1 << 15, 2);
    assert!(!complete(&mut drv, &mut dev)); // pos 3
    assert!(complete(&mut drv, &mut dev)); // pos 4
    assert!(!complete(&mut drv, &mut dev)); // pos 5
                                            // event at position 1 of the next lap (wrap 0)
    drv.set_driver_event(&mem, 1, 2);
    assert!(!complete(&mut drv, &mut dev)); // pos 6
    assert!(!complete(&mut drv, &mut dev)); // pos 7
    assert!(!complete(&mut drv, &mut dev)); // pos 0, lap 2
    assert!(complete(&mut drv, &mut dev)); // pos 1, lap 2
                                           // a multi-descriptor chain skipping over the event position notifies
    drv.set_driver_event(&mem, 3, 2);
    drv.add(&mem, &[r(HIGH, 8), w(HIGH, 8), w(HIGH, 8)]); // positions 2, 3, 4
    assert!(dev.pop(&mem, &mut c).unwrap());
    dev.push_used(&mem, c.id(), 8).unwrap();
    assert!(dev.publish(&mem).unwrap());
}

#[test]
fn desc_event_without_event_idx_means_enable() {
    let mem = memory();
    let mut drv = PackedDriver::new(&mem, 8);
    let mut dev = device(&mem, 8, true, false);
    let mut c = Chain::new();
    for _ in 0..3 {
        drv.set_driver_event(&mem, 7, 2);
        drv.add(&mem, &[w(HIGH, 8)]);
        assert!(dev.pop(&mem, &mut c).unwrap());
        dev.push_used(&mem, c.id(), 8).unwrap();
        assert!(dev.publish(&mem).unwrap());
    }
}

#[test]
fn notify_enable_disable() {
    let mem = memory();
    for event_idx in [false, true] {
        let mut drv = PackedDriver::new(&mem, 8);
        let mut dev = device(&mem, 8, true, event_idx);
        let mut c = Chain::new();
        for round in 0..20 {
            dev.disable_notify(&mem).unwrap();
            assert_eq!(drv.device_event(&mem).1, 1);
            let before = round % 2 == 0;
            if before {
                drv.add(&mem, &[w(HIGH, 8)]);
            }
            assert_eq!(dev.enable_notify(&mem).unwrap(), before);
            let (off_wrap, flags) = drv.device_event(&mem);
            if event_idx {
                assert_eq!(flags, 2);
                assert_eq!(off_wrap, dev.base().avail);
            } else {
                assert_eq!(flags, 0);
            }
            if !before {
                drv.add(&mem, &[w(HIGH, 8)]);
            }
            assert!(dev.pop(&mem, &mut c).unwrap());
            dev.push_used(&mem, c.id(), 0).unwrap();
            dev.publish(&mem).unwrap();
            drv.used(&mem).unwrap();
        }
    }
}

#[test]
fn base_round_trip() {
    let mem = memory();
    let mut drv = PackedDriver::new(&mem, 4);
    let mut dev = device(&mem, 4, true, false);
    let mut c = Chain::new();
    for _ in 0..5 {
        drv.add(&mem, &[w(HIGH, 8)]);
        dev.pop(&mem, &mut c).unwrap();
        dev.push_used(&mem, c.id(), 0).unwrap();
        dev.publish(&mem).unwrap();
        drv.used(&mem).unwrap();
    }
    let b = dev.base();
    assert_eq!(b, RingBase { avail: 1, used: 1 }, "index 1, wrap 0");
    let v = b.to_vhost(true);
    assert_eq!(RingBase::from_vhost(v, true), b);
    assert_eq!(
        RingBase::from_vhost(1, true),
        b,
        "avail-only base means nothing in flight"
    );
    // a new ring from the base continues where the old one stopped
    let mut dev2 = Vring::new(&mem, cfg(4, true, false), b).unwrap();
    drv.add(&mem, &[w(HIGH, 8)]);
    assert!(dev2.pop(&mem, &mut c).unwrap());
    dev2.push_used(&mem, c.id(), 3).unwrap();
    dev2.publish(&mem).unwrap();
    assert_eq!(drv.used(&mem).unwrap().1, 3);
    let bad = RingBase { avail: 9, used: 9 };
    assert_eq!(
        Vring::new(&mem, cfg(4, true, false), bad)
            .err()
            .unwrap()
            .kind(),
        ErrorKind::Config
    );
}

#[test]
fn non_power_of_two_size_allowed() {
    let mem = memory();
    let mut drv = PackedDriver::new(&mem, 5);
    let mut dev = device(&mem, 5, true, false);
    let mut c = Chain::new();
    for _ in 0..12 {
        let id = drv.add(&mem, &[r(HIGH, 8), w(HIGH, 8)]);
        assert!(dev.pop(&mem, &mut c).unwrap());
        assert_eq!(c.id(), id);
        dev.push_used(&mem, id, 8).unwrap();
        dev.publish(&mem).unwrap();
        assert_eq!(drv.used(&mem), Some((id, 8)));
    }
}
