//! Opening a file or block device for a bdev, shared by the aio and uring modules: type and
//! permission checks, O_DIRECT with a logged fallback, block size detection, direct-I/O
//! alignment, size, and which non-data operations the file supports.

use std::ffi::CString;
use std::fmt;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use ferrite_bdev::BdevError;

pub use crate::disks::{rescan, DiskRegistry};

/// Error of a create / rescan: a positive errno (the RPC code is its negation) and a message
/// naming the bdev, the file and the reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileError {
    errno: i32,
    message: String,
}

impl FileError {
    /// A new error.
    pub fn new(errno: i32, message: impl Into<String>) -> Self {
        Self {
            errno,
            message: message.into(),
        }
    }

    /// From an OS error: its errno and text follow `what`.
    pub fn os(what: impl fmt::Display, e: &io::Error) -> Self {
        let errno = e.raw_os_error().unwrap_or(libc::EIO);
        Self::new(errno, format!("{what}: {}", strerror(errno)))
    }

    /// Positive errno.
    pub fn errno(&self) -> i32 {
        self.errno
    }

    /// Message.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for FileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for FileError {}

impl From<BdevError> for FileError {
    fn from(e: BdevError) -> Self {
        Self::new(e.errno(), e.to_string())
    }
}

/// The C library's text for `errno` ("No such file or directory"), without Rust's
/// "(os error N)" suffix.
pub fn strerror(errno: i32) -> String {
    let s = io::Error::from_raw_os_error(errno).to_string();
    match s.rfind(" (os error ") {
        Some(p) => s[..p].to_string(),
        None => s,
    }
}

/// What to open.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenOpts {
    /// Bdev name (for messages).
    pub name: String,
    /// Path of the file or block device.
    pub filename: String,
    /// Block size; 0 = detect.
    pub block_size: u32,
    /// Open read-only.
    pub readonly: bool,
}

/// Regular file or block device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    /// A regular file.
    Regular,
    /// A block device.
    BlockDevice,
}

/// An open file or block device backing one bdev. Shared (`Arc`) by the bdev's backend, its
/// channels and helper-thread jobs; the descriptor closes with the last of them.
#[derive(Debug)]
pub struct FileDisk {
    fd: OwnedFd,
    /// Bdev name.
    pub name: String,
    /// Path as given.
    pub filename: String,
    /// Regular file or block device.
    pub kind: FileKind,
    /// Opened with O_DIRECT.
    pub direct: bool,
    /// Opened read-only.
    pub readonly: bool,
    /// Bdev block size.
    pub block_size: u32,
    /// The block size was given (not detected).
    pub block_size_override: bool,
    /// Required alignment of buffer addresses for direct I/O (1 = none).
    pub mem_align: usize,
    /// Required alignment of segment lengths for direct I/O (1 = none).
    pub len_align: usize,
    /// `fallocate(PUNCH_HOLE | KEEP_SIZE)` works (files) / BLKDISCARD is possible (devices).
    pub can_punch: bool,
    /// `fallocate(ZERO_RANGE)` works.
    pub can_zero_range: bool,
    /// The memory-backed filesystem holding the file (`tmpfs`, `ramfs`, `hugetlbfs`; see
    /// [`crate::sys::memory_fs`]), `None` for other filesystems and for block devices.
    pub memory_fs: Option<&'static str>,
    bounces: AtomicU64,
    fdsync_unsupported: AtomicBool,
}

/// Test hook: behave as if every filesystem refused O_DIRECT with EINVAL (exercises the
/// buffered fallback on machines where all filesystems accept O_DIRECT).
static SIMULATE_NO_DIRECT: AtomicBool = AtomicBool::new(false);

/// Makes later opens behave as if O_DIRECT were refused with EINVAL (for tests).
#[doc(hidden)]
pub fn simulate_no_direct(on: bool) {
    SIMULATE_NO_DIRECT.store(on, Ordering::SeqCst);
}

/// Test hook: aio submits FDSYNC with an opcode the kernel refuses with EINVAL (exercises the
/// fallback to fdatasync on a helper thread, for filesystems that refuse AIO FDSYNC).
static SIMULATE_FDSYNC_EINVAL: AtomicBool = AtomicBool::new(false);

/// Makes later AIO flushes be refused by the kernel with EINVAL (for tests).
#[doc(hidden)]
pub fn simulate_fdsync_einval(on: bool) {
    SIMULATE_FDSYNC_EINVAL.store(on, Ordering::SeqCst);
}

/// True while [`simulate_fdsync_einval`] is on.
#[doc(hidden)]
pub fn fdsync_einval_simulated() -> bool {
    SIMULATE_FDSYNC_EINVAL.load(Ordering::Relaxed)
}

