//! Per-(bdev, thread) channel state and the generic I/O path: validation, accounting, buffer
//! supply, splitting, emulation, quiesce parking, NOMEM retry and completion.

use std::cell::{Cell, RefCell, UnsafeCell};
use std::collections::VecDeque;
use std::ptr::NonNull;
use std::sync::{Arc, Weak};

use ferrite_reactor::{clock, ForEachCont, IoChannel};

use crate::bdev::{BackendChannel, Bdev};
use crate::buf::DmaBuf;
use crate::io::{BdevIo, Parent, FLAG_AUTO_BUF, FLAG_BYPASS_LOCK, FLAG_COUNTED};
use crate::iolist::IoList;
use crate::stats::IoStats;
use crate::types::{IoStatus, IoType};

pub(crate) const FLAG_CHILD: u32 = 8;
/// Set on an I/O that was dispatched and waits to be dispatched again (NOMEM retry, buffer
/// wait): a freeze must not park it, as the drain counts it and waits for it.
pub(crate) const FLAG_ACCEPTED: u32 = 16;
/// Counted in the channel's `undrained`: an I/O in flight that a drain does not wait for
/// (parked by a freeze, a type that quiesces itself or only looks at queues, a child that
/// bypasses the quiesce lock).
pub(crate) const FLAG_UNDRAINED: u32 = 128;
/// Set on a reset or emulated compare-and-write once it holds the bdev's quiesce: if it has to
/// be retried (NOMEM) it resumes where it was instead of queueing behind its own quiesce, and
/// it passes the freeze it caused.
pub(crate) const FLAG_QUIESCE_HELD: u32 = 32;

thread_local! {
    /// Completion time of the I/O whose callback is running on this OS thread (0 outside a
    /// callback). An I/O submitted from that callback takes it as its submission time instead
    /// of reading the clock again: one clock read per I/O instead of two (a TSC read costs
    /// about 14 ns on these VMs). The submission is then dated up to the callback's own run
    /// time early; [`restamp`] makes the next submission read the clock.
    static CB_TSC: Cell<u64> = const { Cell::new(0) };
}

/// Submission time for an I/O submitted now: the completion time of the callback running on
/// this thread if any, else the clock.
#[inline]
fn submit_ticks() -> u64 {
    let t = CB_TSC.with(Cell::get);
    if t != 0 {
        t
    } else {
        clock::ticks()
    }
}

/// For a completion callback that does slow work (data verification, a large copy) before it
/// resubmits: forget the completion time that submissions from this callback would otherwise
/// reuse, so the next submission on this thread reads the clock. Any thread; cheap.
pub fn restamp() {
    CB_TSC.with(|c| c.set(0));
}

/// Runs a completion callback with its completion time published for [`submit_ticks`].
#[inline]
fn run_callback(cb: crate::io::IoCallback, io: Box<BdevIo>) {
    let t = io.complete_tsc;
    CB_TSC.with(|c| c.set(t));
    cb(io);
    CB_TSC.with(|c| c.set(0));
}

/// Channel state for one bdev on one thread. Reached from in-flight I/O by pointer; freed only
/// when idle (see `ChannelCtx`'s drop).
pub(crate) struct ChannelState {
    pub(crate) bdev: Arc<Bdev>,
    backend: RefCell<Box<dyn BackendChannel>>,
    /// The base channel of a backend that forwards everything (`BackendChannel::forward_all`):
    /// I/O goes there instead of to `backend`; or the members of a striped backend
    /// (`BackendChannel::forward_striped`), where reads and writes within one strip go.
    fwd: Option<crate::forward::Fwd>,
    /// This channel's figures. Only touched on the channel's thread, through
    /// [`ChannelState::with_stats`] (no borrow flag to set and clear per I/O).
    stats: UnsafeCell<IoStats>,
    pub(crate) inflight: Cell<u32>,
    /// The I/O counted in `inflight` that a drain does not wait for (those with
    /// `FLAG_UNDRAINED`): what a drain waits for is `inflight - undrained`, so the common
    /// read or write is counted once, in `inflight`, with no flag or counter of its own.
    undrained: Cell<u32>,
    /// A freeze is waiting for the drain (`drain_waiter` is set).
    draining: Cell<bool>,
    nomem: RefCell<VecDeque<Box<BdevIo>>>,
    parked: RefCell<VecDeque<Box<BdevIo>>>,
    pub(crate) frozen: Cell<bool>,
    drain_waiter: RefCell<Option<ForEachCont>>,
    in_retry: Cell<bool>,
    /// Completed I/O waiting for the completion poller (intrusive: linked through the I/O).
    cq: IoList,
    queued: Cell<bool>,
    /// I/O objects the submitter gave back through [`BdevChannel::free_io`].
    spare: crate::spare::IoStack,
    pub(crate) thread_id: u64,
}

