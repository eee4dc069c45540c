//! Driver-side test doubles: split and packed rings laid out in a real `GuestMemoryMmap`,
//! written the way a virtio driver (Linux's virtio_ring) writes them.

#![allow(dead_code)]

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use ferrite_vring::vm_memory::{Bytes, GuestAddress};
use ferrite_vring::{GuestMemory, RingAddrs, RingBase, RingConfig, Vring};

pub const F_NEXT: u16 = 1;
pub const F_WRITE: u16 = 2;
pub const F_INDIRECT: u16 = 4;
pub const P_AVAIL: u16 = 1 << 7;
pub const P_USED: u16 = 1 << 15;

/// Low region: rings and indirect tables.
pub const LOW: u64 = 0;
pub const LOW_LEN: u64 = 0x40000;
/// High region (after a hole): data buffers.
pub const HIGH: u64 = 0x100000;
pub const HIGH_LEN: u64 = 0x100000;
/// A guest address in the hole between the regions.
pub const HOLE: u64 = 0x80000;

pub const DESC: u64 = 0x1000;
pub const DRIVER: u64 = 0x20000;
pub const DEVICE: u64 = 0x30000;
/// Where indirect tables go.
pub const TABLES: u64 = 0x38000;

pub fn memory() -> GuestMemory {
    GuestMemory::from_ranges(&[
        (GuestAddress(LOW), LOW_LEN as usize),
        (GuestAddress(HIGH), HIGH_LEN as usize),
    ])
    .unwrap()
}

/// A buffer of a chain, as the driver describes it.
#[derive(Clone, Copy, Debug)]
pub struct Buf {
    pub addr: u64,
    pub len: u32,
    pub write: bool,
}

pub fn r(addr: u64, len: u32) -> Buf {
    Buf {
        addr,
        len,
        write: false,
    }
}

pub fn w(addr: u64, len: u32) -> Buf {
    Buf {
        addr,
        len,
        write: true,
    }
}

/// A virtio-blk-like request: 16-byte header, `n` data segments of 512 bytes, status byte.
pub fn blk(base: u64, n: usize, write_data: bool) -> Vec<Buf> {
    let mut v = vec![r(base, 16)];
    for i in 0..n {
        let a = base + 0x100 + 0x200 * i as u64;
        v.push(if write_data { w(a, 512) } else { r(a, 512) });
    }
    if write_data {
        v.push(w(base + 0x80, 1));
    } else {
        // status must follow all readable buffers
        v.push(w(base + 0x80, 1));
    }
    v
}

pub fn write_desc(mem: &GuestMemory, at: u64, addr: u64, len: u32, w12: u16, w14: u16) {
    let mut b = [0u8; 16];
    b[0..8].copy_from_slice(&addr.to_le_bytes());
    b[8..12].copy_from_slice(&len.to_le_bytes());
    b[12..14].copy_from_slice(&w12.to_le_bytes());
    b[14..16].copy_from_slice(&w14.to_le_bytes());
    mem.write_obj(b, GuestAddress(at)).unwrap();
}

pub fn ld16(mem: &GuestMemory, at: u64) -> u16 {
    mem.load::<u16>(GuestAddress(at), Ordering::Acquire)
        .unwrap()
}

pub fn st16(mem: &GuestMemory, at: u64, v: u16) {
    mem.store::<u16>(v, GuestAddress(at), Ordering::Release)
        .unwrap()
}

pub fn ld32(mem: &GuestMemory, at: u64) -> u32 {
    mem.load::<u32>(GuestAddress(at), Ordering::Acquire)
        .unwrap()
}

pub fn cfg(size: u16, packed: bool, event_idx: bool) -> RingConfig {
    RingConfig {
        size,
        addrs: RingAddrs {
            desc: DESC,
            driver: DRIVER,
            device: DEVICE,
        },
        packed,
        event_idx,
        indirect: true,
    }
}

pub fn device(mem: &GuestMemory, size: u16, packed: bool, event_idx: bool) -> Vring {
    Vring::new(mem, cfg(size, packed, event_idx), RingBase::initial(packed)).unwrap()
}

/// Writes `bufs` as an indirect table at `table` and returns the indirect descriptor's
/// (addr, len).
pub fn indirect_table(mem: &GuestMemory, table: u64, bufs: &[Buf], packed: bool) -> (u64, u32) {
    for (i, b) in bufs.iter().enumerate() {
        let f = if b.write { F_WRITE } else { 0 };
        let at = table + 16 * i as u64;
        if packed {
            write_desc(mem, at, b.addr, b.len, 0, f);
        } else {
            let next = if i + 1 < bufs.len() { F_NEXT } else { 0 };
            write_desc(mem, at, b.addr, b.len, f | next, i as u16 + 1);
        }
    }
    (table, 16 * bufs.len() as u32)
}

