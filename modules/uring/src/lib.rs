//! The uring bdev: a file or block device driven through io_uring (the `io-uring` crate), as
//! SPDK's `bdev_uring`.
//!
//! Opening, block size detection, O_DIRECT with its logged fallback, bounce buffers and the
//! helper threads are shared with the aio module (`ferrite_aio::file`, `::bounce`, `::helper`).
//! What is particular here:
//! - **Availability**: `create` first sets up a small ring; a kernel or seccomp filter that
//!   refuses io_uring (ENOSYS, EPERM) makes it fail with a message saying so.
//! - **Data path** ([`io`]): one ring per (bdev, thread) channel with a fixed slot table; SQEs
//!   batched per poll; CQEs reaped by the channel's poller; the channel's eventfd registered
//!   with the ring and with the reactor so that a sleeping reactor wakes on completions.
//! - **Memory-backed files** ([`sync`]): on tmpfs, ramfs and hugetlbfs, which have no
//!   non-blocking reads, reads and writes are one synchronous `preadv`/`pwritev` at
//!   submission (as Linux AIO does for them) instead of a trip through an io_uring kernel
//!   worker; completions still go through the thread's completion queue. The path is logged at
//!   open and shown as `driver_specific.uring.io_path`.
//! - **Non-data operations** stay off the reactor: flush is `IORING_OP_FSYNC` (DATASYNC),
//!   unmap of a file and write-zeroes are `IORING_OP_FALLOCATE`; BLKDISCARD for block devices
//!   runs on a helper thread.
//!
//! Thread contract: `create`, `delete` and `rescan` run on a lightweight thread (the app
//! thread); the data path on whichever thread submits, completions on that same thread.

mod control;
mod io;
mod rpc;
mod sync;
mod wake;

pub use control::{bounces, create, delete, probe, rescan, UringModule, UringOpts};
pub use io::URING_SLOTS;
pub use rpc::register_rpcs;
