//! Validation shared by split and packed chains: adding a segment with its checks, and
//! following an indirect table.

use vm_memory::{Address, GuestMemoryRegion as _};

use crate::mem::{
    find_region_hinted, range_ok, read_desc, RegionCache, F_INDIRECT, F_NEXT, F_WRITE, NO_HINT,
};
use crate::{Chain, ChainDefect, GuestMemory, Segment, MAX_SEGS};

/// Most entries an indirect table may have (its length is a u32; the table is walked with
/// 16-bit indices).
const MAX_INDIRECT: u32 = crate::MAX_QUEUE_SIZE as u32;

/// Validation state while a chain is built into a [`Chain`].
pub(crate) struct Builder {
    seen_writable: bool,
    total: u64,
    /// Guest range `[first, last]` and host address of `first` of the region the ring's own
    /// areas lie in (seeded from the pop's cache; `first > last`: none): a request's header
    /// and status usually lie there.
    ring: Span,
    /// The same for the region the last buffer outside `ring` lay in (usually the data's).
    /// Both are valid for one walk over one memory.
    other: Span,
    /// Number of the region to look at first when a buffer lies in neither (see
    /// [`find_region_hinted`]); the ring keeps it from walk to walk.
    pub(crate) hint: usize,
}

/// A region's guest range `[first, last]` and the host address of `first`. Valid for the
/// borrow of the memory it was found in (a [`crate::PopBatch`] keeps one for its batch).
#[derive(Clone, Copy)]
pub(crate) struct Span {
    first: u64,
    last: u64,
    host: *mut u8,
}

impl Span {
    pub(crate) const EMPTY: Span = Span {
        first: 1,
        last: 0,
        host: std::ptr::null_mut(),
    };

    /// Host address of `addr` if `[addr, end]` lies in the span.
    #[inline]
    fn get(&self, addr: u64, end: u64) -> Option<*mut u8> {
        if addr < self.first || end > self.last {
            return None;
        }
        // SAFETY: `first <= addr <= end <= last`: the offset lies inside the region mapped at
        // `host` (no dereference here; the address is handed to the caller with the chain).
        Some(unsafe { self.host.add((addr - self.first) as usize) })
    }
}

impl Builder {
    pub(crate) fn new() -> Self {
        Builder {
            seen_writable: false,
            total: 0,
            ring: Span::EMPTY,
            other: Span::EMPTY,
            hint: NO_HINT,
        }
    }

    /// Starts with the region `cache` holds (the one the ring's own areas lie in) and `other`
    /// (the region the previous chain's buffers outside it lay in, from the same memory, or
    /// [`Span::EMPTY`]), looking at region number `hint` first for buffers outside both.
    pub(crate) fn seeded(cache: &RegionCache<'_>, other: Span, hint: usize) -> Self {
        let (first, last, host) = cache.bounds();
        Builder {
            seen_writable: false,
            total: 0,
            ring: Span { first, last, host },
            other,
            hint,
        }
    }

    /// The region the last buffer outside the ring's region lay in (for the next chain of
    /// the same batch).
    pub(crate) fn other(&self) -> Span {
        self.other
    }

    /// Whether `[addr, addr + len)` (`len >= 1`) lies in guest memory: `Some(host address)`
    /// when it lies in one region, `Some(null)` when it spans regions (still all guest
    /// memory), `None` when any of it is outside guest memory.
    #[inline]
    fn in_memory(&mut self, mem: &GuestMemory, addr: u64, len: u32) -> Option<*mut u8> {
        let end = addr.checked_add(u64::from(len) - 1)?;
        if let Some(h) = self.ring.get(addr, end) {
            return Some(h);
        }
        if let Some(h) = self.other.get(addr, end) {
            return Some(h);
        }
        self.lookup(mem, addr, end)
    }

    /// [`Builder::in_memory`] for a buffer outside both cached regions. Out of line.
    #[inline(never)]
    fn lookup(&mut self, mem: &GuestMemory, addr: u64, end: u64) -> Option<*mut u8> {
        let r = find_region_hinted(mem, addr, &mut self.hint);
        let Some(r) = r.filter(|r| end <= r.last_addr().raw_value()) else {
            return range_ok(mem, addr, end - addr + 1).then_some(std::ptr::null_mut());
        };
        self.other = Span {
            first: r.start_addr().raw_value(),
            last: r.last_addr().raw_value(),
            host: r.as_ptr(),
        };
        self.other.get(addr, end)
    }

