//! The Linux AIO ABI (`linux/aio_abi.h`) through raw syscalls, and the block-device ioctls the
//! file modules use. No libaio: `io_setup`, `io_submit`, `io_getevents` and `io_destroy` are
//! called with `libc::syscall`, and completions are normally read straight from the ring the
//! kernel maps at the context's address (as SPDK does), which costs no syscall when idle.

use std::cell::Cell;
use std::io;
use std::marker::PhantomData;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};

/// `IOCB_CMD_PREAD`.
pub const IOCB_CMD_PREAD: u16 = 0;
/// `IOCB_CMD_PWRITE`.
pub const IOCB_CMD_PWRITE: u16 = 1;
/// `IOCB_CMD_FDSYNC`.
pub const IOCB_CMD_FDSYNC: u16 = 3;
/// `IOCB_CMD_PREADV`.
pub const IOCB_CMD_PREADV: u16 = 7;
/// `IOCB_CMD_PWRITEV`.
pub const IOCB_CMD_PWRITEV: u16 = 8;
/// `IOCB_FLAG_RESFD`: signal `aio_resfd` (an eventfd) when the request completes.
pub const IOCB_FLAG_RESFD: u32 = 1;

/// `struct iocb` (64 bytes). The key / rw_flags pair is laid out by endianness, as in the
/// kernel header.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct Iocb {
    /// Returned in `io_event::data`.
    pub aio_data: u64,
    #[cfg(target_endian = "little")]
    pub aio_key: u32,
    #[cfg(target_endian = "little")]
    pub aio_rw_flags: i32,
    #[cfg(target_endian = "big")]
    pub aio_rw_flags: i32,
    #[cfg(target_endian = "big")]
    pub aio_key: u32,
    /// One of the `IOCB_CMD_*` values.
    pub aio_lio_opcode: u16,
    pub aio_reqprio: i16,
    pub aio_fildes: u32,
    /// Buffer, or `iovec` array for the vectored commands.
    pub aio_buf: u64,
    /// Bytes, or number of `iovec`s for the vectored commands.
    pub aio_nbytes: u64,
    pub aio_offset: i64,
    pub aio_reserved2: u64,
    /// `IOCB_FLAG_*`.
    pub aio_flags: u32,
    /// Eventfd signalled on completion when `IOCB_FLAG_RESFD` is set.
    pub aio_resfd: u32,
}

/// `struct io_event`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub struct IoEvent {
    /// The `aio_data` of the request.
    pub data: u64,
    /// Address of the iocb.
    pub obj: u64,
    /// Bytes transferred, or `-errno`.
    pub res: i64,
    pub res2: i64,
}

/// Magic value in the header of the completion ring the kernel maps for a context.
const AIO_RING_MAGIC: u32 = 0xa10a_10a1;

/// Header of that ring (`struct aio_ring` in fs/aio.c); the events follow `header_length`
/// bytes after its start.
#[repr(C)]
struct AioRingHeader {
    id: u32,
    nr: u32,
    head: u32,
    tail: u32,
    magic: u32,
    compat_features: u32,
    incompat_features: u32,
    header_length: u32,
}

/// An AIO context (`aio_context_t`), destroyed on drop.
///
/// `Send` without any `unsafe impl`: it is a kernel handle (plain integers), and every AIO
/// syscall may be issued from any thread of the process. Not `Sync`: reaping from the ring
/// moves its head, which two threads must not do at once.
#[derive(Debug)]
pub struct AioContext {
    ctx: u64,
    user_ring: bool,
    _not_sync: PhantomData<Cell<()>>,
}

