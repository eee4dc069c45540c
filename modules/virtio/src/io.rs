//! The virtio-user data path: one virtqueue per (bdev, thread) channel.
//!
//! - `submit` takes a free request slot (none: NOMEM, the bdev layer retries when one of this
//!   channel's requests completes), copies write data into the slot's bounce buffer, writes
//!   header and descriptors, publishes the chain and kicks the server only if EVENT_IDX says it
//!   is waiting. No allocation, no lock, no syscall otherwise.
//! - The channel's poller consumes the used ring, copies read data out of the bounce buffer,
//!   and completes the I/O with the status byte's verdict.
//! - Before the reactor sleeps with requests in flight, `can_sleep` empties the call eventfd,
//!   sets `used_event` (asks the server to signal the next completion), fences and checks the
//!   used ring once more; the call eventfd is registered with the reactor, so a completion
//!   wakes it. While polling, `used_event` is parked where the server never reaches it.
//! - A controller whose server went away is marked broken: the poller fails every request in
//!   flight and new requests fail at once. So is one that leaves a request unanswered longer
//!   than `timeout_us` (`timeout.rs`: a timed poller beside the channel's).
//!
//! A channel beyond the controller's queue count gets no queue and fails every I/O (as SPDK's
//! bdev_virtio does): one queue per channel, never shared between threads.

use std::cell::RefCell;
use std::os::fd::AsRawFd;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use ferrite_bdev::{BackendChannel, BdevIo, IoStatus, IoType, IoVec};
use ferrite_reactor::{FdRegistration, Poll, PollerHandle};

use crate::control::Ctrl;
use crate::queue::{Kind, Queue, BOUNCE_SIZE, T_DISCARD, T_FLUSH, T_IN, T_OUT, T_WRITE_ZEROES};

pub(crate) struct Inner {
    pub(crate) ctrl: Arc<Ctrl>,
    pub(crate) q: Option<Queue>,
}

pub(crate) struct Shared(pub(crate) Rc<RefCell<Inner>>);

// SAFETY: both holders of the Rc (the backend channel, kept in the bdev channel of one
// lightweight thread, and the poller registered on that same thread) belong to one
// lightweight thread and move with it; they are only used while it is polled.
unsafe impl Send for Shared {}

/// The per-thread backend channel of a virtio-user bdev.
pub(crate) struct VirtioChannel {
    inner: Shared,
    _poller: Option<PollerHandle>,
    /// The request timeout's timed poller (`timeout_us` set).
    _timeout: Option<PollerHandle>,
    _fd: Option<FdRegistration>,
}

struct VirtioPoller(Shared);

impl Poll for VirtioPoller {
    fn poll(&mut self) -> usize {
        match self.0 .0.try_borrow_mut() {
            Ok(mut i) => i.poll(),
            Err(_) => 0,
        }
    }

    fn can_sleep(&mut self) -> bool {
        match self.0 .0.try_borrow_mut() {
            Ok(mut i) => i.can_sleep(),
            Err(_) => false,
        }
    }
}

impl VirtioChannel {
    /// Creates the channel on the calling thread, taking a free queue of the controller.
    pub(crate) fn new(ctrl: Arc<Ctrl>) -> VirtioChannel {
        let q = ctrl.take_queue();
        if q.is_none() {
            tracing::warn!(
                "virtio-user '{}': no free virtqueue for this thread ({} in use); I/O from it will fail (raise vq_count)",
                ctrl.name,
                ctrl.queue_count
            );
        }
        let fd = q
            .as_ref()
            .and_then(|q| ferrite_reactor::register_fd(q.call.as_raw_fd()).ok());
        let rc = Rc::new(RefCell::new(Inner { ctrl, q }));
        let poller = ferrite_reactor::register_poller_obj(
            "bdev_virtio_poll",
            0,
            Box::new(VirtioPoller(Shared(rc.clone()))),
        )
        .map_err(|e| tracing::error!("virtio-user: cannot register the channel poller: {e}"))
        .ok();
        let timeout = crate::timeout::register(&rc);
        VirtioChannel {
            inner: Shared(rc),
            _poller: poller,
            _timeout: timeout,
            _fd: fd,
        }
    }
}

