//! The shared memory a virtio-user controller gives its vhost-user server: one memfd mapped
//! shared (hugetlb when the kernel has enough free hugepages, ordinary pages otherwise). It
//! holds every ring, request header, status byte and bounce buffer the server touches, and is
//! announced with SET_MEM_TABLE as one region whose "guest physical" address is its address in
//! this process (identity), so descriptor addresses are plain pointers.
//!
//! Thread contract: created and dropped on the control path; the mapping is shared by the
//! channels through an `Arc` and outlives every request in flight.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};

use ferrite_bdev::{BdevError, ErrorKind, Result};

/// A shared memfd mapping.
#[derive(Debug)]
pub struct SharedMem {
    fd: OwnedFd,
    addr: usize,
    len: usize,
    hugetlb: bool,
}

// SAFETY: the mapping is plain shared memory owned by this value; concurrent access to its
// parts is coordinated by the ring protocol (each part has one writer at a time).
unsafe impl Send for SharedMem {}
// SAFETY: as above; `&SharedMem` only hands out addresses.
unsafe impl Sync for SharedMem {}

const HUGE_2M: usize = 2 * 1024 * 1024;

impl SharedMem {
    /// Creates and maps `len` bytes (rounded up to 2 MiB), zero-filled.
    pub fn new(name: &str, len: usize) -> Result<SharedMem> {
        let len = len.max(1).next_multiple_of(HUGE_2M);
        let want_huge = ferrite_bdev::mmap::free_hugepage_bytes() >= len;
        let cname = std::ffi::CString::new(name).unwrap_or_default();
        let mut last = String::new();
        for huge in [true, false] {
            if huge && !want_huge {
                continue;
            }
            match ferrite_bdev::mmap::shared_memfd(&cname, len, huge, true) {
                Ok((fd, p)) => {
                    return Ok(SharedMem {
                        fd,
                        addr: p.as_ptr() as usize,
                        len,
                        hugetlb: huge,
                    })
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(BdevError::new(
            ErrorKind::NoMemory,
            format!("cannot create {len} bytes of shared memory for '{name}': {last}"),
        ))
    }

    /// Start address.
    pub fn addr(&self) -> usize {
        self.addr
    }

    /// Length in bytes.
    #[allow(clippy::len_without_is_empty)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if backed by hugetlb pages.
    pub fn hugetlb(&self) -> bool {
        self.hugetlb
    }

    /// The memfd, for SET_MEM_TABLE.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl Drop for SharedMem {
    fn drop(&mut self) {
        // SAFETY: addr..addr+len is the mapping created in `new`; nothing refers to it any
        // more (the owner drops it after the last channel and request).
        unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len) };
    }
}