impl AioContext {
    /// `io_setup(nr_events)`.
    pub fn new(nr_events: u32) -> io::Result<Self> {
        let mut ctx: u64 = 0;
        // SAFETY: io_setup writes one aio_context_t (u64) to the live `ctx`.
        let rc = unsafe { libc::syscall(libc::SYS_io_setup, nr_events as libc::c_long, &mut ctx) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        let user_ring = Self::ring_usable(ctx);
        Ok(Self {
            ctx,
            user_ring,
            _not_sync: PhantomData,
        })
    }

    fn ring_usable(ctx: u64) -> bool {
        if ctx == 0 {
            return false;
        }
        let h = ctx as *const AioRingHeader;
        // SAFETY: a context returned by io_setup is the address of the kernel-mapped ring,
        // readable for at least its header while the context lives.
        let (magic, incompat, hl) = unsafe {
            (
                std::ptr::read_volatile(&raw const (*h).magic),
                std::ptr::read_volatile(&raw const (*h).incompat_features),
                std::ptr::read_volatile(&raw const (*h).header_length),
            )
        };
        magic == AIO_RING_MAGIC
            && incompat == 0
            && hl as usize >= std::mem::size_of::<AioRingHeader>()
    }

    /// True if completions are read from the mapped ring (no syscall); false if
    /// `io_getevents` is used.
    pub fn user_ring(&self) -> bool {
        self.user_ring
    }

    /// `io_submit`: returns how many of `iocbs` the kernel took (from the front), or the error
    /// of the first one when it took none.
    ///
    /// # Safety
    /// Every pointer must point to an iocb whose buffers (and iovec arrays) stay valid and
    /// untouched until its completion is reaped.
    pub unsafe fn submit(&self, iocbs: &[*mut Iocb]) -> io::Result<usize> {
        if iocbs.is_empty() {
            return Ok(0);
        }
        // SAFETY: the caller guarantees the iocbs and their buffers; the array is live for the
        // call and its length is passed.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_io_submit,
                self.ctx,
                iocbs.len() as libc::c_long,
                iocbs.as_ptr(),
            )
        };
        if rc < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(rc as usize)
        }
    }

    /// Takes up to `out.len()` completions without blocking; returns how many were written.
    pub fn reap(&self, out: &mut [IoEvent]) -> usize {
        if out.is_empty() {
            return 0;
        }
        if self.user_ring {
            return self.reap_user(out);
        }
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `out` is a live array of `out.len()` io_events; a zero timeout never blocks.
        let rc = unsafe {
            libc::syscall(
                libc::SYS_io_getevents,
                self.ctx,
                0 as libc::c_long,
                out.len() as libc::c_long,
                out.as_mut_ptr(),
                &mut ts,
            )
        };
        if rc < 0 {
            0
        } else {
            rc as usize
        }
    }

    /// Reads completions from the mapped ring: the kernel advances `tail`, we advance `head`.
    fn reap_user(&self, out: &mut [IoEvent]) -> usize {
        let h = self.ctx as *mut AioRingHeader;
        // SAFETY: the header fields are u32s in the kernel-shared mapping, aligned; the kernel
        // writes `tail` concurrently, so it is read atomically (acquire: the events before it
        // are visible); `head` is written only by us (userspace reaping) or under the kernel's
        // ring lock when io_getevents is used, which this context never calls.
        let (nr, head_a, tail_a, hl) = unsafe {
            (
                std::ptr::read_volatile(&raw const (*h).nr),
                AtomicU32::from_ptr(&raw mut (*h).head),
                AtomicU32::from_ptr(&raw mut (*h).tail),
                std::ptr::read_volatile(&raw const (*h).header_length),
            )
        };
        let tail = tail_a.load(Ordering::Acquire);
        let mut head = head_a.load(Ordering::Relaxed);
        if head == tail || nr == 0 {
            return 0;
        }
        let events = (self.ctx as usize + hl as usize) as *const IoEvent;
        let mut n = 0;
        while head != tail && n < out.len() {
            // SAFETY: head < nr (kept modulo nr, as the kernel does), so the event is inside the
            // ring's event array, which the kernel filled before publishing `tail`.
            out[n] = unsafe { std::ptr::read_volatile(events.add(head as usize % nr as usize)) };
            head = (head + 1) % nr;
            n += 1;
        }
        head_a.store(head, Ordering::Release);
        n
    }

    /// True if completions are waiting in the mapped ring (always false when the ring cannot
    /// be read from userspace).
    pub fn has_events(&self) -> bool {
        if !self.user_ring {
            return false;
        }
        let h = self.ctx as *mut AioRingHeader;
        // SAFETY: as in reap_user.
        let (head, tail) = unsafe {
            (
                AtomicU32::from_ptr(&raw mut (*h).head).load(Ordering::Relaxed),
                AtomicU32::from_ptr(&raw mut (*h).tail).load(Ordering::Acquire),
            )
        };
        head != tail
    }
}

