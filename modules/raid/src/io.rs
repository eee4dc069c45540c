//! The data path shared by every level: per-thread channel state, the raid's shared geometry
//! and member masks, and the fan-out of one parent I/O into children on the base bdevs.
//!
//! **Ownership of a fanned-out parent.** A parent that goes to several bases is leaked into a
//! raw pointer (`Box::into_raw`) once all its children are allocated; each child carries the
//! pointer in `user[0]` (the submitter's words: we are the children's submitter) and its
//! member slot in `user[1]`. The last child to complete rebuilds the box and completes the
//! parent. All children complete on the submitting thread, one at a time (the bdev layer
//! defers every completion to its poller), so the count in the parent's `driver_ctx` needs no
//! atomics, and nothing completes while the children are being submitted.
//!
//! **raid1 writes** take a cheaper fan-out: the parent itself goes to one member
//! (`BdevChannel::forward_with`) and children (from the channel's [`ChanCtx::spare`] stock,
//! else the pool; all taken before any is submitted, linked in a [`Kids`] chain) to the
//! others with `BdevChannel::forward_child`; the counts live in the first child's `user`
//! words (the parent's `driver_ctx` is the member's while forwarded), and the last piece's
//! hook hands the parent back to the bdev layer to complete in the same step (see
//! `raid1_write`).
//!
//! **Channel state from a completion.** The parent's `driver_ctx[CTX_CHAN]` holds a pointer to
//! the thread's [`ChanCtx`]. That state is owned by our I/O device's channel, referenced by the
//! raid bdev's backend channel, which the bdev layer frees only once idle — i.e. after the
//! parent, which is counted in flight there until after its completion has been processed.
//!
//! **Forwarded I/O.** An I/O that falls on one member (raid0 within a strip, concat within a
//! member, every raid1 read) is not fanned out: it goes to the member itself with
//! `BdevChannel::forward` (raid1 reads with a hook that keeps the per-member read counts and
//! retries a failed read on the next member). Its `driver_ctx` then belongs to the member's
//! module; our words travel in the forward's frame.
//!
//! **No lock, no allocation per I/O.** Child I/O come from the thread's pool (raid1 writes:
//! first from the channel's stock of kept children, sized at channel creation); children of
//! the other fan-outs are staged in a per-channel vector sized at channel creation; member masks are atomics read
//! with relaxed/acquire loads. The only allocations are on exceptional paths: the message that
//! tells the control path a member failed, and (raid1 during a rebuild) growth of the queue of
//! writes parked behind the window being copied.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Weak};

use ferrite_bdev::{BackendChannel, BdevChannel, BdevIo, IoCallback, IoStatus, IoType};
use ferrite_reactor::{ForEachCont, IoChannel, ThreadHandle};

use crate::control::Raid;
use crate::types::RaidLevel;

/// Parent `driver_ctx` word: pointer to the submitting thread's [`ChanCtx`].
pub(crate) const CTX_CHAN: usize = 0;
/// Parent `driver_ctx` word: children still in flight.
pub(crate) const CTX_REMAINING: usize = 1;
/// Parent `driver_ctx` word: children that succeeded (and count toward success).
pub(crate) const CTX_OK: usize = 2;
/// Parent `driver_ctx` word: rank of the worst child status seen (see [`rank`]).
pub(crate) const CTX_WORST: usize = 3;
/// Parent `driver_ctx` word: raid5f write: members skipped (absent).
pub(crate) const CTX_TRIED: usize = 4;
/// Parent `driver_ctx` word: raid5f write: children submitted.
pub(crate) const CTX_GEN: usize = 5;
/// Parent `driver_ctx` word (raid5f read): byte offset + 1 of the reconstructed range in the
/// parent's buffer (0: none).
pub(crate) const CTX_STRIPE: usize = 6;
/// [`Shared::n_shift`] of a member count that is not a power of two.
pub(crate) const N_NOT_POW2: u32 = u32::MAX;