/// Split ring, driver side.
pub struct SplitDriver {
    pub size: u16,
    pub free: Vec<u16>,
    pub avail_idx: u16,
    pub last_used: u16,
    /// descriptors held by each head
    pub held: HashMap<u16, Vec<u16>>,
}

impl SplitDriver {
    pub fn new(mem: &GuestMemory, size: u16) -> Self {
        // zero the ring areas
        let z = vec![0u8; 16 * size as usize];
        mem.write_slice(&z, GuestAddress(DESC)).unwrap();
        mem.write_slice(&z[..6 + 2 * size as usize], GuestAddress(DRIVER))
            .unwrap();
        mem.write_slice(&vec![0u8; 6 + 8 * size as usize], GuestAddress(DEVICE))
            .unwrap();
        SplitDriver {
            size,
            free: (0..size).rev().collect(),
            avail_idx: 0,
            last_used: 0,
            held: HashMap::new(),
        }
    }

    pub fn free_count(&self) -> usize {
        self.free.len()
    }

    /// Writes a chain into free descriptors (not yet offered); returns the head.
    pub fn write_chain(&mut self, mem: &GuestMemory, bufs: &[Buf]) -> u16 {
        let ids: Vec<u16> = (0..bufs.len()).map(|_| self.free.pop().unwrap()).collect();
        for (i, b) in bufs.iter().enumerate() {
            let mut f = if b.write { F_WRITE } else { 0 };
            let next = if i + 1 < bufs.len() {
                f |= F_NEXT;
                ids[i + 1]
            } else {
                0
            };
            write_desc(mem, DESC + 16 * ids[i] as u64, b.addr, b.len, f, next);
        }
        self.held.insert(ids[0], ids.clone());
        ids[0]
    }

    /// Offers `head` in the available ring (ring entry, then index with release).
    pub fn offer(&mut self, mem: &GuestMemory, head: u16) {
        let slot = DRIVER + 4 + 2 * (self.avail_idx % self.size) as u64;
        st16(mem, slot, head);
        self.avail_idx = self.avail_idx.wrapping_add(1);
        st16(mem, DRIVER + 2, self.avail_idx);
    }

    pub fn add(&mut self, mem: &GuestMemory, bufs: &[Buf]) -> u16 {
        let h = self.write_chain(mem, bufs);
        self.offer(mem, h);
        h
    }

    /// One descriptor pointing at an indirect table of `bufs`.
    pub fn add_indirect(&mut self, mem: &GuestMemory, table: u64, bufs: &[Buf]) -> u16 {
        let (a, l) = indirect_table(mem, table, bufs, false);
        let h = self.free.pop().unwrap();
        write_desc(mem, DESC + 16 * h as u64, a, l, F_INDIRECT, 0);
        self.held.insert(h, vec![h]);
        self.offer(mem, h);
        h
    }

    /// Writes a raw descriptor at index `i`.
    pub fn raw(&self, mem: &GuestMemory, i: u16, addr: u64, len: u32, flags: u16, next: u16) {
        write_desc(mem, DESC + 16 * i as u64, addr, len, flags, next);
    }

    /// Next used element, if the device published one; frees its descriptors.
    pub fn used(&mut self, mem: &GuestMemory) -> Option<(u16, u32)> {
        if ld16(mem, DEVICE + 2) == self.last_used {
            return None;
        }
        let e = DEVICE + 4 + 8 * (self.last_used % self.size) as u64;
        let id = ld32(mem, e) as u16;
        let len = ld32(mem, e + 4);
        self.last_used = self.last_used.wrapping_add(1);
        if let Some(ids) = self.held.remove(&id) {
            self.free.extend(ids);
        }
        Some((id, len))
    }

    pub fn used_idx(&self, mem: &GuestMemory) -> u16 {
        ld16(mem, DEVICE + 2)
    }
    pub fn used_flags(&self, mem: &GuestMemory) -> u16 {
        ld16(mem, DEVICE)
    }
    pub fn avail_event(&self, mem: &GuestMemory) -> u16 {
        ld16(mem, DEVICE + 4 + 8 * self.size as u64)
    }
    pub fn set_used_event(&self, mem: &GuestMemory, v: u16) {
        st16(mem, DRIVER + 4 + 2 * self.size as u64, v)
    }
    pub fn set_avail_flags(&self, mem: &GuestMemory, v: u16) {
        st16(mem, DRIVER, v)
    }
}