fn open_raw(path: &CString, flags: i32) -> io::Result<OwnedFd> {
    // SAFETY: `path` is a live NUL-terminated string; the result is checked.
    let fd = unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC | libc::O_NONBLOCK) };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    Ok(fd)
}

/// Clears O_NONBLOCK (used only so that opening a FIFO by mistake cannot block; io_uring would
/// treat a non-blocking file as "return EAGAIN instead of waiting").
fn clear_nonblock(fd: RawFd) -> io::Result<()> {
    // SAFETY: F_GETFL/F_SETFL take no pointers.
    let fl = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if fl < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: as above.
    if unsafe { libc::fcntl(fd, libc::F_SETFL, fl & !libc::O_NONBLOCK) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

fn fstat(fd: RawFd) -> io::Result<libc::stat> {
    // SAFETY: an all-zero stat is a valid value of this plain C struct.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: fstat writes one struct stat to the live `st`.
    if unsafe { libc::fstat(fd, &mut st) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(st)
}

/// (mem_align, offset_align) for direct I/O from statx(STATX_DIOALIGN), when reported.
fn dio_align(fd: RawFd) -> Option<(u32, u32)> {
    // SAFETY: an all-zero statx is a valid value of this plain C struct.
    let mut sx: libc::statx = unsafe { std::mem::zeroed() };
    let empty = c"";
    // SAFETY: `empty` is a live C string, `sx` a live statx; AT_EMPTY_PATH makes it fstat-like.
    let rc = unsafe {
        libc::statx(
            fd,
            empty.as_ptr(),
            libc::AT_EMPTY_PATH,
            libc::STATX_DIOALIGN,
            &mut sx,
        )
    };
    if rc < 0 || sx.stx_mask & libc::STATX_DIOALIGN == 0 || sx.stx_dio_offset_align == 0 {
        return None;
    }
    Some((sx.stx_dio_mem_align.max(1), sx.stx_dio_offset_align))
}

impl FileDisk {
    /// Opens `opts.filename` for the bdev `opts.name`. Errors (errno, message): the file is
    /// missing or not accessible in the requested mode, is neither a regular file nor a block
    /// device, the block size is invalid, or the size is 0 or not a multiple of the block size.
    /// Returns the disk and its size in blocks.
    pub fn open(opts: &OpenOpts) -> Result<(FileDisk, u64), FileError> {
        let name = &opts.name;
        let file = &opts.filename;
        let mode = if opts.readonly {
            "read-only"
        } else {
            "read-write"
        };
        let path = CString::new(file.as_bytes()).map_err(|_| {
            FileError::new(
                libc::EINVAL,
                format!(
                    "bdev '{name}': file name '{}' contains a NUL byte",
                    file.escape_debug()
                ),
            )
        })?;
        let acc = if opts.readonly {
            libc::O_RDONLY
        } else {
            libc::O_RDWR
        };
        let open_err =
            |e: &io::Error| FileError::os(format!("bdev '{name}': cannot open '{file}' {mode}"), e);
        // Look at the type first (read-only, non-blocking: a FIFO cannot hang us).
        let probe = open_raw(&path, libc::O_RDONLY).or_else(|e| {
            if e.raw_os_error() == Some(libc::EACCES) {
                // Unreadable: the real open below reports it in the requested mode.
                open_raw(&path, acc)
            } else {
                Err(e)
            }
        });
        let probe = probe.map_err(|e| open_err(&e))?;
        let st = fstat(probe.as_raw_fd())
            .map_err(|e| FileError::os(format!("bdev '{name}': cannot stat '{file}'"), &e))?;
        drop(probe);
        let kind = match st.st_mode & libc::S_IFMT {
            libc::S_IFREG => FileKind::Regular,
            libc::S_IFBLK => FileKind::BlockDevice,
            libc::S_IFDIR => {
                return Err(FileError::new(
                    libc::EISDIR,
                    format!(
                        "bdev '{name}': '{file}' is a directory, not a regular file or block device"
                    ),
                ))
            }
            _ => {
                return Err(FileError::new(
                    libc::EINVAL,
                    format!("bdev '{name}': '{file}' is not a regular file or block device"),
                ))
            }
        };
        let simulate = SIMULATE_NO_DIRECT.load(Ordering::SeqCst);
        let (fd, direct) = if simulate {
            tracing::warn!(
                "bdev '{name}': opened without O_DIRECT: '{file}': the filesystem refused it (Invalid argument, simulated); I/O goes through the page cache"
            );
            (open_raw(&path, acc).map_err(|e| open_err(&e))?, false)
        } else {
            match open_raw(&path, acc | libc::O_DIRECT) {
                Ok(fd) => (fd, true),
                Err(e) if e.raw_os_error() == Some(libc::EINVAL) => {
                    tracing::warn!(
                        "bdev '{name}': opened without O_DIRECT: '{file}': the filesystem refused it (Invalid argument); I/O goes through the page cache"
                    );
                    (open_raw(&path, acc).map_err(|e| open_err(&e))?, false)
                }
                Err(e) => return Err(open_err(&e)),
            }
        };
        clear_nonblock(fd.as_raw_fd()).map_err(|e| open_err(&e))?;
        let memory_fs = match kind {
            FileKind::Regular => crate::sys::memory_fs(fd.as_raw_fd()),
            FileKind::BlockDevice => None,
        };
        let mut disk = FileDisk {
            fd,
            name: name.clone(),
            filename: file.clone(),
            kind,
            direct,
            readonly: opts.readonly,
            block_size: 0,
            block_size_override: opts.block_size != 0,
            mem_align: 1,
            len_align: 1,
            can_punch: false,
            can_zero_range: false,
            memory_fs,
            bounces: AtomicU64::new(0),
            fdsync_unsupported: AtomicBool::new(false),
        };
        disk.setup_geometry(opts.block_size)?;
        let bytes = disk.size_bytes().map_err(|e| {
            FileError::os(
                format!("bdev '{name}': cannot get the size of '{file}'"),
                &e,
            )
        })?;
        let blocks = disk.blocks_for_size(bytes)?;
        disk.probe_ops(bytes);
        Ok((disk, blocks))
    }

    /// Detects the block size and direct-I/O alignment; checks a given block size.
    fn setup_geometry(&mut self, given: u32) -> Result<(), FileError> {
        let name = &self.name;
        let file = &self.filename;
        let raw = self.fd.as_raw_fd();
        // What the device or filesystem requires for direct I/O: (mem, offset/length).
        let (mem, off) = match self.kind {
            FileKind::BlockDevice => {
                let lbs = crate::sys::blkdev_logical_block_size(raw).map_err(|e| {
                    FileError::os(
                        format!("bdev '{name}': cannot get the logical block size of '{file}'"),
                        &e,
                    )
                })?;
                let lbs = if lbs == 0 { 512 } else { lbs };
                dio_align(raw).unwrap_or((512, lbs))
            }
            FileKind::Regular => dio_align(raw).unwrap_or((512, 512)),
        };
        let detected = match self.kind {
            FileKind::BlockDevice => off.max(512),
            FileKind::Regular if self.direct => off.max(512),
            FileKind::Regular => 512,
        };
        let bs = if given == 0 { detected } else { given };
        if bs < 512 || !bs.is_power_of_two() {
            return Err(FileError::new(
                libc::EINVAL,
                format!(
                    "bdev '{name}': invalid block size {bs} (must be a power of 2, at least 512)"
                ),
            ));
        }
        if bs < off && self.direct {
            if self.kind == FileKind::BlockDevice {
                return Err(FileError::new(
                    libc::EINVAL,
                    format!(
                        "bdev '{name}': block size {bs} is smaller than the logical block size {off} of '{file}'"
                    ),
                ));
            }
            // A file: direct I/O is impossible at this granularity; use the page cache.
            let acc = if self.readonly {
                libc::O_RDONLY
            } else {
                libc::O_RDWR
            };
            let path = CString::new(file.as_bytes())
                .map_err(|_| FileError::new(libc::EINVAL, "file name contains a NUL byte"))?;
            let fd = open_raw(&path, acc)
                .map_err(|e| FileError::os(format!("bdev '{name}': cannot reopen '{file}'"), &e))?;
            clear_nonblock(fd.as_raw_fd())
                .map_err(|e| FileError::os(format!("bdev '{name}': cannot reopen '{file}'"), &e))?;
            tracing::warn!(
                "bdev '{name}': opened without O_DIRECT: '{file}': block size {bs} is smaller than the filesystem's direct I/O granularity {off}; I/O goes through the page cache"
            );
            self.fd = fd;
            self.direct = false;
        }
        if given != 0 && given != detected {
            tracing::info!(
                "bdev '{name}': block size {given} given for '{file}' (detected {detected})"
            );
        }
        self.block_size = bs;
        if self.direct {
            self.mem_align = mem.max(1) as usize;
            self.len_align = off.max(1) as usize;
        }
        Ok(())
    }

    /// Finds out, without changing data, whether punching holes and zeroing ranges work.
    fn probe_ops(&mut self, size: u64) {
        if self.readonly {
            return;
        }
        let raw = self.fd.as_raw_fd();
        match self.kind {
            FileKind::BlockDevice => {
                // blkdev_fallocate has supported ZERO_RANGE since Linux 4.9. Unmap (BLKDISCARD)
                // is offered only where the device can discard: elsewhere every unmap would
                // fail as an I/O error instead of being unsupported. Where sysfs does not say,
                // it is offered and tried per request.
                let rdev = fstat(raw).map(|st| st.st_rdev).ok();
                self.can_punch = rdev
                    .and_then(|d| crate::sys::discard_max_bytes(std::path::Path::new("/sys"), d))
                    .is_none_or(|max| max > 0);
                self.can_zero_range = true;
            }
            FileKind::Regular => {
                // Past the end of the file, with KEEP_SIZE: no data is touched and the size
                // does not change. A filesystem without the mode answers EOPNOTSUPP before
                // looking at the range (tmpfs has no ZERO_RANGE).
                let bs = u64::from(self.block_size);
                let off = size.next_multiple_of(bs);
                let keep = libc::FALLOC_FL_KEEP_SIZE;
                self.can_punch =
                    crate::sys::fallocate(raw, libc::FALLOC_FL_PUNCH_HOLE | keep, off, bs).is_ok();
                self.can_zero_range =
                    crate::sys::fallocate(raw, libc::FALLOC_FL_ZERO_RANGE | keep, off, bs).is_ok();
                if self.can_zero_range && self.can_punch {
                    // Give back the block the probe may have preallocated past the end.
                    let _ = crate::sys::fallocate(raw, libc::FALLOC_FL_PUNCH_HOLE | keep, off, bs);
                }
            }
        }
        tracing::debug!(
            "bdev '{}': '{}': direct={} block_size={} mem_align={} len_align={} punch={} zero_range={}",
            self.name,
            self.filename,
            self.direct,
            self.block_size,
            self.mem_align,
            self.len_align,
            self.can_punch,
            self.can_zero_range
        );
    }

    /// Current size of the file or device in bytes.
    pub fn size_bytes(&self) -> io::Result<u64> {
        match self.kind {
            FileKind::BlockDevice => crate::sys::blkdev_size(self.fd.as_raw_fd()),
            FileKind::Regular => Ok(fstat(self.fd.as_raw_fd())?.st_size.max(0) as u64),
        }
    }

    /// Blocks in `bytes`: an error if 0 or not a multiple of the block size.
    pub fn blocks_for_size(&self, bytes: u64) -> Result<u64, FileError> {
        let bs = u64::from(self.block_size);
        if bytes == 0 {
            return Err(FileError::new(
                libc::EINVAL,
                format!("bdev '{}': '{}' has size 0", self.name, self.filename),
            ));
        }
        if !bytes.is_multiple_of(bs) {
            return Err(FileError::new(
                libc::EINVAL,
                format!(
                    "bdev '{}': size {bytes} of '{}' is not a multiple of the block size {bs}",
                    self.name, self.filename
                ),
            ));
        }
        Ok(bytes / bs)
    }

    /// The descriptor.
    pub fn raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    /// True if an I/O with these segments must go through a bounce buffer (direct I/O
    /// alignment not met, or too many segments for one request).
    pub fn needs_bounce(&self, iovs: &[ferrite_bdev::IoVec]) -> bool {
        if iovs.len() > crate::bounce::MAX_IOVS {
            return true;
        }
        if !self.direct {
            return false;
        }
        let ma = self.mem_align - 1;
        let la = self.len_align - 1;
        iovs.iter()
            .any(|v| (v.base as usize) & ma != 0 || v.len & la != 0)
    }

    /// Counts one bounced I/O.
    pub fn note_bounce(&self) {
        self.bounces.fetch_add(1, Ordering::Relaxed);
    }

    /// I/O bounced so far.
    pub fn bounces(&self) -> u64 {
        self.bounces.load(Ordering::Relaxed)
    }

    /// True once an AIO FDSYNC was refused (flushes then go to a helper thread).
    pub fn fdsync_unsupported(&self) -> bool {
        self.fdsync_unsupported.load(Ordering::Relaxed)
    }

    /// Records that AIO FDSYNC is refused for this file.
    pub fn set_fdsync_unsupported(&self) {
        if !self.fdsync_unsupported.swap(true, Ordering::Relaxed) {
            tracing::info!(
                "bdev '{}': '{}' refuses AIO FDSYNC; flushes run fdatasync on a helper thread",
                self.name,
                self.filename
            );
        }
    }

    /// `driver_specific` fields shared by both modules.
    pub fn common_json(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut m = serde_json::Map::new();
        m.insert("filename".into(), self.filename.clone().into());
        m.insert("o_direct".into(), self.direct.into());
        m.insert("bounces".into(), self.bounces().into());
        m
    }
}