/// Bits of a staged child's slot word that name the member (the rest are level flags).
pub(crate) const SLOT_MASK: usize = 0xffff_ffff;

/// What every channel of one online raid shares: geometry (fixed while the bdev is
/// registered) and member masks (changed by the control path and by failures).
pub(crate) struct Shared {
    pub name: String,
    pub level: RaidLevel,
    pub n: usize,
    /// log2 of `n` if `n` is a power of two, else [`N_NOT_POW2`]: raid0 maps a strip to its
    /// member with a mask and a shift instead of two divisions.
    pub n_shift: u32,
    pub block_size: u32,
    pub num_blocks: u64,
    /// log2 of the strip size in blocks (0 for raid1).
    pub strip_shift: u32,
    /// First data block on each member.
    pub data_offset: Vec<AtomicU64>,
    /// Concat: first raid block of each member; entry `n` is the raid's size.
    pub concat_start: Vec<u64>,
    /// Members not to be used: failed, being removed, or empty. Shared with the bdev layer
    /// as the gate of raid0's striped route (see `RaidChannel::forward_striped`).
    pub gone: Arc<AtomicU64>,
    /// Members being rebuilt: written, never read.
    pub rebuilding: AtomicU64,
    /// Members that failed a write piece (set by [`Shared::fail_slot`], cleared when the
    /// slot is emptied): a member leaving in sync whose write failed while it left lacks
    /// data the bitmap may not track, so it is recorded as failed (a full rebuild) instead.
    pub missed_writes: AtomicU64,
    /// The control object, told about member failures.
    pub raid: Weak<Raid>,
    /// The control thread.
    pub app: Option<ThreadHandle>,
    /// raid1 write-intent bitmap: regions written while a member is away.
    pub wib: Bitmap,
    /// Writes mark `wib` (a member is away and may come back, or a resync runs).
    pub wib_active: AtomicBool,
    /// Persisting `wib` (see `control/bitmap.rs`): 0 idle, 1 a round runs, 2 another round
    /// is wanted after it.
    pub wib_flush: AtomicU8,
}

/// A bitmap of fixed-size regions of the raid, set without locks from any thread.
///
/// When persisted (raids with a superblock), `durable` holds the bits known to be on disk:
/// a write may reach the members only once its regions are durable.
pub(crate) struct Bitmap {
    /// log2 of the region size in blocks.
    pub shift: u32,
    words: Vec<AtomicU64>,
    /// Bits on disk (empty when the bitmap is not persisted).
    durable: Vec<AtomicU64>,
}

/// Most regions a write-intent bitmap tracks (regions grow to stay under it).
pub(crate) const MAX_REGIONS: u64 = 1 << 20;

impl Bitmap {
    /// A bitmap of `num_blocks` in regions of at least `min_region_blocks` (a power of two),
    /// made larger if needed to stay within `max_regions` (at most [`MAX_REGIONS`]). Empty
    /// for `num_blocks == 0`. `persist`: keep the durable bits (see the type).
    pub(crate) fn with_limit(
        num_blocks: u64,
        min_region_blocks: u64,
        max_regions: u64,
        persist: bool,
    ) -> Bitmap {
        if num_blocks == 0 {
            return Bitmap {
                shift: 0,
                words: Vec::new(),
                durable: Vec::new(),
            };
        }
        let mut shift = min_region_blocks
            .max(1)
            .next_power_of_two()
            .trailing_zeros();
        while num_blocks.div_ceil(1u64 << shift) > max_regions {
            shift += 1;
        }
        let regions = num_blocks.div_ceil(1u64 << shift);
        let words = regions.div_ceil(64) as usize;
        Bitmap {
            shift,
            words: (0..words).map(|_| AtomicU64::new(0)).collect(),
            durable: (0..if persist { words } else { 0 })
                .map(|_| AtomicU64::new(0))
                .collect(),
        }
    }

