//! Live recovery through the inflight region: a backend "crashes" (its Vring is dropped, or
//! stopped at an injected step), a new one maps the same memfd as QEMU hands it back, and
//! resubmits exactly the chains the driver has not seen completed, in submission order,
//! before new ones. Split and packed, every crash step of pop and publish.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashSet;
use std::os::fd::OwnedFd;

use common::*;
use ferrite_vring::{
    inflight_queue_size, Chain, CrashPoint, GuestMemory, InflightRegion, RingBase, Vring,
};

const SIZE: u16 = 64;

/// A device and its driver, the memfd the front-end keeps, and the driver's view.
struct Env {
    mem: GuestMemory,
    packed: bool,
    fd: OwnedFd,
    mmap_size: u64,
    split: Option<SplitDriver>,
    pk: Option<PackedDriver>,
}

impl Env {
    fn new(packed: bool) -> Self {
        let mem = memory();
        let (_region, fd, mmap_size) = InflightRegion::create(2, SIZE, packed).unwrap();
        assert_eq!(mmap_size as usize, 2 * inflight_queue_size(SIZE, packed));
        let (split, pk) = if packed {
            (None, Some(PackedDriver::new(&mem, SIZE)))
        } else {
            (Some(SplitDriver::new(&mem, SIZE)), None)
        };
        Env {
            mem,
            packed,
            fd,
            mmap_size,
            split,
            pk,
        }
    }

    /// A backend (re)starting: maps the region from the fd (as SET_INFLIGHT_FD does), builds
    /// the ring from the base QEMU sends after a crash (split: used->idx; packed: unknown, so
    /// the initial one), attaches queue 1.
    fn start(&self) -> Vring {
        let region = InflightRegion::map(
            self.fd.try_clone().unwrap(),
            self.mmap_size,
            0,
            2,
            SIZE,
            self.packed,
        )
        .unwrap();
        let base = if self.packed {
            RingBase::initial(true)
        } else {
            RingBase {
                avail: ld16(&self.mem, DEVICE + 2),
                used: 0,
            }
        };
        let mut v = Vring::new(&self.mem, cfg(SIZE, self.packed, false), base).unwrap();
        v.attach_inflight(&self.mem, region.queue(1).unwrap())
            .unwrap();
        v
    }

    /// The driver offers a 3-descriptor request; returns its id.
    fn offer(&mut self, tag: u64) -> u16 {
        let bufs = [
            r(HIGH + tag * 0x1000, 16),
            w(HIGH + tag * 0x1000 + 0x100, 512),
            w(HIGH + tag * 0x1000 + 0x80, 1),
        ];
        match (&mut self.split, &mut self.pk) {
            (Some(d), _) => d.add(&self.mem, &bufs),
            (_, Some(d)) => d.add(&self.mem, &bufs),
            _ => unreachable!(),
        }
    }

    /// Ids the driver sees completed now.
    fn completed(&mut self) -> Vec<u16> {
        let mut v = Vec::new();
        loop {
            let u = match (&mut self.split, &mut self.pk) {
                (Some(d), _) => d.used(&self.mem),
                (_, Some(d)) => d.used(&self.mem),
                _ => unreachable!(),
            };
            match u {
                Some((id, _)) => v.push(id),
                None => return v,
            }
        }
    }
}

fn pop_all(v: &mut Vring, mem: &GuestMemory) -> Vec<u16> {
    let mut c = Chain::new();
    let mut ids = Vec::new();
    while v.pop(mem, &mut c).unwrap() {
        assert_eq!(c.segments().len(), 3);
        ids.push(c.id());
    }
    ids
}

fn resubmitted(v: &mut Vring, mem: &GuestMemory) -> Vec<u16> {
    let mut c = Chain::new();
    let mut ids = Vec::new();
    while v.pop_resubmit(mem, &mut c).unwrap() {
        assert_eq!(c.segments().len(), 3, "resubmitted chain rebuilt whole");
        ids.push(c.id());
    }
    ids
}

fn complete(v: &mut Vring, mem: &GuestMemory, ids: &[u16]) {
    for &id in ids {
        v.push_used(mem, id, 513).unwrap();
    }
    v.publish(mem).unwrap();
}

