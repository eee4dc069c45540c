//! Per-slot data buffers, allocated once per job, page-aligned. Each outstanding I/O of a job
//! owns one slot's buffer for its whole life.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;

use crate::error::BenchError;

/// `count` buffers of `size` bytes each.
pub(crate) struct SlotBuffers {
    ptr: NonNull<u8>,
    layout: Layout,
    size: usize,
    count: usize,
}

// SAFETY: the allocation is owned by this value; slots are handed to I/O one at a time by the
// job that owns it, on the job's thread.
unsafe impl Send for SlotBuffers {}

impl SlotBuffers {
    pub(crate) fn new(size: usize, count: usize) -> Result<Self, BenchError> {
        let total = size.checked_mul(count).filter(|t| *t > 0).ok_or_else(|| {
            BenchError::InvalidOption {
                option: "-o/-q",
                reason: format!("{count} buffers of {size} bytes overflow"),
            }
        })?;
        let layout =
            Layout::from_size_align(total, 4096).map_err(|e| BenchError::InvalidOption {
                option: "-o",
                reason: e.to_string(),
            })?;
        // SAFETY: layout has a non-zero size (checked above).
        let p = unsafe { alloc_zeroed(layout) };
        let ptr = NonNull::new(p).ok_or_else(|| BenchError::InvalidOption {
            option: "-o/-q",
            reason: format!("cannot allocate {total} bytes of I/O buffers"),
        })?;
        Ok(Self {
            ptr,
            layout,
            size,
            count,
        })
    }

    /// Raw pointer to slot `i`'s buffer.
    #[inline]
    pub(crate) fn ptr(&self, i: usize) -> *mut u8 {
        assert!(i < self.count);
        // SAFETY: i < count, so the offset stays inside the allocation.
        unsafe { self.ptr.as_ptr().add(i * self.size) }
    }

    /// Slot `i` as a mutable slice. The caller must not have it handed to an I/O in flight.
    #[inline]
    pub(crate) fn slice_mut(&mut self, i: usize) -> &mut [u8] {
        let p = self.ptr(i);
        // SAFETY: inside the allocation; &mut self and the caller's contract give exclusivity.
        unsafe { std::slice::from_raw_parts_mut(p, self.size) }
    }

    /// Slot `i` as a slice.
    #[inline]
    pub(crate) fn slice(&self, i: usize) -> &[u8] {
        let p = self.ptr(i);
        // SAFETY: inside the allocation; read only while no I/O writes it (completion time).
        unsafe { std::slice::from_raw_parts(p, self.size) }
    }

    /// Bytes per slot.
    pub(crate) fn size(&self) -> usize {
        self.size
    }
}

impl Drop for SlotBuffers {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout; no I/O holds a slot once the job is done.
        unsafe { dealloc(self.ptr.as_ptr(), self.layout) }
    }
}