    /// True if the bitmap is persisted (it keeps durable bits).
    pub(crate) fn persisted(&self) -> bool {
        !self.durable.is_empty()
    }

    /// A copy of the marked words (to persist).
    pub(crate) fn snapshot(&self) -> Vec<u64> {
        self.words
            .iter()
            .map(|w| w.load(Ordering::Acquire))
            .collect()
    }

    /// Records `words` as what is on disk now.
    pub(crate) fn set_durable(&self, words: &[u64]) {
        for (d, w) in self.durable.iter().zip(words) {
            d.store(*w, Ordering::Release);
        }
    }

    /// Marks `words` (loaded from disk: marked and durable).
    pub(crate) fn load(&self, words: &[u64]) {
        for (m, w) in self.words.iter().zip(words) {
            m.fetch_or(*w, Ordering::AcqRel);
        }
        for (d, w) in self.durable.iter().zip(words) {
            d.fetch_or(*w, Ordering::AcqRel);
        }
    }

    /// True if every region of blocks `[o, o + l)` is on disk (always, when not persisted).
    #[inline]
    pub(crate) fn durable(&self, o: u64, l: u64) -> bool {
        if l == 0 || self.durable.is_empty() {
            return true;
        }
        let (a, b) = (o >> self.shift, (o + l - 1) >> self.shift);
        (a..=b).all(|r| {
            self.durable
                .get((r / 64) as usize)
                .is_none_or(|w| w.load(Ordering::Acquire) & (1u64 << (r % 64)) != 0)
        })
    }

    /// Blocks per region.
    pub(crate) fn region_blocks(&self) -> u64 {
        1u64 << self.shift
    }

    /// Marks the regions of blocks `[o, o + l)`; true if one was not marked before.
    #[inline]
    pub(crate) fn mark(&self, o: u64, l: u64) -> bool {
        if l == 0 || self.words.is_empty() {
            return false;
        }
        let mut new = false;
        let (a, b) = (o >> self.shift, (o + l - 1) >> self.shift);
        for r in a..=b {
            if let Some(w) = self.words.get((r / 64) as usize) {
                let bit = 1u64 << (r % 64);
                if w.load(Ordering::Relaxed) & bit == 0 {
                    new |= w.fetch_or(bit, Ordering::AcqRel) & bit == 0;
                }
            }
        }
        new
    }

    /// True if any region of blocks `[o, o + l)` is marked.
    pub(crate) fn any(&self, o: u64, l: u64) -> bool {
        if l == 0 {
            return false;
        }
        let (a, b) = (o >> self.shift, (o + l - 1) >> self.shift);
        (a..=b).any(|r| {
            self.words
                .get((r / 64) as usize)
                .is_some_and(|w| w.load(Ordering::Acquire) & (1u64 << (r % 64)) != 0)
        })
    }

    /// Number of marked regions.
    pub(crate) fn count(&self) -> u64 {
        self.words
            .iter()
            .map(|w| u64::from(w.load(Ordering::Acquire).count_ones()))
            .sum()
    }

    /// Clears every region (and the durable bits: the cleared bitmap is persisted lazily,
    /// and until then a new mark must not count as on disk).
    pub(crate) fn clear(&self) {
        for w in self.words.iter().chain(&self.durable) {
            w.store(0, Ordering::Release);
        }
    }
}

impl Shared {
    /// raid0: the member holding strip `s` and the strip's row on it (`s % n`, `s / n`),
    /// without a division when `n` is a power of two.
    #[inline(always)]
    pub(crate) fn locate(&self, s: u64) -> (usize, u64) {
        if self.n_shift != N_NOT_POW2 {
            (
                (s & ((1u64 << self.n_shift) - 1)) as usize,
                s >> self.n_shift,
            )
        } else {
            let n = self.n as u64;
            ((s % n) as usize, s / n)
        }
    }

    /// First data block on member `slot`.
    #[inline]
    pub(crate) fn offset_of(&self, slot: usize) -> u64 {
        self.data_offset[slot].load(Ordering::Relaxed)
    }

