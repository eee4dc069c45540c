//! Memory mappings made outside the data path: by the DMA buffer pool ([`crate::buf`]) and by
//! modules (malloc's memory, the virtio-user bdev's shared memory), and the machine's free
//! hugepages they choose by. Every result is checked; a failure is an `io::Error` the caller
//! turns into its own error, naming what it was creating.
//!
//! Thread contract: any thread; each call blocks while the kernel maps (and, when asked,
//! populates) the memory.

use std::ffi::CStr;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::ptr::NonNull;

/// A value of `/proc/meminfo` (its unit as the kernel prints it), 0 when absent.
fn meminfo_value(key: &str) -> usize {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// Bytes of one default-size hugepage (0 when the kernel has none).
pub fn hugepage_size() -> usize {
    meminfo_value("Hugepagesize:") * 1024
}

/// Bytes of free default-size hugepages, what a hugetlb mapping can take now.
pub fn free_hugepage_bytes() -> usize {
    meminfo_value("HugePages_Free:") * hugepage_size()
}

/// Creates a memfd named `name` of `len` bytes (hugetlb pages when `hugetlb`; `len` must
/// then be a multiple of the hugepage size) and maps all of it shared, read-write; with
/// `populate` every page is faulted in now. The fd can be handed to another process (a
/// vhost-user peer) to map the same memory. The mapping lives until the caller unmaps it.
pub fn shared_memfd(
    name: &CStr,
    len: usize,
    hugetlb: bool,
    populate: bool,
) -> io::Result<(OwnedFd, NonNull<u8>)> {
    let flags = libc::MFD_CLOEXEC | if hugetlb { libc::MFD_HUGETLB } else { 0 };
    // SAFETY: `name` is a valid C string; the result is checked.
    let fd = unsafe { libc::memfd_create(name.as_ptr(), flags) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by memfd_create and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    let size = libc::off_t::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "length out of range"))?;
    // SAFETY: fd is a valid memfd owned by this function.
    if unsafe { libc::ftruncate(fd.as_raw_fd(), size) } != 0 {
        return Err(io::Error::last_os_error());
    }
    let extra = if populate { libc::MAP_POPULATE } else { 0 };
    // SAFETY: a shared mapping of the whole memfd, no address hint; the result is checked.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED | extra,
            fd.as_raw_fd(),
            0,
        )
    };
    mapped(p).map(|p| (fd, p))
}

/// Maps `len` bytes of private anonymous memory, read-write, zero-filled on first touch.
pub fn map_anonymous(len: usize) -> io::Result<NonNull<u8>> {
    // SAFETY: an anonymous private mapping with no address hint; the result is checked.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
            -1,
            0,
        )
    };
    mapped(p)
}

/// The address `mmap` returned, or the error it set.
fn mapped(p: *mut libc::c_void) -> io::Result<NonNull<u8>> {
    if p == libc::MAP_FAILED {
        return Err(io::Error::last_os_error());
    }
    NonNull::new(p.cast::<u8>()).ok_or_else(|| io::Error::other("mmap returned null"))
}
