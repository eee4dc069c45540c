//! One virtqueue of a virtio-user controller with its request slots.
//!
//! Each request slot owns three fixed descriptors (header, data, status: `3 × slot`,
//! `3 × slot + 1`, `3 × slot + 2`; header and status are written once, when the queue is laid
//! out, the data descriptor per request), a 16-byte header, a status byte and a bounce buffer of
//! [`BOUNCE_SIZE`] bytes, all in the controller's shared memory. The data always goes through
//! the slot's bounce buffer: the bdev layer hands us buffers from anywhere in the process
//! (the bench's, a stacked module's), which the server cannot see. A request therefore needs
//! no allocation and exactly one data descriptor; I/O larger than the bounce buffer is split by
//! the bdev layer (the bdev's optimal I/O boundary).
//!
//! Thread contract: a `Queue` belongs to the controller while no channel uses it, and to one
//! channel (one lightweight thread) while it does.

use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use ferrite_bdev::BdevIo;
use vmm_sys_util::eventfd::EventFd;

use crate::ring::{Desc, DriverRing, RingLayout, DESC_F_NEXT, DESC_F_WRITE};

/// Bytes of bounce buffer per request slot (the largest request sent to the server).
pub const BOUNCE_SIZE: usize = 128 * 1024;
/// Bytes of header per slot.
const HDR_SIZE: usize = 16;

/// What a slot carries, to finish it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A read through the bounce buffer (copied out at completion).
    Read,
    /// A write through the bounce buffer (copied in at submission).
    Write,
    /// A read or write straight into/from the submitter's buffer (shared pool memory).
    Direct,
    /// Flush, discard, write-zeroes.
    Other,
}

pub(crate) struct Slot {
    pub io: Option<Box<BdevIo>>,
    pub kind: Kind,
    pub len: usize,
    /// The slot's header descriptor links to its data descriptor (else straight to the
    /// status descriptor, for requests without data).
    pub hdr_to_data: bool,
}

/// Counters of one queue, written only by the thread owning it (load + store, no
/// read-modify-write), read by `bdev_virtio_blk_get_controllers`.
#[derive(Debug, Default)]
pub struct QueueStats {
    /// Requests posted.
    pub requests: AtomicU64,
    /// Kicks written (eventfd writes): only when the server asked for one (EVENT_IDX).
    pub kicks: AtomicU64,
    /// Reads and writes whose data went through a bounce buffer (buffers outside shared
    /// memory).
    pub bounces: AtomicU64,
}

#[inline]
pub(crate) fn bump(c: &AtomicU64) {
    c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
}

/// Offsets of one queue's parts inside the shared memory, from the queue's base.
#[derive(Debug, Clone, Copy)]
pub struct QueueLayout {
    hdr: usize,
    status: usize,
    bounce: usize,
    /// Total bytes for the queue (4 KiB multiple).
    pub total: usize,
    /// Request slots.
    pub slots: usize,
}

impl QueueLayout {
    /// The layout for a queue of `size` descriptors.
    pub fn new(size: u16) -> QueueLayout {
        let ring = RingLayout::new(size);
        let slots = usize::from(size) / 3;
        let hdr = ring.total;
        let status = (hdr + slots * HDR_SIZE).next_multiple_of(64);
        let bounce = (status + slots).next_multiple_of(4096);
        let total = bounce + slots * BOUNCE_SIZE;
        QueueLayout {
            hdr,
            status,
            bounce,
            total,
            slots,
        }
    }
}

/// A virtqueue and its request slots.
pub struct Queue {
    /// Queue index on the device.
    pub index: u16,
    pub(crate) ring: DriverRing,
    base: usize,
    layout: QueueLayout,
    pub(crate) slots: Box<[Slot]>,
    pub(crate) free: Vec<u16>,
    pub(crate) inflight: usize,
    pub(crate) kick: Arc<EventFd>,
    pub(crate) call: Arc<EventFd>,
    pub(crate) stats: Arc<QueueStats>,
}

/// Virtio-blk request types.
pub(crate) const T_IN: u32 = 0;
pub(crate) const T_OUT: u32 = 1;
pub(crate) const T_FLUSH: u32 = 4;
pub(crate) const T_DISCARD: u32 = 11;
pub(crate) const T_WRITE_ZEROES: u32 = 13;

