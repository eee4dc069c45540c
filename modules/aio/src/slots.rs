//! The request bookkeeping of a file channel (shared with the uring module): a fixed table
//! of slots, one per request the kernel may hold, whose index is the kernel's user data. A
//! slot owns its I/O (and so the I/O's segments), the iovec array and the bounce buffer given
//! to the kernel, until the completion is reaped.
//!
//! Thread contract: owned by one channel's state, used on that channel's thread only.

use std::fmt::Debug;

use ferrite_bdev::{BdevIo, IoStatus};

use crate::bounce::{Bounce, BounceGet, KernelIoVec};
use crate::file::FileDisk;

/// One request: what the kernel was asked to do (`K`, the module's own kinds) and with what.
pub struct Slot<K> {
    /// The I/O, while the kernel holds the request.
    pub io: Option<Box<BdevIo>>,
    /// The segments as given to the kernel (reused: no allocation once grown).
    pub iovs: Vec<KernelIoVec>,
    /// The bounce buffer standing in for the I/O's segments, if any.
    pub bounce: Option<Bounce>,
    /// What the request does.
    pub kind: K,
    /// Bytes a read or write must transfer to succeed.
    pub expect: u64,
}

/// A request taken out of its slot once the kernel is done with it (the slot is free again).
pub struct Finished<K> {
    /// The I/O to complete.
    pub io: Box<BdevIo>,
    /// Its bounce buffer, if any (for a read, the data to copy out).
    pub bounce: Option<Bounce>,
    /// What the request did.
    pub kind: K,
    /// Bytes it had to transfer.
    pub expect: u64,
}

/// The slot table and its free list.
pub struct Slots<K> {
    slots: Box<[Slot<K>]>,
    free: Vec<u32>,
}

impl<K: Copy + Debug> Slots<K> {
    /// `n` free slots (allocates: call at channel creation); `kind` fills the unused ones.
    pub fn new(n: usize, kind: K) -> Self {
        let slots: Vec<Slot<K>> = (0..n)
            .map(|_| Slot {
                io: None,
                iovs: Vec::new(),
                bounce: None,
                kind,
                expect: 0,
            })
            .collect();
        Self {
            slots: slots.into_boxed_slice(),
            free: (0..n as u32).rev().collect(),
        }
    }

    /// Leaks every slot with what it holds (its I/O, iovec array and bounce buffer): for a
    /// channel that cannot wait at teardown for the kernel to be done with them.
    pub fn leak(&mut self) {
        std::mem::forget(std::mem::take(&mut self.slots));
        self.free.clear();
    }

    /// A free slot's index, or `None` when every slot is taken (the I/O then completes with
    /// NOMEM and the bdev layer retries it when one of this channel's I/O completes).
    pub fn alloc(&mut self) -> Option<u32> {
        self.free.pop()
    }

    /// Gives back a slot taken with [`Slots::alloc`] and not used after all.
    pub fn release(&mut self, idx: u32) {
        self.free.push(idx);
    }

    /// The slot at `idx`.
    pub fn get_mut(&mut self, idx: u32) -> &mut Slot<K> {
        &mut self.slots[idx as usize]
    }

    /// Puts `io` in slot `idx` as a request of `kind` that must transfer `expect` bytes.
    pub fn fill(&mut self, idx: u32, io: Box<BdevIo>, kind: K, expect: u64) {
        let slot = &mut self.slots[idx as usize];
        slot.kind = kind;
        slot.expect = expect;
        slot.io = Some(io);
    }

    /// Puts a bounce buffer of `len` bytes in slot `idx` for `io` (holding the segments' data
    /// for a write) and returns its address; `None` when the pool is empty for now (the caller
    /// releases the slot and completes the I/O with NOMEM).
    pub fn bounce(
        &mut self,
        idx: u32,
        io: &BdevIo,
        len: u64,
        write: bool,
        disk: &FileDisk,
    ) -> Option<*mut u8> {
        match Bounce::get(len as usize) {
            BounceGet::Got(b) => {
                if write {
                    // SAFETY: the segments are valid for their lengths until the I/O
                    // completes (I/O contract) and total `len` bytes, the buffer's size.
                    unsafe { b.gather(io.iovs()) };
                }
                disk.note_bounce();
                let p = b.as_ptr();
                self.slots[idx as usize].bounce = Some(b);
                Some(p)
            }
            BounceGet::NoMem => None,
        }
    }

    /// Takes the request out of slot `idx` and frees the slot; `None` for an index that holds
    /// no request (never given out, or already finished).
    pub fn finish(&mut self, idx: usize) -> Option<Finished<K>> {
        let slot = self.slots.get_mut(idx)?;
        let io = slot.io.take()?;
        let f = Finished {
            io,
            bounce: slot.bounce.take(),
            kind: slot.kind,
            expect: slot.expect,
        };
        self.free.push(idx as u32);
        Some(f)
    }
}

impl<K: Debug> Finished<K> {
    /// Completes a read or write that transferred `res` bytes (or failed with `-errno`):
    /// success only for the whole length, a bounced read's data first copied out to the
    /// segments.
    pub fn complete_rw(self, disk: &FileDisk, res: i64, read: bool) {
        if res < 0 || res as u64 != self.expect {
            return self.complete_failed(disk, res);
        }
        if read {
            if let Some(b) = &self.bounce {
                // SAFETY: the segments stay valid until we complete the I/O below and total
                // `expect` bytes, which the kernel read into the bounce buffer.
                unsafe { b.scatter(self.io.iovs()) };
            }
        }
        drop(self.bounce);
        self.io.complete(IoStatus::Success);
    }

    /// Completes the I/O as failed, logging what the kernel returned.
    pub fn complete_failed(self, disk: &FileDisk, res: i64) {
        let (kind, expect, io) = (self.kind, self.expect, self.io);
        tracing::debug!(
            "bdev '{}': {kind:?} at block {} ({} blocks) finished with {res} (expected {expect})",
            disk.name,
            io.offset_blocks(),
            io.num_blocks()
        );
        drop(self.bounce);
        io.complete(IoStatus::Failed);
    }
}
