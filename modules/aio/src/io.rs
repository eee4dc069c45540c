//! The aio data path: one kernel AIO context per (bdev, thread) channel.
//!
//! - `submit` takes a free slot (none free: NOMEM, and the bdev layer retries when one of this
//!   channel's I/O completes), fills the slot's iocb (user data = slot index) and queues it;
//!   the I/O object stays in the slot, owning its segments, until its completion is reaped.
//!   Segments that miss the direct-I/O alignment go through a bounce buffer.
//! - Reads and writes on disk files and block devices go to the kernel in their submit call
//!   (one `io_submit` each, as fio and SPDK's aio bdev do); on memory-backed filesystems, and
//!   for flushes, the channel's poller submits everything queued in one `io_submit` per poll.
//!   The poller reaps completions from the ring the kernel maps at the context address (no
//!   syscall when idle).
//! - Every iocb carries `IOCB_FLAG_RESFD` with the channel's eventfd, registered with the
//!   reactor (`register_fd`): an adaptive or interrupt reactor sleeping with I/O in flight is
//!   woken by the completion.
//! - Flush is `IOCB_CMD_FDSYNC`; where the file refuses it (EINVAL) flushes go to a helper
//!   thread running fdatasync. Unmap and write-zeroes (fallocate, BLKDISCARD) have no AIO form
//!   and always run on a helper thread.

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::Arc;

use ferrite_bdev::{BackendChannel, BdevIo, IoStatus, IoType};
use ferrite_reactor::{FdRegistration, PollerHandle};

use crate::bounce::fill_iovecs;
use crate::chan::{ChanState, Polled};
use crate::file::{FileDisk, FileKind};
use crate::helper::{self, SlowOp};
use crate::slots::Slots;
use crate::sys::{self, AioContext, IoEvent, Iocb};

/// Requests in flight per channel (the AIO context's size and the slot table's).
pub const AIO_SLOTS: usize = 256;
/// Completions read per batch.
const REAP_BATCH: usize = 64;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Read,
    Write,
    Flush,
}

struct Inner {
    disk: Arc<FileDisk>,
    ctx: Option<AioContext>,
    efd: Option<OwnedFd>,
    efd_registered: bool,
    iocbs: Box<[Iocb]>,
    slots: Slots<Kind>,
    /// Prepared iocbs (indices into `iocbs`) not yet given to the kernel, oldest first.
    pending: Vec<u32>,
    /// Given to the kernel and not yet reaped.
    inflight: usize,
    /// Reads and writes go to the kernel in their submit call (disk files and devices) rather
    /// than with the poller's batch (memory-backed filesystems). See `submit_rw`.
    submit_at_once: bool,
    events: Box<[IoEvent]>,
}

/// The per-thread backend channel of an aio bdev. Its state is shared with its poller
/// (`None`: the state could not be set up, and every I/O fails).
pub(crate) struct AioChannel {
    inner: Option<ChanState<Inner>>,
    _poller: Option<PollerHandle>,
    _fd: Option<FdRegistration>,
}

impl AioChannel {
    /// Creates the channel on the calling thread: AIO context, eventfd, poller. A context that
    /// cannot be created (aio-max-nr reached) leaves a channel that fails every I/O, with the
    /// reason logged.
    pub(crate) fn new(disk: Arc<FileDisk>) -> AioChannel {
        let ctx = match AioContext::new(AIO_SLOTS as u32) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::error!(
                    "bdev '{}': io_setup({AIO_SLOTS}) failed: {e}; I/O on this thread will fail (see /proc/sys/fs/aio-max-nr)",
                    disk.name
                );
                None
            }
        };
        let efd = sys::completion_eventfd(&disk.name);
        let fd_reg = efd
            .as_ref()
            .and_then(|f| ferrite_reactor::register_fd(f.as_raw_fd()).ok());
        let submit_at_once = disk.memory_fs.is_none();
        let inner = Inner {
            disk,
            ctx,
            efd_registered: fd_reg.is_some(),
            efd,
            iocbs: vec![Iocb::default(); AIO_SLOTS].into_boxed_slice(),
            slots: Slots::new(AIO_SLOTS, Kind::Read),
            pending: Vec::with_capacity(AIO_SLOTS),
            inflight: 0,
            submit_at_once,
            events: vec![IoEvent::default(); REAP_BATCH].into_boxed_slice(),
        };
        let name = format!("bdev_aio:{}", inner.disk.name);
        let (inner, poller) = crate::chan::start(&name, "bdev_aio_poll", inner);
        AioChannel {
            inner,
            _poller: poller,
            _fd: fd_reg,
        }
    }
}