impl Queue {
    /// Lays out queue `index` at `base` (which must hold `QueueLayout::new(size).total`
    /// bytes of the controller's shared memory).
    ///
    /// # Safety
    /// `base..base + total` must be shared memory that outlives the queue, used by nothing
    /// else on our side.
    pub unsafe fn new(
        index: u16,
        base: usize,
        size: u16,
        event_idx: bool,
        kick: Arc<EventFd>,
        call: Arc<EventFd>,
    ) -> Queue {
        let layout = QueueLayout::new(size);
        // SAFETY: the ring is the first part of the range the caller gives us.
        let ring = unsafe { DriverRing::new(base as *mut u8, size, event_idx) };
        let slots: Vec<Slot> = (0..layout.slots)
            .map(|_| Slot {
                io: None,
                kind: Kind::Other,
                len: 0,
                hdr_to_data: true,
            })
            .collect();
        let mut q = Queue {
            index,
            ring,
            base,
            layout,
            slots: slots.into_boxed_slice(),
            free: (0..layout.slots as u16).rev().collect(),
            inflight: 0,
            kick,
            call,
            stats: Arc::new(QueueStats::default()),
        };
        // Each slot's header and status descriptors never change (the header's link only
        // for requests without data): written once here, not per request.
        for s in 0..layout.slots {
            q.write_hdr_desc(s, true);
            let d0 = (3 * s) as u16;
            let status = Desc {
                addr: q.status_ptr(s) as u64,
                len: 1,
                flags: DESC_F_WRITE,
                next: 0,
            };
            q.ring.set_desc(d0 + 2, status);
        }
        q
    }

    /// Writes slot `s`'s header descriptor, linked to the data descriptor or straight to the
    /// status descriptor.
    fn write_hdr_desc(&mut self, s: usize, to_data: bool) {
        let d0 = (3 * s) as u16;
        let hdr = Desc {
            addr: self.hdr(s) as u64,
            len: HDR_SIZE as u32,
            flags: DESC_F_NEXT,
            next: if to_data { d0 + 1 } else { d0 + 2 },
        };
        self.ring.set_desc(d0, hdr);
        self.slots[s].hdr_to_data = to_data;
    }

    /// Address of slot `s`'s bounce buffer.
    #[inline]
    pub(crate) fn bounce(&self, s: usize) -> *mut u8 {
        (self.base + self.layout.bounce + s * BOUNCE_SIZE) as *mut u8
    }

    fn hdr(&self, s: usize) -> *mut u8 {
        (self.base + self.layout.hdr + s * HDR_SIZE) as *mut u8
    }

    fn status_ptr(&self, s: usize) -> *mut u8 {
        (self.base + self.layout.status + s) as *mut u8
    }

    /// The status byte the device wrote for slot `s`.
    #[inline]
    pub(crate) fn status(&self, s: usize) -> u8 {
        // SAFETY: inside the queue's status area.
        unsafe { std::ptr::read_volatile(self.status_ptr(s)) }
    }

    /// Writes slot `s`'s header and descriptors for a request of type `t` at `sector` with
    /// `data_len` bytes of data at `data` (the slot's bounce buffer, or shared pool memory;
    /// none for flush), and publishes it. Kicks the device if it asked to be kicked.
    #[inline]
    pub(crate) fn post(&mut self, s: usize, t: u32, sector: u64, data: u64, data_len: usize) {
        let hdr = self.hdr(s);
        // SAFETY: the header lies inside the queue's header area; the device reads it only
        // after publication.
        unsafe {
            std::ptr::write_volatile(hdr as *mut u32, t);
            std::ptr::write_volatile(hdr.add(4) as *mut u32, 0);
            std::ptr::write_volatile(hdr.add(8) as *mut u64, sector);
            std::ptr::write_volatile(self.status_ptr(s), 0xff);
        }
        let d0 = (3 * s) as u16;
        let to_data = data_len != 0;
        if self.slots[s].hdr_to_data != to_data {
            self.write_hdr_desc(s, to_data);
        }
        if to_data {
            let wflag = if t == T_IN { DESC_F_WRITE } else { 0 };
            self.ring.set_desc(
                d0 + 1,
                Desc {
                    addr: data,
                    len: data_len as u32,
                    flags: DESC_F_NEXT | wflag,
                    next: d0 + 2,
                },
            );
        }
        self.inflight += 1;
        bump(&self.stats.requests);
        if data == self.bounce(s) as u64 && (t == T_IN || t == T_OUT) {
            bump(&self.stats.bounces);
        }
        if self.ring.publish(d0) {
            // One syscall, only when the device is waiting for it (EVENT_IDX).
            bump(&self.stats.kicks);
            let _ = self.kick.write(1);
        }
    }

    /// Maps a used id to a slot in flight, or `None` for an id no request of ours has.
    #[inline]
    pub(crate) fn slot_of(&self, id: u32) -> Option<usize> {
        if !id.is_multiple_of(3) {
            return None;
        }
        let s = (id / 3) as usize;
        self.slots.get(s).filter(|sl| sl.io.is_some()).map(|_| s)
    }

    /// Empties the call eventfd (non-blocking).
    pub(crate) fn drain_call(&self) {
        let mut v = 0u64;
        // SAFETY: reads 8 bytes into `v` from our non-blocking eventfd.
        unsafe {
            libc::read(
                self.call.as_raw_fd(),
                &mut v as *mut u64 as *mut libc::c_void,
                8,
            )
        };
    }
}