impl BackendChannel for VirtioChannel {
    #[inline]
    fn submit(&mut self, io: Box<BdevIo>) {
        match self.inner.0.try_borrow_mut() {
            Ok(mut i) => i.submit(io),
            Err(_) => io.complete(IoStatus::NoMem),
        }
    }
}

/// True if the I/O has one segment of `len` bytes lying inside one shared range.
#[inline]
fn direct(ranges: &[(usize, usize)], iovs: &[IoVec], len: usize) -> bool {
    let [v] = iovs else { return false };
    let a = v.base as usize;
    v.len == len
        && ranges
            .iter()
            .any(|&(s, e)| a >= s && a.saturating_add(len) <= e)
}

/// Copies the segments into `dst` (which holds their total length).
///
/// # Safety
/// Segments valid for reading; `dst` valid for their total length.
unsafe fn gather(dst: *mut u8, iovs: &[IoVec]) {
    let mut off = 0;
    for v in iovs {
        // SAFETY: caller's contract; distinct memory (ours vs the submitter's).
        unsafe { std::ptr::copy_nonoverlapping(v.base, dst.add(off), v.len) };
        off += v.len;
    }
}

/// Copies `src` out into the segments, `len` bytes at most.
///
/// # Safety
/// Segments valid for writing; `src` valid for `len` bytes.
unsafe fn scatter(src: *const u8, len: usize, iovs: &[IoVec]) {
    let mut off = 0;
    for v in iovs {
        let n = v.len.min(len - off);
        // SAFETY: caller's contract.
        unsafe { std::ptr::copy_nonoverlapping(src.add(off), v.base, n) };
        off += n;
        if off == len {
            break;
        }
    }
}

impl Inner {
    fn submit(&mut self, io: Box<BdevIo>) {
        let broken = self.ctrl.broken.load(Ordering::Relaxed);
        let Some(q) = self.q.as_mut() else {
            return io.complete(IoStatus::Failed);
        };
        if broken {
            return io.complete(IoStatus::Failed);
        }
        let bs = u64::from(io.block_size());
        let off = io.offset_blocks() * bs;
        let len = (io.num_blocks() * bs) as usize;
        let sector = off / 512;
        let (t, kind) = match io.io_type() {
            IoType::Read => (T_IN, Kind::Read),
            IoType::Write => (T_OUT, Kind::Write),
            IoType::Flush => (T_FLUSH, Kind::Other),
            IoType::Unmap => (T_DISCARD, Kind::Other),
            IoType::WriteZeroes => (T_WRITE_ZEROES, Kind::Other),
            _ => return io.complete(IoStatus::Failed),
        };
        if matches!(kind, Kind::Read | Kind::Write) && len > BOUNCE_SIZE {
            return io.complete(IoStatus::Failed);
        }
        let Some(s) = q.free.pop() else {
            return io.complete(IoStatus::NoMem);
        };
        let s = usize::from(s);
        let mut kind = kind;
        let mut data = q.bounce(s) as u64;
        let data_len = match kind {
            Kind::Read | Kind::Write if direct(&self.ctrl.zero_copy, io.iovs(), len) => {
                // Single segment inside shared pool memory: the server reads/writes it.
                data = io.iovs()[0].base as u64;
                kind = Kind::Direct;
                len
            }
            Kind::Write => {
                // SAFETY: the segments total `len` bytes and stay valid until completion; the
                // bounce buffer holds BOUNCE_SIZE >= len bytes.
                unsafe { gather(q.bounce(s), io.iovs()) };
                len
            }
            Kind::Read | Kind::Direct => len,
            Kind::Other if t == T_FLUSH => 0,
            Kind::Other => {
                let (max_sectors, max_seg) = if t == T_DISCARD {
                    (self.ctrl.max_discard_sectors, self.ctrl.max_discard_seg)
                } else {
                    (self.ctrl.max_wz_sectors, self.ctrl.max_wz_seg)
                };
                match write_segments(q.bounce(s), sector, len as u64 / 512, max_sectors, max_seg) {
                    Some(n) => n,
                    None => {
                        q.free.push(s as u16);
                        tracing::debug!(
                            "virtio-user '{}': {:?} of {len} bytes exceeds the device's limits",
                            self.ctrl.name,
                            io.io_type()
                        );
                        return io.complete(IoStatus::Failed);
                    }
                }
            }
        };
        let slot = &mut q.slots[s];
        slot.kind = kind;
        slot.len = len;
        slot.io = Some(io);
        q.post(s, t, sector, data, data_len);
    }

