//! Checked little-endian access to guest memory. Every function goes through vm-memory's
//! checked accessors: an address outside the guest's regions is an error, never a fault.

use std::sync::atomic::Ordering;

use vm_memory::{Address, Bytes, GuestAddress, GuestMemoryBackend as _, GuestMemoryRegion as _};

use crate::GuestMemory;

/// VIRTQ_DESC_F_NEXT (split and packed).
pub(crate) const F_NEXT: u16 = 1;
/// VIRTQ_DESC_F_WRITE.
pub(crate) const F_WRITE: u16 = 2;
/// VIRTQ_DESC_F_INDIRECT.
pub(crate) const F_INDIRECT: u16 = 4;

/// A descriptor as it lies in memory: `addr u64, len u32`, then for a split ring
/// `flags u16, next u16` and for a packed ring `id u16, flags u16`.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct RawDesc {
    pub addr: u64,
    pub len: u32,
    pub w12: u16,
    pub w14: u16,
}

/// Reads the 16-byte descriptor at `addr`.
#[inline]
pub(crate) fn read_desc(mem: &GuestMemory, addr: u64) -> Option<RawDesc> {
    let b: [u8; 16] = mem.read_obj(GuestAddress(addr)).ok()?;
    Some(decode(b))
}

#[inline]
fn decode(b: [u8; 16]) -> RawDesc {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[0..8]);
    let mut l = [0u8; 4];
    l.copy_from_slice(&b[8..12]);
    RawDesc {
        addr: u64::from_le_bytes(a),
        len: u32::from_le_bytes(l),
        w12: u16::from_le_bytes([b[12], b[13]]),
        w14: u16::from_le_bytes([b[14], b[15]]),
    }
}

/// A descriptor table of `count` entries resolved to host memory once (one region lookup) for
/// a whole chain walk instead of once per descriptor. Valid for the borrow of the
/// [`GuestMemory`] it was resolved from.
#[derive(Clone, Copy)]
pub(crate) struct DescTable<'m> {
    host: *const u8,
    count: u16,
    _mem: std::marker::PhantomData<&'m GuestMemory>,
}

impl<'m> DescTable<'m> {
    /// The table `[addr, addr + 16 * count)` if it lies wholly inside one region of `mem`,
    /// else `None` (the caller then reads descriptors one by one through the checked path).
    #[inline]
    pub(crate) fn resolve(
        cache: &mut RegionCache<'m>,
        mem: &'m GuestMemory,
        addr: u64,
        count: u16,
    ) -> Option<Self> {
        let host = cache.host(mem, addr, 16 * u64::from(count))?;
        if !(host as usize).is_multiple_of(8) {
            return None; // read descriptor by descriptor through the checked path
        }
        Some(Self {
            host,
            count,
            _mem: std::marker::PhantomData,
        })
    }

    /// Descriptor `i`, or `None` if `i` is outside the table.
    #[inline]
    pub(crate) fn get(&self, i: u16) -> Option<RawDesc> {
        if i >= self.count {
            return None;
        }
        // SAFETY: `resolve` checked that the `16 * count` bytes at `host` lie inside one
        // mapped region of the memory table borrowed for 'm and that `host` is 8-aligned, and
        // `i < count`. The bytes are guest-shared memory: volatile reads (two words, not
        // sixteen bytes), like read_obj's copy.
        let (lo, hi) = unsafe {
            let p = self.host.add(16 * usize::from(i)).cast::<u64>();
            (
                std::ptr::read_volatile(p),
                std::ptr::read_volatile(p.add(1)),
            )
        };
        let (lo, hi) = (u64::from_le(lo), u64::from_le(hi));
        // Bytes 8..12 len, 12..14 and 14..16 the two 16-bit words (little-endian).
        Some(RawDesc {
            addr: lo,
            len: hi as u32,
            w12: (hi >> 32) as u16,
            w14: (hi >> 48) as u16,
        })
    }
}

/// Most regions searched one by one before [`find_region_hinted`] falls back to vm-memory's binary
/// search (vhost-user front-ends send a handful: QEMU 8 by default).
const LINEAR_REGIONS: usize = 8;

/// No region index remembered (see [`find_region_hinted`]).
pub(crate) const NO_HINT: usize = usize::MAX;

