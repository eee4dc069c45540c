//! Mapping and locking the buffer pool's regions (see [`crate::buf`]): a shared memfd
//! (hugetlb when the machine has enough free hugepages), anonymous memory as a last resort,
//! each locked with `mlock` when the limit allows, and one warning per build when it does not.
//!
//! Thread contract: called by the pool's build, on whichever thread builds it (one at a time).

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use crate::buf::Region;

fn memfd(len: usize, huge: bool) -> Option<OwnedFd> {
    let flags = libc::MFD_CLOEXEC | if huge { libc::MFD_HUGETLB } else { 0 };
    // SAFETY: a valid C string; the result is checked.
    let fd = unsafe { libc::memfd_create(c"ferrite-dma-pool".as_ptr(), flags) };
    if fd < 0 {
        return None;
    }
    // SAFETY: fd was just created and is owned by nobody else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // SAFETY: fd is a valid memfd.
    (unsafe { libc::ftruncate(fd.as_raw_fd(), len as libc::off_t) } == 0).then_some(fd)
}

pub(crate) fn map_region(len: usize) -> std::result::Result<(Region, Option<OwnedFd>), String> {
    // A shared memfd (hugetlb first, only when the kernel reports enough free hugepages; the
    // length must then be a multiple of the hugepage size), anonymous memory as a last resort.
    let huge_ok =
        free_hugepages() * hugepage_size() >= len && len.is_multiple_of(hugepage_size().max(1));
    for huge in [true, false] {
        if huge && !huge_ok {
            continue;
        }
        let Some(fd) = memfd(len, huge) else { continue };
        // SAFETY: shared mapping of the whole memfd, no address hint; checked below.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                fd.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            continue;
        }
        let region = Region {
            addr: p as usize,
            len,
            hugepages: huge,
            locked: lock(p, len),
        };
        return Ok((region, Some(fd)));
    }
    // SAFETY: anonymous private mapping with no address hint; the result is checked.
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
    if p == libc::MAP_FAILED {
        return Err(format!(
            "mmap of {len} bytes for the buffer pool failed: {}",
            std::io::Error::last_os_error()
        ));
    }
    let region = Region {
        addr: p as usize,
        len,
        hugepages: false,
        locked: lock(p, len),
    };
    Ok((region, None))
}

/// Locks `p..p+len` in memory, best effort: locked memory keeps physical addresses stable for
/// DMA. Failure (the locked-memory limit) is not an error for backends that do not DMA; the
/// build warns once about it (see [`warn_unlocked`]).
fn lock(p: *mut libc::c_void, len: usize) -> bool {
    // SAFETY: p..p+len is a mapping just created by the caller.
    if unsafe { libc::mlock(p, len) } == 0 {
        return true;
    }
    let e = std::io::Error::last_os_error();
    UNLOCKED_REASON.with_borrow_mut(|r| {
        r.get_or_insert_with(|| e.to_string());
    });
    false
}

std::thread_local! {
    /// Why the last `mlock` of this build failed (builds run on one thread at a time).
    static UNLOCKED_REASON: std::cell::RefCell<Option<String>> =
        const { std::cell::RefCell::new(None) };
}

/// Logs once per build, as a warning, that the pool is not locked in memory, with the reason
/// and what to change.
pub(crate) fn warn_unlocked(regions: &[Region]) {
    let unlocked: usize = regions.iter().filter(|r| !r.locked).map(|r| r.len).sum();
    let reason = UNLOCKED_REASON.with_borrow_mut(|r| r.take());
    if unlocked == 0 {
        return;
    }
    let limit = memlock_limit();
    tracing::warn!(
        "DMA buffer pool: mlock of {} MiB failed ({}; locked-memory limit {limit}): the pool \
         works, but unpinned (its pages may be swapped out; mapping it for DMA, as the nvme \
         driver does through VFIO, needs the same limit raised); raise the limit (ulimit -l, \
         systemd LimitMEMLOCK=) to pin it",
        unlocked >> 20,
        reason.as_deref().unwrap_or("unknown reason"),
    );
}

fn memlock_limit() -> String {
    let mut r = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct passed by pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut r) } != 0 {
        return "unknown".into();
    }
    if r.rlim_cur == libc::RLIM_INFINITY {
        "unlimited".into()
    } else {
        format!("{} KiB", r.rlim_cur / 1024)
    }
}

fn meminfo_value(key: &str) -> usize {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix(key))
        .and_then(|r| r.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn free_hugepages() -> usize {
    meminfo_value("HugePages_Free:")
}

fn hugepage_size() -> usize {
    meminfo_value("Hugepagesize:") * 1024
}
