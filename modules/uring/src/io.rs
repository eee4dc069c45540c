//! The uring data path: one io_uring per (bdev, thread) channel.
//!
//! - `submit` takes a free slot (none free: NOMEM, and the bdev layer retries when one of this
//!   channel's I/O completes) and pushes one SQE whose user data is the slot index; the I/O
//!   object stays in the slot, owning its segments, until its CQE is reaped. Segments that
//!   miss the direct-I/O alignment go through a bounce buffer.
//! - Reads and writes go to the kernel in their submit call (one `io_uring_enter` each, as fio
//!   does); the channel's poller submits whatever else is queued with one `io_uring_enter` per
//!   poll and reaps the completion queue (shared memory: no syscall when idle).
//! - The channel's eventfd is registered with the ring (`register_eventfd`) and with the
//!   reactor (`register_fd`): a reactor sleeping with I/O in flight wakes on the completion.
//!   While the reactor polls, the kernel is told not to signal it (`IORING_CQ_EVENTFD_DISABLED`,
//!   set by `poll`, cleared by `can_sleep` before it looks at the completion queue).
//! - Flush is `IORING_OP_FSYNC` with `DATASYNC`; unmap of a file and write-zeroes are
//!   `IORING_OP_FALLOCATE` (punch hole / zero range); unmap of a block device (BLKDISCARD)
//!   runs on a helper thread, as does fallocate on kernels without the opcode.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use ferrite_aio::bounce::{fill_iovecs, iovec_ptr, KernelIoVec};
use ferrite_aio::chan::{ChanState, Polled};
use ferrite_aio::file::{FileDisk, FileKind};
use ferrite_aio::helper::{self, SlowOp};
use ferrite_aio::slots::Slots;
use ferrite_aio::sys;
use ferrite_bdev::{BackendChannel, BdevIo, IoStatus, IoType};
use ferrite_reactor::{FdRegistration, PollerHandle, ReactorPin};
use io_uring::{opcode, squeue, types, IoUring};

use crate::sync::{IoPath, SyncCopy};
use crate::wake;

/// `io_uring_enter` flag: run (and, with a minimum, wait for) completions.
const IORING_ENTER_GETEVENTS: u32 = 1;

/// Requests in flight per channel (submission queue entries and slots).
pub const URING_SLOTS: usize = 256;

/// What a slot's request does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// A read.
    Read,
    /// A write.
    Write,
    /// A flush (fdatasync).
    Flush,
    /// Punch hole or zero range.
    Fallocate,
}

struct Inner {
    disk: Arc<FileDisk>,
    ring: Option<IoUring>,
    fallocate_op: bool,
    efd: Option<OwnedFd>,
    efd_registered: bool,
    /// The kernel signals the eventfd on completions (`IORING_CQ_EVENTFD_DISABLED` clear):
    /// only while the reactor may go to sleep, not while it polls.
    efd_on: bool,
    slots: Slots<Kind>,
    /// How reads and writes are done (chosen per file at open).
    path: IoPath,
    sync: SyncCopy,
    /// SQEs pushed and not yet reaped (submitted or not).
    inflight: usize,
    /// Held while the ring can only be entered from this OS thread (deferred task running).
    _pin: Option<ReactorPin>,
    /// The ring defers completions to this task (`IORING_SETUP_DEFER_TASKRUN`).
    deferred: bool,
    /// Deferred ring: the last poll reaped completions, so the kernel may hold more it was not
    /// allowed to post in that call (it posts a bounded batch per enter, 20 on 6.18): enter
    /// again before trusting an empty queue rather than rely on the task-run flag for them.
    more: bool,
}

/// The per-thread backend channel of a uring bdev. Its state is shared with its poller
/// (`None`: the state could not be set up, and every I/O fails).
pub(crate) struct UringChannel {
    inner: Option<ChanState<Inner>>,
    _poller: Option<PollerHandle>,
    _fd: Option<FdRegistration>,
}