impl Drop for AioContext {
    fn drop(&mut self) {
        // SAFETY: destroys our own context; the kernel waits for (or cancels) requests still in
        // flight before returning, so their buffers are no longer used afterwards.
        unsafe { libc::syscall(libc::SYS_io_destroy, self.ctx) };
    }
}

const fn ioc(dir: u64, ty: u64, nr: u64, size: u64) -> u64 {
    (dir << 30) | (size << 16) | (ty << 8) | nr
}

/// `BLKGETSIZE64`: size of a block device in bytes (`_IOR(0x12, 114, size_t)`).
pub const BLKGETSIZE64: u64 = ioc(2, 0x12, 114, std::mem::size_of::<usize>() as u64);
/// `BLKDISCARD`: discard a byte range (`_IO(0x12, 119)`), argument `[u64; 2]`.
pub const BLKDISCARD: u64 = ioc(0, 0x12, 119, 0);
/// `BLKSSZGET`: logical block size (`_IO(0x12, 104)`), argument `int`.
pub const BLKSSZGET: u64 = ioc(0, 0x12, 104, 0);

/// Size of the block device open on `fd`, in bytes.
pub fn blkdev_size(fd: RawFd) -> io::Result<u64> {
    let mut sz: u64 = 0;
    // SAFETY: BLKGETSIZE64 writes one u64 to the live `sz`.
    let rc = unsafe { libc::ioctl(fd, BLKGETSIZE64 as _, &mut sz) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sz)
}