    pub(crate) fn poll(&mut self) -> usize {
        let Some(q) = self.q.as_mut() else { return 0 };
        if q.inflight == 0 {
            return 0;
        }
        if self.ctrl.broken.load(Ordering::Relaxed) {
            return fail_all(q);
        }
        q.ring.disarm();
        let mut n = 0;
        while let Some((id, _len)) = q.ring.pop_used() {
            let Some(s) = q.slot_of(id) else {
                tracing::error!(
                    "virtio-user '{}': the server returned descriptor {id}, which is not a request in flight; the device is broken",
                    self.ctrl.name
                );
                self.ctrl.broken.store(true, Ordering::Relaxed);
                return n + fail_all(q);
            };
            let status = q.status(s);
            let slot = &mut q.slots[s];
            let Some(io) = slot.io.take() else { continue };
            let kind = slot.kind;
            let len = slot.len;
            q.inflight -= 1;
            let st = if status == 0 {
                if kind == Kind::Read {
                    // SAFETY: the server finished with the bounce buffer (status written); the
                    // segments total `len` bytes and are valid until we complete the I/O.
                    unsafe { scatter(q.bounce(s), len, io.iovs()) };
                }
                IoStatus::Success
            } else {
                IoStatus::Failed
            };
            q.free.push(s as u16);
            io.complete(st);
            n += 1;
        }
        n
    }

    fn can_sleep(&mut self) -> bool {
        let Some(q) = self.q.as_mut() else {
            return true;
        };
        if q.inflight == 0 {
            return true;
        }
        if self.ctrl.broken.load(Ordering::Relaxed) {
            return false;
        }
        // Empty the eventfd first: a signal after this point wakes the reactor; a completion
        // before it is seen by arm()'s re-check.
        q.drain_call();
        !q.ring.arm()
    }
}

/// Fails every request in flight (the server is gone or broken). The slots are not reused.
pub(crate) fn fail_all(q: &mut Queue) -> usize {
    let mut n = 0;
    for slot in q.slots.iter_mut() {
        if let Some(io) = slot.io.take() {
            io.complete(IoStatus::Failed);
            n += 1;
        }
    }
    q.inflight = 0;
    n
}

/// Writes discard/write-zeroes segments (sector u64, num_sectors u32, flags u32) for
/// `sectors` sectors from `sector` into `dst`; returns their byte length, or `None` if the
/// range needs more segments than the device (or the bounce buffer) allows.
fn write_segments(
    dst: *mut u8,
    mut sector: u64,
    mut sectors: u64,
    max_sectors: u32,
    max_seg: u32,
) -> Option<usize> {
    let per = u64::from(if max_sectors == 0 {
        u32::MAX
    } else {
        max_sectors
    });
    let max_seg = (max_seg.max(1) as usize).min(BOUNCE_SIZE / 16);
    let mut n = 0usize;
    while sectors > 0 {
        if n == max_seg {
            return None;
        }
        let c = sectors.min(per);
        // SAFETY: n < BOUNCE_SIZE / 16, so the 16 bytes lie in the slot's bounce buffer.
        unsafe {
            let p = dst.add(16 * n);
            std::ptr::write_unaligned(p as *mut u64, sector.to_le());
            std::ptr::write_unaligned(p.add(8) as *mut u32, (c as u32).to_le());
            std::ptr::write_unaligned(p.add(12) as *mut u32, 0);
        }
        sector += c;
        sectors -= c;
        n += 1;
    }
    Some(16 * n)
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Some(q) = self.q.take() {
            self.ctrl.return_queue(q);
        }
    }
}