    /// Asks the control path to persist the write-intent bitmap (a region was newly marked).
    /// At most one message per round: a request during a round asks for one more.
    pub(crate) fn wib_persist_request(&self) {
        let mut cur = self.wib_flush.load(Ordering::Acquire);
        loop {
            let next = match cur {
                0 => 1,
                1 => 2,
                _ => return,
            };
            match self
                .wib_flush
                .compare_exchange(cur, next, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break,
                Err(c) => cur = c,
            }
        }
        if cur != 0 {
            return;
        }
        let raid = self.raid.clone();
        let msg = move || {
            if let Some(r) = raid.upgrade() {
                crate::control::persist_bitmap(&r);
            }
        };
        match &self.app {
            Some(t) => {
                if let Err(e) = t.send(msg) {
                    tracing::error!("raid '{}': cannot persist the bitmap: {e}", self.name);
                }
            }
            None => msg(),
        }
    }

    /// A piece of a mirrored or parity write is back from member `slot` with `status` (the
    /// rule raid1 and raid5f share). A member that failed it or refused it (`Invalid`: it
    /// shrank under the raid, or no longer takes writes) is dropped ([`Shared::fail_slot`]),
    /// as SPDK fails a base bdev on any write error: left in, it would serve these blocks
    /// with the data it missed. Returns true for a piece that missed its member *without*
    /// saying anything about the member (aborted by a reset below; `NoMem`): that member
    /// stays in for now; the level decides once the write is done (raid1
    /// `settle_kept_misses`, raid5f `write_done`).
    #[inline(always)]
    pub(crate) fn write_piece_back(&self, slot: usize, status: IoStatus) -> bool {
        match status {
            IoStatus::Success => false,
            IoStatus::Failed | IoStatus::Invalid => {
                self.fail_slot(slot);
                false
            }
            _ => true,
        }
    }

    /// Marks `slot` failed. The first report sends the control path a message to drop the
    /// member (degraded mode); until then and after, no new I/O goes to it.
    pub(crate) fn fail_slot(&self, slot: usize) {
        let bit = 1u64 << slot;
        self.missed_writes.fetch_or(bit, Ordering::AcqRel);
        let prev = self.gone.fetch_or(bit, Ordering::AcqRel);
        if prev & bit != 0 {
            return;
        }
        tracing::warn!(
            "raid '{}': member in slot {slot} failed I/O; degrading",
            self.name
        );
        let raid = self.raid.clone();
        let msg = move || {
            if let Some(r) = raid.upgrade() {
                crate::control::member_failed(&r, slot);
            }
        };
        match &self.app {
            Some(t) => {
                if let Err(e) = t.send(msg) {
                    tracing::error!("raid '{}': cannot report failed member: {e}", self.name);
                }
            }
            None => msg(),
        }
    }
}