/// Drop without completing: exactly the uncompleted chains come back, in order, then new
/// ones; completing everything leaves the driver with every id exactly once.
fn crash_and_resubmit(packed: bool) {
    let mut env = Env::new(packed);
    let mut dev = env.start();
    let offered: Vec<u16> = (0..8).map(|i| env.offer(i)).collect();
    let popped = pop_all(&mut dev, &env.mem);
    assert_eq!(popped, offered);
    complete(&mut dev, &env.mem, &[offered[1], offered[4], offered[5]]);
    // pushed but not published: the driver never saw it, so it must come back
    dev.push_used(&env.mem, offered[6], 1).unwrap();
    drop(dev);
    let mut seen: Vec<u16> = env.completed();
    assert_eq!(seen, vec![offered[1], offered[4], offered[5]]);
    let mut dev = env.start();
    assert_eq!(dev.resubmit_pending(), 5);
    assert_eq!(dev.in_flight(), 5);
    let again = resubmitted(&mut dev, &env.mem);
    assert_eq!(
        again,
        vec![offered[0], offered[2], offered[3], offered[6], offered[7]]
    );
    // new requests follow
    let fresh: Vec<u16> = (8..11).map(|i| env.offer(i)).collect();
    assert_eq!(pop_all(&mut dev, &env.mem), fresh);
    complete(&mut dev, &env.mem, &again);
    complete(&mut dev, &env.mem, &fresh);
    // every request completes exactly once (ids of the first eight are distinct; packed
    // drivers reuse freed ids for the new ones)
    let after = env.completed();
    assert_eq!(after, [again.clone(), fresh.clone()].concat());
    seen.extend(&after[..again.len()]);
    let all: HashSet<u16> = seen.iter().copied().collect();
    assert_eq!(all.len(), 8, "no request completed twice: {seen:?}");
    assert_eq!(seen.len(), 8);
    // and a third life finds nothing in flight
    drop(dev);
    let mut dev = env.start();
    assert_eq!(dev.resubmit_pending(), 0);
    let more = env.offer(11);
    assert_eq!(pop_all(&mut dev, &env.mem), vec![more]);
}

#[test]
fn split_crash_and_resubmit() {
    crash_and_resubmit(false);
}

#[test]
fn packed_crash_and_resubmit() {
    crash_and_resubmit(true);
}

/// pop() itself serves the resubmissions first.
fn pop_serves_resubmissions_first(packed: bool) {
    let mut env = Env::new(packed);
    let mut dev = env.start();
    let a: Vec<u16> = (0..3).map(|i| env.offer(i)).collect();
    pop_all(&mut dev, &env.mem);
    drop(dev);
    let b: Vec<u16> = (3..5).map(|i| env.offer(i)).collect();
    let mut dev = env.start();
    let mut c = Chain::new();
    assert!(
        dev.enable_notify(&env.mem).unwrap(),
        "resubmissions are work"
    );
    let got = pop_all(&mut dev, &env.mem);
    assert_eq!(got, [a, b].concat());
    assert!(!dev.pop(&env.mem, &mut c).unwrap());
}

#[test]
fn split_pop_serves_resubmissions_first() {
    pop_serves_resubmissions_first(false);
}

#[test]
fn packed_pop_serves_resubmissions_first() {
    pop_serves_resubmissions_first(true);
}

/// A crash at `at` during the completion of `done`: the driver saw them or not, and the
/// recovery agrees with what the driver saw.
fn crash_in_publish(packed: bool, at: CrashPoint, visible: bool) {
    let mut env = Env::new(packed);
    let mut dev = env.start();
    let offered: Vec<u16> = (0..6).map(|i| env.offer(i)).collect();
    pop_all(&mut dev, &env.mem);
    complete(&mut dev, &env.mem, &[offered[0]]);
    dev.inject_crash(at);
    for &id in &[offered[2], offered[3]] {
        dev.push_used(&env.mem, id, 513).unwrap();
    }
    assert!(dev.publish(&env.mem).is_err());
    drop(dev);
    let seen = env.completed();
    let batch_seen = if visible {
        vec![offered[0], offered[2], offered[3]]
    } else {
        vec![offered[0]]
    };
    assert_eq!(seen, batch_seen);
    let mut dev = env.start();
    let again = resubmitted(&mut dev, &env.mem);
    let expect: Vec<u16> = offered
        .iter()
        .copied()
        .filter(|id| !seen.contains(id))
        .collect();
    assert_eq!(
        again, expect,
        "resubmit exactly what the driver has not seen"
    );
    complete(&mut dev, &env.mem, &again);
    let rest = env.completed();
    assert_eq!(rest.len(), again.len());
    // the ring goes on over several laps
    for round in 0..3 * SIZE as u64 {
        let id = env.offer(round % 8);
        assert_eq!(pop_all(&mut dev, &env.mem), vec![id]);
        complete(&mut dev, &env.mem, &[id]);
        assert_eq!(env.completed(), vec![id]);
    }
}

#[test]
fn split_crash_after_used_idx_before_region() {
    crash_in_publish(false, CrashPoint::PublishAfterVisible, true);
}

#[test]
fn split_crash_before_used_idx() {
    crash_in_publish(false, CrashPoint::PublishBeforeVisible, false);
}

#[test]
fn packed_crash_after_flags_before_region() {
    crash_in_publish(true, CrashPoint::PublishAfterVisible, true);
}

#[test]
fn packed_crash_after_region_before_flags() {
    crash_in_publish(true, CrashPoint::PublishBeforeVisible, false);
}

