//! Per-slot data buffers, taken once per job, page-aligned. Each outstanding I/O of a job owns
//! one slot's buffer for its whole life.
//!
//! The buffers come from the bdev layer's DMA pool ([`DmaBuf`]) when it can spare them: that
//! pool is memfd-backed and shared with vhost-user servers by the virtio-user bdev (which then
//! does I/O on them without a bounce copy) and mapped for the NVMe driver. A job takes pool
//! buffers only while at least half of the class stays free for the bdev layer's own needs;
//! otherwise (or for I/O sizes beyond the pool's large class) it falls back to the heap.

use std::alloc::{alloc_zeroed, dealloc, Layout};
use std::ptr::NonNull;

use ferrite_bdev::DmaBuf;

use crate::error::BenchError;

enum Backing {
    /// One pool buffer per slot (kept only to be returned to the pool on drop).
    Pool(#[allow(dead_code)] Vec<DmaBuf>),
    /// One heap allocation holding every slot.
    Heap { ptr: NonNull<u8>, layout: Layout },
}

/// `count` buffers of `size` bytes each.
pub(crate) struct SlotBuffers {
    ptrs: Vec<*mut u8>,
    backing: Backing,
    size: usize,
}

// SAFETY: the buffers are owned by this value; slots are handed to I/O one at a time by the
// job that owns it, on the job's thread.
unsafe impl Send for SlotBuffers {}

impl SlotBuffers {
    /// Control path (job setup), on the job's thread.
    pub(crate) fn new(size: usize, count: usize) -> Result<Self, BenchError> {
        let total = size.checked_mul(count).filter(|t| *t > 0).ok_or_else(|| {
            BenchError::InvalidOption {
                option: "-o/-q",
                reason: format!("{count} buffers of {size} bytes overflow"),
            }
        })?;
        if let Some(bufs) = from_pool(size, count) {
            let ptrs = bufs.iter().map(|b| b.as_ptr()).collect();
            return Ok(Self {
                ptrs,
                backing: Backing::Pool(bufs),
                size,
            });
        }
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
        // SAFETY: i < count, so every offset stays inside the allocation.
        let ptrs = (0..count).map(|i| unsafe { p.add(i * size) }).collect();
        Ok(Self {
            ptrs,
            backing: Backing::Heap { ptr, layout },
            size,
        })
    }

    /// True if the buffers come from the bdev DMA pool.
    #[cfg(test)]
    pub(crate) fn in_dma_pool(&self) -> bool {
        matches!(self.backing, Backing::Pool(_))
    }

    /// Raw pointer to slot `i`'s buffer.
    #[inline]
    pub(crate) fn ptr(&self, i: usize) -> *mut u8 {
        self.ptrs[i]
    }

    /// Slot `i` as a mutable slice. The caller must not have it handed to an I/O in flight.
    #[inline]
    pub(crate) fn slice_mut(&mut self, i: usize) -> &mut [u8] {
        let p = self.ptr(i);
        // SAFETY: `size` bytes owned by this value; &mut self and the caller's contract give
        // exclusivity.
        unsafe { std::slice::from_raw_parts_mut(p, self.size) }
    }

    /// Slot `i` as a slice.
    #[inline]
    pub(crate) fn slice(&self, i: usize) -> &[u8] {
        let p = self.ptr(i);
        // SAFETY: `size` bytes owned by this value; read only while no I/O writes it
        // (completion time).
        unsafe { std::slice::from_raw_parts(p, self.size) }
    }

    /// Bytes per slot.
    pub(crate) fn size(&self) -> usize {
        self.size
    }
}

/// `count` zeroed pool buffers of `size` bytes, or `None` if the pool cannot spare them.
fn from_pool(size: usize, count: usize) -> Option<Vec<DmaBuf>> {
    let st = ferrite_bdev::buf::stats().ok()?;
    let free = if size <= st.small_size {
        st.small_free
    } else if size <= st.large_size {
        st.large_free
    } else {
        return None;
    };
    let total = if size <= st.small_size {
        st.small_total
    } else {
        st.large_total
    };
    if free < count || free - count < total / 2 {
        return None;
    }
    let mut bufs = Vec::with_capacity(count);
    for _ in 0..count {
        let mut b = DmaBuf::get(size).ok()??;
        b.as_mut_slice().fill(0);
        bufs.push(b);
    }
    Some(bufs)
}

impl Drop for SlotBuffers {
    fn drop(&mut self) {
        if let Backing::Heap { ptr, layout } = self.backing {
            // SAFETY: allocated in `new` with this layout; no I/O holds a slot once the job is
            // done.
            unsafe { dealloc(ptr.as_ptr(), layout) }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // tests

    use super::*;

    #[test]
    fn small_jobs_use_the_dma_pool_and_huge_ones_the_heap() {
        let b = SlotBuffers::new(4096, 32).unwrap();
        assert!(b.in_dma_pool());
        assert_eq!(b.ptr(0) as usize % 4096, 0);
        assert!(b.slice(31).iter().all(|x| *x == 0));
        let big = SlotBuffers::new(4 << 20, 2).unwrap();
        assert!(!big.in_dma_pool());
        assert_eq!(big.ptr(1) as usize - big.ptr(0) as usize, 4 << 20);
    }
}