/// Per-thread state of one raid: channels to the members and the bookkeeping of the I/O in
/// flight. Reached only on its thread (interior mutability, no locks).
pub(crate) struct ChanCtx {
    pub shared: Arc<Shared>,
    /// This thread's channel to each member (`None`: empty, failed or removed slot).
    pub bases: RefCell<Vec<Option<BdevChannel>>>,
    /// raid1: blocks of reads outstanding per member (reads go to the least busy).
    pub outstanding: Vec<Cell<u64>>,
    /// raid1: where the next search for the least busy member starts (ties rotate).
    pub rr: Cell<usize>,
    /// Children of the parent being fanned out, before submission (capacity: two per
    /// member, the most a degraded raid5f read needs).
    pub staging: RefCell<Vec<(usize, Box<BdevIo>)>>,
    /// raid1 rebuild: the window being copied; writes overlapping it wait.
    pub lock: Cell<Option<(u64, u64)>>,
    /// raid1 rebuild: generation of new writes (0 or 1); a lock waits for the other one.
    pub gen: Cell<usize>,
    /// raid1: writes in flight per generation.
    pub writes: [Cell<u64>; 2],
    /// raid1 rebuild: the lock request waiting for the previous generation to drain.
    pub lock_waiter: RefCell<Option<ForEachCont>>,
    /// raid1 rebuild: writes waiting for the window to be released.
    pub parked: RefCell<VecDeque<Box<BdevIo>>>,
    /// raid1: writes waiting for their write-intent bitmap regions to be on disk.
    pub wib_parked: RefCell<VecDeque<Box<BdevIo>>>,
    /// raid1: writes in flight with a piece that missed its member without a verdict on it
    /// (aborted by a reset below): `(head piece, slots)`. Read when the write's last piece is
    /// back. Empty but for those rare writes (allocated on the first one, never per I/O).
    pub kept_misses: RefCell<Vec<(u64, u64)>>,
    /// raid1: mirror children back from their members, kept for the next write (at most
    /// [`SPARE_CHILDREN`], fewer while few writes are in flight; taking one here costs less
    /// than the thread's pool). Given back to the pool when the channel goes.
    // The boxes are pool objects handed around by pointer; unboxing them would move them.
    #[allow(clippy::vec_box)]
    pub spare: RefCell<Vec<Box<BdevIo>>>,
}

/// Most mirror children a raid1 channel keeps for reuse (see [`ChanCtx::spare`]).
pub(crate) const SPARE_CHILDREN: usize = 256;

impl Drop for ChanCtx {
    fn drop(&mut self) {
        // Back to the thread's pool (the channel state is released on its own thread).
        for c in self.spare.get_mut().drain(..) {
            ferrite_bdev::free_io(c);
        }
    }
}

impl ChanCtx {
    pub(crate) fn new(shared: Arc<Shared>, bases: Vec<Option<BdevChannel>>) -> Self {
        let n = shared.n;
        Self {
            outstanding: (0..n).map(|_| Cell::new(0)).collect(),
            rr: Cell::new(0),
            staging: RefCell::new(Vec::with_capacity(2 * n)),
            lock: Cell::new(None),
            gen: Cell::new(0),
            writes: [Cell::new(0), Cell::new(0)],
            lock_waiter: RefCell::new(None),
            parked: RefCell::new(VecDeque::with_capacity(64)),
            wib_parked: RefCell::new(VecDeque::with_capacity(64)),
            kept_misses: RefCell::new(Vec::new()),
            spare: RefCell::new(Vec::with_capacity(if shared.level == RaidLevel::Raid1 {
                SPARE_CHILDREN
            } else {
                0
            })),
            bases: RefCell::new(bases),
            shared,
        }
    }
}

/// The backend channel the bdev layer holds per thread: a handle on our per-thread state.
pub(crate) struct RaidChannel {
    /// Keeps `state` alive (the reactor frees the channel's state when its last handle goes).
    _ctx: IoChannel<ChanCtx>,
    /// The state `_ctx` owns, reached without the handle's owner check (a thread-local
    /// lookup) on every I/O: the bdev layer calls `submit` only on the thread that created
    /// this channel (its channel state is confined to that thread).
    state: std::ptr::NonNull<ChanCtx>,
    /// The creating thread (checked against each I/O's thread in debug builds).
    #[cfg(debug_assertions)]
    thread_id: u64,
}

// SAFETY: as the `IoChannel` it holds (Send, not Sync): it may be moved between OS threads
// (the bdev layer keeps it inside a thread-confined channel state), but `state` is only
// dereferenced in `submit`, which the bdev layer calls on the channel's own thread.
unsafe impl Send for RaidChannel {}

impl RaidChannel {
    /// A backend channel over `ctx`. Thread contract: on the thread that owns `ctx`.
    pub(crate) fn new(ctx: IoChannel<ChanCtx>) -> Self {
        let state = std::ptr::NonNull::from(&*ctx);
        Self {
            _ctx: ctx,
            state,
            #[cfg(debug_assertions)]
            thread_id: ferrite_reactor::current_id(),
        }
    }
}

