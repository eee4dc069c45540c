//! The aio bdev: a file or block device driven through Linux AIO (`io_setup`, `io_submit`,
//! completions read from the kernel-mapped ring), as SPDK's `bdev_aio`.
//!
//! - **Open** ([`file::FileDisk::open`]): regular files and block devices, with O_DIRECT where
//!   the filesystem accepts it (a refusal is logged as "opened without O_DIRECT" and the page
//!   cache is used); block size detected (device logical block size, the filesystem's direct
//!   I/O granularity, else 512) or given; size checked (non-zero, whole blocks).
//! - **Data path** ([`io`]): one AIO context per (bdev, thread) channel with a fixed slot table;
//!   submissions batched per poll; completions reaped by the channel's poller; an eventfd per
//!   channel (`IOCB_FLAG_RESFD`) registered with the reactor so that a sleeping reactor wakes.
//!   Segments that miss the direct-I/O alignment are bounced through pool buffers.
//! - **Non-data operations**: flush is `IOCB_CMD_FDSYNC` (fdatasync on a [`helper`] thread
//!   where the file refuses it); unmap (punch hole / BLKDISCARD) and write-zeroes (zero range),
//!   enabled by `fallocate`, always run on a helper thread. A reactor never blocks.
//! - **Resize**: [`rescan`] re-reads the size and announces it to open descriptors.
//!
//! The file handling ([`file`], [`disks`], [`bounce`], [`helper`], [`sys`]) and the channel
//! machinery ([`chan`], [`slots`]) are shared with the uring module (`ferrite-uring`).
//!
//! Thread contract: `create`, `delete` and `rescan` run on a lightweight thread (the app
//! thread); the data path on whichever thread submits, completions on that same thread.

pub mod bounce;
pub mod chan;
mod control;
pub mod disks;
pub mod file;
pub mod helper;
mod io;
mod rpc;
pub mod slots;
pub mod sys;

pub use control::{bounces, create, delete, flush_on_helper, rescan, AioModule, AioOpts};
pub use file::FileError;
pub use io::AIO_SLOTS;
pub use rpc::{file_err, file_reply, register_rpcs};

/// Checks a new bdev's name and UUID (shared with the uring module).
#[doc(hidden)]
pub use control::check_new;
