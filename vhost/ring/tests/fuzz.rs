//! Property test: random bytes as descriptor tables, available rings, packed descriptor rings,
//! indirect tables and inflight regions, for thousands of seeds. Whatever the bytes, the ring
//! never panics, every call returns (bounded steps), every segment it hands out lies in guest
//! memory (at the host address vm-memory gives, popped alone or through one `PopBatch`), every status descriptor reported with a refused chain (`status_hint`) is a
//! non-empty device-writable range in guest memory, and a consumed bad chain can always be
//! completed. A seeded generator keeps runs
//! reproducible; a failing seed is printed by the assertion.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use ferrite_vring::vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};
use ferrite_vring::{
    Chain, ErrorKind, GuestMemory, InflightRegion, PopBatch, RingBase, RingError, Vring,
};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
    /// An address that is often plausible: in the data region, the table area, the hole,
    /// the very top of the address space, or anything.
    fn addr(&mut self) -> u64 {
        match self.below(6) {
            0 => HIGH + self.below(HIGH_LEN + 64),
            1 => TABLES + 16 * self.below(64),
            2 => HOLE + self.below(0x100),
            3 => u64::MAX - self.below(64),
            4 => LOW + self.below(LOW_LEN),
            _ => self.next(),
        }
    }
    fn len(&mut self) -> u32 {
        match self.below(4) {
            0 => 0,
            1 => 16 * self.below(20) as u32,
            2 => self.below(0x2000) as u32,
            _ => self.next() as u32,
        }
    }
}

fn fill(mem: &GuestMemory, rng: &mut Rng, at: u64, descs: u64, size: u16, packed: bool) {
    for i in 0..descs {
        let flags = match rng.below(3) {
            0 => rng.next() as u16,
            _ => {
                rng.below(8) as u16
                    | if packed {
                        (rng.below(4) as u16) << 7 << (rng.below(2) * 8)
                    } else {
                        0
                    }
            }
        };
        let w12 = if rng.below(4) == 0 {
            rng.next() as u16
        } else {
            rng.below(u64::from(size)) as u16
        };
        let w14 = if packed {
            flags
        } else if rng.below(4) == 0 {
            rng.next() as u16
        } else {
            rng.below(u64::from(size)) as u16
        };
        let (w12, w14) = if packed { (w12, w14) } else { (flags, w14) };
        write_desc(mem, at + 16 * i, rng.addr(), rng.len(), w12, w14);
    }
}

fn check_chain(mem: &GuestMemory, c: &Chain, seed: u64) {
    let mut writable = false;
    for s in c.segments() {
        assert!(s.len > 0, "seed {seed}: empty segment");
        assert!(
            mem.check_range(GuestAddress(s.addr), s.len as usize),
            "seed {seed}: segment {s:?} outside memory"
        );
        assert!(
            !writable || s.device_writable,
            "seed {seed}: direction order"
        );
        writable |= s.device_writable;
    }
    for (i, s) in c.segments().iter().enumerate() {
        // A host address the walk hands over is vm-memory's for the segment (whatever
        // regions earlier pops of the same batch found).
        if let Some(h) = c.host_addr(i) {
            assert_eq!(
                Some(h),
                mem.get_host_address(GuestAddress(s.addr)).ok(),
                "seed {seed}: host address of {s:?}"
            );
        }
    }
}

/// Checks the status hint of a refused chain; true if there was one.
fn check_hint(mem: &GuestMemory, e: &RingError, seed: u64) -> bool {
    let Some(s) = e.status_hint() else {
        return false;
    };
    assert!(s.len > 0, "seed {seed}: empty status segment");
    assert!(s.device_writable, "seed {seed}: read-only status {s:?}");
    assert!(
        mem.check_range(GuestAddress(s.addr), s.len as usize),
        "seed {seed}: status {s:?} outside memory ({e})"
    );
    true
}

