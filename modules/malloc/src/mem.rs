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
    ///
    /// The mapping asks for transparent huge pages before it is populated (SPDK's malloc bdev
    /// lives in hugepage memory too): random 4 KiB I/O over a large bdev otherwise misses the
    /// TLB on most requests. Best effort: where THP is off, or no 2 MiB page can be had, the
    /// kernel backs the range with ordinary pages and nothing else changes.
    pub(crate) fn new(len: usize, name: &str) -> Result<Self> {
        let ptr = ferrite_bdev::mmap::map_anonymous(len).map_err(|e| {
            BdevError::new(
                ErrorKind::NoMemory,
                format!("bdev '{name}': cannot allocate {len} bytes: {e}"),
            )
        })?;
        populate(ptr, len);
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

/// Backs `[ptr, ptr + len)` (a fresh anonymous mapping) with memory: huge pages requested
/// first, then every page faulted in, by `MADV_POPULATE_WRITE` (Linux 5.14) or, where the
/// kernel refuses it, by touching one byte per page.
fn populate(ptr: NonNull<u8>, len: usize) {
    let p = ptr.as_ptr().cast::<libc::c_void>();
    // SAFETY: `p..p+len` is the mapping just created by the caller; advice changes no data.
    if unsafe { libc::madvise(p, len, libc::MADV_HUGEPAGE) } != 0 {
        tracing::debug!(
            "malloc: no transparent huge pages for {len} bytes: {}",
            std::io::Error::last_os_error()
        );
    }
    // SAFETY: as above; populating a private anonymous mapping writes nothing visible (the
    // pages read as zero either way).
    if unsafe { libc::madvise(p, len, libc::MADV_POPULATE_WRITE) } == 0 {
        return;
    }
    let page = 4096;
    let mut off = 0;
    while off < len {
        // SAFETY: `off < len`, inside the caller's fresh writable mapping; writing the zero
        // it already holds faults the page in.
        unsafe { ptr.as_ptr().add(off).write_volatile(0) };
        off += page;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a failure is the assertion

    use super::*;

    /// A fresh (huge-page advised, populated) mapping reads as zeros everywhere, including
    /// across a 2 MiB boundary, and keeps what is written.
    #[test]
    fn fresh_memory_reads_zero_and_keeps_writes() {
        let len = 6 << 20;
        let mem = Mem::new(len, "t").unwrap();
        let mut buf = vec![0xAAu8; 8192];
        let iov = [IoVec {
            base: buf.as_mut_ptr(),
            len: buf.len(),
        }];
        for off in [0, (2 << 20) - 4096, len - 8192] {
            buf.fill(0xAA);
            mem.read_into(off, &iov);
            assert!(
                buf.iter().all(|&b| b == 0),
                "non-zero byte near offset {off}"
            );
        }
        let mut data: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
        let w = [IoVec {
            base: data.as_mut_ptr(),
            len: data.len(),
        }];
        mem.write_from((2 << 20) - 4096, &w);
        buf.fill(0);
        mem.read_into((2 << 20) - 4096, &iov);
        assert_eq!(buf, data);
    }
}
