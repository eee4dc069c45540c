//! Helper OS threads for the operations that have no asynchronous form in the kernel interface
//! in use (fallocate and BLKDISCARD for aio, BLKDISCARD for uring, fdatasync when AIO FDSYNC is
//! refused). A reactor never blocks on them: the I/O is handed to a helper thread, which runs
//! the blocking call and sends the I/O back to its lightweight thread in a message, where it
//! is completed.
//!
//! Non-data operations are rare next to reads and writes: a job and its reply message are
//! allocated (the data path stays allocation-free).

use std::sync::mpsc;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use ferrite_bdev::{BdevIo, IoStatus};
use ferrite_reactor::ThreadHandle;

use crate::file::FileDisk;

/// Helper threads (shared by every file bdev of the process).
pub const HELPER_THREADS: usize = 2;

/// A blocking operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlowOp {
    /// `fdatasync`.
    Fdatasync,
    /// `fallocate(mode, off, len)`.
    Fallocate {
        /// `FALLOC_FL_*`.
        mode: i32,
        /// Byte offset.
        off: u64,
        /// Byte length.
        len: u64,
    },
    /// `ioctl(BLKDISCARD, [off, len])`.
    Discard {
        /// Byte offset.
        off: u64,
        /// Byte length.
        len: u64,
    },
}

struct Job {
    disk: Arc<FileDisk>,
    op: SlowOp,
    io: Box<BdevIo>,
    thread: ThreadHandle,
}

static QUEUE: OnceLock<Option<Mutex<mpsc::Sender<Job>>>> = OnceLock::new();

fn queue() -> Option<&'static Mutex<mpsc::Sender<Job>>> {
    QUEUE
        .get_or_init(|| {
            let (tx, rx) = mpsc::channel::<Job>();
            let rx = Arc::new(Mutex::new(rx));
            let mut started = 0;
            for i in 0..HELPER_THREADS {
                let rx = rx.clone();
                let r = std::thread::Builder::new()
                    .name(format!("file_helper_{i}"))
                    .spawn(move || worker(rx));
                match r {
                    Ok(_) => started += 1,
                    Err(e) => tracing::error!("cannot start file helper thread {i}: {e}"),
                }
            }
            (started > 0).then(|| Mutex::new(tx))
        })
        .as_ref()
}

fn worker(rx: Arc<Mutex<mpsc::Receiver<Job>>>) {
    loop {
        let job = match rx.lock() {
            Ok(g) => g.recv(),
            Err(_) => return,
        };
        let Ok(job) = job else { return };
        let status = run(&job.disk, job.op);
        reply(job.thread, job.io, status);
    }
}

/// Runs `op` now, on the calling (helper) thread.
pub fn run(disk: &FileDisk, op: SlowOp) -> IoStatus {
    let fd = disk.raw_fd();
    let r = match op {
        SlowOp::Fdatasync => crate::sys::fdatasync(fd),
        SlowOp::Fallocate { mode, off, len } => crate::sys::fallocate(fd, mode, off, len),
        SlowOp::Discard { off, len } => crate::sys::blkdev_discard(fd, off, len),
    };
    match r {
        Ok(()) => IoStatus::Success,
        Err(e) => {
            tracing::debug!(
                "bdev '{}': {:?} on '{}' failed: {e}",
                disk.name,
                op,
                disk.filename
            );
            IoStatus::Failed
        }
    }
}

/// Sends `io` back to `thread` and completes it there. A full message queue is retried (this
/// is a helper thread: it may wait); an exited thread drops the I/O with its thread.
fn reply(thread: ThreadHandle, io: Box<BdevIo>, status: IoStatus) {
    let slot = Arc::new(Mutex::new(Some(io)));
    loop {
        let s = slot.clone();
        let r = thread.send(move || {
            if let Some(io) = s.lock().ok().and_then(|mut g| g.take()) {
                io.complete(status);
            }
        });
        match r {
            Ok(()) => return,
            Err(e) if e.kind() == ferrite_reactor::ErrorKind::QueueFull => {
                std::thread::sleep(Duration::from_micros(100));
            }
            Err(e) => {
                tracing::warn!("file helper: I/O result not delivered: {e}");
                return;
            }
        }
    }
}

/// Hands `io` to a helper thread that runs `op` on `disk` and completes `io` back on the
/// calling lightweight thread. Call on the I/O's thread (a backend's `submit`).
pub fn submit(disk: &Arc<FileDisk>, op: SlowOp, io: Box<BdevIo>) {
    let Some(thread) = ferrite_reactor::current() else {
        return io.complete(IoStatus::Failed);
    };
    let Some(q) = queue() else {
        return io.complete(IoStatus::Failed);
    };
    let job = Job {
        disk: disk.clone(),
        op,
        io,
        thread,
    };
    let sent = match q.lock() {
        Ok(tx) => tx.send(job).map_err(|e| e.0),
        Err(_) => Err(job),
    };
    if let Err(job) = sent {
        job.io.complete(IoStatus::Failed);
    }
}
