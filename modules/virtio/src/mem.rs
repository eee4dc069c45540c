//! The shared memory a virtio-user controller gives its vhost-user server: one memfd mapped
//! shared (hugetlb when the kernel has enough free hugepages, ordinary pages otherwise). It
//! holds every ring, request header, status byte and bounce buffer the server touches, and is
//! announced with SET_MEM_TABLE as one region whose "guest physical" address is its address in
//! this process (identity), so descriptor addresses are plain pointers.
//!
//! Thread contract: created and dropped on the control path; the mapping is shared by the
//! channels through an `Arc` and outlives every request in flight.

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

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

fn free_hugepage_bytes() -> usize {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let get = |k: &str| -> usize {
        text.lines()
            .find_map(|l| l.strip_prefix(k))
            .and_then(|r| r.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    get("HugePages_Free:") * get("Hugepagesize:") * 1024
}

fn memfd(name: &str, flags: libc::c_uint) -> std::io::Result<OwnedFd> {
    let cname = std::ffi::CString::new(name).unwrap_or_default();
    // SAFETY: cname is a valid C string; the result is checked.
    let fd = unsafe { libc::memfd_create(cname.as_ptr(), flags | libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: fd was just returned by memfd_create and is owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

impl SharedMem {
    /// Creates and maps `len` bytes (rounded up to 2 MiB), zero-filled.
    pub fn new(name: &str, len: usize) -> Result<SharedMem> {
        let len = len.max(1).next_multiple_of(HUGE_2M);
        let want_huge = free_hugepage_bytes() >= len;
        let mut tries: Vec<bool> = Vec::with_capacity(2);
        if want_huge {
            tries.push(true);
        }
        tries.push(false);
        let mut last = String::new();
        for huge in tries {
            let flags = if huge { libc::MFD_HUGETLB } else { 0 };
            let fd = match memfd(name, flags) {
                Ok(f) => f,
                Err(e) => {
                    last = format!("memfd_create: {e}");
                    continue;
                }
            };
            // SAFETY: fd is a valid memfd.
            if unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } != 0 {
                last = format!("ftruncate: {}", std::io::Error::last_os_error());
                continue;
            }
            // SAFETY: shared mapping of the whole memfd, no address hint; checked below.
            let p = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    len,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED | libc::MAP_POPULATE,
                    fd.as_raw_fd(),
                    0,
                )
            };
            if p == libc::MAP_FAILED {
                last = format!("mmap: {}", std::io::Error::last_os_error());
                continue;
            }
            return Ok(SharedMem {
                fd,
                addr: p as usize,
                len,
                hugetlb: huge,
            });
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
