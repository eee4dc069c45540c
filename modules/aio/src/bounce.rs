//! Bounce buffers for I/O whose segments do not meet the direct-I/O alignment (or are too
//! many for one request), and the per-slot segment array given to the kernel.

use std::alloc::Layout;
use std::ptr::NonNull;

use ferrite_bdev::{DmaBuf, IoVec};

/// Most segments passed to the kernel in one request (`UIO_MAXIOV`); more are bounced.
pub const MAX_IOVS: usize = 1024;

/// Alignment of heap bounce buffers (larger than any direct-I/O requirement we meet).
const HEAP_ALIGN: usize = 4096;

/// An aligned buffer: from the DMA pool, or (for I/O larger than the largest pool buffer, a
/// rare case) from the heap.
#[derive(Debug)]
pub enum Bounce {
    /// A pool buffer (page-aligned).
    Pool(DmaBuf),
    /// A heap buffer aligned to 4 KiB.
    Heap(HeapBuf),
}

/// A zero-initialised heap buffer aligned to 4 KiB, freed on drop.
#[derive(Debug)]
pub struct HeapBuf {
    ptr: NonNull<u8>,
    layout: Layout,
}

// SAFETY: a HeapBuf is the only owner of its allocation (no copy of `ptr` escapes but through
// `Bounce::as_ptr`, whose users keep the HeapBuf alive and do not share it), like a Box<[u8]>:
// moving it to another thread moves the whole buffer, and the global allocator may free it on
// any thread. It is not Sync (no impl), so no two threads reach the bytes through it at once.
unsafe impl Send for HeapBuf {}

impl HeapBuf {
    fn new(len: usize) -> Option<HeapBuf> {
        let layout = Layout::from_size_align(len.max(1), HEAP_ALIGN).ok()?;
        // SAFETY: the layout has a non-zero size; null is handled.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        NonNull::new(p).map(|ptr| HeapBuf { ptr, layout })
    }
}

impl Drop for HeapBuf {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout.
        unsafe { std::alloc::dealloc(self.ptr.as_ptr(), self.layout) };
    }
}

/// Outcome of [`Bounce::get`].
pub enum BounceGet {
    /// A buffer.
    Got(Bounce),
    /// The pool is empty for now: complete the I/O with NOMEM (the bdev layer retries).
    NoMem,
}

impl Bounce {
    /// A buffer of `len` bytes.
    pub fn get(len: usize) -> BounceGet {
        match DmaBuf::get(len) {
            Ok(Some(b)) => BounceGet::Got(Bounce::Pool(b)),
            Ok(None) => BounceGet::NoMem,
            Err(_) => match HeapBuf::new(len) {
                Some(h) => BounceGet::Got(Bounce::Heap(h)),
                None => BounceGet::NoMem,
            },
        }
    }

    /// Start of the buffer.
    pub fn as_ptr(&self) -> *mut u8 {
        match self {
            Bounce::Pool(b) => b.as_ptr(),
            Bounce::Heap(h) => h.ptr.as_ptr(),
        }
    }

    /// Copies the segments' bytes into the buffer (before a write).
    ///
    /// # Safety
    /// The segments must be valid for reads of their lengths (the I/O contract) and their
    /// total must not exceed the buffer's length.
    pub unsafe fn gather(&self, iovs: &[IoVec]) {
        let mut pos = 0usize;
        let dst = self.as_ptr();
        for v in iovs {
            // SAFETY: the caller guarantees the segment and the room; the bounce buffer is ours
            // and distinct from the submitter's memory.
            unsafe { std::ptr::copy_nonoverlapping(v.base, dst.add(pos), v.len) };
            pos += v.len;
        }
    }

    /// Copies the buffer's bytes out to the segments (after a read).
    ///
    /// # Safety
    /// As [`Bounce::gather`], with the segments valid for writes.
    pub unsafe fn scatter(&self, iovs: &[IoVec]) {
        let mut pos = 0usize;
        let src = self.as_ptr();
        for v in iovs {
            // SAFETY: as in gather, in the other direction.
            unsafe { std::ptr::copy_nonoverlapping(src.add(pos), v.base, v.len) };
            pos += v.len;
        }
    }
}

/// One segment as the kernel reads it (`struct iovec`), kept as plain integers so that the
/// slot tables holding these arrays are `Send` without any `unsafe impl`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct KernelIoVec {
    base: usize,
    len: usize,
}

// `struct iovec` is a pointer and a `size_t`: the same layout as two `usize`.
const _: () = assert!(
    std::mem::size_of::<KernelIoVec>() == std::mem::size_of::<libc::iovec>()
        && std::mem::align_of::<KernelIoVec>() == std::mem::align_of::<libc::iovec>()
);

impl KernelIoVec {
    /// A segment of `len` bytes at `base`.
    pub fn new(base: *const u8, len: usize) -> Self {
        Self {
            base: base as usize,
            len,
        }
    }

    /// The segment's address.
    pub fn base(&self) -> *mut u8 {
        self.base as *mut u8
    }

    /// The segment's length in bytes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a segment of no bytes.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// The array as the kernel's `iovec` array (for `preadv`-style requests). Valid while `v`
/// is neither dropped nor changed.
pub fn iovec_ptr(v: &[KernelIoVec]) -> *const libc::iovec {
    v.as_ptr().cast()
}

/// Fills `out` (reused, so no allocation once it has grown) with the kernel's view of `iovs`.
pub fn fill_iovecs(out: &mut Vec<KernelIoVec>, iovs: &[IoVec]) {
    out.clear();
    out.extend(iovs.iter().map(|v| KernelIoVec::new(v.base, v.len)));
}