/// One random ring; returns how many refused chains came with a status hint.
fn run(seed: u64, packed: bool, mem: &GuestMemory) -> usize {
    let mut hints = 0;
    let mut rng = Rng(seed);
    let size = [1u16, 2, 4, 8, 16, 32][rng.below(6) as usize];
    fill(mem, &mut rng, DESC, u64::from(size), size, packed);
    fill(mem, &mut rng, TABLES, 64, size, packed);
    let mut junk = [0u8; 1024];
    for b in junk.iter_mut() {
        *b = rng.next() as u8;
    }
    if !packed {
        mem.write_slice(&junk[..6 + 2 * size as usize], GuestAddress(DRIVER))
            .unwrap();
        // mostly plausible heads, so that chains get walked and not only refused heads
        for i in 0..u64::from(size) {
            if rng.below(4) != 0 {
                let h = rng.below(u64::from(size)) as u16;
                mem.write_obj(h, GuestAddress(DRIVER + 4 + 2 * i)).unwrap();
            }
        }
        mem.write_slice(
            &junk[256..256 + 6 + 8 * size as usize],
            GuestAddress(DEVICE),
        )
        .unwrap();
    } else {
        mem.write_slice(&junk[..4], GuestAddress(DRIVER)).unwrap();
    }
    let mut c = cfg(size, packed, rng.below(2) == 0);
    c.indirect = rng.below(4) != 0;
    let base = if packed {
        RingBase {
            avail: (rng.below(u64::from(size)) as u16) | (rng.below(2) as u16) << 15,
            used: 0,
        }
    } else {
        RingBase {
            avail: rng.next() as u16,
            used: 0,
        }
    };
    let base = if packed {
        RingBase {
            avail: base.avail,
            used: base.avail,
        }
    } else {
        base
    };
    let mut dev = Vring::new(mem, c, base).unwrap();
    let region = if rng.below(3) == 0 {
        let (reg, _fd, _) = InflightRegion::create(1, size, packed).unwrap();
        dev.attach_inflight(mem, reg.queue(0).unwrap()).unwrap();
        Some(reg)
    } else {
        None
    };
    let mut ch = Chain::new();
    let mut held: Vec<u16> = Vec::new();
    // Odd seeds pop through one batch for the whole run (the regions one pop found serve the
    // next, across scribbles, pushes and publishes), even seeds one pop at a time.
    let mut batch = (seed % 2 == 1).then(|| PopBatch::new(mem));
    for _ in 0..48 {
        match rng.below(8) {
            0 => {
                // the guest scribbles over a descriptor meanwhile
                let i = rng.below(u64::from(size));
                fill(mem, &mut rng, DESC + 16 * i, 1, size, packed);
            }
            1 if !held.is_empty() => {
                let id = held.swap_remove(rng.below(held.len() as u64) as usize);
                dev.push_used(mem, id, rng.next() as u32).unwrap();
            }
            2 => {
                dev.publish(mem).unwrap();
            }
            3 => {
                let _ = dev.enable_notify(mem).unwrap();
                dev.disable_notify(mem).unwrap();
            }
            4 if !packed => {
                // advance avail idx: by a plausible amount or anything
                let v = if rng.below(2) == 0 {
                    dev.base()
                        .avail
                        .wrapping_add(rng.below(u64::from(size) + 1) as u16)
                } else {
                    rng.next() as u16
                };
                mem.write_obj(v, GuestAddress(DRIVER + 2)).unwrap();
            }
            _ => match match &mut batch {
                Some(b) => dev.pop_in(b, &mut ch),
                None => dev.pop(mem, &mut ch),
            } {
                Ok(true) => {
                    check_chain(mem, &ch, seed);
                    held.push(ch.id());
                }
                Ok(false) => {}
                Err(e) if e.kind() == ErrorKind::Chain => {
                    assert!(ch.segments().is_empty());
                    hints += usize::from(check_hint(mem, &e, seed));
                    held.push(ch.id());
                }
                Err(e) => {
                    assert_eq!(e.kind(), ErrorKind::Broken, "seed {seed}: {e}");
                    break;
                }
            },
        }
    }
    assert!(
        held.len() <= usize::from(size),
        "seed {seed}: more in flight than the ring holds"
    );
    assert_eq!(dev.in_flight(), held.len());
    // crash: recover from the region, maybe corrupted, never panicking
    if let Some(reg) = region {
        drop(dev);
        let q = reg.queue(0).unwrap();
        let mut dev = Vring::new(mem, c, base).unwrap();
        match dev.attach_inflight(mem, q) {
            Ok(()) => {
                for _ in 0..=size {
                    match dev.pop_resubmit(mem, &mut ch) {
                        Ok(true) => check_chain(mem, &ch, seed),
                        Ok(false) => break,
                        Err(e) => {
                            assert_eq!(e.kind(), ErrorKind::Chain, "seed {seed}: {e}");
                            hints += usize::from(check_hint(mem, &e, seed));
                        }
                    }
                }
                assert_eq!(dev.resubmit_pending(), 0, "seed {seed}");
            }
            Err(e) => assert_eq!(e.kind(), ErrorKind::Inflight, "seed {seed}: {e}"),
        }
    }
    hints
}

#[test]
fn random_split_rings() {
    let mem = memory();
    for seed in 0..3000 {
        // random rings seldom offer a refused chain whose links are sound: see
        // random_status_hints for those
        run(seed, false, &mem);
    }
}

#[test]
fn random_packed_rings() {
    let mem = memory();
    let mut hints = 0;
    for seed in 0..3000 {
        hints += run(seed ^ 0xdead_beef, true, &mem);
    }
    assert!(hints > 0, "no refused chain came with a status hint");
}