impl BackendChannel for RaidChannel {
    #[inline]
    fn submit(&mut self, io: Box<BdevIo>) {
        #[cfg(debug_assertions)]
        assert_eq!(
            ferrite_reactor::current_id(),
            self.thread_id,
            "raid channel used off its thread"
        );
        // SAFETY: `_ctx` keeps the state alive as long as `self`; the bdev layer submits only
        // on the channel's own thread (see the field), so no other reference is used
        // concurrently, and the state is only read through `&` (interior mutability).
        let ctx: &ChanCtx = unsafe { self.state.as_ref() };
        match ctx.shared.level {
            RaidLevel::Raid0 => crate::raid0::submit(ctx, io),
            RaidLevel::Concat => crate::concat::submit(ctx, io),
            RaidLevel::Raid1 => crate::raid1::submit(ctx, io),
            RaidLevel::Raid5f => crate::raid5f::submit(ctx, io),
        }
    }

    /// Writes this channel parked itself (behind a rebuild window, or until the write-intent
    /// bitmap is on disk) have no piece on any member yet: an abort naming one completes it
    /// `Aborted` here, in the queue's order for the rest.
    fn abort_waiting(&mut self, target: &ferrite_bdev::AbortTarget) -> usize {
        // SAFETY: as in `submit`: the bdev layer calls this on the channel's own thread.
        let ctx: &ChanCtx = unsafe { self.state.as_ref() };
        let mut n = 0;
        for q in [&ctx.parked, &ctx.wib_parked] {
            let mut q = q.borrow_mut();
            for _ in 0..q.len() {
                let Some(io) = q.pop_front() else { break };
                if target.names(&io) {
                    // Deferred by the bdev layer: the callback runs on a later poll.
                    io.complete(IoStatus::Aborted);
                    n += 1;
                } else {
                    q.push_back(io);
                }
            }
        }
        n
    }

    /// raid0 over a power-of-two number of members: the bdev layer forwards reads and writes
    /// within one strip to their member itself (no call into this module), with the
    /// per-member checks settled once here; the rest (across strips, flush, unmap,
    /// write-zeroes, reset) still comes to `submit`. The members of an online raid0 never
    /// change (losing one takes it offline), and their data offsets are fixed; `gone` is the
    /// gate: once a member is marked failed or removed, every I/O comes to `submit` again,
    /// which fails it as before.
    fn forward_striped(&mut self) -> Option<ferrite_bdev::StripeMap> {
        // SAFETY: as in `submit`: called on the channel's thread, right after its creation.
        let ctx: &ChanCtx = unsafe { self.state.as_ref() };
        let sh = &*ctx.shared;
        if sh.level != RaidLevel::Raid0 || sh.n_shift == N_NOT_POW2 {
            return None;
        }
        let bases = ctx.bases.borrow();
        let mut members = Vec::with_capacity(sh.n);
        for slot in 0..sh.n {
            let ch = bases.get(slot)?.as_ref()?.try_clone().ok()?;
            members.push((ch, sh.offset_of(slot)));
        }
        Some(ferrite_bdev::StripeMap {
            members,
            strip_shift: sh.strip_shift,
            gate: sh.gone.clone(),
        })
    }
}

/// Severity of a status, for "worst status wins".
#[inline]
pub(crate) fn rank(s: IoStatus) -> u64 {
    match s {
        IoStatus::Success | IoStatus::Pending => 0,
        IoStatus::Aborted => 1,
        IoStatus::Miscompare => 2,
        IoStatus::NoMem => 3,
        IoStatus::Invalid => 4,
        IoStatus::Failed => 5,
    }
}

/// The status of a rank (inverse of [`rank`]).
#[inline]
pub(crate) fn status_of(r: u64) -> IoStatus {
    match r {
        0 => IoStatus::Success,
        1 => IoStatus::Aborted,
        2 => IoStatus::Miscompare,
        4 => IoStatus::Invalid,
        // NoMem from a base never reaches a callback (its bdev layer retries); fail safe.
        _ => IoStatus::Failed,
    }
}

