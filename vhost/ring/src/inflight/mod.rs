//! The inflight shared-memory region of VHOST_USER_PROTOCOL_F_INFLIGHT_SHMFD.
//!
//! The backend creates it (memfd) on VHOST_USER_GET_INFLIGHT_FD and hands the fd to the
//! front-end, which keeps it across a backend crash and gives it back with
//! VHOST_USER_SET_INFLIGHT_FD to the restarted backend. It is one queue region per virtqueue,
//! back to back, each `inflight_queue_size(queue_size, packed)` bytes, laid out as QEMU's
//! docs/interop/vhost-user.rst ("Inflight I/O tracking") describes:
//!
//! * split: `features u64, version u16, desc_num u16, last_batch_head u16, used_idx u16`
//!   (16 bytes), then `desc_num` × `{inflight u8, padding [u8; 5], next u16, counter u64}`;
//! * packed: `features u64, version u16, desc_num u16, free_head u16, old_free_head u16,
//!   used_idx u16, old_used_idx u16, used_wrap_counter u8, old_used_wrap_counter u8,
//!   padding [u8; 7]` (32 bytes with the alignment of what follows), then `desc_num` ×
//!   `{inflight u8, padding u8, next u16, last u16, num u16, counter u64, id u16, flags u16,
//!   len u32, addr u64}` (32 bytes).
//!
//! Each queue region is rounded up to 64 bytes. The region is written by a process that may
//! have crashed half-way: everything read back is validated by the ring that attaches it.

use std::fs::File;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use vm_memory::mmap::MmapRegion;
use vm_memory::{AtomicAccess, Bytes, FileOffset, VolatileMemory};

use crate::RingError;

mod packed;
mod split;

/// Version written in an initialised queue region (0 means "never initialised").
pub(crate) const VERSION: u16 = 1;
/// Split queue region header size.
pub(crate) const SPLIT_HEADER: usize = 16;
/// Split per-descriptor state size.
pub(crate) const SPLIT_DESC: usize = 16;
/// Packed queue region header size.
pub(crate) const PACKED_HEADER: usize = 32;
/// Packed per-descriptor state size.
pub(crate) const PACKED_DESC: usize = 32;
const ALIGN: usize = 64;

/// Bytes of one queue's part of the inflight region for a queue of `queue_size` entries.
pub fn inflight_queue_size(queue_size: u16, packed: bool) -> usize {
    let (h, d) = if packed {
        (PACKED_HEADER, PACKED_DESC)
    } else {
        (SPLIT_HEADER, SPLIT_DESC)
    };
    (h + d * usize::from(queue_size)).div_ceil(ALIGN) * ALIGN
}

/// One shared mapping of the inflight fd, covering every queue. Created or mapped on the
/// control thread; hand each [`InflightQueue`] to the thread owning its ring.
pub struct InflightRegion {
    map: Arc<MmapRegion<()>>,
    num_queues: u16,
    queue_size: u16,
    packed: bool,
}

/// One queue's part of the inflight region: a bounds-checked window on the shared mapping,
/// which it keeps alive. `Send`; attach it to one [`crate::Vring`] at a time.
pub struct InflightQueue {
    map: Arc<MmapRegion<()>>,
    offset: usize,
    len: usize,
    pub(crate) queue_size: u16,
    pub(crate) packed: bool,
}

fn io_err(what: &str, e: std::io::Error) -> RingError {
    RingError::Inflight(format!("{what}: {e}"))
}

impl InflightRegion {
    /// Creates a zeroed region in a new memfd for VHOST_USER_GET_INFLIGHT_FD, every queue's
    /// header holding desc_num = `queue_size` and version 0 (set to 1 when a ring attaches).
    /// Returns the region, the fd to send to the front-end, and the mmap size to put in the
    /// reply (its mmap offset is 0).
    pub fn create(
        num_queues: u16,
        queue_size: u16,
        packed: bool,
    ) -> Result<(Self, OwnedFd, u64), RingError> {
        if num_queues == 0 || queue_size == 0 || queue_size > crate::MAX_QUEUE_SIZE {
            return Err(RingError::Inflight(format!(
                "cannot create a region for {num_queues} queues of {queue_size}"
            )));
        }
        let size = inflight_queue_size(queue_size, packed) * usize::from(num_queues);
        // SAFETY: memfd_create takes a NUL-terminated name and flags; no memory is shared
        // with the kernel beyond the name, which outlives the call.
        let raw = unsafe { libc::memfd_create(c"ferrite-inflight".as_ptr(), libc::MFD_CLOEXEC) };
        if raw < 0 {
            return Err(io_err("memfd_create", std::io::Error::last_os_error()));
        }
        // SAFETY: `raw` is a new fd that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let file = File::from(fd.try_clone().map_err(|e| io_err("dup", e))?);
        file.set_len(size as u64)
            .map_err(|e| io_err("ftruncate", e))?;
        let region = Self::map_file(file, size, 0, num_queues, queue_size, packed)?;
        for i in 0..num_queues {
            region.queue(i)?.init()?;
        }
        Ok((region, fd, size as u64))
    }

