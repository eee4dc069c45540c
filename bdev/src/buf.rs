//! The DMA-capable data buffer pool.
//!
//! Two size classes (small and large, as SPDK's iobuf), each one contiguous region mapped once:
//! a shared memfd mapping (hugetlb when the machine has enough free hugepages, ordinary pages
//! otherwise; anonymous memory only if memfd fails), locked with `mlock` when the limit
//! allows. Buffers are handed out through a lock-free global queue with a per-thread cache in
//! front. Every region is listed by [`regions`] so that a driver needing virtual→IOVA
//! translation (the NVMe driver) can map them all up front, and [`shared_regions`] gives the
//! memfd behind each, so that a vhost-user frontend (the virtio-user bdev) can share the pool
//! with its server and do I/O on pool buffers without copying.
//!
//! The sizes ([`BufPoolConfig`]) may change until the pool is built (SPDK's `iobuf_set_options`
//! maps onto them); from then on they are fixed. A build that fails (memory, address-space
//! limit) is not kept: the next [`init`] or use tries again, so an operator can lower the sizes
//! or free memory and retry `framework_start_init`. Locking the pool in memory is best effort:
//! when `mlock` fails (the locked-memory limit) the pool works unpinned, a warning says why,
//! and [`BufStats::locked`] is false.

use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::{Mutex, OnceLock};

use crossbeam_queue::ArrayQueue;

use crate::buf_map;
pub use crate::buf_stats::{iobuf_stats, ClassStats, IobufStats};
use crate::error::{BdevError, ErrorKind, Result};

/// Pool sizes. Set with [`configure`] before the pool is built ([`init`] or the first buffer).
/// Buffer sizes are rounded up to a multiple of 4 KiB when the pool is built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufPoolConfig {
    /// Bytes per small buffer.
    pub small_size: usize,
    /// Number of small buffers.
    pub small_count: usize,
    /// Bytes per large buffer.
    pub large_size: usize,
    /// Number of large buffers.
    pub large_count: usize,
}

impl Default for BufPoolConfig {
    fn default() -> Self {
        Self {
            small_size: 8 * 1024,
            small_count: 8192,
            large_size: 128 * 1024,
            large_count: 1024,
        }
    }
}

/// A memory region backing a pool class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    /// Start address.
    pub addr: usize,
    /// Length in bytes.
    pub len: usize,
    /// True if backed by hugepages.
    pub hugepages: bool,
    /// True if locked in memory (`mlock`); false if the locked-memory limit refused it.
    pub locked: bool,
}

/// A pool region backed by a memfd, shareable with another process (`mmap` of `fd` at
/// offset 0 gives the same `len` bytes that live at `addr` here).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SharedRegion {
    /// The memfd (owned by the pool, open for the life of the process).
    pub fd: RawFd,
    /// Start address in this process.
    pub addr: usize,
    /// Length in bytes.
    pub len: usize,
}

struct Class {
    size: usize,
    count: usize,
    region: Region,
    memfd: Option<OwnedFd>,
    free: ArrayQueue<usize>,
}

impl Drop for Class {
    /// Unmaps the region. Runs only for a class of a build that failed later on (the classes
    /// of the built pool live in a static and are never dropped), from which no buffer was
    /// handed out.
    fn drop(&mut self) {
        // SAFETY: the region is this class's own mapping, made by `map_region`, and nothing
        // points into it (no buffer was taken from a pool that was never published).
        unsafe { libc::munmap(self.region.addr as *mut libc::c_void, self.region.len) };
    }
}

struct Pool {
    cfg: BufPoolConfig,
    classes: [Class; 2],
}

/// The sizes the next build uses (`None`: the defaults). The lock also serialises builds.
static PENDING: Mutex<Option<BufPoolConfig>> = Mutex::new(None);
/// The built pool; never replaced.
static POOL: OnceLock<Pool> = OnceLock::new();

/// Most buffers of one class (a limit on everything: the free queue takes 16 bytes a buffer).
pub const MAX_BUF_COUNT: usize = 1 << 22;
/// Largest buffer size.
pub const MAX_BUF_SIZE: usize = 64 << 20;