impl ChannelState {
    pub(crate) fn is_idle(&self) -> bool {
        self.inflight.get() == 0
            && self.nomem.borrow().is_empty()
            && self.parked.borrow().is_empty()
            && !self.in_retry.get()
    }

    /// Queues a completed I/O; returns true if the channel must be added to the ready list.
    #[inline]
    pub(crate) fn push_completion(&self, io: Box<BdevIo>) -> bool {
        self.cq.push_back(io);
        !self.queued.replace(true)
    }

    /// Finishes up to `max` queued completions; returns (done, more left). While this runs the
    /// channel stays marked as queued, so completions that arrive meanwhile (a callback that
    /// resubmits to a backend completing at once) join this drain instead of re-listing the
    /// channel; if any are left the caller lists it again.
    #[inline]
    pub(crate) fn drain_completions(&self, max: usize) -> (usize, bool) {
        debug_assert!(self.queued.get());
        let mut n = 0;
        while n < max {
            match self.cq.pop_front() {
                Some(io) => {
                    finish_io(io);
                    n += 1;
                }
                None => {
                    self.queued.set(false);
                    return (n, false);
                }
            }
        }
        let more = !self.cq.is_empty();
        self.queued.set(more);
        (n, more)
    }

    /// Freezes the channel and calls `cont.finish` once nothing drainable is in flight.
    pub(crate) fn freeze_and_drain(&self, cont: ForEachCont) {
        self.frozen.set(true);
        if self.drainable() == 0 {
            cont.finish(0);
        } else {
            *self.drain_waiter.borrow_mut() = Some(cont);
            self.draining.set(true);
        }
    }

    /// I/O in flight that a drain waits for.
    fn drainable(&self) -> u32 {
        self.inflight.get() - self.undrained.get()
    }

    /// Counts `io` among the I/O a drain does not wait for (once).
    fn mark_undrained(&self, io: &mut BdevIo) {
        if io.flags & FLAG_UNDRAINED == 0 {
            io.flags |= FLAG_UNDRAINED;
            self.undrained.set(self.undrained.get() + 1);
        }
    }

    /// Unfreezes and resubmits parked I/O in order.
    pub(crate) fn thaw(&self) {
        self.frozen.set(false);
        let parked: VecDeque<Box<BdevIo>> = std::mem::take(&mut *self.parked.borrow_mut());
        for mut io in parked {
            // Parked I/O is undrained until it is dispatched (which decides again).
            io.flags &= !FLAG_UNDRAINED;
            self.undrained.set(self.undrained.get() - 1);
            self.dispatch(io);
        }
    }

    pub(crate) fn ptr(&self) -> NonNull<ChannelState> {
        NonNull::from(self)
    }

    /// [`ChannelState::dispatch`] for the common case, inlined into `submit` and `forward`:
    /// a channel not frozen, a type the backend handles itself that a drain waits for, data
    /// segments present, no split boundary crossed. Anything else takes the general path.
    /// Such an I/O is counted for a drain by `inflight` alone (see `undrained`).
    #[inline(always)]
    pub(crate) fn dispatch_fast(&self, io: Box<BdevIo>) {
        self.dispatch_fast_impl::<true, true>(io);
    }

    /// `dispatch_fast` for an I/O `submit` settled (a read has its segment): no buffer check.
    #[inline(always)]
    pub(crate) fn dispatch_settled(&self, io: Box<BdevIo>) {
        self.dispatch_fast_impl::<false, true>(io);
    }

    /// `dispatch_fast` for an I/O a layer above has dispatched already (its own
    /// `dispatch_fast` passed it to the layer's forwarder): a read has its segments, so that
    /// check is left out.
    #[inline(always)]
    pub(crate) fn dispatch_forwarded(&self, io: Box<BdevIo>) {
        self.dispatch_fast_impl::<false, false>(io);
    }