impl BackendChannel for AioChannel {
    fn submit(&mut self, io: Box<BdevIo>) {
        let Some(state) = &self.inner else {
            return io.complete(IoStatus::Failed);
        };
        state.submit(io, Inner::submit);
    }
}

impl Inner {
    fn submit(&mut self, io: Box<BdevIo>) {
        if self.ctx.is_none() {
            return io.complete(IoStatus::Failed);
        }
        let bs = u64::from(io.block_size());
        let off = io.offset_blocks() * bs;
        let len = io.num_blocks() * bs;
        let regular = self.disk.kind == FileKind::Regular;
        match io.io_type() {
            IoType::Read | IoType::Write => self.submit_rw(io, off, len),
            IoType::Flush if self.disk.fdsync_unsupported() => {
                helper::submit(&self.disk, SlowOp::Fdatasync, io)
            }
            IoType::Flush => self.submit_fdsync(io),
            IoType::Unmap if regular => helper::submit(
                &self.disk,
                SlowOp::Fallocate {
                    mode: libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    off,
                    len,
                },
                io,
            ),
            IoType::Unmap => helper::submit(&self.disk, SlowOp::Discard { off, len }, io),
            IoType::WriteZeroes => helper::submit(
                &self.disk,
                SlowOp::Fallocate {
                    mode: libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
                    off,
                    len,
                },
                io,
            ),
            _ => io.complete(IoStatus::Failed),
        }
    }

    fn resfd(&self) -> (u32, u32) {
        match &self.efd {
            Some(f) => (sys::IOCB_FLAG_RESFD, f.as_raw_fd() as u32),
            None => (0, 0),
        }
    }

    fn submit_rw(&mut self, io: Box<BdevIo>, off: u64, len: u64) {
        let Some(idx) = self.slots.alloc() else {
            return io.complete(IoStatus::NoMem);
        };
        let write = io.io_type() == IoType::Write;
        let (flags, resfd) = self.resfd();
        let (single, vector) = if write {
            (sys::IOCB_CMD_PWRITE, sys::IOCB_CMD_PWRITEV)
        } else {
            (sys::IOCB_CMD_PREAD, sys::IOCB_CMD_PREADV)
        };
        let (op, buf, nbytes) = if self.disk.needs_bounce(io.iovs()) {
            match self.slots.bounce(idx, &io, len, write, &self.disk) {
                Some(p) => (single, p as u64, len),
                None => {
                    self.slots.release(idx);
                    return io.complete(IoStatus::NoMem);
                }
            }
        } else if let [v] = io.iovs() {
            (single, v.base as u64, v.len as u64)
        } else {
            let iovs = &mut self.slots.get_mut(idx).iovs;
            fill_iovecs(iovs, io.iovs());
            (vector, iovs.as_ptr() as u64, iovs.len() as u64)
        };
        let kind = if write { Kind::Write } else { Kind::Read };
        self.slots.fill(idx, io, kind, len);
        let cb = &mut self.iocbs[idx as usize];
        *cb = Iocb {
            aio_data: u64::from(idx),
            aio_lio_opcode: op,
            aio_fildes: self.disk.raw_fd() as u32,
            aio_buf: buf,
            aio_nbytes: nbytes,
            aio_offset: off as i64,
            aio_flags: flags,
            aio_resfd: resfd,
            ..Iocb::default()
        };
        self.pending.push(idx);
        if self.submit_at_once {
            // A device starts on a request as soon as it gets it: at queue depth 32 on a
            // virtual disk, handing each request over at once gave ~20 % more IOPS than one
            // io_submit per poll for the whole batch (as fio does; docs/PERFORMANCE.md, "Disk
            // I/O"). On a memory-backed filesystem io_submit copies the data itself, so the
            // batch saves system calls there. A refused request completes through the bdev
            // layer's completion queue, never inside this call.
            self.flush_pending();
        }
    }

    fn submit_fdsync(&mut self, io: Box<BdevIo>) {
        let Some(idx) = self.slots.alloc() else {
            return io.complete(IoStatus::NoMem);
        };
        let (flags, resfd) = self.resfd();
        self.slots.fill(idx, io, Kind::Flush, 0);
        let cb = &mut self.iocbs[idx as usize];
        *cb = Iocb {
            aio_data: u64::from(idx),
            aio_lio_opcode: if crate::file::fdsync_einval_simulated() {
                u16::MAX // an opcode every kernel refuses with EINVAL
            } else {
                sys::IOCB_CMD_FDSYNC
            },
            aio_fildes: self.disk.raw_fd() as u32,
            aio_flags: flags,
            aio_resfd: resfd,
            ..Iocb::default()
        };
        self.pending.push(idx);
    }

