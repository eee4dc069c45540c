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

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use crossbeam_queue::ArrayQueue;

use crate::error::{BdevError, ErrorKind, Result};

/// Pool sizes. Set with [`configure`] before the pool is built ([`init`] or the first buffer).
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
    /// Buffers each thread keeps in its cache, per class.
    pub cache_size: usize,
}

impl Default for BufPoolConfig {
    fn default() -> Self {
        Self {
            small_size: 8 * 1024,
            small_count: 8192,
            large_size: 128 * 1024,
            large_count: 1024,
            cache_size: 64,
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

struct Pool {
    cfg: BufPoolConfig,
    classes: [Class; 2],
    gets: AtomicU64,
    waits: AtomicU64,
}

static CONFIG: OnceLock<BufPoolConfig> = OnceLock::new();
static POOL: OnceLock<std::result::Result<Pool, String>> = OnceLock::new();

/// Sets the pool sizes. Fails if the pool already exists (first buffer taken) with other sizes.
pub fn configure(cfg: BufPoolConfig) -> Result<()> {
    if cfg.small_count == 0
        || cfg.large_count == 0
        || cfg.small_size == 0
        || cfg.large_size < cfg.small_size
    {
        return Err(BdevError::new(
            ErrorKind::InvalidArgument,
            format!("invalid buffer pool sizes {cfg:?}"),
        ));
    }
    let set = *CONFIG.get_or_init(|| cfg);
    if set != cfg {
        return Err(BdevError::new(
            ErrorKind::Busy,
            "buffer pool is already configured with other sizes",
        ));
    }
    Ok(())
}

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

fn map_region(len: usize) -> std::result::Result<(Region, Option<OwnedFd>), String> {
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
        // Best effort, as below.
        // SAFETY: p..p+len is the mapping just created.
        let _ = unsafe { libc::mlock(p, len) };
        let region = Region {
            addr: p as usize,
            len,
            hugepages: huge,
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
    // Best effort: locked memory keeps physical addresses stable for DMA. Failure (memlock
    // limit) is not an error for backends that do not DMA.
    // SAFETY: p..p+len is the mapping just created.
    let _ = unsafe { libc::mlock(p, len) };
    let region = Region {
        addr: p as usize,
        len,
        hugepages: false,
    };
    Ok((region, None))
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

fn build(cfg: BufPoolConfig) -> std::result::Result<Pool, String> {
    let mk = |size: usize, count: usize| -> std::result::Result<Class, String> {
        let size = size.next_multiple_of(4096);
        let (region, memfd) = map_region(size * count)?;
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
    Ok(Pool {
        cfg,
        classes: [
            mk(cfg.small_size, cfg.small_count)?,
            mk(cfg.large_size, cfg.large_count)?,
        ],
        gets: AtomicU64::new(0),
        waits: AtomicU64::new(0),
    })
}

fn pool() -> Result<&'static Pool> {
    let cfg = *CONFIG.get_or_init(BufPoolConfig::default);
    POOL.get_or_init(|| build(cfg))
        .as_ref()
        .map_err(|e| BdevError::new(ErrorKind::NoMemory, e.clone()))
}

/// Builds the pool now, with the sizes set by [`configure`] (or the defaults), unless it exists
/// already; answers its statistics. An application calls it at start-up, after its start-up
/// options are applied and before any I/O, as SPDK builds its iobuf pools at subsystem init:
/// building maps (and locks, when the limit allows) every buffer, ~200 MiB with the defaults,
/// which would otherwise stall the reactor of the first I/O that needs a pool buffer. Without
/// it the pool is built on first use (library users, tests). Fails with `NoMemory`, saying
/// why, if the pool cannot be built (the same error every later use would get).
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
    POOL.get().is_some_and(|p| p.is_ok())
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
    /// Buffers handed out since start.
    pub gets: u64,
    /// Times a request had to wait for a buffer.
    pub waits: u64,
    /// True if hugepage-backed.
    pub hugepages: bool,
}

/// Current pool statistics.
pub fn stats() -> Result<BufStats> {
    let p = pool()?;
    Ok(BufStats {
        small_size: p.classes[0].size,
        small_total: p.classes[0].count,
        small_free: p.classes[0].free.len(),
        large_size: p.classes[1].size,
        large_total: p.classes[1].count,
        large_free: p.classes[1].free.len(),
        gets: p.gets.load(Ordering::Relaxed),
        waits: p.waits.load(Ordering::Relaxed),
        hugepages: p.classes.iter().all(|c| c.region.hugepages),
    })
}

pub(crate) fn note_wait() {
    if let Ok(p) = pool() {
        p.waits.fetch_add(1, Ordering::Relaxed);
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
    /// be created. Any thread; uses the calling lightweight thread's cache when there is one.
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
        let addr = crate::thread::cache_get(class).or_else(|| p.classes[class as usize].free.pop());
        Ok(addr.and_then(|a| {
            p.gets.fetch_add(1, Ordering::Relaxed);
            NonNull::new(a as *mut u8).map(|ptr| DmaBuf { ptr, len, class })
        }))
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

pub(crate) fn cache_limit() -> usize {
    CONFIG
        .get()
        .map(|c| c.cache_size)
        .unwrap_or(BufPoolConfig::default().cache_size)
}

pub(crate) fn release_to_global(class: u8, addr: usize) {
    if let Ok(p) = pool() {
        let _ = p.classes[class as usize].free.push(addr);
    }
}

pub(crate) fn pool_cfg() -> BufPoolConfig {
    pool().map(|p| p.cfg).unwrap_or_default()
}
