//! The error data path: forward to the base like passthru, unless an injection is armed for
//! the I/O's type; then fail it, bounce it with NOMEM, hold it, or corrupt its data.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::Arc;

use ferrite_bdev::{AbortTarget, BackendChannel, BdevChannel, BdevIo, IoStatus, IoType, IoVec};
use ferrite_reactor::LocalKey;

use crate::inject::{slot_of, ErrorType, Injections};

/// `driver_ctx` words of an I/O we own (the parent): whether to corrupt the data of a read
/// when the base completes it, and how.
const CTX_CORRUPT: usize = 0;
const CTX_OFFSET: usize = 1;
const CTX_VALUE: usize = 2;
const CORRUPT_READ: u64 = 1;

/// Held I/O a channel reserves room for at creation (the queue grows past it only if more are
/// held at once: a test tool's rare case, never in steady state).
const HELD_PREALLOC: usize = 64;

/// One channel's held (`pending`) I/O, with the release epoch each was held in.
pub(crate) struct ChanSlot {
    inj: Arc<Injections>,
    held: VecDeque<(u64, Box<BdevIo>)>,
}

/// Per-lightweight-thread state of the error module: a slot per channel on this thread. It
/// lives in a thread local so that a release message sent to the thread can reach the held
/// I/O of every channel there without any lock.
#[derive(Default)]
pub(crate) struct ErrorThread {
    chans: RefCell<Vec<Option<ChanSlot>>>,
}

pub(crate) static ERROR_THREAD: LocalKey<ErrorThread> = LocalKey::new();

/// Per-thread channel: this thread's channel to the base, the bdev's injections, and the index
/// of this channel's slot in [`ERROR_THREAD`] (`usize::MAX` if created off a lightweight
/// thread, where nothing can be held: `pending` then fails the I/O).
pub(crate) struct ErrorChannel {
    base: Option<BdevChannel>,
    inj: Arc<Injections>,
    slot: usize,
}

impl ErrorChannel {
    /// Step 3: created on the thread that will use it.
    pub(crate) fn new(base: Option<BdevChannel>, inj: Arc<Injections>) -> Self {
        let slot = ERROR_THREAD
            .with(|t| {
                let mut chans = t.chans.borrow_mut();
                let s = ChanSlot {
                    inj: inj.clone(),
                    held: VecDeque::with_capacity(HELD_PREALLOC),
                };
                match chans.iter().position(Option::is_none) {
                    Some(i) => {
                        chans[i] = Some(s);
                        i
                    }
                    None => {
                        chans.push(Some(s));
                        chans.len() - 1
                    }
                }
            })
            .unwrap_or(usize::MAX);
        inj.threads.add_thread();
        Self { base, inj, slot }
    }

    /// Holds `io` until a release of a later epoch; gives it back if it cannot be held here.
    fn hold(&self, epoch: u64, io: Box<BdevIo>) -> Result<(), Box<BdevIo>> {
        let mut io = Some(io);
        let _ = ERROR_THREAD.with(|t| {
            if let Some(Some(c)) = t.chans.borrow_mut().get_mut(self.slot) {
                if let Some(io) = io.take() {
                    c.held.push_back((epoch, io));
                }
            }
        });
        match io {
            None => Ok(()),
            Some(io) => Err(io),
        }
    }
}

impl Drop for ErrorChannel {
    /// A channel is dropped only when idle (the bdev layer keeps a busy one as a zombie), so
    /// its queue is empty — except at thread teardown, when its I/O objects go with it.
    fn drop(&mut self) {
        let slot = ERROR_THREAD
            .with(|t| {
                t.chans
                    .borrow_mut()
                    .get_mut(self.slot)
                    .and_then(Option::take)
            })
            .flatten();
        if let Some(s) = slot {
            if !s.held.is_empty() {
                tracing::warn!(
                    "error bdev channel dropped with {} held I/O (thread teardown)",
                    s.held.len()
                );
            }
        }
        self.inj.threads.remove_thread();
    }
}