impl UringChannel {
    /// Creates the channel on the calling thread: ring, eventfd, poller. A ring that cannot be
    /// created leaves a channel that fails every I/O, with the reason logged.
    pub(crate) fn new(disk: Arc<FileDisk>, fallocate_op: bool, path: IoPath) -> UringChannel {
        let (ring, pin) = match new_ring() {
            Ok((r, pin)) => (Some(r), pin),
            Err(e) => {
                tracing::error!(
                    "bdev '{}': io_uring_setup({URING_SLOTS}) failed: {e}; I/O on this thread will fail",
                    disk.name
                );
                (None, None)
            }
        };
        let efd = sys::completion_eventfd(&disk.name);
        let mut fd_reg = None;
        if let (Some(r), Some(f)) = (&ring, &efd) {
            match r.submitter().register_eventfd(f.as_raw_fd()) {
                Ok(()) => fd_reg = ferrite_reactor::register_fd(f.as_raw_fd()).ok(),
                Err(e) => tracing::warn!(
                    "bdev '{}': cannot register an eventfd with the ring ({e}): the reactor will not sleep while I/O is in flight",
                    disk.name
                ),
            }
        }
        let inner = Inner {
            disk,
            ring,
            fallocate_op,
            efd_registered: fd_reg.is_some(),
            efd_on: true,
            efd,
            slots: Slots::new(URING_SLOTS, Kind::Read),
            path,
            sync: SyncCopy::new(),
            inflight: 0,
            deferred: pin.is_some(),
            more: false,
            _pin: pin,
        };
        let name = format!("bdev_uring:{}", inner.disk.name);
        let (inner, poller) = ferrite_aio::chan::start(&name, "bdev_uring_poll", inner);
        UringChannel {
            inner,
            _poller: poller,
            _fd: fd_reg,
        }
    }
}

/// A ring of [`URING_SLOTS`] entries, set up for one issuer with deferred task running where
/// the kernel has it (6.1+): completions are queued for this task, which posts them when it
/// enters the kernel with `GETEVENTS`; the first one of a batch sets `IORING_SQ_TASKRUN` (the
/// poller enters when it sees it) and signals the eventfd (a sleeping reactor wakes at once,
/// from the completion interrupt, as with aio; without it the kernel interrupts the sleep with
/// a signal-like notification and posts the completions on the way out). Such a ring can only
/// be entered by the OS thread that created it: the returned pin keeps this lightweight thread
/// on its reactor. Older kernels get cooperative task running (5.19+), or a plain ring.
fn new_ring() -> std::io::Result<(IoUring, Option<ReactorPin>)> {
    let deferred = RingKind::Deferred.build();
    let e = match deferred {
        Ok(r) => match ferrite_reactor::pin_to_reactor() {
            Ok(pin) => return Ok((r, Some(pin))),
            // Off a lightweight thread (cannot happen for a channel): no deferred running.
            Err(_) => std::io::Error::from_raw_os_error(libc::EINVAL),
        },
        Err(e) => e,
    };
    if e.raw_os_error() != Some(libc::EINVAL) {
        return Err(e);
    }
    match RingKind::Coop.build() {
        Err(e) if e.raw_os_error() == Some(libc::EINVAL) => Ok((RingKind::Plain.build()?, None)),
        r => r.map(|r| (r, None)),
    }
}

/// The ring set-ups a channel may use, from the most capable ([`new_ring`] picks).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RingKind {
    /// Single issuer, deferred task running (6.1+), task-run flag.
    Deferred,
    /// Cooperative task running (5.19+), task-run flag.
    Coop,
    /// Neither.
    Plain,
}

impl RingKind {
    /// A ring of [`URING_SLOTS`] entries set up this way (EINVAL: the kernel lacks it).
    pub(crate) fn build(self) -> std::io::Result<IoUring> {
        let mut b = IoUring::builder();
        match self {
            Self::Deferred => {
                b.setup_coop_taskrun()
                    .setup_taskrun_flag()
                    .setup_single_issuer()
                    .setup_defer_taskrun();
            }
            Self::Coop => {
                b.setup_coop_taskrun().setup_taskrun_flag();
            }
            Self::Plain => {}
        }
        b.build(URING_SLOTS as u32)
    }
}

impl BackendChannel for UringChannel {
    fn submit(&mut self, io: Box<BdevIo>) {
        let Some(state) = &self.inner else {
            return io.complete(IoStatus::Failed);
        };
        state.submit(io, Inner::submit);
    }
}

impl Inner {
    fn submit(&mut self, io: Box<BdevIo>) {
        if self.ring.is_none() {
            return io.complete(IoStatus::Failed);
        }
        let bs = u64::from(io.block_size());
        let off = io.offset_blocks() * bs;
        let len = io.num_blocks() * bs;
        let regular = self.disk.kind == FileKind::Regular;
        let keep = libc::FALLOC_FL_KEEP_SIZE;
        match io.io_type() {
            IoType::Read | IoType::Write if self.path == IoPath::MemoryCopy => {
                let write = io.io_type() == IoType::Write;
                self.sync.rw(&self.disk, io, off, len, write)
            }
            IoType::Read | IoType::Write => self.submit_rw(io, off, len),
            IoType::Flush => {
                let fd = types::Fd(self.disk.raw_fd());
                let e = opcode::Fsync::new(fd)
                    .flags(types::FsyncFlags::DATASYNC)
                    .build();
                self.push(io, e, Kind::Flush, 0)
            }
            IoType::Unmap if !regular => {
                helper::submit(&self.disk, SlowOp::Discard { off, len }, io)
            }
            IoType::Unmap | IoType::WriteZeroes => {
                let mode = if io.io_type() == IoType::Unmap {
                    libc::FALLOC_FL_PUNCH_HOLE | keep
                } else {
                    libc::FALLOC_FL_ZERO_RANGE | keep
                };
                if !self.fallocate_op {
                    return helper::submit(&self.disk, SlowOp::Fallocate { mode, off, len }, io);
                }
                let fd = types::Fd(self.disk.raw_fd());
                let e = opcode::Fallocate::new(fd, len)
                    .offset(off)
                    .mode(mode)
                    .build();
                self.push(io, e, Kind::Fallocate, 0)
            }
            _ => io.complete(IoStatus::Failed),
        }
    }

