//! The backing memory of a malloc bdev.

use std::ptr::NonNull;

use ferrite_bdev::{BdevError, ErrorKind, IoVec, Result};

/// A zero-filled anonymous mapping, unmapped on drop.
pub(crate) struct Mem {
    ptr: NonNull<u8>,
    len: usize,
}

// SAFETY: the mapping is shared by every thread's channel of the bdev. It is only accessed
// through raw-pointer copies (never through Rust references), like DMA into device memory:
// concurrent overlapping I/O leaves unspecified contents, as on a real disk, and nothing else.
unsafe impl Send for Mem {}
// SAFETY: as above.
unsafe impl Sync for Mem {}

impl Mem {
    /// Maps and populates `len` bytes: every page is backed by real memory at creation, as
    /// SPDK's malloc bdev is, so reads of never-written blocks cost what reads of written ones
    /// do (an unpopulated mapping would serve them from the kernel's shared zero page).
    pub(crate) fn new(len: usize, name: &str) -> Result<Self> {
        // SAFETY: anonymous private mapping with no address hint; result checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_POPULATE,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(BdevError::new(
                ErrorKind::NoMemory,
                format!(
                    "bdev '{name}': cannot allocate {len} bytes: {}",
                    std::io::Error::last_os_error()
                ),
            ));
        }
        let ptr = NonNull::new(p.cast::<u8>()).ok_or_else(|| {
            BdevError::new(
                ErrorKind::NoMemory,
                format!("bdev '{name}': mmap returned null"),
            )
        })?;
        Ok(Self { ptr, len })
    }

    /// Copies the segments' data into `[off, off + total)`. Caller validated the range.
    #[inline]
    pub(crate) fn write_from(&self, off: usize, iovs: &[IoVec]) {
        let mut pos = off;
        for v in iovs {
            debug_assert!(pos + v.len <= self.len);
            // SAFETY: the bdev layer validated offset+length against the bdev size, which is
            // this mapping's size; the segment is valid per the I/O contract; the regions do
            // not overlap (one is our mapping, the other the submitter's buffer).
            unsafe { std::ptr::copy_nonoverlapping(v.base, self.ptr.as_ptr().add(pos), v.len) };
            pos += v.len;
        }
    }

    /// Copies `[off, off + total)` into the segments.
    #[inline]
    pub(crate) fn read_into(&self, off: usize, iovs: &[IoVec]) {
        let mut pos = off;
        for v in iovs {
            debug_assert!(pos + v.len <= self.len);
            // SAFETY: as in write_from, in the other direction.
            unsafe { std::ptr::copy_nonoverlapping(self.ptr.as_ptr().add(pos), v.base, v.len) };
            pos += v.len;
        }
    }

    /// Zeroes `[off, off + len)`.
    pub(crate) fn zero(&self, off: usize, len: usize) {
        debug_assert!(off + len <= self.len);
        // SAFETY: range validated by the bdev layer against the mapping's size.
        unsafe { std::ptr::write_bytes(self.ptr.as_ptr().add(off), 0, len) };
    }
}

impl Drop for Mem {
    fn drop(&mut self) {
        // SAFETY: unmapping exactly the mapping created in `new`; no channel can still use it
        // (the backend is dropped only when the last channel and descriptor are gone).
        unsafe { libc::munmap(self.ptr.as_ptr().cast(), self.len) };
    }
}
