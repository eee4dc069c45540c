//! How a uring channel moves data, chosen per file at open ([`IoPath`]), and the memory-copy
//! path for files on memory-backed filesystems.
//!
//! **Why**: tmpfs, ramfs and hugetlbfs do not offer non-blocking reads and writes (a
//! `preadv2(RWF_NOWAIT)` on tmpfs fails with EOPNOTSUPP), so io_uring cannot do them inline in
//! `io_uring_enter` and hands every one to an `iou-wrk` kernel worker. That worker inherits the
//! reactor's CPU pinning: the busy-polling reactor and the worker then share one core, and the
//! uring bdev reached only 0.58–0.65 × fio on tmpfs (docs/PERFORMANCE.md).
//!
//! **Policy**: on a memory-backed filesystem (detected with `fstatfs` at open), reads and
//! writes are copied synchronously at submission with one `preadv`/`pwritev` — the copy that
//! Linux AIO does inside `io_submit` for such files, and that the kernel worker would do
//! anyway. It cannot wait for a device: the data is in the page cache, and the only waits are
//! a tmpfs page coming back from swap or a page allocation under memory pressure (the same as
//! for aio). The I/O still completes through the thread's completion queue
//! ([`BdevIo::complete`] queues it), never inside its submit call. Flush, unmap and
//! write-zeroes keep going through the ring. Every other file (and every block device) uses
//! the ring: there reads and writes are non-blocking and the kernel does them inline.
//!
//! Thread contract: used by one channel's state, on that channel's thread.

use std::os::fd::RawFd;

use ferrite_aio::bounce::{fill_iovecs, iovec_ptr, Bounce, BounceGet, KernelIoVec};
use ferrite_aio::file::FileDisk;
use ferrite_aio::slots::Finished;
use ferrite_bdev::{BdevIo, IoStatus};

use crate::io::Kind;

/// How a channel does reads and writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum IoPath {
    /// One SQE per I/O, submitted in batches by the poller, completions reaped from the CQ.
    Ring,
    /// A synchronous `preadv`/`pwritev` at submission (memory-backed filesystems only).
    MemoryCopy,
}

impl IoPath {
    /// The path for `disk`: [`IoPath::MemoryCopy`] on a memory-backed filesystem.
    pub(crate) fn for_disk(disk: &FileDisk) -> Self {
        if disk.memory_fs.is_some() {
            IoPath::MemoryCopy
        } else {
            IoPath::Ring
        }
    }

    /// The name shown in `bdev_get_bdevs` (`driver_specific.uring.io_path`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            IoPath::Ring => "ring",
            IoPath::MemoryCopy => "memory_copy",
        }
    }
}

/// The memory-copy path's scratch space: the kernel's view of one I/O's segments (reused: no
/// allocation once grown).
pub(crate) struct SyncCopy {
    iovs: Vec<KernelIoVec>,
}

impl SyncCopy {
    /// Allocates: call at channel creation.
    pub(crate) fn new() -> Self {
        Self {
            iovs: Vec::with_capacity(16),
        }
    }

    /// Reads or writes `len` bytes at byte offset `off` of `disk` for `io` with one syscall,
    /// then queues `io`'s completion: success only if all `len` bytes moved; a short transfer
    /// (the file shrank underneath) or an error completes it as failed. Segments that miss the
    /// file's direct-I/O alignment or are too many for one syscall go through a bounce buffer
    /// (none free: NOMEM, and the bdev layer retries).
    pub(crate) fn rw(&mut self, disk: &FileDisk, io: Box<BdevIo>, off: u64, len: u64, write: bool) {
        let bounce = if disk.needs_bounce(io.iovs()) {
            match Bounce::get(len as usize) {
                BounceGet::Got(b) => {
                    if write {
                        // SAFETY: the segments are valid for their lengths until the I/O
                        // completes (I/O contract) and total `len` bytes, the buffer's size.
                        unsafe { b.gather(io.iovs()) };
                    }
                    disk.note_bounce();
                    Some(b)
                }
                BounceGet::NoMem => return io.complete(IoStatus::NoMem),
            }
        } else {
            None
        };
        match &bounce {
            Some(b) => {
                self.iovs.clear();
                self.iovs.push(KernelIoVec::new(b.as_ptr(), len as usize));
            }
            None => fill_iovecs(&mut self.iovs, io.iovs()),
        }
        let res = transfer(disk.raw_fd(), &self.iovs, off, write);
        let kind = if write { Kind::Write } else { Kind::Read };
        Finished {
            io,
            bounce,
            kind,
            expect: len,
        }
        .complete_rw(disk, res, !write);
    }
}

/// One `preadv` / `pwritev` of `iovs` at `off` (retried if a signal interrupts it before any
/// byte moved); bytes transferred or `-errno`.
fn transfer(fd: RawFd, iovs: &[KernelIoVec], off: u64, write: bool) -> i64 {
    let (p, n) = (iovec_ptr(iovs), iovs.len() as i32);
    let Ok(off) = libc::off_t::try_from(off) else {
        return -i64::from(libc::EINVAL);
    };
    loop {
        let r = if write {
            // SAFETY: `iovs` describes memory owned by the I/O (or its bounce buffer), valid
            // and not otherwise accessed during this call; the kernel only reads it.
            unsafe { libc::pwritev(fd, p, n, off) }
        } else {
            // SAFETY: as above; the kernel writes into it, which the I/O contract allows for
            // a read's segments.
            unsafe { libc::preadv(fd, p, n, off) }
        };
        if r >= 0 {
            return r as i64;
        }
        let errno = std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        if errno != libc::EINTR {
            return -i64::from(errno);
        }
    }
}
