//! Mapping and locking the buffer pool's regions (see [`crate::buf`]): a shared memfd
//! (hugetlb when the machine has enough free hugepages), anonymous memory as a last resort,
//! each locked with `mlock` when the limit allows, and one warning per build when it does not.
//!
//! Thread contract: called by the pool's build, on whichever thread builds it (one at a time).

use std::os::fd::OwnedFd;
use std::ptr::NonNull;

use crate::buf::Region;
use crate::mmap;

pub(crate) fn map_region(len: usize) -> std::result::Result<(Region, Option<OwnedFd>), String> {
    // A shared memfd (hugetlb first, only when the kernel reports enough free hugepages; the
    // length must then be a multiple of the hugepage size), anonymous memory as a last resort.
    let huge_ok =
        mmap::free_hugepage_bytes() >= len && len.is_multiple_of(mmap::hugepage_size().max(1));
    for huge in [true, false] {
        if huge && !huge_ok {
            continue;
        }
        let Ok((fd, p)) = mmap::shared_memfd(c"ferrite-dma-pool", len, huge, false) else {
            continue;
        };
        return Ok((region(p, len, huge), Some(fd)));
    }
    let p = mmap::map_anonymous(len)
        .map_err(|e| format!("mmap of {len} bytes for the buffer pool failed: {e}"))?;
    Ok((region(p, len, false), None))
}

/// The region of a mapping just made, locked in memory when the limit allows.
fn region(p: NonNull<u8>, len: usize, hugepages: bool) -> Region {
    Region {
        addr: p.as_ptr() as usize,
        len,
        hugepages,
        locked: lock(p.as_ptr().cast(), len),
    }
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