/// Packed ring, driver side.
pub struct PackedDriver {
    pub size: u16,
    pub next_avail: u16,
    pub avail_wrap: bool,
    pub next_used: u16,
    pub used_wrap: bool,
    pub free_ids: Vec<u16>,
    pub free_descs: u16,
    /// descriptors each buffer id occupies
    pub ndesc: HashMap<u16, u16>,
}

impl PackedDriver {
    pub fn new(mem: &GuestMemory, size: u16) -> Self {
        mem.write_slice(&vec![0u8; 16 * size as usize], GuestAddress(DESC))
            .unwrap();
        mem.write_slice(&[0u8; 4], GuestAddress(DRIVER)).unwrap();
        mem.write_slice(&[0u8; 4], GuestAddress(DEVICE)).unwrap();
        PackedDriver {
            size,
            next_avail: 0,
            avail_wrap: true,
            next_used: 0,
            used_wrap: true,
            free_ids: (0..size).rev().collect(),
            free_descs: size,
            ndesc: HashMap::new(),
        }
    }

    pub fn avail_flags(&self, wrap: bool) -> u16 {
        if wrap {
            P_AVAIL
        } else {
            P_USED
        }
    }

    /// Writes descriptors with explicit per-descriptor flags (NEXT/WRITE/INDIRECT) and id,
    /// head flags last; returns the buffer id. `id` None takes a free id.
    pub fn add_raw(
        &mut self,
        mem: &GuestMemory,
        descs: &[(u64, u32, u16)],
        id: Option<u16>,
    ) -> u16 {
        let id = id.unwrap_or_else(|| self.free_ids.pop().unwrap());
        let mut head_flags = 0;
        let head = self.next_avail;
        for (i, &(addr, len, f)) in descs.iter().enumerate() {
            let flags = f | self.avail_flags(self.avail_wrap);
            let at = DESC + 16 * self.next_avail as u64;
            if i == 0 {
                head_flags = flags;
                write_desc(
                    mem,
                    at,
                    addr,
                    len,
                    id,
                    flags & !(P_AVAIL | P_USED) | self.avail_flags(!self.avail_wrap),
                );
            } else {
                write_desc(mem, at, addr, len, id, flags);
            }
            self.next_avail += 1;
            if self.next_avail == self.size {
                self.next_avail = 0;
                self.avail_wrap = !self.avail_wrap;
            }
        }
        st16(mem, DESC + 16 * head as u64 + 14, head_flags);
        self.free_descs = self.free_descs.saturating_sub(descs.len() as u16);
        self.ndesc.insert(id, descs.len() as u16);
        id
    }

    pub fn add(&mut self, mem: &GuestMemory, bufs: &[Buf]) -> u16 {
        let d: Vec<(u64, u32, u16)> = bufs
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let mut f = if b.write { F_WRITE } else { 0 };
                if i + 1 < bufs.len() {
                    f |= F_NEXT;
                }
                (b.addr, b.len, f)
            })
            .collect();
        self.add_raw(mem, &d, None)
    }

    pub fn add_indirect(&mut self, mem: &GuestMemory, table: u64, bufs: &[Buf]) -> u16 {
        let (a, l) = indirect_table(mem, table, bufs, true);
        self.add_raw(mem, &[(a, l, F_INDIRECT)], None)
    }

    /// Next used buffer, if any.
    pub fn used(&mut self, mem: &GuestMemory) -> Option<(u16, u32)> {
        let at = DESC + 16 * self.next_used as u64;
        let flags = ld16(mem, at + 14);
        let a = flags & P_AVAIL != 0;
        let u = flags & P_USED != 0;
        if a != self.used_wrap || u != self.used_wrap {
            return None;
        }
        let id = ld16(mem, at + 12);
        let len = ld32(mem, at + 8);
        let n = self.ndesc.remove(&id).expect("used id not outstanding");
        self.free_descs += n;
        self.free_ids.push(id);
        self.next_used += n;
        if self.next_used >= self.size {
            self.next_used -= self.size;
            self.used_wrap = !self.used_wrap;
        }
        Some((id, len))
    }

    pub fn set_driver_event(&self, mem: &GuestMemory, off_wrap: u16, flags: u16) {
        st16(mem, DRIVER, off_wrap);
        st16(mem, DRIVER + 2, flags);
    }
    /// (off_wrap, flags) of the device event suppression structure.
    pub fn device_event(&self, mem: &GuestMemory) -> (u16, u16) {
        (ld16(mem, DEVICE), ld16(mem, DEVICE + 2))
    }
}