    /// `TOP`: on the channel the I/O was submitted to (not forwarded to), where a forwarding
    /// route is inlined.
    #[inline(always)]
    fn dispatch_fast_impl<const CHECK_BUF: bool, const TOP: bool>(&self, io: Box<BdevIo>) {
        let t = io.io_type;
        let bit = t.bit();
        let b = &*self.bdev;
        let bound = b.split_bound;
        if self.frozen.get()
            || b.slow & bit != 0
            || (CHECK_BUF && t == IoType::Read && io.iovs.is_empty())
            || (bound != 0 && io.num_blocks > 0 && crosses(io.offset_blocks, io.num_blocks, bound))
        {
            return self.dispatch(io);
        }
        debug_assert!(!(t == IoType::Read && io.iovs.is_empty()));
        // Children that bypass the quiesce lock (and retries) take `dispatch`.
        debug_assert!(io.flags & (FLAG_BYPASS_LOCK | FLAG_UNDRAINED | FLAG_ACCEPTED) == 0);
        match &self.fwd {
            // On the base's channel (`TOP` false) the call is out of line: a stack of
            // forwarders would otherwise inline into itself.
            Some(f) if TOP => crate::forward::forward_fast(self, f, io),
            Some(f) => crate::forward::forward_fast_nested(self, f, io),
            None => self.backend.borrow_mut().submit(io),
        }
    }

    /// The backend's own `submit` (the general path of a striped backend).
    #[inline(never)]
    pub(crate) fn backend_submit(&self, io: Box<BdevIo>) {
        self.backend.borrow_mut().submit(io);
    }

    /// Hands a dispatched I/O to the backend, or to the base of a forwarding backend (with
    /// the full checks of `forward`).
    #[inline]
    fn to_backend(&self, io: Box<BdevIo>) {
        match &self.fwd {
            Some(f) => f.forward(self, io),
            None => self.backend.borrow_mut().submit(io),
        }
    }

    /// Entry of a validated, counted I/O into the channel.
    #[inline(never)]
    pub(crate) fn dispatch(&self, mut io: Box<BdevIo>) {
        let t = io.io_type;
        let bit = t.bit();
        // I/O marked accepted was dispatched before the freeze and is being resubmitted
        // (NOMEM retry, buffer wait): the drain is waiting for it, so parking it until the
        // thaw would never let the drain finish.
        // An abort only looks at this channel's queues (including the I/O parked here by the
        // freeze) and at I/O modules hold below (`held`), so it never waits for a thaw.
        if self.frozen.get()
            && io.flags & (FLAG_BYPASS_LOCK | FLAG_ACCEPTED | FLAG_QUIESCE_HELD) == 0
            && t != IoType::Abort
        {
            self.mark_undrained(&mut io);
            self.parked.borrow_mut().push_back(io);
            return;
        }
        if io.flags & FLAG_BYPASS_LOCK != 0 || NO_DRAIN_TYPES & bit != 0 {
            self.mark_undrained(&mut io);
        }
        let b = &*self.bdev;
        if b.routed & bit != 0 {
            match t {
                IoType::Reset => return crate::emulate::reset(self, io),
                IoType::Abort => return self.abort(io),
                IoType::WriteZeroes => return crate::emulate::write_zeroes(self, io),
                IoType::Compare => return crate::emulate::compare(self, io),
                IoType::CompareAndWrite => return crate::emulate::compare_and_write(self, io),
                _ => {}
            }
        }
        if t == IoType::Read && io.iovs.is_empty() {
            match supply_buf(&mut io) {
                Some(true) => {}
                Some(false) => {
                    io.flags |= FLAG_ACCEPTED;
                    return crate::thread::park_for_buf(io);
                }
                // Larger than the largest pool buffer: no buffer can ever be supplied.
                None => return io.complete(IoStatus::Failed),
            }
        }
        // Every I/O but a split piece of this layer is checked, including the children the
        // layer generates itself (emulation steps) and pieces split by a layer above that
        // forwarded them here: the backend asked never to see I/O crossing a boundary.
        let bound = b.split_bound;
        if bound > 0
            && io.num_blocks > 0
            && !(io.depth == 0 && matches!(io.parent, Parent::Split(_)))
            && io.offset_blocks / bound != (io.offset_blocks + io.num_blocks - 1) / bound
        {
            return crate::split::split(self, io);
        }
        self.to_backend(io);
    }