/// Random bytes as a used inflight region: attach refuses it or recovers from it, and what
/// it resubmits lies in memory.
#[test]
fn random_inflight_regions() {
    use std::fs::File;
    use std::os::unix::fs::FileExt;
    let mem = memory();
    for seed in 0..1500u64 {
        let mut rng = Rng(seed);
        let packed = seed % 2 == 1;
        let size = [1u16, 2, 4, 8, 16][rng.below(5) as usize];
        if packed {
            PackedDriver::new(&mem, size);
        } else {
            SplitDriver::new(&mem, size);
        }
        fill(&mem, &mut rng, TABLES, 64, size, packed);
        let (reg, fd, len) = InflightRegion::create(1, size, packed).unwrap();
        let f = File::from(fd);
        let mut bytes = vec![0u8; len as usize];
        for b in bytes.iter_mut() {
            *b = match rng.below(4) {
                0 => rng.next() as u8,
                1 => 1,
                _ => rng.below(u64::from(size) + 1) as u8,
            };
        }
        // mostly plausible headers
        bytes[0..8].fill(0);
        if rng.below(4) != 0 {
            bytes[8..10].copy_from_slice(&1u16.to_le_bytes());
            bytes[10..12].copy_from_slice(&size.to_le_bytes());
        }
        f.write_all_at(&bytes, 0).unwrap();
        let mut dev = device(&mem, size, packed, false);
        match dev.attach_inflight(&mem, reg.queue(0).unwrap()) {
            Ok(()) => {
                let mut ch = Chain::new();
                let mut n = 0;
                loop {
                    match dev.pop(&mem, &mut ch) {
                        Ok(true) => check_chain(&mem, &ch, seed),
                        Ok(false) => break,
                        Err(e) if e.kind() == ErrorKind::Chain => {
                            check_hint(&mem, &e, seed);
                        }
                        Err(_) => break,
                    }
                    n += 1;
                    assert!(
                        n <= 2 * usize::from(size) + 2,
                        "seed {seed}: pop does not run dry"
                    );
                }
            }
            Err(e) => assert_eq!(e.kind(), ErrorKind::Inflight, "seed {seed}: {e}"),
        }
    }
}

/// Sound links, random buffers: a refused chain comes with a status hint exactly when its
/// last descriptor is device-writable, non-empty and in guest memory, and the hint is that
/// descriptor.
#[test]
fn random_status_hints() {
    let mem = memory();
    let (mut refused, mut hinted) = (0, 0);
    for seed in 0..4000u64 {
        let mut rng = Rng(seed);
        let packed = seed % 2 == 1;
        let size = 16u16;
        let k = 1 + rng.below(6) as u16;
        let descs: Vec<(u64, u32, u16)> = (0..k)
            .map(|i| {
                let mut f = if rng.below(2) == 0 { F_WRITE } else { 0 };
                if rng.below(16) == 0 {
                    f |= F_INDIRECT;
                }
                if i + 1 < k {
                    f |= F_NEXT;
                }
                (rng.addr(), rng.len(), f)
            })
            .collect();
        let mut dev = device(&mem, size, packed, false);
        if packed {
            PackedDriver::new(&mem, size).add_raw(&mem, &descs, None);
        } else {
            let mut drv = SplitDriver::new(&mem, size);
            for (i, &(a, l, f)) in descs.iter().enumerate() {
                drv.raw(&mem, i as u16, a, l, f, i as u16 + 1);
            }
            drv.offer(&mem, 0);
        }
        let mut ch = Chain::new();
        let e = match dev.pop(&mem, &mut ch) {
            Ok(true) => continue,
            Ok(false) => panic!("seed {seed}: chain not offered"),
            Err(e) => e,
        };
        assert_eq!(e.kind(), ErrorKind::Chain, "seed {seed}: {e}");
        refused += 1;
        let &(a, l, f) = descs.last().unwrap();
        let any_indirect = descs.iter().any(|d| d.2 & F_INDIRECT != 0);
        let want = !any_indirect
            && f & F_WRITE != 0
            && l > 0
            && mem.check_range(GuestAddress(a), l as usize);
        let got = e.status_hint();
        if k == 1 && any_indirect {
            // a lone indirect descriptor: the hint comes from whatever table it points at
            hinted += usize::from(check_hint(&mem, &e, seed));
            continue;
        }
        assert_eq!(
            got.map(|s| (s.addr, s.len)),
            want.then_some((a, l)),
            "seed {seed}: {e} {descs:x?}"
        );
        hinted += usize::from(check_hint(&mem, &e, seed));
    }
    assert!(
        refused > 1000 && hinted > 100,
        "{refused} refused, {hinted} hinted"
    );
}
