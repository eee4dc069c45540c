//! The driver side of a split virtqueue (virtio 1.x, 2.7) in shared memory: descriptor table,
//! available ring (written by us), used ring (written by the device), and the EVENT_IDX fields
//! (`used_event` at the end of the available ring, `avail_event` at the end of the used ring).
//!
//! Memory ordering: the device is another process on another CPU. Descriptors and available
//! ring entries are written before the available index is published with a release store; a
//! SeqCst fence separates that store from the read of `avail_event` (or the used flags) that
//! decides whether to kick, so a device that went to sleep after its last look at our index is
//! always kicked. Used entries are read after an acquire load of the used index.
//!
//! Everything the device writes (used index, entries, `avail_event`) is untrusted: an entry
//! naming a descriptor that is not the head of a request in flight is reported to the caller,
//! which marks the device broken.
//!
//! Thread contract: a `DriverRing` is used by one lightweight thread at a time (the channel that
//! owns its queue).

use std::sync::atomic::{fence, AtomicU16, Ordering};

/// Descriptor continues in `next`.
pub const DESC_F_NEXT: u16 = 1;
/// Device writes this buffer.
pub const DESC_F_WRITE: u16 = 2;
/// avail.flags: no interrupt wanted (without EVENT_IDX).
const AVAIL_F_NO_INTERRUPT: u16 = 1;
/// used.flags: no notification wanted (without EVENT_IDX).
const USED_F_NO_NOTIFY: u16 = 1;

/// One descriptor as laid out in memory.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Desc {
    /// Buffer address ("guest physical": our own address, the memory table is identity).
    pub addr: u64,
    /// Buffer length.
    pub len: u32,
    /// `DESC_F_*`.
    pub flags: u16,
    /// Next descriptor when `DESC_F_NEXT`.
    pub next: u16,
}

/// Byte offsets of the three parts of a split ring of `size` entries, from its base, and the
/// total length (a multiple of 4 KiB).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RingLayout {
    /// Descriptor table (16 bytes × size).
    pub desc: usize,
    /// Available ring: flags, idx, ring[size], used_event.
    pub avail: usize,
    /// Used ring: flags, idx, ring[size] of (id, len), avail_event.
    pub used: usize,
    /// Bytes used, rounded up to 4 KiB.
    pub total: usize,
}

impl RingLayout {
    /// The layout for a queue of `size` entries.
    pub fn new(size: u16) -> RingLayout {
        let n = usize::from(size);
        let desc = 0;
        let avail = desc + 16 * n;
        let used = (avail + 4 + 2 * n + 2).next_multiple_of(4);
        let total = (used + 4 + 8 * n + 2).next_multiple_of(4096);
        RingLayout {
            desc,
            avail,
            used,
            total,
        }
    }
}

/// The driver's view of one split ring.
pub struct DriverRing {
    base: *mut u8,
    layout: RingLayout,
    size: u16,
    event_idx: bool,
    /// Our copy of avail.idx (next entry to publish).
    avail_idx: u16,
    /// Next used entry to consume.
    last_used: u16,
    /// True while completions should signal the call eventfd.
    armed: bool,
}

// SAFETY: the ring points into a shared mapping that outlives it (the controller keeps it
// until every queue is returned); it is used by one thread at a time (see the module docs).
unsafe impl Send for DriverRing {}

impl DriverRing {
    /// Wraps the ring at `base` (laid out by [`RingLayout::new`]), zeroes it, and starts with
    /// interrupts disarmed. `size` is a power of two (ring slots are indices masked with
    /// `size - 1`, which stays inside the ring whatever `size` is).
    ///
    /// # Safety
    /// `base..base + RingLayout::new(size).total` must be writable memory, aligned to 16, that
    /// outlives the ring and is touched only by it and the device.
    pub unsafe fn new(base: *mut u8, size: u16, event_idx: bool) -> DriverRing {
        let layout = RingLayout::new(size);
        // SAFETY: the caller guarantees the range is ours to write.
        unsafe { std::ptr::write_bytes(base, 0, layout.total) };
        let mut r = DriverRing {
            base,
            layout,
            size,
            event_idx,
            avail_idx: 0,
            last_used: 0,
            armed: true,
        };
        r.disarm();
        r
    }

    /// Address of the descriptor table.
    pub fn desc_addr(&self) -> u64 {
        self.base as u64 + self.layout.desc as u64
    }

    /// Address of the available ring.
    pub fn avail_addr(&self) -> u64 {
        self.base as u64 + self.layout.avail as u64
    }

    /// Address of the used ring.
    pub fn used_addr(&self) -> u64 {
        self.base as u64 + self.layout.used as u64
    }

    fn u16_at(&self, off: usize) -> &AtomicU16 {
        // SAFETY: every offset passed is inside the ring and 2-aligned (layout); AtomicU16 has
        // the layout of u16, and the memory lives as long as `self` (constructor contract).
        unsafe { &*(self.base.add(off) as *const AtomicU16) }
    }

    /// Writes descriptor `i` (`i < size`).
    #[inline]
    pub fn set_desc(&mut self, i: u16, d: Desc) {
        debug_assert!(i < self.size);
        let i = usize::from(i & (self.size - 1));
        // SAFETY: i < size, so the descriptor lies inside the table; 16-aligned.
        unsafe {
            std::ptr::write_volatile((self.base.add(self.layout.desc) as *mut Desc).add(i), d)
        };
    }