/// Prepares `c` as an I/O of type `t` (the types a raid backend accepts).
#[inline]
pub(crate) fn prep_as(c: &mut BdevIo, t: IoType, off: u64, n: u64, cb: IoCallback) {
    match t {
        IoType::Read => c.prep_read(off, n, cb),
        IoType::Write => c.prep_write(off, n, cb),
        IoType::Unmap => c.prep_unmap(off, n, cb),
        IoType::WriteZeroes => c.prep_write_zeroes(off, n, cb),
        _ => c.prep_flush(off, n, cb),
    };
}

/// The channel of `slot` if the member may take I/O on this thread.
#[inline]
pub(crate) fn usable(
    bases: &[Option<BdevChannel>],
    gone: u64,
    slot: usize,
) -> Option<&BdevChannel> {
    if gone & (1u64 << slot) != 0 {
        return None;
    }
    bases.get(slot).and_then(Option::as_ref)
}

/// Children allocated for one parent before any is submitted (all or none go out), linked
/// through their `user[0]` words (we are their submitter; the slot rides in `user[1]`): no
/// staging vector to borrow, no allocation. Dropping the chain gives the children back.
pub(crate) struct Kids {
    head: Option<Box<BdevIo>>,
}

impl Kids {
    pub(crate) fn new() -> Self {
        Self { head: None }
    }

    /// Adds `c`, for member `slot`.
    #[inline]
    pub(crate) fn push(&mut self, mut c: Box<BdevIo>, slot: usize) {
        let next = self.head.take().map_or(0, |h| Box::into_raw(h) as u64);
        c.user = [next, slot as u64];
        self.head = Some(c);
    }

    /// Takes a child back with its member slot (user words cleared).
    #[inline]
    pub(crate) fn pop(&mut self) -> Option<(Box<BdevIo>, usize)> {
        let mut c = self.head.take()?;
        let [next, slot] = c.user;
        c.user = [0; 2];
        if next != 0 {
            // SAFETY: `next` was made by `Box::into_raw` in `push` and is owned by this chain
            // only (nothing else holds the pointer).
            self.head = Some(unsafe { Box::from_raw(next as *mut BdevIo) });
        }
        Some((c, slot as usize))
    }
}

impl Drop for Kids {
    fn drop(&mut self) {
        while let Some((c, _)) = self.pop() {
            ferrite_bdev::free_io(c);
        }
    }
}

/// Gives back the children staged so far and completes `parent` with `status` (NoMem: the
/// bdev layer retries the parent later; nothing was submitted).
pub(crate) fn abandon(
    staged: &mut Vec<(usize, Box<BdevIo>)>,
    parent: Box<BdevIo>,
    status: IoStatus,
) {
    for (_, c) in staged.drain(..) {
        ferrite_bdev::free_io(c);
    }
    parent.complete(status);
}

/// Submits the staged children of `parent` to their members; the parent completes when the
/// last child's callback gets it back from [`finish_child`]. `staged` must not be empty.
pub(crate) fn launch(
    ctx: &ChanCtx,
    bases: &[Option<BdevChannel>],
    mut parent: Box<BdevIo>,
    staged: &mut Vec<(usize, Box<BdevIo>)>,
) {
    parent.driver_ctx[CTX_CHAN] = ctx as *const ChanCtx as u64;
    parent.driver_ctx[CTX_REMAINING] = staged.len() as u64;
    parent.driver_ctx[CTX_OK] = 0;
    parent.driver_ctx[CTX_WORST] = 0;
    let pptr = Box::into_raw(parent);
    for (slot, mut c) in staged.drain(..) {
        c.user = [pptr as u64, slot as u64];
        // SAFETY: the parent, leaked above, stays in flight until its last child is back
        // (`finish_child`); the link lets an abort of the parent reach this child below.
        unsafe { c.set_fanout_parent(&*pptr) };
        match bases.get(slot & SLOT_MASK).and_then(Option::as_ref) {
            Some(ch) => ch.submit(c),
            // Staged only for members with a channel; keep the count right regardless.
            None => c.complete(IoStatus::Failed),
        }
    }
}