    /// Queues a non-data SQE built by the caller (it points at no memory of ours).
    fn push(&mut self, io: Box<BdevIo>, e: squeue::Entry, kind: Kind, expect: u64) {
        let Some(idx) = self.slots.alloc() else {
            return io.complete(IoStatus::NoMem);
        };
        self.slots.fill(idx, io, kind, expect);
        self.enqueue(idx, e);
    }

    /// Pushes an SQE for slot `idx` (whose I/O is in place).
    fn enqueue(&mut self, idx: u32, e: squeue::Entry) {
        let e = e.user_data(u64::from(idx));
        let Some(ring) = self.ring.as_mut() else {
            return self.fail_slot(idx as usize);
        };
        // SAFETY: the entry's buffers (the slot's iovec array and the segments or bounce buffer
        // it points to) belong to the I/O held in slot `idx`, untouched until its CQE is
        // reaped; non-data entries point at nothing.
        let pushed = unsafe { ring.submission().push(&e) };
        if pushed.is_err() {
            // Cannot happen (no more slots than SQ entries, and the poller submits all it
            // queues); fail rather than lose the I/O.
            return self.fail_slot(idx as usize);
        }
        self.inflight += 1;
    }

    fn fail_slot(&mut self, idx: usize) {
        if let Some(f) = self.slots.finish(idx) {
            drop(f.bounce);
            f.io.complete(IoStatus::Failed);
        }
    }

    fn submit_rw(&mut self, io: Box<BdevIo>, off: u64, len: u64) {
        let Some(idx) = self.slots.alloc() else {
            return io.complete(IoStatus::NoMem);
        };
        let write = io.io_type() == IoType::Write;
        if self.disk.needs_bounce(io.iovs()) {
            let Some(p) = self.slots.bounce(idx, &io, len, write, &self.disk) else {
                self.slots.release(idx);
                return io.complete(IoStatus::NoMem);
            };
            let iovs = &mut self.slots.get_mut(idx).iovs;
            iovs.clear();
            iovs.push(KernelIoVec::new(p, len as usize));
        } else {
            fill_iovecs(&mut self.slots.get_mut(idx).iovs, io.iovs());
        }
        let fd = types::Fd(self.disk.raw_fd());
        let iovs = &self.slots.get_mut(idx).iovs;
        let (p, n) = (iovec_ptr(iovs), iovs.len() as u32);
        // One segment: the non-vectored opcodes (the kernel does not copy an iovec array in).
        let one = match iovs.as_slice() {
            [v] => u32::try_from(v.len()).ok().map(|l| (v.base(), l)),
            _ => None,
        };
        let e = match (write, one) {
            (true, Some((b, l))) => opcode::Write::new(fd, b, l).offset(off).build(),
            (false, Some((b, l))) => opcode::Read::new(fd, b, l).offset(off).build(),
            (true, _) => opcode::Writev::new(fd, p, n).offset(off).build(),
            (false, _) => opcode::Readv::new(fd, p, n).offset(off).build(),
        };
        let kind = if write { Kind::Write } else { Kind::Read };
        self.slots.fill(idx, io, kind, len);
        self.enqueue(idx, e);
        // A device starts on a request as soon as it gets it: at queue depth 32 on a virtual
        // disk, one enter per request (as fio does) gave ~20 % more IOPS than one per poll for
        // the whole batch (docs/PERFORMANCE.md, "Disk I/O"). This path serves disk files and
        // devices only (memory-backed filesystems take the copy path, `sync.rs`). An enter
        // that fails leaves the entry queued for the poller, which retries or reports it.
        if let Some(ring) = self.ring.as_mut() {
            let _ = ring.submit();
        }
    }