/// Sets the pool sizes for the build. Until the pool is built they may be set again (the last
/// call wins); once it is built, the same sizes are accepted and others refused (`Busy`).
/// Invalid sizes (zero, small larger than large, beyond [`MAX_BUF_COUNT`] or
/// [`MAX_BUF_SIZE`]) are refused with `InvalidArgument`, naming the value.
///
/// Thread contract: any thread; does not build the pool.
pub fn configure(cfg: BufPoolConfig) -> Result<()> {
    let bad = |what: String| Err(BdevError::new(ErrorKind::InvalidArgument, what));
    for (name, v) in [("small", cfg.small_count), ("large", cfg.large_count)] {
        if v == 0 || v > MAX_BUF_COUNT {
            return bad(format!(
                "{name} buffer count {v} is out of range (1..={MAX_BUF_COUNT})"
            ));
        }
    }
    for (name, v) in [("small", cfg.small_size), ("large", cfg.large_size)] {
        if v == 0 || v > MAX_BUF_SIZE {
            return bad(format!(
                "{name} buffer size {v} is out of range (1..={MAX_BUF_SIZE})"
            ));
        }
    }
    if cfg.large_size < cfg.small_size {
        return bad(format!(
            "large buffer size {} is smaller than the small buffer size {}",
            cfg.large_size, cfg.small_size
        ));
    }
    let mut pending = lock_pending()?;
    match POOL.get() {
        Some(p) if p.cfg != cfg => Err(BdevError::new(
            ErrorKind::Busy,
            "the buffer pool is already built with other sizes",
        )),
        Some(_) => Ok(()),
        None => {
            *pending = Some(cfg);
            Ok(())
        }
    }
}

/// The sizes in use: those of the built pool, else those the next build will use.
///
/// Thread contract: any thread.
pub fn config() -> BufPoolConfig {
    if let Some(p) = POOL.get() {
        return p.cfg;
    }
    lock_pending().ok().and_then(|g| *g).unwrap_or_default()
}

fn lock_pending() -> Result<std::sync::MutexGuard<'static, Option<BufPoolConfig>>> {
    PENDING.lock().map_err(|_| {
        BdevError::new(
            ErrorKind::Busy,
            "the buffer pool's set-up lock is poisoned (a build panicked)",
        )
    })
}

fn build(cfg: BufPoolConfig) -> std::result::Result<Pool, String> {
    let mk = |size: usize, count: usize| -> std::result::Result<Class, String> {
        let size = size.next_multiple_of(4096);
        let (region, memfd) = buf_map::map_region(size * count)?;
        let free = ArrayQueue::new(count);
        for i in 0..count {
            let _ = free.push(region.addr + i * size);
        }
        Ok(Class {
            size,
            count,
            region,
            memfd,
            free,
        })
    };
    let total = |size: usize, count: usize| size.next_multiple_of(4096).checked_mul(count);
    if total(cfg.small_size, cfg.small_count).is_none()
        || total(cfg.large_size, cfg.large_count).is_none()
    {
        return Err(format!(
            "buffer pool sizes {cfg:?} overflow the address space"
        ));
    }
    // A failure after the small class unmaps it (`Class`'s drop).
    let small = mk(cfg.small_size, cfg.small_count)?;
    let large = mk(cfg.large_size, cfg.large_count)?;
    let classes = [small, large];
    buf_map::warn_unlocked(&[classes[0].region, classes[1].region]);
    Ok(Pool { cfg, classes })
}

/// The pool, built on first use. The built pool is one atomic load away; building is cold.
#[inline]
fn pool() -> Result<&'static Pool> {
    match POOL.get() {
        Some(p) => Ok(p),
        None => build_pool(),
    }
}

/// Builds the pool with the pending sizes unless another caller did meanwhile. A failure is
/// not kept: the next call tries again.
#[cold]
fn build_pool() -> Result<&'static Pool> {
    let pending = lock_pending()?;
    if let Some(p) = POOL.get() {
        return Ok(p);
    }
    let cfg = pending.unwrap_or_default();
    let built = build(cfg).map_err(|e| BdevError::new(ErrorKind::NoMemory, e))?;
    // Under the lock and checked above: this call publishes it.
    Ok(POOL.get_or_init(|| built))
}