/// Logical block size of the block device open on `fd`.
pub fn blkdev_logical_block_size(fd: RawFd) -> io::Result<u32> {
    let mut bs: libc::c_int = 0;
    // SAFETY: BLKSSZGET writes one int to the live `bs`.
    let rc = unsafe { libc::ioctl(fd, BLKSSZGET as _, &mut bs) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(bs.max(0) as u32)
}

/// Discards `[off, off + len)` of the block device open on `fd` (blocking).
pub fn blkdev_discard(fd: RawFd, off: u64, len: u64) -> io::Result<()> {
    let range: [u64; 2] = [off, len];
    // SAFETY: BLKDISCARD reads two u64s from the live `range`.
    let rc = unsafe { libc::ioctl(fd, BLKDISCARD as _, &range) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `fallocate(fd, mode, off, len)` (blocking).
pub fn fallocate(fd: RawFd, mode: i32, off: u64, len: u64) -> io::Result<()> {
    // SAFETY: no pointer arguments.
    let rc = unsafe { libc::fallocate(fd, mode, off as libc::off_t, len as libc::off_t) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// `fdatasync(fd)` (blocking).
pub fn fdatasync(fd: RawFd) -> io::Result<()> {
    // SAFETY: no pointer arguments.
    let rc = unsafe { libc::fdatasync(fd) };
    if rc < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The name of the memory-backed filesystem holding the file open at `fd` (`tmpfs`, `ramfs`,
/// `hugetlbfs`), or `None` for any other filesystem (or when `fstatfs` fails). Data of such a
/// file lives in the page cache only: a read or write is a memory copy that never waits for a
/// device (except for tmpfs pages pushed to swap under memory pressure).
pub fn memory_fs(fd: RawFd) -> Option<&'static str> {
    // SAFETY: an all-zero statfs is a valid value of this plain C struct.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: fstatfs writes one struct statfs to the live `st`; the result is checked.
    if unsafe { libc::fstatfs(fd, &mut st) } < 0 {
        return None;
    }
    // The type's width differs between C libraries and architectures; the magics fit in 32 bits.
    #[allow(clippy::unnecessary_cast)]
    match st.f_type as i64 & 0xffff_ffff {
        0x0102_1994 => Some("tmpfs"),
        0x8584_58f6 => Some("ramfs"),
        0x9584_58f6 => Some("hugetlbfs"),
        _ => None,
    }
}

/// A non-blocking, close-on-exec eventfd.
pub fn eventfd() -> io::Result<std::os::fd::OwnedFd> {
    use std::os::fd::FromRawFd;
    // SAFETY: no pointer arguments; the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

/// A channel's completion eventfd for bdev `bdev`; `None` (with a warning) if none can be
/// made, and then a sleeping reactor is not woken by the channel's completions.
pub fn completion_eventfd(bdev: &str) -> Option<std::os::fd::OwnedFd> {
    match eventfd() {
        Ok(f) => Some(f),
        Err(e) => {
            tracing::warn!(
                "bdev '{bdev}': no eventfd ({e}): a sleeping reactor will not be woken by completions"
            );
            None
        }
    }
}

/// Resets an eventfd's counter (non-blocking read); true if it was signalled.
pub fn eventfd_drain(fd: RawFd) -> bool {
    let mut v: u64 = 0;
    // SAFETY: reads 8 bytes into the live `v`; the fd is non-blocking.
    let n = unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) };
    n == 8 && v != 0
}

/// The most bytes one discard may cover on block device `rdev` (`st_rdev`), from
/// `ROOT/dev/block/MAJ:MIN/queue/discard_max_bytes` (a partition's queue is its disk's, one
/// level up); 0: the device cannot discard. `None` when sysfs does not say. `root` is `/sys`
/// outside tests.
pub fn discard_max_bytes(root: &std::path::Path, rdev: libc::dev_t) -> Option<u64> {
    let dev = root
        .join("dev/block")
        .join(format!("{}:{}", libc::major(rdev), libc::minor(rdev)));
    ["queue/discard_max_bytes", "../queue/discard_max_bytes"]
        .iter()
        .find_map(|f| std::fs::read_to_string(dev.join(f)).ok())
        .and_then(|s| s.trim().parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discard_limit_of_disks_and_partitions() {
        let root = std::env::temp_dir().join(format!("ferrite-sysfs-{}", std::process::id()));
        let disk = root.join("devices/sda");
        std::fs::create_dir_all(disk.join("queue")).unwrap();
        std::fs::create_dir_all(disk.join("sda1")).unwrap();
        std::fs::create_dir_all(root.join("dev/block")).unwrap();
        std::fs::write(disk.join("queue/discard_max_bytes"), "0\n").unwrap();
        std::os::unix::fs::symlink(&disk, root.join("dev/block/8:0")).unwrap();
        std::os::unix::fs::symlink(disk.join("sda1"), root.join("dev/block/8:1")).unwrap();
        assert_eq!(discard_max_bytes(&root, libc::makedev(8, 0)), Some(0));
        assert_eq!(
            discard_max_bytes(&root, libc::makedev(8, 1)),
            Some(0),
            "partition"
        );
        std::fs::write(disk.join("queue/discard_max_bytes"), "2147450880\n").unwrap();
        assert_eq!(
            discard_max_bytes(&root, libc::makedev(8, 1)),
            Some(2_147_450_880)
        );
        assert_eq!(
            discard_max_bytes(&root, libc::makedev(9, 9)),
            None,
            "unknown device"
        );
        std::fs::remove_dir_all(&root).unwrap();
    }

    #[test]
    fn abi_sizes() {
        assert_eq!(std::mem::size_of::<Iocb>(), 64);
        assert_eq!(std::mem::size_of::<IoEvent>(), 32);
        assert_eq!(std::mem::size_of::<AioRingHeader>(), 32);
        assert_eq!(BLKSSZGET, 0x1268);
        assert_eq!(BLKDISCARD, 0x1277);
        #[cfg(target_pointer_width = "64")]
        assert_eq!(BLKGETSIZE64, 0x8008_1272);
    }
}