    fn poll(&mut self) -> usize {
        let Some(ring) = self.ring.as_mut() else {
            return 0;
        };
        // Polling: no eventfd signal per completion batch; `can_sleep` turns it back on.
        wake::disarm(ring, &mut self.efd_on);
        let mut work = 0;
        let (queued, taskrun) = {
            let sq = ring.submission();
            (sq.len(), self.inflight > 0 && (sq.taskrun() || self.more))
        };
        // Completions the kernel has flagged but not posted (cooperative or deferred task
        // running) are posted by an enter with GETEVENTS.
        if queued > 0 || taskrun {
            let r = if self.deferred && self.inflight > 0 {
                // SAFETY: plain io_uring_enter on our ring: `queued` SQEs were pushed (their
                // tail published when the queue handle above was dropped), no wait, no argument.
                unsafe {
                    ring.submitter().enter::<libc::sigset_t>(
                        queued as u32,
                        0,
                        IORING_ENTER_GETEVENTS,
                        None,
                    )
                }
            } else {
                ring.submit()
            };
            match r {
                Ok(n) => work += n,
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EAGAIN) | Some(libc::EBUSY) | Some(libc::EINTR)
                    ) => {} // retry next poll
                Err(e) => tracing::warn!("bdev '{}': io_uring_enter: {e}", self.disk.name),
            }
        }
        if self.inflight > 0 {
            let n = self.reap();
            self.more = self.deferred && n > 0;
            work += n;
        } else {
            self.more = false;
        }
        work
    }

    fn reap(&mut self) -> usize {
        let mut n = 0;
        loop {
            let next = self.ring.as_mut().and_then(|r| r.completion().next());
            let Some(cqe) = next else { break };
            self.completed(cqe.user_data() as usize, cqe.result());
            n += 1;
        }
        n
    }

    fn completed(&mut self, idx: usize, res: i32) {
        let Some(f) = self.slots.finish(idx) else {
            return;
        };
        self.inflight = self.inflight.saturating_sub(1);
        let res = i64::from(res);
        match f.kind {
            Kind::Flush | Kind::Fallocate if res == 0 => f.io.complete(IoStatus::Success),
            Kind::Flush | Kind::Fallocate => f.complete_failed(&self.disk, res),
            Kind::Read => f.complete_rw(&self.disk, res, true),
            Kind::Write => f.complete_rw(&self.disk, res, false),
        }
    }

    fn can_sleep(&mut self) -> bool {
        let Some(ring) = self.ring.as_mut() else {
            return true;
        };
        {
            let sq = ring.submission();
            if !sq.is_empty() || sq.taskrun() || self.more {
                return false;
            }
        }
        if self.inflight == 0 {
            return true;
        }
        if !self.efd_registered {
            return false;
        }
        // Turn the eventfd on and reset it, then look (see `wake`, and its test).
        let mut ops = wake::RingWake {
            ring,
            efd: self.efd.as_ref().map(|f| f.as_raw_fd()),
        };
        wake::arm(&mut ops, &mut self.efd_on)
    }
}

impl Polled for Inner {
    fn poll(&mut self) -> usize {
        Inner::poll(self)
    }

    fn can_sleep(&mut self) -> bool {
        Inner::can_sleep(self)
    }

    fn waits_on_kernel(&mut self) -> bool {
        self.inflight > 0
            && self.efd_registered
            && self
                .ring
                .as_mut()
                .is_some_and(|r| r.submission().is_empty())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Only at thread teardown can requests still be in flight: wait for them before the
        // slots (and the buffers the kernel may still write) are freed. Closing a ring does
        // not wait for its requests, so a wait that cannot finish leaks the slots instead.
        if let Some(ring) = self.ring.as_mut() {
            let mut failures = 0u32;
            while self.inflight > 0 {
                if let Err(e) = ring.submit_and_wait(1) {
                    let transient = matches!(
                        e.raw_os_error(),
                        Some(libc::EINTR | libc::EAGAIN | libc::EBUSY)
                    );
                    failures += 1;
                    // A ring that refuses to be entered (not this thread's, or closed) will
                    // not start working; a transient error is retried a bounded number of
                    // times (every retry waits for at least one completion when it works).
                    if !transient || failures > 10_000 {
                        tracing::error!(
                            "uring bdev '{}': cannot wait for {} request(s) in flight at teardown ({e}); their buffers are leaked, not freed",
                            self.disk.name,
                            self.inflight
                        );
                        self.slots.leak();
                        break;
                    }
                }
                let mut got = 0;
                for _ in ring.completion() {
                    got += 1;
                }
                self.inflight = self.inflight.saturating_sub(got);
            }
        }
        drop(self.ring.take());
        // Close the eventfd after the reactor has stopped watching it (it re-syncs its epoll
        // set after this poll): closing now could let the number be reused before that.
        if let Some(fd) = self.efd.take() {
            if let Some(t) = ferrite_reactor::current() {
                let _ = t.send(move || drop(fd));
            }
        }
    }
}