    /// Adds one buffer to `out`, checking length, direction order, count, total size and
    /// that it lies in guest memory.
    #[inline]
    pub(crate) fn add(
        &mut self,
        mem: &GuestMemory,
        out: &mut Chain,
        addr: u64,
        len: u32,
        writable: bool,
    ) -> Result<(), ChainDefect> {
        if len == 0 {
            return Err(ChainDefect::ZeroLength);
        }
        if !writable && self.seen_writable {
            return Err(ChainDefect::WrongDirection);
        }
        let n = out.count as usize;
        if n >= MAX_SEGS {
            return Err(ChainDefect::TooLong { max: MAX_SEGS });
        }
        self.total += u64::from(len);
        if self.total > u64::from(u32::MAX) {
            return Err(ChainDefect::Oversize);
        }
        let Some(host) = self.in_memory(mem, addr, len) else {
            return Err(ChainDefect::OutOfMemory { addr, len });
        };
        self.seen_writable |= writable;
        out.segs[n] = Segment {
            addr,
            len,
            device_writable: writable,
        };
        out.hosts[n] = host as usize;
        out.count += 1;
        Ok(())
    }

    /// Follows the indirect table `[addr, addr + len)`. Split tables are walked by their
    /// `next` links from entry 0; packed tables are read in order, every entry.
    pub(crate) fn indirect(
        &mut self,
        mem: &GuestMemory,
        out: &mut Chain,
        addr: u64,
        len: u32,
        packed: bool,
    ) -> Result<(), ChainDefect> {
        if len == 0 || !len.is_multiple_of(16) || len / 16 > MAX_INDIRECT {
            return Err(ChainDefect::BadIndirectLength { len });
        }
        if !range_ok(mem, addr, u64::from(len)) {
            return Err(ChainDefect::OutOfMemory { addr, len });
        }
        let n = (len / 16) as u16;
        let mut i: u16 = 0;
        let mut steps: u32 = 0;
        loop {
            let at = addr + 16 * u64::from(i);
            let d = read_desc(mem, at).ok_or(ChainDefect::Unreadable { addr: at })?;
            let flags = if packed { d.w14 } else { d.w12 };
            if flags & F_INDIRECT != 0 {
                return Err(ChainDefect::NestedIndirect);
            }
            self.add(mem, out, d.addr, d.len, flags & F_WRITE != 0)?;
            steps += 1;
            if packed {
                if steps == u32::from(n) {
                    return Ok(());
                }
                i += 1;
            } else {
                if flags & F_NEXT == 0 {
                    return Ok(());
                }
                if d.w14 >= n {
                    return Err(ChainDefect::IndexOutOfRange {
                        index: d.w14,
                        size: n,
                    });
                }
                if steps >= u32::from(n) {
                    return Err(ChainDefect::Loop);
                }
                i = d.w14;
            }
        }
    }
}

/// The status segment of a refused chain whose last descriptor is `(addr, len, flags)`: only
/// if it is device-writable, not indirect, non-empty and wholly in guest memory (see
/// [`crate::RingError::status_hint`]).
pub(crate) fn status_segment(
    mem: &GuestMemory,
    addr: u64,
    len: u32,
    flags: u16,
) -> Option<Segment> {
    if flags & F_WRITE == 0 || flags & F_INDIRECT != 0 || len == 0 {
        return None;
    }
    if !range_ok(mem, addr, u64::from(len)) {
        return None;
    }
    Some(Segment {
        addr,
        len,
        device_writable: true,
    })
}

/// The last descriptor `(addr, len, flags)` of the indirect table `[addr, addr + len)` if the
/// table is well formed: a length the walk accepts, in guest memory, every entry visited
/// readable and not indirect, split `next` links in the table and not looping. Touches at
/// most the table's entries (no more than [`MAX_INDIRECT`]).
pub(crate) fn indirect_tail(
    mem: &GuestMemory,
    addr: u64,
    len: u32,
    packed: bool,
) -> Option<(u64, u32, u16)> {
    if len == 0 || !len.is_multiple_of(16) || len / 16 > MAX_INDIRECT {
        return None;
    }
    if !range_ok(mem, addr, u64::from(len)) {
        return None;
    }
    let n = (len / 16) as u16;
    let mut i: u16 = 0;
    let mut steps: u32 = 0;
    loop {
        let d = read_desc(mem, addr + 16 * u64::from(i))?;
        let flags = if packed { d.w14 } else { d.w12 };
        if flags & F_INDIRECT != 0 {
            return None;
        }
        steps += 1;
        if packed {
            if steps == u32::from(n) {
                return Some((d.addr, d.len, flags));
            }
            i += 1;
        } else {
            if flags & F_NEXT == 0 {
                return Some((d.addr, d.len, flags));
            }
            if d.w14 >= n || steps >= u32::from(n) {
                return None;
            }
            i = d.w14;
        }
    }
}