impl BackendChannel for ErrorChannel {
    #[inline]
    fn submit(&mut self, mut io: Box<BdevIo>) {
        let Some(base) = &self.base else {
            // The base channel could not be created (base going away): fail, never hang.
            return io.complete(IoStatus::Failed);
        };
        // The child first: a NOMEM for lack of one must not come after an injection that
        // already acted (corrupting a write's buffer twice would undo it).
        let Some(mut child) = base.alloc_io() else {
            return io.complete(IoStatus::NoMem);
        };
        io.driver_ctx[CTX_CORRUPT] = 0;
        // Fast path: one relaxed load when nothing is armed for this type.
        if let Some(slot) = slot_of(io.io_type()) {
            if self.inj.armed(slot) {
                if let Some(hit) = self.inj.take(slot, u64::from(base.inflight())) {
                    match hit.error_type {
                        ErrorType::Failure => {
                            ferrite_bdev::free_io(child);
                            return io.complete(IoStatus::Failed);
                        }
                        ErrorType::Nomem => {
                            ferrite_bdev::free_io(child);
                            return io.complete(IoStatus::NoMem);
                        }
                        ErrorType::Pending => {
                            ferrite_bdev::free_io(child);
                            if self.inj.resetting() {
                                // A reset of the bdev runs: nothing is held until it is over.
                                return io.complete(IoStatus::Failed);
                            }
                            if let Err(io) = self.hold(hit.epoch, io) {
                                tracing::warn!("error bdev: cannot hold an I/O here; failing it");
                                io.complete(IoStatus::Failed);
                            }
                            return;
                        }
                        ErrorType::CorruptData => match io.io_type() {
                            // As SPDK: a write's data is corrupted before it goes down.
                            IoType::Write => {
                                corrupt(io.iovs(), hit.corrupt_offset, hit.corrupt_value)
                            }
                            // A read's once the base has filled it (see `child_done`).
                            IoType::Read => {
                                io.driver_ctx[CTX_CORRUPT] = CORRUPT_READ;
                                io.driver_ctx[CTX_OFFSET] = hit.corrupt_offset;
                                io.driver_ctx[CTX_VALUE] = u64::from(hit.corrupt_value);
                            }
                            // Unmap and flush carry no data: they pass (the unit is used).
                            _ => {}
                        },
                    }
                }
            }
        }
        child.forward(io, child_done);
        base.submit(child);
    }
}

/// Completion of the child on the base: corrupt a read if told to, give the status to the
/// parent, recycle the child.
fn child_done(mut child: Box<BdevIo>) {
    let status = child.status();
    let parent = child.take_parent();
    if let Some(mut parent) = parent {
        parent.inherit_completion_time(&child);
        ferrite_bdev::free_io(child);
        if status == IoStatus::Success && parent.driver_ctx[CTX_CORRUPT] == CORRUPT_READ {
            corrupt(
                parent.iovs(),
                parent.driver_ctx[CTX_OFFSET],
                parent.driver_ctx[CTX_VALUE] as u8,
            );
        }
        parent.complete(status);
    } else {
        ferrite_bdev::free_io(child);
    }
}

/// XORs `value` into the byte at `offset` of the data described by `iovs` (nothing if the
/// offset lies beyond the data, as SPDK).
fn corrupt(iovs: &[IoVec], mut offset: u64, value: u8) {
    for v in iovs {
        if v.base.is_null() {
            return;
        }
        if (v.len as u64) > offset {
            // SAFETY: the segments of an I/O are valid for reads and writes of their length
            // until it completes, and nobody else touches them meanwhile (the contract of
            // `BdevIo::set_iovs` / `attach_buf`, and of the bdev layer's supplied read
            // buffers); this I/O is ours until we complete it, and `offset < len`.
            unsafe { *v.base.add(offset as usize) ^= value };
            return;
        }
        offset -= v.len as u64;
    }
}

/// Runs on a thread by message: completes (with `status`) every I/O that `inj`'s channels on this
/// thread hold since before `epoch`. Returns how many.
pub(crate) fn release_on_thread(inj: &Arc<Injections>, epoch: u64, status: IoStatus) -> usize {
    complete_held_on_thread(inj, status, |e, _| e < epoch)
}

/// An abort on this thread (see `HeldIo::abort`): completes Aborted every I/O that `inj`'s
/// channels on this thread hold and `target` names. Returns how many.
pub(crate) fn abort_on_thread(inj: &Arc<Injections>, target: &AbortTarget) -> usize {
    complete_held_on_thread(inj, IoStatus::Aborted, |_, io| target.names(io))
}

/// Completes with `status` every I/O that `inj`'s channels on this thread hold and `pick`
/// chooses (given the epoch it was held in); the others stay held, in their order. Returns
/// how many were completed.
fn complete_held_on_thread(
    inj: &Arc<Injections>,
    status: IoStatus,
    pick: impl Fn(u64, &BdevIo) -> bool,
) -> usize {
    ERROR_THREAD
        .with(|t| {
            let mut n = 0;
            let mut chans = t.chans.borrow_mut();
            for c in chans.iter_mut().flatten() {
                if !Arc::ptr_eq(&c.inj, inj) {
                    continue;
                }
                for _ in 0..c.held.len() {
                    let Some((e, io)) = c.held.pop_front() else {
                        break;
                    };
                    if pick(e, &io) {
                        // Deferred by the bdev layer: the callback runs on a later poll.
                        io.complete(status);
                        n += 1;
                    } else {
                        c.held.push_back((e, io));
                    }
                }
            }
            n
        })
        .unwrap_or(0)
}