/// Builds the pool now, with the sizes set by [`configure`] (or the defaults), unless it exists
/// already; answers its statistics. An application calls it at start-up, after its start-up
/// options are applied and before any I/O, as SPDK builds its iobuf pools at subsystem init:
/// building maps (and locks, when the limit allows) every buffer, ~200 MiB with the defaults,
/// which would otherwise stall the reactor of the first I/O that needs a pool buffer. Without
/// it the pool is built on first use (library users, tests). Fails with `NoMemory`, saying
/// why, if the pool cannot be built; the failure is not kept (nothing stays mapped), so a later
/// call (after [`configure`] with smaller sizes, or once memory is free) tries again.
///
/// Thread contract: any thread; blocks while it builds (well under a second).
pub fn init() -> Result<BufStats> {
    pool().map_err(|e| {
        BdevError::new(
            ErrorKind::NoMemory,
            format!("cannot build the DMA buffer pool: {}", e.message()),
        )
    })?;
    stats()
}

/// True once the pool has been built (by [`init`] or the first use).
///
/// Thread contract: any thread.
pub fn is_built() -> bool {
    POOL.get().is_some()
}

/// Regions backing the pool (creating it if needed), for drivers that must map them for DMA.
pub fn regions() -> Result<Vec<Region>> {
    Ok(pool()?.classes.iter().map(|c| c.region).collect())
}

/// The pool's memfd-backed regions (creating the pool if needed), for a vhost-user frontend
/// that gives them to its server; empty if the pool fell back to anonymous memory.
pub fn shared_regions() -> Result<Vec<SharedRegion>> {
    Ok(pool()?
        .classes
        .iter()
        .filter_map(|c| {
            c.memfd.as_ref().map(|fd| SharedRegion {
                fd: fd.as_raw_fd(),
                addr: c.region.addr,
                len: c.region.len,
            })
        })
        .collect())
}

/// Pool statistics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BufStats {
    /// Size of a small buffer.
    pub small_size: usize,
    /// Small buffers in total / free in the global queue (thread caches not counted).
    pub small_total: usize,
    /// Free small buffers in the global queue.
    pub small_free: usize,
    /// Size of a large buffer.
    pub large_size: usize,
    /// Large buffers in total.
    pub large_total: usize,
    /// Free large buffers in the global queue.
    pub large_free: usize,
    /// Buffers handed out since start (both classes, from caches and the global queues; the
    /// breakdown is in [`iobuf_stats`]).
    pub gets: u64,
    /// Times a request had to wait for a buffer.
    pub waits: u64,
    /// True if hugepage-backed.
    pub hugepages: bool,
    /// True if locked in memory (`mlock`); false if the locked-memory limit refused it (the
    /// pool works, unpinned).
    pub locked: bool,
}

/// Current pool statistics.
pub fn stats() -> Result<BufStats> {
    let p = pool()?;
    let c = iobuf_stats();
    Ok(BufStats {
        small_size: p.classes[0].size,
        small_total: p.classes[0].count,
        small_free: p.classes[0].free.len(),
        large_size: p.classes[1].size,
        large_total: p.classes[1].count,
        large_free: p.classes[1].free.len(),
        gets: c.small.cache + c.small.main + c.large.cache + c.large.main,
        waits: c.small.retry + c.large.retry,
        hugepages: p.classes.iter().all(|c| c.region.hugepages),
        locked: p.classes.iter().all(|c| c.region.locked),
    })
}

/// The class a buffer of `len` bytes comes from (0 small, 1 large), once the pool is built.
pub(crate) fn class_of(len: usize) -> u8 {
    match POOL.get() {
        Some(p) if len > p.classes[0].size => 1,
        _ => 0,
    }
}

/// An owned, page-aligned data buffer from the pool; returned to it when dropped.
pub struct DmaBuf {
    ptr: NonNull<u8>,
    len: usize,
    class: u8,
}