    /// Makes the chain starting at `head` available and says whether the device must be
    /// kicked (EVENT_IDX's `avail_event`, or the used ring's NO_NOTIFY flag).
    #[inline]
    pub fn publish(&mut self, head: u16) -> bool {
        let slot = usize::from(self.avail_idx & (self.size - 1));
        // SAFETY: slot < size: the entry lies inside the available ring.
        unsafe {
            std::ptr::write_volatile(
                (self.base.add(self.layout.avail + 4) as *mut u16).add(slot),
                head,
            )
        };
        let old = self.avail_idx;
        self.avail_idx = old.wrapping_add(1);
        self.u16_at(self.layout.avail + 2)
            .store(self.avail_idx, Ordering::Release);
        fence(Ordering::SeqCst);
        if self.event_idx {
            let off = self.layout.used + 4 + 8 * usize::from(self.size);
            let event = self.u16_at(off).load(Ordering::Acquire);
            need_event(event, self.avail_idx, old)
        } else {
            self.u16_at(self.layout.used).load(Ordering::Acquire) & USED_F_NO_NOTIFY == 0
        }
    }

    /// The next used entry (head id, bytes written), if the device has returned one.
    #[inline]
    pub fn pop_used(&mut self) -> Option<(u32, u32)> {
        let idx = self.u16_at(self.layout.used + 2).load(Ordering::Acquire);
        if idx == self.last_used {
            return None;
        }
        let slot = usize::from(self.last_used & (self.size - 1));
        // SAFETY: slot < size: the entry lies inside the used ring; 4-aligned.
        let (id, len) = unsafe {
            let p = self.base.add(self.layout.used + 4 + 8 * slot) as *const u32;
            (
                std::ptr::read_volatile(p),
                std::ptr::read_volatile(p.add(1)),
            )
        };
        self.last_used = self.last_used.wrapping_add(1);
        Some((id, len))
    }

    /// Entries the device has published beyond what we consumed (untrusted: may exceed size).
    pub fn used_pending(&self) -> u16 {
        self.u16_at(self.layout.used + 2)
            .load(Ordering::Acquire)
            .wrapping_sub(self.last_used)
    }

    /// Asks the device to signal the call eventfd at the next completion; returns true if a
    /// completion is already there (the caller must not sleep). Fenced so that a completion
    /// published after the device's look at `used_event` is seen here.
    pub fn arm(&mut self) -> bool {
        self.armed = true;
        if self.event_idx {
            let off = self.layout.avail + 4 + 2 * usize::from(self.size);
            self.u16_at(off).store(self.last_used, Ordering::Release);
        } else {
            self.u16_at(self.layout.avail).store(0, Ordering::Release);
        }
        fence(Ordering::SeqCst);
        self.used_pending() != 0
    }

    /// Stops completion signals (we are polling). Cheap when already disarmed.
    #[inline]
    pub fn disarm(&mut self) {
        if !self.armed {
            return;
        }
        self.armed = false;
        if self.event_idx {
            // A point the device cannot reach: at most `size` entries are ahead of last_used.
            let off = self.layout.avail + 4 + 2 * usize::from(self.size);
            self.u16_at(off)
                .store(self.last_used.wrapping_add(0x8000), Ordering::Relaxed);
        } else {
            self.u16_at(self.layout.avail)
                .store(AVAIL_F_NO_INTERRUPT, Ordering::Relaxed);
        }
    }
}

/// virtio's `vring_need_event`: true if the entry index `event` lies in [old, new) (mod 2^16):
/// the other side asked to be told when that entry is published (or consumed).
#[inline]
pub fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use super::*;

    #[test]
    fn need_event_window() {
        // Kick when the entry the device waits for (event) is among those just published:
        // old <= event < new, modulo 2^16.
        assert!(need_event(0, 1, 0));
        assert!(!need_event(1, 1, 0));
        assert!(!need_event(5, 3, 2));
        assert!(need_event(65535, 0, 65535));
        assert!(need_event(3, 5, 2));
        assert!(need_event(2, 5, 2));
        assert!(!need_event(5, 5, 2));
        assert!(!need_event(1, 5, 2));
    }

    #[test]
    fn publish_and_pop() {
        let size = 8u16;
        let l = RingLayout::new(size);
        let mut mem = vec![0u64; l.total / 8];
        // SAFETY: mem is large enough, 8-aligned (16 is not required for the test's reads).
        let mut r = unsafe { DriverRing::new(mem.as_mut_ptr() as *mut u8, size, true) };
        // avail_event = 0: the first publish (0 -> 1) must kick, the second not.
        assert!(r.publish(0));
        assert!(!r.publish(3));
        // Device side: consume, write used entries.
        let base = mem.as_mut_ptr() as *mut u8;
        // SAFETY: inside the ring.
        unsafe {
            let used = base.add(l.used);
            *(used.add(4) as *mut u32) = 3;
            *(used.add(8) as *mut u32) = 17;
            *(used.add(2) as *mut u16) = 1;
        }
        assert_eq!(r.pop_used(), Some((3, 17)));
        assert_eq!(r.pop_used(), None);
        assert!(!r.arm());
    }
}