    /// Submits an internal child I/O (split piece, emulation step) on this channel.
    /// Children bypass a freeze: their parent is already counted as in flight, and parking
    /// them would keep a drain waiting for that parent forever.
    pub(crate) fn submit_child(&self, mut child: Box<BdevIo>) {
        child.flags |= FLAG_CHILD | FLAG_COUNTED | FLAG_BYPASS_LOCK;
        child.chan = Some(self.ptr());
        child.thread_id = self.thread_id;
        child.block_size = self.bdev.block_size;
        child.submit_tsc = submit_ticks();
        self.inflight.set(self.inflight.get() + 1);
        self.dispatch(child);
    }

    /// Submits a child straight to the backend, bypassing the type routing of `dispatch`.
    pub(crate) fn submit_backend_child(&self, mut child: Box<BdevIo>) {
        child.flags |= FLAG_CHILD | FLAG_COUNTED | FLAG_BYPASS_LOCK;
        child.chan = Some(self.ptr());
        child.thread_id = self.thread_id;
        child.block_size = self.bdev.block_size;
        child.submit_tsc = submit_ticks();
        self.inflight.set(self.inflight.get() + 1);
        self.to_backend(child);
    }

    fn abort(&self, mut io: Box<BdevIo>) {
        let tag = io.abort_tag;
        let mut found = 0;
        for q in [&self.nomem, &self.parked] {
            let mut keep = VecDeque::new();
            let taken: VecDeque<Box<BdevIo>> = std::mem::take(&mut *q.borrow_mut());
            for victim in taken {
                // Not an I/O holding the bdev quiesced: it must finish to release it.
                // Nor one forwarded here by a stacked bdev: its tag is its own submitter's.
                if victim.user[0] == tag
                    && victim.flags & (FLAG_CHILD | FLAG_QUIESCE_HELD) == 0
                    && victim.depth == 0
                {
                    found += 1;
                    victim.complete(IoStatus::Aborted);
                } else {
                    keep.push_back(victim);
                }
            }
            q.borrow_mut().extend(keep);
        }
        // I/O a module holds on purpose (the error bdev's `pending`, the delay bdev's latency
        // queues), in this bdev or down its stack: as SPDK, every I/O the abort names is
        // aborted, wherever it waits. One lookup per abort, none per read or write.
        let target = crate::held::AbortTarget::new(self.ptr(), tag);
        // What the backend keeps waiting on its own (not borrowed: an abort is never
        // dispatched from inside this backend's `submit`; if it were, nothing is lost).
        if let Ok(mut b) = self.backend.try_borrow_mut() {
            found += b.abort_waiting(&target);
        }
        found += crate::held::abort(&self.bdev, &target);
        io.status = if found > 0 {
            IoStatus::Success
        } else {
            IoStatus::Failed
        };
        let st = io.status;
        io.complete(st);
    }

    /// Nothing drainable is left in flight: a freeze waiting for that may go on.
    #[cold]
    #[inline(never)]
    fn drained(&self) {
        self.draining.set(false);
        let w = self.drain_waiter.borrow_mut().take();
        if let Some(w) = w {
            w.finish(0);
        }
    }

    #[inline]
    fn on_complete(&self, io: &mut BdevIo) {
        let n = self.inflight.get() - 1;
        self.inflight.set(n);
        // One test for the rare cases: an undrained I/O, a child, a drain waiting.
        if io.flags & (FLAG_UNDRAINED | FLAG_CHILD) != 0 || self.draining.get() {
            return self.on_complete_rare(io, n);
        }
        self.record(io);
        // No NOMEM retry to schedule here: `park_nomem` schedules one whenever it parks an
        // I/O, and `retry_nomem` resubmits every parked I/O, so a non-empty NOMEM queue always
        // has its retry pending.
        debug_assert!(self.nomem.borrow().is_empty() || self.in_retry.get());
    }

    /// `on_complete` of an undrained I/O, of a child (not in the statistics), or while a drain
    /// waits; `n` is what is left in flight.
    #[cold]
    #[inline(never)]
    fn on_complete_rare(&self, io: &mut BdevIo, n: u32) {
        if io.flags & FLAG_UNDRAINED != 0 {
            self.undrained.set(self.undrained.get() - 1);
        }
        if self.draining.get() && n == self.undrained.get() {
            self.drained();
        }
        if io.flags & FLAG_CHILD == 0 {
            self.record(io);
        }
    }