// SAFETY: a DmaBuf is the unique owner of its slice of the pool's mapping, like a Box<[u8]>.
unsafe impl Send for DmaBuf {}

impl std::fmt::Debug for DmaBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DmaBuf({:p}, {})", self.ptr, self.len)
    }
}

impl DmaBuf {
    /// Takes a buffer of at least `len` bytes, or `None` if the pool is exhausted (try again
    /// when buffers return). Errors only if `len` exceeds the large size or the pool could not
    /// be created (then every call tries to build it again, under a lock: no I/O works then).
    /// Any thread; uses the calling lightweight thread's cache when there is one.
    pub fn get(len: usize) -> Result<Option<DmaBuf>> {
        let p = pool()?;
        let class = if len <= p.classes[0].size {
            0
        } else if len <= p.classes[1].size {
            1
        } else {
            return Err(BdevError::new(
                ErrorKind::InvalidArgument,
                format!(
                    "buffer of {len} bytes exceeds the largest pool buffer ({})",
                    p.classes[1].size
                ),
            ));
        };
        let addr = crate::thread::buf_take(class, || p.classes[class as usize].free.pop());
        Ok(addr.and_then(|a| NonNull::new(a as *mut u8).map(|ptr| DmaBuf { ptr, len, class })))
    }

    /// Length requested.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True if zero-length.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Raw pointer to the start.
    pub fn as_ptr(&self) -> *mut u8 {
        self.ptr.as_ptr()
    }

    /// The bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the buffer is at least `len` bytes of our exclusive mapping.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len) }
    }

    /// The bytes, mutably.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as above, and &mut self guarantees exclusivity.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len) }
    }

    /// Changes the length within the class size.
    pub fn set_len(&mut self, len: usize) -> Result<()> {
        let p = pool()?;
        if len > p.classes[self.class as usize].size {
            return Err(BdevError::new(
                ErrorKind::InvalidArgument,
                "length beyond buffer capacity",
            ));
        }
        self.len = len;
        Ok(())
    }
}

impl Drop for DmaBuf {
    fn drop(&mut self) {
        let addr = self.ptr.as_ptr() as usize;
        let Ok(p) = pool() else { return };
        let class = &p.classes[self.class as usize];
        // Cache on this thread only while the global queue holds at least half of the class:
        // the caches together can then never hold more than half, and a thread waiting for a
        // buffer is not starved by buffers stranded in the cache of an idle thread.
        if class.free.len() >= (class.count / 2).max(1)
            && crate::thread::cache_put(self.class, addr)
        {
            return;
        }
        let _ = class.free.push(addr);
    }
}

pub(crate) fn release_to_global(class: u8, addr: usize) {
    if let Ok(p) = pool() {
        let _ = p.classes[class as usize].free.push(addr);
    }
}

pub(crate) fn pool_cfg() -> BufPoolConfig {
    pool().map(|p| p.cfg).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Invalid sizes are refused naming the value, before any state changes.
    #[test]
    fn invalid_sizes_name_the_value() {
        let d = BufPoolConfig::default();
        let msg = |c: BufPoolConfig| match configure(c) {
            Err(e) if e.kind() == ErrorKind::InvalidArgument => e.message().to_string(),
            other => panic!("{c:?}: {other:?}"),
        };
        let m = msg(BufPoolConfig {
            small_count: 0,
            ..d
        });
        assert!(m.contains("small buffer count 0 is out of range"), "{m}");
        let m = msg(BufPoolConfig {
            large_count: MAX_BUF_COUNT + 1,
            ..d
        });
        assert!(m.contains("large buffer count"), "{m}");
        let m = msg(BufPoolConfig {
            large_size: MAX_BUF_SIZE + 1,
            ..d
        });
        assert!(m.contains("large buffer size"), "{m}");
        let m = msg(BufPoolConfig {
            small_size: 16384,
            large_size: 8192,
            ..d
        });
        assert!(
            m.contains("smaller than the small buffer size 16384"),
            "{m}"
        );
        assert_eq!(config(), d);
    }
}
