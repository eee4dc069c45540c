//! Injection state of one error bdev, shared by every thread: one slot per I/O type that can be
//! targeted (read, write, unmap, flush — SPDK's `error_vector`), a release epoch for held I/O,
//! and the threads that hold a channel (to reach their held I/O).
//!
//! The data path never locks: a slot is one `AtomicU64` packing the remaining count (low 32
//! bits), the error type and the corrupt value; "is anything armed for this type?" is one
//! relaxed load, and taking one unit is a compare-and-swap, so `num` is exact however many
//! threads submit. The mutex only guards the list of threads, touched when a channel is
//! created or dropped and when held I/O is released (control path).

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use ferrite_bdev::{AbortTarget, HeldIo, HolderThreads, IoStatus, IoType};
use serde::Deserialize;

/// What `bdev_error_inject_error` targets (SPDK's `io_type` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InjectIoType {
    /// Read, write, unmap and flush, each with its own count of `num`.
    All,
    /// Reads.
    Read,
    /// Writes.
    Write,
    /// Unmaps.
    Unmap,
    /// Flushes.
    Flush,
    /// Disarm every injection and release every held (`pending`) I/O.
    Clear,
}

/// What an injection does to the I/O it hits (SPDK's `error_type` values).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorType {
    /// Complete it with `IoStatus::Failed`.
    Failure,
    /// Hold it until the injection is cleared or the bdev is deleted; then complete it
    /// `IoStatus::Aborted`. A reset of the bdev (or of one stacked on it) completes it
    /// `IoStatus::Failed`, as SPDK's error bdev, and nothing is held while the reset runs.
    Pending,
    /// Let it through, XORing `corrupt_value` into the byte at `corrupt_offset` of its data: a
    /// write's before it goes down, a read's after the base completed it.
    CorruptData,
    /// Complete it with `IoStatus::NoMem`: the bdev layer parks and retries it.
    Nomem,
}

impl ErrorType {
    fn code(self) -> u64 {
        match self {
            Self::Failure => 1,
            Self::Pending => 2,
            Self::CorruptData => 3,
            Self::Nomem => 4,
        }
    }

    fn from_code(c: u64) -> Option<Self> {
        match c {
            1 => Some(Self::Failure),
            2 => Some(Self::Pending),
            3 => Some(Self::CorruptData),
            4 => Some(Self::Nomem),
            _ => None,
        }
    }

    /// SPDK's name for it.
    pub fn spdk_name(self) -> &'static str {
        match self {
            Self::Failure => "failure",
            Self::Pending => "pending",
            Self::CorruptData => "corrupt_data",
            Self::Nomem => "nomem",
        }
    }
}

/// Parameters of `bdev_error_inject_error` (less the bdev name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InjectOpts {
    /// Target type(s), or `Clear`.
    pub io_type: InjectIoType,
    /// What to do.
    pub error_type: ErrorType,
    /// How many I/O (per targeted type) the injection affects.
    pub num: u32,
    /// Inject only while at least this many I/O of the channel are in flight on the base
    /// (SPDK's `queue_depth`; 0 = always).
    pub queue_depth: u64,
    /// Byte offset into the I/O's data, for `corrupt_data`.
    pub corrupt_offset: u64,
    /// Value XORed into that byte (non-zero), for `corrupt_data`.
    pub corrupt_value: u8,
}

/// One slot's state, as [`crate::injection_status`] reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SlotStatus {
    /// Error type of the last injection armed on the slot (`None` if never armed).
    pub error_type: Option<ErrorType>,
    /// I/O it will still affect.
    pub remaining: u32,
    /// I/O it has affected since the bdev was created (all injections on this slot).
    pub injected: u64,
}

/// Number of slots: read, write, unmap, flush.
pub(crate) const SLOTS: usize = 4;

/// The slot that `t` is counted in, if injections can target it (SPDK injects into these four
/// types only; everything else passes untouched).
#[inline]
pub(crate) fn slot_of(t: IoType) -> Option<usize> {
    match t {
        IoType::Read => Some(0),
        IoType::Write => Some(1),
        IoType::Unmap => Some(2),
        IoType::Flush => Some(3),
        _ => None,
    }
}

/// An injection that hit one I/O.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Hit {
    pub(crate) error_type: ErrorType,
    /// The release epoch the I/O was seen in (for `pending`).
    pub(crate) epoch: u64,
    pub(crate) corrupt_offset: u64,
    pub(crate) corrupt_value: u8,
}

#[derive(Default)]
struct Slot {
    /// remaining (bits 0..32) | error type code (32..40) | corrupt value (40..48).
    word: AtomicU64,
    queue_depth: AtomicU64,
    corrupt_offset: AtomicU64,
    injected: AtomicU64,
}

const COUNT_MASK: u64 = 0xffff_ffff;

/// The injection state of one error bdev.
pub(crate) struct Injections {
    name: String,
    slots: [Slot; SLOTS],
    /// Advanced by every release; held I/O carries the epoch it was held in and a release of
    /// epoch `e` completes the I/O held before it (epoch < e).
    epoch: AtomicU64,
    /// Threads holding a channel of this bdev.
    pub(crate) threads: HolderThreads,
    /// Resets of the bdev in progress: while non-zero a `pending` hit fails its I/O instead of
    /// holding it (read only on that path).
    resetting: AtomicU32,
}

impl Injections {
    pub(crate) fn new(name: &str) -> Self {
        Self {
            name: name.to_string(),
            slots: Default::default(),
            epoch: AtomicU64::new(0),
            threads: HolderThreads::default(),
            resetting: AtomicU32::new(0),
        }
    }