/// The region of `mem` holding `addr`: a linear scan over a few regions (a few instructions
/// each) instead of vm-memory's binary search, which costs about 60 on the data path. Region
/// number `*hint` of `mem` is tried first, and the number of the region found is left in
/// `*hint` ([`NO_HINT`] when the binary search found it). The hint is only a
/// position to look at first: the region there is checked against `addr` like any other, so
/// a stale hint (another memory table, another layout) costs a scan, never a wrong answer.
#[inline]
pub(crate) fn find_region_hinted<'m>(
    mem: &'m GuestMemory,
    addr: u64,
    hint: &mut usize,
) -> Option<&'m vm_memory::GuestRegionMmap<()>> {
    let contains = |r: &vm_memory::GuestRegionMmap<()>| {
        let start = r.start_addr().raw_value();
        addr >= start && addr - start < r.len()
    };
    let n = mem.num_regions();
    if n > LINEAR_REGIONS {
        *hint = NO_HINT;
        return mem.find_region(GuestAddress(addr));
    }
    if *hint < n {
        if let Some(r) = mem.iter().nth(*hint).filter(|r| contains(r)) {
            return Some(r);
        }
    }
    let (i, r) = mem.iter().enumerate().find(|(_, r)| contains(r))?;
    *hint = i;
    Some(r)
}

/// The last guest-memory region a lookup found, kept for the length of one ring operation
/// (one pop, one publish): the ring's areas and a request's buffers usually lie in one or two
/// regions, so most accesses skip vm-memory's region search (about 60 instructions each).
/// Valid for the borrow of the [`GuestMemory`] it was filled from. [`GuestMemory`] has no
/// dirty bitmap (`()`), so a store through the host address skips no dirty-page logging; a
/// bitmap type would need its stores marked here as vm-memory's `store` does.
#[derive(Clone, Copy)]
pub(crate) struct RegionCache<'m> {
    /// First guest address of the cached region (`start > last` while empty).
    start: u64,
    /// Last guest address of the cached region.
    last: u64,
    /// Host address of `start`.
    host: *mut u8,
    /// Number of the region to look at first on a miss (a [`find_region_hinted`] hint; the
    /// ring keeps it between calls: a number, not a pointer).
    pub(crate) hint: usize,
    _mem: std::marker::PhantomData<&'m GuestMemory>,
}

impl<'m> RegionCache<'m> {
    /// An empty cache.
    #[inline]
    pub(crate) fn new() -> Self {
        Self::with_hint(NO_HINT)
    }

    /// An empty cache that looks at region number `hint` first.
    #[inline]
    pub(crate) fn with_hint(hint: usize) -> Self {
        RegionCache {
            start: 1,
            last: 0,
            host: std::ptr::null_mut(),
            hint,
            _mem: std::marker::PhantomData,
        }
    }

    /// The guest range `(first, last)` of the cached region (`first > last` when empty) and
    /// the host address of `first` (null when empty).
    #[inline]
    pub(crate) fn bounds(&self) -> (u64, u64, *mut u8) {
        (self.start, self.last, self.host)
    }

    /// Host address of `[addr, addr + len)` (`len >= 1`) if it lies wholly inside one region
    /// of `mem`; `None` otherwise (outside memory, or across regions: the caller then uses the
    /// checked path, which handles both).
    // Always inlined: a call costs as much as the access.
    #[inline(always)]
    pub(crate) fn host(&mut self, mem: &'m GuestMemory, addr: u64, len: u64) -> Option<*mut u8> {
        let end = addr.checked_add(len.checked_sub(1)?)?;
        if (addr < self.start || end > self.last) && !self.refill(mem, addr, end) {
            return None;
        }
        // SAFETY: `start <= addr <= end <= last`: the offset lies inside the region mapped at
        // `host`, which `mem` (borrowed for 'm) keeps mapped.
        Some(unsafe { self.host.add((addr - self.start) as usize) })
    }

    /// Looks up the region holding `addr` and caches it; whether it also holds `end`. Out of
    /// line: the cached region serves most calls.
    #[inline(never)]
    fn refill(&mut self, mem: &'m GuestMemory, addr: u64, end: u64) -> bool {
        let Some(r) = find_region_hinted(mem, addr, &mut self.hint) else {
            return false;
        };
        self.start = r.start_addr().raw_value();
        self.last = r.last_addr().raw_value();
        self.host = r.as_ptr();
        end <= self.last
    }

    /// Loads a little-endian u16 at `addr` (2-byte aligned), as [`load_u16`].
    // Always inlined: a call costs as much as the access.
    #[inline(always)]
    pub(crate) fn load_u16(
        &mut self,
        mem: &'m GuestMemory,
        addr: u64,
        order: Ordering,
    ) -> Option<u16> {
        match self.host(mem, addr, 2) {
            Some(p) if (p as usize).is_multiple_of(2) => {
                // SAFETY: two mapped bytes at `p` (host), 2-aligned; guest-shared memory is
                // accessed atomically, as vm-memory's own `load` does.
                let a = unsafe { &*(p as *const std::sync::atomic::AtomicU16) };
                Some(u16::from_le(a.load(order)))
            }
            _ => load_u16(mem, addr, order),
        }
    }