    /// Counts a completed I/O in this channel's statistics (reading the clock if no layer
    /// below did).
    #[inline(always)]
    fn record(&self, io: &mut BdevIo) {
        if io.complete_tsc == 0 {
            io.complete_tsc = clock::ticks();
        }
        let lat = io.complete_tsc.wrapping_sub(io.submit_tsc);
        let bytes = io.num_blocks * u64::from(io.block_size);
        let (t, status) = (io.io_type, io.status);
        self.with_stats(|s| s.record(t, bytes, lat, status));
    }

    /// Runs `f` on this channel's statistics. Call on the channel's thread only, and never
    /// from inside another `with_stats` (the closures given are plain updates and copies).
    #[inline(always)]
    pub(crate) fn with_stats<R>(&self, f: impl FnOnce(&mut IoStats) -> R) -> R {
        // SAFETY: the state is confined to its lightweight thread (every caller runs there:
        // the completion path, the NOMEM park, iostat's per-channel visits, the drop), and no
        // caller's closure reaches `with_stats` again, so this is the only reference to the
        // figures while `f` runs.
        f(unsafe { &mut *self.stats.get() })
    }

    #[cold]
    #[inline(never)]
    pub(crate) fn park_nomem(&self, mut io: Box<BdevIo>) {
        io.status = IoStatus::Pending;
        io.flags |= FLAG_ACCEPTED;
        self.with_stats(|s| s.nomem_retries += 1);
        self.nomem.borrow_mut().push_back(io);
        if !self.in_retry.get() {
            self.in_retry.set(true);
            crate::thread::schedule_retry(self.ptr());
        }
    }
}

impl Drop for ChannelState {
    fn drop(&mut self) {
        // Keep this channel's figures in the bdev's totals (`collect_iostat`).
        if let Ok(mut r) = self.bdev.retired_stats.lock() {
            let mine = self.with_stats(|s| *s);
            r.add(&mine);
        }
    }
}

/// The object the reactor keeps per (bdev, thread). Dropping it with I/O still in flight hands
/// the state to the thread's zombie list, freed once idle, so in-flight pointers stay valid.
pub(crate) struct ChannelCtx {
    state: Option<Box<ChannelState>>,
}

impl ChannelCtx {
    pub(crate) fn new(bdev: Weak<Bdev>) -> Self {
        let Some(bdev) = bdev.upgrade() else {
            return Self { state: None };
        };
        crate::thread::ensure_completion_poller();
        let mut backend = bdev.backend.create_channel();
        let frozen = bdev.quiesced.load(std::sync::atomic::Ordering::Acquire);
        let thread_id = ferrite_reactor::current().map(|t| t.id()).unwrap_or(0);
        let fwd = crate::forward::route(&mut *backend, &bdev, thread_id);
        Self {
            state: Some(Box::new(ChannelState {
                bdev,
                backend: RefCell::new(backend),
                fwd,
                stats: UnsafeCell::new(IoStats::default()),
                inflight: Cell::new(0),
                undrained: Cell::new(0),
                draining: Cell::new(false),
                nomem: RefCell::new(VecDeque::new()),
                parked: RefCell::new(VecDeque::new()),
                frozen: Cell::new(frozen),
                drain_waiter: RefCell::new(None),
                in_retry: Cell::new(false),
                cq: IoList::new(),
                queued: Cell::new(false),
                spare: crate::spare::IoStack::new(),
                thread_id,
            })),
        }
    }

    pub(crate) fn state(&self) -> Option<&ChannelState> {
        self.state.as_deref()
    }
}

impl Drop for ChannelCtx {
    fn drop(&mut self) {
        if let Some(s) = self.state.take() {
            if !s.is_idle() {
                let _ = crate::thread::with_local(|t| {
                    t.zombies.borrow_mut().push(s);
                });
            }
        }
    }
}

/// A thread's handle for submitting I/O to one bdev through one descriptor.
///
/// Thread contract: created on a lightweight thread (with [`crate::Desc::channel`]) and used
/// only there; `submit` never runs the callback before returning.
pub struct BdevChannel {
    pub(crate) ch: IoChannel<ChannelCtx>,
    pub(crate) writable: bool,
    pub(crate) bdev: Arc<Bdev>,
    /// Bits of the I/O types this channel accepts (supported, and writable if they write).
    pub(crate) allowed: u32,
    /// The channel state, for `forward` (which checks the thread through the I/O instead of
    /// through the reactor). Owned by the channel context `ch` keeps alive.
    pub(crate) st: Option<NonNull<ChannelState>>,
}