    /// Fast path: true if an injection with a non-zero count is armed on `slot`.
    #[inline]
    pub(crate) fn armed(&self, slot: usize) -> bool {
        self.slots[slot].word.load(Ordering::Relaxed) & COUNT_MASK != 0
    }

    /// Takes one unit of `slot`'s count if the injection applies (`inflight` is the channel's
    /// I/O in flight on the base, compared with `queue_depth`). Exact under concurrency.
    pub(crate) fn take(&self, slot: usize, inflight: u64) -> Option<Hit> {
        let s = &self.slots[slot];
        // The epoch is read before the count is taken; `release` zeroes counts before it
        // advances the epoch. With both pairs SeqCst, an I/O whose take succeeded saw the epoch
        // from before any release that disarmed it, so that release (sent after the epoch
        // advanced) completes it.
        let epoch = self.epoch.load(Ordering::SeqCst);
        let mut w = s.word.load(Ordering::SeqCst);
        loop {
            if w & COUNT_MASK == 0 || inflight < s.queue_depth.load(Ordering::Relaxed) {
                return None;
            }
            match s
                .word
                .compare_exchange_weak(w, w - 1, Ordering::SeqCst, Ordering::SeqCst)
            {
                Ok(_) => break,
                Err(now) => w = now,
            }
        }
        s.injected.fetch_add(1, Ordering::Relaxed);
        Some(Hit {
            error_type: ErrorType::from_code((w >> 32) & 0xff)?,
            epoch,
            corrupt_offset: s.corrupt_offset.load(Ordering::Relaxed),
            corrupt_value: ((w >> 40) & 0xff) as u8,
        })
    }

    /// Arms `opts` on the slots it targets (not `Clear`; see [`Injections::clear`]).
    pub(crate) fn arm(&self, opts: &InjectOpts) {
        let word = u64::from(opts.num)
            | (opts.error_type.code() << 32)
            | (u64::from(opts.corrupt_value) << 40);
        let targets: &[usize] = match opts.io_type {
            InjectIoType::All => &[0, 1, 2, 3],
            InjectIoType::Read => &[0],
            InjectIoType::Write => &[1],
            InjectIoType::Unmap => &[2],
            InjectIoType::Flush => &[3],
            InjectIoType::Clear => &[],
        };
        for &i in targets {
            let s = &self.slots[i];
            // Parameters first, the word (which arms the slot) last.
            s.queue_depth.store(opts.queue_depth, Ordering::Relaxed);
            s.corrupt_offset
                .store(opts.corrupt_offset, Ordering::Relaxed);
            s.word.store(word, Ordering::SeqCst);
        }
    }

    /// Disarms every slot (keeping its error type for reporting) and releases held I/O.
    pub(crate) fn clear(self: &Arc<Self>) {
        for s in &self.slots {
            let mut w = s.word.load(Ordering::SeqCst);
            while let Err(now) =
                s.word
                    .compare_exchange(w, w & !COUNT_MASK, Ordering::SeqCst, Ordering::SeqCst)
            {
                w = now;
            }
        }
        self.release();
    }

    /// Completes (Aborted) every I/O held so far, on the threads holding it: advances the
    /// epoch, then sends each channel thread a message that releases what was held before.
    pub(crate) fn release(self: &Arc<Self>) {
        self.release_with(IoStatus::Aborted, Box::new(|| {}));
    }

    /// [`Injections::release`] with `status`; `done` runs (on the last thread to answer, or
    /// here) once every thread has released what it held.
    fn release_with(self: &Arc<Self>, status: IoStatus, done: Box<dyn FnOnce() + Send>) {
        let epoch = self.epoch.fetch_add(1, Ordering::SeqCst) + 1;
        let me = self.clone();
        let what = format!("error bdev '{}': releasing held I/O", self.name);
        self.threads.run_on_each(
            &what,
            move || {
                let n = crate::io::release_on_thread(&me, epoch, status);
                if n > 0 {
                    tracing::info!("error bdev '{}': released {n} held I/O", me.name);
                }
            },
            done,
        );
    }

    /// True while a reset of the bdev is in progress (a `pending` hit then fails its I/O).
    pub(crate) fn resetting(&self) -> bool {
        self.resetting.load(Ordering::SeqCst) != 0
    }

    /// The state of every slot, in the order read, write, unmap, flush.
    pub(crate) fn status(&self) -> [SlotStatus; SLOTS] {
        std::array::from_fn(|i| {
            let s = &self.slots[i];
            let w = s.word.load(Ordering::SeqCst);
            SlotStatus {
                error_type: ErrorType::from_code((w >> 32) & 0xff),
                remaining: (w & COUNT_MASK) as u32,
                injected: s.injected.load(Ordering::Relaxed),
            }
        })
    }
}

/// A reset of an error bdev completes the I/O its `pending` injections hold with
/// `IoStatus::Failed`, as SPDK's error bdev fails its pending I/O on reset, and holds none
/// while the reset runs (the injections stay armed).
pub(crate) struct ResetHook(pub(crate) Arc<Injections>);

impl HeldIo for ResetHook {
    fn reset_start(&self, done: Box<dyn FnOnce() + Send>) {
        // The flag first: an I/O taking a `pending` hit on a thread after that thread's
        // release message fails instead of being held.
        self.0.resetting.fetch_add(1, Ordering::SeqCst);
        self.0.release_with(IoStatus::Failed, done);
    }

    fn reset_end(&self) {
        self.0.resetting.fetch_sub(1, Ordering::SeqCst);
    }

    /// An abort naming a held (`pending`) I/O completes it Aborted; the others stay held.
    fn abort(&self, target: &AbortTarget) -> usize {
        crate::io::abort_on_thread(&self.0, target)
    }
}