/// In a child's callback: the parent it belongs to (still in flight).
///
/// # Safety
/// `child` must be a child submitted by [`launch`] whose parent has
/// not been completed yet.
#[inline]
pub(crate) unsafe fn parent_of<'a>(child: &BdevIo) -> &'a mut BdevIo {
    // SAFETY: per the contract, user[0] is the pointer leaked by `launch` and the parent is
    // still in flight; children complete one at a time on this thread, so no other reference
    // to it is live.
    unsafe { &mut *(child.user[0] as *mut BdevIo) }
}

/// The thread state recorded in an in-flight parent.
///
/// # Safety
/// `parent` must have been set up by [`launch`] and still be in
/// flight.
#[inline]
pub(crate) unsafe fn ctx_of<'a>(parent: &BdevIo) -> &'a ChanCtx {
    // SAFETY: per the contract; the state outlives the in-flight parent (module docs).
    unsafe { &*(parent.driver_ctx[CTX_CHAN] as *const ChanCtx) }
}

/// Records a finished child (`counts` = its success counts toward the parent's success),
/// returns it to the pool, and hands back the parent if this was its last child (with the
/// child's completion time, so the parent's latency ends when its last base I/O was done).
///
/// # Safety
/// As [`parent_of`].
pub(crate) unsafe fn finish_child(child: Box<BdevIo>, counts: bool) -> Option<Box<BdevIo>> {
    let status = child.status();
    let pptr = child.user[0] as *mut BdevIo;
    // SAFETY: per the contract (see `parent_of`).
    let p = unsafe { &mut *pptr };
    if status == IoStatus::Success {
        if counts {
            p.driver_ctx[CTX_OK] += 1;
        }
    } else {
        p.driver_ctx[CTX_WORST] = p.driver_ctx[CTX_WORST].max(rank(status));
    }
    p.driver_ctx[CTX_REMAINING] -= 1;
    if p.driver_ctx[CTX_REMAINING] > 0 {
        ferrite_bdev::free_io(child);
        return None;
    }
    // SAFETY: the last child: nothing refers to the parent any more; rebuild the Box
    // leaked by `launch`.
    let mut parent = unsafe { Box::from_raw(pptr) };
    parent.inherit_completion_time(&child);
    ferrite_bdev::free_io(child);
    Some(parent)
}

/// Completion of a child of a striped level (raid0, concat): the parent completes with the
/// worst status of its children.
pub(crate) fn striped_child_done(child: Box<BdevIo>) {
    // SAFETY: every child with this callback was submitted by `launch`.
    if let Some(parent) = unsafe { finish_child(child, true) } {
        let st = status_of(parent.driver_ctx[CTX_WORST]);
        parent.complete(st);
    }
}

/// A flush of no blocks (the whole device): one flush to every usable member.
pub(crate) fn flush_all(ctx: &ChanCtx, parent: Box<BdevIo>, cb: IoCallback) {
    let bases = ctx.bases.borrow();
    let mut staged = ctx.staging.borrow_mut();
    let gone = ctx.shared.gone.load(Ordering::Acquire);
    for slot in 0..ctx.shared.n {
        if let Some(ch) = usable(&bases, gone, slot) {
            let Some(mut c) = ch.alloc_io() else {
                return abandon(&mut staged, parent, IoStatus::NoMem);
            };
            c.prep_flush(0, 0, cb);
            staged.push((slot, c));
        }
    }
    if staged.is_empty() {
        return parent.complete(IoStatus::Failed);
    }
    launch(ctx, &bases, parent, &mut staged);
}