// SAFETY: as the `IoChannel` it wraps (Send, not Sync): it may move between OS threads, but
// its state is only reached on its own lightweight thread — through `ch`, which checks the
// thread, or through `st` in `forward`, which asserts that the I/O (submitted on the calling
// thread) belongs to the channel's thread.
unsafe impl Send for BdevChannel {}

/// Types that change data (refused on a read-only descriptor).
const WRITE_TYPES: u32 = (1 << IoType::Write as u8)
    | (1 << IoType::Unmap as u8)
    | (1 << IoType::WriteZeroes as u8)
    | (1 << IoType::CompareAndWrite as u8);
/// Reads and writes (the types `settled` accepts).
const RW_TYPES: u32 = (1 << IoType::Read as u8) | (1 << IoType::Write as u8);
/// Types a quiesce does not wait for (they quiesce themselves, or only look at queues).
pub(crate) const NO_DRAIN_TYPES: u32 =
    (1 << IoType::Reset as u8) | (1 << IoType::CompareAndWrite as u8) | (1 << IoType::Abort as u8);

impl BdevChannel {
    pub(crate) fn new(ch: IoChannel<ChannelCtx>, writable: bool, bdev: Arc<Bdev>) -> Self {
        let allowed = if writable {
            bdev.accepted
        } else {
            bdev.accepted & !WRITE_TYPES
        };
        let st = ch.state().map(NonNull::from);
        Self {
            ch,
            writable,
            bdev,
            allowed,
            st,
        }
    }

    /// The bdev.
    pub fn bdev(&self) -> &Arc<Bdev> {
        &self.bdev
    }

    /// Another handle on this same channel (same thread, same writability), e.g. for a
    /// [`crate::StripeMap`] while the module keeps its own. Thread contract: on the
    /// channel's thread (fails elsewhere, or once the bdev is gone).
    pub fn try_clone(&self) -> crate::Result<BdevChannel> {
        let ch = self.bdev.device.get_channel()?;
        Ok(BdevChannel::new(ch, self.writable, self.bdev.clone()))
    }

    /// Takes an I/O object: one this channel got back through [`BdevChannel::free_io`] if it
    /// has one (no thread-local lookup), otherwise one from the thread's pool (see
    /// [`crate::alloc_io`]). Thread contract: any lightweight thread; only on the channel's
    /// own does it look at the channel's objects.
    #[inline]
    pub fn alloc_io(&self) -> Option<Box<BdevIo>> {
        if let Some(st) = self.local_state() {
            if let Some(mut io) = st.spare.pop() {
                io.reset();
                return Some(io);
            }
        }
        crate::thread::alloc_io()
    }

    /// Gives back an I/O object its callback received (instead of [`crate::free_io`]): the
    /// channel keeps up to a poll's worth of them for its next [`BdevChannel::alloc_io`], the
    /// rest go to the thread's pool, as do the kept ones when the channel goes away. The I/O
    /// may have been submitted on any channel of this thread. Thread contract: the channel's
    /// thread (elsewhere the object goes to the calling thread's pool).
    #[inline]
    pub fn free_io(&self, mut io: Box<BdevIo>) {
        if let Some(st) = self.local_state() {
            io.buf = None;
            io.parent = crate::io::Parent::None;
            if let Err(io) = st.spare.push(io) {
                crate::thread::free_io(io);
            }
            return;
        }
        crate::thread::free_io(io);
    }

    /// The channel state, when called on the channel's thread: one thread-local read, not the
    /// reactor's channel lookup.
    #[inline(always)]
    fn local_state(&self) -> Option<&ChannelState> {
        let st = self.st?;
        // SAFETY: the state is owned by the channel context `ch` keeps alive as long as this
        // channel; it is only touched on its own thread, which the comparison checks (thread
        // ids are never 0 on a lightweight thread, and unique).
        let st = unsafe { st.as_ref() };
        (ferrite_reactor::current_id() == st.thread_id && st.thread_id != 0).then_some(st)
    }

    /// Submits `io`. Validation failures (range, read-only descriptor, unsupported type,
    /// segment length) complete it with `IoStatus::Invalid`; out-of-resources conditions park
    /// and retry it. The callback runs on this thread after this returns.
    #[inline]
    pub fn submit(&self, mut io: Box<BdevIo>) {
        let Some(st) = self.ch.state() else {
            return reject(io, None, "the bdev is gone");
        };
        let b = &*st.bdev;
        io.block_size = b.block_size;
        io.thread_id = st.thread_id;
        io.complete_tsc = 0;
        if !self.settled(&io, b) {
            return self.submit_checked(st, io);
        }
        Self::admit(st, &mut io);
        // Settled: a read has its segment, so the dispatch need not look for a buffer to
        // supply.
        st.dispatch_settled(io);
    }