    /// Maps the region the front-end sent with VHOST_USER_SET_INFLIGHT_FD. Checks that the
    /// size covers `num_queues` queue regions and that the file is that large (a short file
    /// would fault on access). The queue headers are validated when attached to rings.
    pub fn map(
        fd: OwnedFd,
        mmap_size: u64,
        mmap_offset: u64,
        num_queues: u16,
        queue_size: u16,
        packed: bool,
    ) -> Result<Self, RingError> {
        if num_queues == 0 || queue_size == 0 || queue_size > crate::MAX_QUEUE_SIZE {
            return Err(RingError::Inflight(format!(
                "region for {num_queues} queues of {queue_size} is invalid"
            )));
        }
        let need = inflight_queue_size(queue_size, packed) as u64 * u64::from(num_queues);
        if mmap_size < need || mmap_size > (1 << 32) {
            return Err(RingError::Inflight(format!(
                "mmap size {mmap_size} does not fit {num_queues} queues of {queue_size} \
                 ({need} bytes)"
            )));
        }
        // SAFETY: fstat writes into the zeroed stat buffer we own; the fd is valid.
        let st_size = unsafe {
            let mut st: libc::stat = std::mem::zeroed();
            if libc::fstat(fd.as_raw_fd(), &mut st) != 0 {
                return Err(io_err("fstat", std::io::Error::last_os_error()));
            }
            st.st_size as u64
        };
        let end = mmap_offset.checked_add(mmap_size);
        if end.is_none_or(|e| e > st_size) {
            return Err(RingError::Inflight(format!(
                "file of {st_size} bytes is shorter than offset {mmap_offset} + size {mmap_size}"
            )));
        }
        Self::map_file(
            File::from(fd),
            mmap_size as usize,
            mmap_offset,
            num_queues,
            queue_size,
            packed,
        )
    }

    fn map_file(
        file: File,
        size: usize,
        offset: u64,
        num_queues: u16,
        queue_size: u16,
        packed: bool,
    ) -> Result<Self, RingError> {
        let map = MmapRegion::<()>::from_file(FileOffset::new(file, offset), size)
            .map_err(|e| RingError::Inflight(format!("mmap of {size} bytes: {e}")))?;
        Ok(InflightRegion {
            map: Arc::new(map),
            num_queues,
            queue_size,
            packed,
        })
    }

    /// Number of queues the region covers.
    pub fn num_queues(&self) -> u16 {
        self.num_queues
    }

    /// Queue `i`'s part of the region.
    pub fn queue(&self, i: u16) -> Result<InflightQueue, RingError> {
        if i >= self.num_queues {
            return Err(RingError::Inflight(format!(
                "queue {i} not in a region of {} queues",
                self.num_queues
            )));
        }
        let len = inflight_queue_size(self.queue_size, self.packed);
        Ok(InflightQueue {
            map: Arc::clone(&self.map),
            offset: len * usize::from(i),
            len,
            queue_size: self.queue_size,
            packed: self.packed,
        })
    }
}

impl InflightQueue {
    /// Whether this is a packed-ring region.
    pub fn is_packed(&self) -> bool {
        self.packed
    }

    fn fail(off: usize) -> RingError {
        RingError::Inflight(format!("access at offset {off} outside the queue region"))
    }

    /// Loads a value at `off` (relative to the queue region), bounds- and alignment-checked.
    pub(crate) fn load<T: AtomicAccess>(&self, off: usize) -> Result<T, RingError> {
        if off + std::mem::size_of::<T>() > self.len {
            return Err(Self::fail(off));
        }
        self.map
            .as_volatile_slice()
            .load::<T>(self.offset + off, Ordering::Relaxed)
            .map_err(|_| Self::fail(off))
    }

    /// Stores a value at `off`, bounds- and alignment-checked.
    pub(crate) fn store<T: AtomicAccess>(&self, off: usize, v: T) -> Result<(), RingError> {
        if off + std::mem::size_of::<T>() > self.len {
            return Err(Self::fail(off));
        }
        self.map
            .as_volatile_slice()
            .store::<T>(v, self.offset + off, Ordering::Relaxed)
            .map_err(|_| Self::fail(off))
    }

    /// Zeroes the queue region and writes desc_num and (packed) the free list 0→1→…, leaving
    /// version 0 ("not initialised"): the ring that attaches it sets the version.
    pub(crate) fn init(&self) -> Result<(), RingError> {
        for off in (0..self.len).step_by(8) {
            self.store::<u64>(off, 0)?;
        }
        if self.packed {
            for i in 0..self.queue_size {
                let d = PACKED_HEADER + PACKED_DESC * usize::from(i);
                self.store::<u16>(d + 2, i.wrapping_add(1))?;
            }
        }
        self.store::<u16>(10, self.queue_size)
    }
}