    fn poll(&mut self) -> usize {
        let mut work = self.flush_pending();
        let user_ring = self.ctx.as_ref().is_some_and(|c| c.user_ring());
        if !user_ring && self.inflight > 0 {
            // Reaping by syscall: reset the eventfd first, so a completion after it signals
            // it again.
            if let Some(f) = &self.efd {
                sys::eventfd_drain(f.as_raw_fd());
            }
        }
        if self.inflight > 0 {
            work += self.reap();
        }
        work
    }

    /// Gives queued iocbs to the kernel (one syscall for the batch, more only on errors).
    fn flush_pending(&mut self) -> usize {
        let mut done = 0;
        while !self.pending.is_empty() {
            let Some(ctx) = self.ctx.as_ref() else { break };
            // The kernel takes an array of iocb addresses: built on the stack for this call.
            let mut ptrs = [std::ptr::null_mut::<Iocb>(); AIO_SLOTS];
            let n = self.pending.len().min(AIO_SLOTS);
            for (p, &idx) in ptrs.iter_mut().zip(&self.pending[..n]) {
                *p = &raw mut self.iocbs[idx as usize];
            }
            // SAFETY: every queued iocb is in `iocbs` (a boxed slice that never moves) and
            // points at buffers owned by the I/O in its slot (or the slot's bounce buffer or
            // iovec array), all kept untouched until the completion is reaped.
            match unsafe { ctx.submit(&ptrs[..n]) } {
                Ok(0) => break,
                Ok(n) => {
                    self.pending.drain(..n);
                    self.inflight += n;
                    done += n;
                }
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => break, // retry next poll
                Err(e) => {
                    let idx = self.pending.remove(0) as usize;
                    let errno = e.raw_os_error().unwrap_or(libc::EIO);
                    self.rejected(idx, errno);
                    done += 1;
                }
            }
        }
        done
    }

    /// The kernel refused the request in slot `idx` at submission.
    fn rejected(&mut self, idx: usize, errno: i32) {
        let Some(f) = self.slots.finish(idx) else {
            return;
        };
        let (io, kind) = (f.io, f.kind);
        drop(f.bounce);
        if kind == Kind::Flush && errno == libc::EINVAL {
            self.disk.set_fdsync_unsupported();
            return helper::submit(&self.disk, SlowOp::Fdatasync, io);
        }
        tracing::warn!(
            "bdev '{}': io_submit refused a {kind:?}: {}",
            self.disk.name,
            crate::file::strerror(errno)
        );
        io.complete(IoStatus::Failed);
    }

    fn reap(&mut self) -> usize {
        let mut total = 0;
        while let Some(ctx) = self.ctx.as_ref() {
            let n = ctx.reap(&mut self.events);
            for i in 0..n {
                let ev = self.events[i];
                self.completed(ev.data as usize, ev.res);
            }
            total += n;
            if n < self.events.len() {
                break;
            }
        }
        total
    }

    fn completed(&mut self, idx: usize, res: i64) {
        let Some(f) = self.slots.finish(idx) else {
            return;
        };
        self.inflight = self.inflight.saturating_sub(1);
        match f.kind {
            Kind::Flush if res == 0 => f.io.complete(IoStatus::Success),
            Kind::Flush if res == -i64::from(libc::EINVAL) => {
                self.disk.set_fdsync_unsupported();
                helper::submit(&self.disk, SlowOp::Fdatasync, f.io)
            }
            Kind::Flush => f.complete_failed(&self.disk, res),
            Kind::Read => f.complete_rw(&self.disk, res, true),
            Kind::Write => f.complete_rw(&self.disk, res, false),
        }
    }

    fn can_sleep(&mut self) -> bool {
        if !self.pending.is_empty() {
            return false;
        }
        if self.inflight == 0 {
            return true;
        }
        if !self.efd_registered {
            return false;
        }
        match &self.ctx {
            Some(ctx) if ctx.user_ring() => {
                // Reset the eventfd, then look at the ring: a completion after the reset
                // signals it again and wakes the reactor; one before it is seen here.
                if let Some(f) = &self.efd {
                    sys::eventfd_drain(f.as_raw_fd());
                }
                !ctx.has_events()
            }
            // poll() resets the eventfd before each io_getevents.
            _ => true,
        }
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
        self.pending.is_empty() && self.inflight > 0 && self.efd_registered
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Destroy the context first: io_destroy waits for requests still in flight (only at
        // thread teardown), so no buffer is freed under the kernel.
        drop(self.ctx.take());
        // Close the eventfd after the reactor has stopped watching it (it re-syncs its epoll
        // set after this poll): closing now could let the number be reused before that.
        if let Some(fd) = self.efd.take() {
            if let Some(t) = ferrite_reactor::current() {
                let _ = t.send(move || drop(fd));
            }
        }
    }
}