    /// `submit` of an I/O `settled` left to the full check (out of line).
    #[inline(never)]
    fn submit_checked(&self, st: &ChannelState, mut io: Box<BdevIo>) {
        let b = &*st.bdev;
        if let Some(bad) = self.validate(&io, b) {
            return reject(io, Some(b), bad);
        }
        Self::admit(st, &mut io);
        st.dispatch_fast(io);
    }

    /// A validated I/O enters channel state `st`: its submission time, counted in flight.
    #[inline(always)]
    fn admit(st: &ChannelState, io: &mut BdevIo) {
        if io.flags & crate::io::FLAG_TSC_SET == 0 {
            io.submit_tsc = submit_ticks();
        }
        io.flags &= !crate::io::FLAG_TSC_SET;
        io.chan = Some(st.ptr());
        io.flags |= FLAG_COUNTED;
        st.inflight.set(st.inflight.get() + 1);
    }

    /// Why `t` is not in `allowed`.
    #[cold]
    pub(crate) fn refusal(&self, t: IoType) -> &'static str {
        if t.is_write() && !self.writable {
            "descriptor is read-only"
        } else {
            "I/O type not supported"
        }
    }

    /// The common case of `validate`, settled in a few instructions: an accepted read or
    /// write of one segment, inside the bdev, the segment as long as the blocks. False sends
    /// the I/O to the full check, which decides the same for such an I/O (and every refusal
    /// is its).
    #[inline(always)]
    fn settled(&self, io: &BdevIo, b: &Bdev) -> bool {
        let [one] = io.iovs.as_slice() else {
            return false;
        };
        let (off, n) = (io.offset_blocks, io.num_blocks);
        let end = off.wrapping_add(n);
        self.allowed & io.io_type.bit() & RW_TYPES != 0
            && n != 0
            && end >= off
            && end <= b.num_blocks()
            && n.checked_mul(u64::from(b.block_size)) == Some(one.len as u64)
    }

    /// Why `io` cannot go to `b` through this channel, if it cannot.
    #[inline]
    fn validate(&self, io: &BdevIo, b: &Bdev) -> Option<&'static str> {
        let t = io.io_type;
        if self.allowed & t.bit() == 0 {
            return Some(self.refusal(t));
        }
        if matches!(t, IoType::Reset | IoType::Abort) {
            return None;
        }
        let Some(end) = io.offset_blocks.checked_add(io.num_blocks) else {
            return Some("range overflows");
        };
        if end > b.num_blocks() || (io.num_blocks == 0 && t != IoType::Flush) {
            return Some("range outside the bdev");
        }
        if t.has_data() {
            let Some(want) = io.num_blocks.checked_mul(u64::from(b.block_size)) else {
                return Some("range overflows");
            };
            let have = match io.iovs.as_slice() {
                [one] => one.len as u64,
                many => many.iter().map(|v| v.len as u64).sum::<u64>(),
            };
            let auto_read = t == IoType::Read && io.iovs.is_empty();
            if !auto_read && have != want {
                return Some("segments do not match the block count");
            }
            if t == IoType::CompareAndWrite {
                let cmp = io.cmp_iovs.iter().map(|v| v.len as u64).sum::<u64>();
                if cmp != want {
                    return Some("compare segments do not match the block count");
                }
            }
        }
        None
    }

    /// I/O submitted on this channel and not yet completed.
    pub fn inflight(&self) -> u32 {
        self.ch.state().map(|s| s.inflight.get()).unwrap_or(0)
    }
}

/// Completes an I/O refused at submit with `IoStatus::Invalid` (out of line: the submit path
/// keeps no stack frame for the log call).
#[cold]
#[inline(never)]
fn reject(io: Box<BdevIo>, b: Option<&Bdev>, why: &str) {
    match b {
        Some(b) => tracing::debug!("bdev '{}': rejected {:?}: {why}", b.name, io),
        None => tracing::debug!("rejected {:?}: {why}", io),
    }
    io.complete(IoStatus::Invalid);
}