    /// Stores a little-endian u16 at `addr` (2-byte aligned), as [`store_u16`].
    // Always inlined: a call costs as much as the access.
    #[inline(always)]
    pub(crate) fn store_u16(
        &mut self,
        mem: &'m GuestMemory,
        addr: u64,
        v: u16,
        order: Ordering,
    ) -> Option<()> {
        match self.host(mem, addr, 2) {
            Some(p) if (p as usize).is_multiple_of(2) => {
                // SAFETY: as in `load_u16`.
                let a = unsafe { &*(p as *const std::sync::atomic::AtomicU16) };
                a.store(v.to_le(), order);
                Some(())
            }
            _ => store_u16(mem, addr, v, order),
        }
    }

    /// Stores a little-endian u32 at `addr` (4-byte aligned), as [`store_u32`].
    // Always inlined: a call costs as much as the access.
    #[inline(always)]
    pub(crate) fn store_u32(
        &mut self,
        mem: &'m GuestMemory,
        addr: u64,
        v: u32,
        order: Ordering,
    ) -> Option<()> {
        match self.host(mem, addr, 4) {
            Some(p) if (p as usize).is_multiple_of(4) => {
                // SAFETY: four mapped bytes at `p` (host), 4-aligned; atomic as in `load_u16`.
                let a = unsafe { &*(p as *const std::sync::atomic::AtomicU32) };
                a.store(v.to_le(), order);
                Some(())
            }
            _ => store_u32(mem, addr, v, order),
        }
    }
}

/// Loads a little-endian u16 (atomically, `addr` 2-byte aligned).
#[inline]
pub(crate) fn load_u16(mem: &GuestMemory, addr: u64, order: Ordering) -> Option<u16> {
    mem.load::<u16>(GuestAddress(addr), order)
        .ok()
        .map(u16::from_le)
}

/// Stores a little-endian u16 (atomically, `addr` 2-byte aligned).
#[inline]
pub(crate) fn store_u16(mem: &GuestMemory, addr: u64, v: u16, order: Ordering) -> Option<()> {
    mem.store::<u16>(v.to_le(), GuestAddress(addr), order).ok()
}

/// Stores a little-endian u32 (atomically, `addr` 4-byte aligned).
#[inline]
pub(crate) fn store_u32(mem: &GuestMemory, addr: u64, v: u32, order: Ordering) -> Option<()> {
    mem.store::<u32>(v.to_le(), GuestAddress(addr), order).ok()
}

/// Whether `[addr, addr + len)` lies wholly in guest memory (possibly across regions).
#[inline]
pub(crate) fn range_ok(mem: &GuestMemory, addr: u64, len: u64) -> bool {
    if len == 0 {
        return mem.address_in_range(GuestAddress(addr));
    }
    let Some(last) = GuestAddress(addr).checked_add(len - 1) else {
        return false;
    };
    // One region holding both ends is the common case: one region lookup, then arithmetic
    // (`find_region` guarantees the region starts at or before `addr`).
    match mem.find_region(GuestAddress(addr)) {
        Some(r) if last <= r.last_addr() => true,
        Some(_) => usize::try_from(len).is_ok_and(|l| mem.check_range(GuestAddress(addr), l)),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    // Test code: a failed unwrap is a failed test.
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// The linear scan finds the region vm-memory's binary search finds, for addresses in,
    /// between, before and after regions, with few regions and with many.
    #[test]
    fn find_region_agrees_with_vm_memory() {
        for n in [1u64, 3, 8, 9, 20] {
            // Regions of 0x1000 bytes with 0x1000-byte holes between them, from 0x10000.
            let ranges: Vec<(GuestAddress, usize)> = (0..n)
                .map(|i| (GuestAddress(0x10000 + i * 0x2000), 0x1000))
                .collect();
            let mem = GuestMemory::from_ranges(&ranges).unwrap();
            for addr in (0..0x10000 + n * 0x2000 + 0x3000).step_by(0x7f) {
                let ours = find_region_hinted(&mem, addr, &mut { NO_HINT }).map(|r| r.start_addr());
                let theirs = mem.find_region(GuestAddress(addr)).map(|r| r.start_addr());
                assert_eq!(ours, theirs, "{n} regions, address {addr:#x}");
                // Any hint, right, wrong, stale or out of range, gives the same answer.
                for h in [0, 1, 2, 7, 8, 19, 100, NO_HINT] {
                    let mut hint = h;
                    let hinted = find_region_hinted(&mem, addr, &mut hint).map(|r| r.start_addr());
                    assert_eq!(hinted, theirs, "{n} regions, address {addr:#x}, hint {h}");
                }
            }
        }
    }
}