/// A crash while a chain is being recorded: it is not resubmitted but read from the ring
/// again, once.
fn crash_in_pop(packed: bool) {
    let mut env = Env::new(packed);
    let mut dev = env.start();
    let first: Vec<u16> = (0..2).map(|i| env.offer(i)).collect();
    assert_eq!(pop_all(&mut dev, &env.mem), first);
    let third = env.offer(2);
    dev.inject_crash(CrashPoint::PopPartial);
    let mut c = Chain::new();
    assert!(dev.pop(&env.mem, &mut c).is_err());
    drop(dev);
    let mut dev = env.start();
    assert_eq!(resubmitted(&mut dev, &env.mem), first);
    assert_eq!(pop_all(&mut dev, &env.mem), vec![third]);
    complete(&mut dev, &env.mem, &[first[0], first[1], third]);
    assert_eq!(env.completed().len(), 3);
}

#[test]
fn split_crash_in_pop() {
    crash_in_pop(false);
}

#[test]
fn packed_crash_in_pop() {
    crash_in_pop(true);
}

/// Crashing again before the resubmitted chains complete gives the same list again.
fn repeated_crashes(packed: bool) {
    let mut env = Env::new(packed);
    let mut dev = env.start();
    let offered: Vec<u16> = (0..5).map(|i| env.offer(i)).collect();
    pop_all(&mut dev, &env.mem);
    complete(&mut dev, &env.mem, &[offered[2]]);
    drop(dev);
    let mut want = offered.clone();
    want.remove(2);
    for _ in 0..3 {
        let mut dev = env.start();
        assert_eq!(resubmitted(&mut dev, &env.mem), want);
    }
    let mut dev = env.start();
    // complete one of the resubmitted, crash, the rest remains
    let got = resubmitted(&mut dev, &env.mem);
    complete(&mut dev, &env.mem, &got[..1]);
    drop(dev);
    let mut dev = env.start();
    assert_eq!(resubmitted(&mut dev, &env.mem), want[1..].to_vec());
}

#[test]
fn split_repeated_crashes() {
    repeated_crashes(false);
}

#[test]
fn packed_repeated_crashes() {
    repeated_crashes(true);
}

#[test]
fn split_resubmits_in_counter_order_not_head_order() {
    let mut env = Env::new(false);
    // make heads be handed out in a scrambled order
    env.split.as_mut().unwrap().free = vec![3, 9, 1, 14, 7, 0, 12];
    let mut dev = env.start();
    let offered: Vec<u16> = (0..3)
        .map(|i| {
            let d = env.split.as_mut().unwrap();
            d.add(
                &env.mem,
                &[r(HIGH + i * 0x100, 8), w(HIGH + i * 0x100 + 8, 8)],
            )
        })
        .collect();
    let mut c = Chain::new();
    while dev.pop(&env.mem, &mut c).unwrap() {}
    drop(dev);
    let mut dev = env.start();
    let mut got = Vec::new();
    while dev.pop_resubmit(&env.mem, &mut c).unwrap() {
        got.push(c.id());
    }
    assert_eq!(got, offered);
    let mut sorted = offered.clone();
    sorted.sort();
    assert_ne!(offered, sorted, "heads were not already in order");
}

/// Indirect chains come back whole (the table is read again from guest memory), and a region
/// sized for a larger queue than the ring negotiated works.
fn indirect_and_larger_region(packed: bool) {
    let mem = memory();
    let ring = 16u16;
    let (_r, fd, mmap_size) = InflightRegion::create(1, 32, packed).unwrap();
    let start = || {
        let region =
            InflightRegion::map(fd.try_clone().unwrap(), mmap_size, 0, 1, 32, packed).unwrap();
        let mut v = Vring::new(&mem, cfg(ring, packed, true), RingBase::initial(packed)).unwrap();
        v.attach_inflight(&mem, region.queue(0).unwrap()).unwrap();
        v
    };
    let bufs = blk(HIGH, 6, true);
    let mut ids = Vec::new();
    let mut dev = start();
    if packed {
        let mut d = PackedDriver::new(&mem, ring);
        for k in 0..3u64 {
            ids.push(d.add_indirect(&mem, TABLES + 0x200 * k, &bufs));
        }
    } else {
        let mut d = SplitDriver::new(&mem, ring);
        for k in 0..3u64 {
            ids.push(d.add_indirect(&mem, TABLES + 0x200 * k, &bufs));
        }
    }
    let mut c = Chain::new();
    for _ in 0..3 {
        assert!(dev.pop(&mem, &mut c).unwrap());
    }
    dev.push_used(&mem, ids[1], 0).unwrap();
    dev.publish(&mem).unwrap();
    drop(dev);
    let mut dev = start();
    for want in [ids[0], ids[2]] {
        assert!(dev.pop_resubmit(&mem, &mut c).unwrap());
        assert_eq!(c.id(), want);
        let got: Vec<(u64, u32, bool)> = c
            .segments()
            .iter()
            .map(|s| (s.addr, s.len, s.device_writable))
            .collect();
        let exp: Vec<(u64, u32, bool)> = bufs.iter().map(|b| (b.addr, b.len, b.write)).collect();
        assert_eq!(got, exp);
    }
    assert!(!dev.pop_resubmit(&mem, &mut c).unwrap());
}

#[test]
fn split_indirect_and_larger_region() {
    indirect_and_larger_region(false);
}

#[test]
fn packed_indirect_and_larger_region() {
    indirect_and_larger_region(true);
}