/// Attaches a pool buffer: `Some(true)` done, `Some(false)` none free now, `None` never (the
/// read is larger than the largest pool buffer).
fn supply_buf(io: &mut BdevIo) -> Option<bool> {
    let len = (io.num_blocks * u64::from(io.block_size)) as usize;
    match DmaBuf::get(len) {
        Ok(Some(b)) => {
            io.flags |= FLAG_AUTO_BUF;
            io.attach_buf(b);
            Some(true)
        }
        Ok(None) => Some(false),
        Err(_) => None,
    }
}

/// Retries an I/O parked for a buffer; false if there is still none (it is parked again).
pub(crate) fn retry_buf(mut io: Box<BdevIo>) -> bool {
    let len = (io.num_blocks * u64::from(io.block_size)) as usize;
    match DmaBuf::get(len) {
        Ok(Some(b)) => {
            io.attach_buf(b);
            io.flags |= FLAG_AUTO_BUF;
            match io.chan {
                // SAFETY: a counted I/O keeps its channel state alive (freed only when idle).
                Some(ch) => unsafe { ch.as_ref() }.dispatch(io),
                None => io.complete(IoStatus::Failed),
            }
            true
        }
        Ok(None) => {
            crate::thread::park_for_buf_front(io);
            false
        }
        Err(_) => {
            io.complete(IoStatus::Failed);
            true
        }
    }
}

/// Resubmits I/O a module refused with NOMEM; returns how many went out.
pub(crate) fn retry_nomem(ch: NonNull<ChannelState>) -> usize {
    // SAFETY: a channel is in the retry list only while `in_retry` is set, which keeps it from
    // being freed (is_idle is false).
    let st = unsafe { ch.as_ref() };
    st.in_retry.set(false);
    let n = st.nomem.borrow().len();
    let mut sent = 0;
    for _ in 0..n {
        let io = st.nomem.borrow_mut().pop_front();
        if let Some(io) = io {
            st.dispatch(io);
            sent += 1;
        }
    }
    sent
}

/// Whether `num > 0` blocks from `offset` cross a multiple of `bound > 0` (a mask for the
/// usual power-of-two boundary, not two divisions).
#[inline(always)]
fn crosses(offset: u64, num: u64, bound: u64) -> bool {
    let last = offset.wrapping_add(num - 1);
    if bound.is_power_of_two() {
        (offset ^ last) >= bound
    } else {
        offset / bound != last / bound
    }
}

/// Runs on the completion poller for every completed I/O: the accounting of the layer that
/// owns it, then of each layer that forwarded it (their hooks first), then its callback.
pub(crate) fn finish_io(mut io: Box<BdevIo>) {
    loop {
        if io.flags & FLAG_COUNTED != 0 {
            if let Some(ch) = io.chan {
                // SAFETY: counted I/O keeps the channel state alive until `on_complete` below.
                let st = unsafe { ch.as_ref() };
                if io.status == IoStatus::NoMem {
                    return st.park_nomem(io);
                }
                st.on_complete(&mut io);
            }
        }
        if io.depth == 0 {
            break;
        }
        // Done on the base: back to the layer that forwarded it, in this same step.
        if let Some(done) = io.pop_frame() {
            let ctx = io.popped_ctx();
            match done(io, ctx) {
                Some(back) => io = back,
                None => return,
            }
        }
    }
    io.flags &= !(FLAG_COUNTED
        | FLAG_ACCEPTED
        | FLAG_UNDRAINED
        | FLAG_QUIESCE_HELD
        | crate::io::FLAG_NO_ABORT);
    io.chan = None;
    if io.flags & FLAG_AUTO_BUF != 0 && !io.status.is_success() {
        io.buf = None;
    }
    if let Parent::Split(_) = io.parent {
        return crate::split::child_done(io);
    }
    match io.cb {
        Some(cb) => run_callback(cb, io),
        None => crate::thread::free_io(io),
    }
}

#[cfg(test)]
mod tests {
    use super::crosses;

    /// The mask form agrees with the division form for power-of-two and other boundaries.
    #[test]
    fn crossing_a_boundary() {
        for bound in [1u64, 2, 3, 8, 32, 48, 4096] {
            for offset in 0..200u64 {
                for num in 1..70u64 {
                    let want = offset / bound != (offset + num - 1) / bound;
                    assert_eq!(
                        crosses(offset, num, bound),
                        want,
                        "{offset}+{num} / {bound}"
                    );
                }
            }
        }
    }
}
