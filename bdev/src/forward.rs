//! The forwarding fast path: a stacked bdev's backend hands the I/O it was given to a channel
//! of its base as the same object (see ARCHITECTURE.md, "Life of an I/O"). The frames are
//! pushed here and popped by `channel::finish_io`.

use std::ptr::NonNull;

use crate::channel::{BdevChannel, ChannelState};
use crate::forward_refuse::{defer_hook, refuse};
use crate::io::{BdevIo, ForwardDone, FLAG_COUNTED};
use crate::types::{IoStatus, IoType};
use crate::Bdev;

impl BdevChannel {
    /// For a stacked bdev's backend: sends `io` — an I/O its own bdev layer handed to its
    /// [`crate::BackendChannel::submit`] — to this channel of its base bdev *as the same
    /// object*, at `offset_blocks` on the base, with the same length and data segments. The
    /// base's layer accounts it (statistics, in-flight, quiesce) as its own; when the base
    /// completes it, the I/O goes straight back to the forwarding layer, which completes it
    /// in the same step — one completion-queue hop for the whole stack, no child I/O, no clock
    /// read (the base counts from the forwarding layer's submission time and the forwarding
    /// layer takes the base's completion time). Use [`BdevChannel::forward_with`] to see the I/O back first.
    ///
    /// While forwarded, `driver_ctx` belongs to the base's module; the forwarding module keeps
    /// its state in the words of `forward_with`. A range outside the base, a type the base does
    /// not support, a read-only descriptor or a block-size mismatch completes the I/O with
    /// `IoStatus::Invalid` on the forwarding layer (through its completion queue). Beyond
    /// [`crate::io::MAX_FORWARD_DEPTH`] stacked layers the I/O is forwarded with a child
    /// from the pool instead (same behaviour, one more hop; out of I/O objects: `NoMem`, which
    /// the forwarding layer retries).
    ///
    /// Thread contract: call on this channel's thread, from the backend's `submit` (or from a
    /// [`ForwardDone`] hook); nothing completes before it returns.
    #[inline]
    pub fn forward(&self, io: Box<BdevIo>, offset_blocks: u64) {
        self.forward_with(io, offset_blocks, None, [0; 3]);
    }

    /// As [`BdevChannel::forward`], and when the base has completed the I/O, `done` runs (in
    /// the completion poller, with the forwarding layer's view of the I/O restored) with
    /// `ctx`, before the forwarding layer completes it — or not: see [`ForwardDone`].
    ///
    /// *Every* end of a forward with a hook goes through the hook, exactly once: an I/O the
    /// base refuses (range, type, read-only descriptor, block size; a channel without state:
    /// `Failed`) reaches `done` with `IoStatus::Invalid` (`Failed`), and past the frame stack
    /// with no I/O object left for the child that would carry it, with `IoStatus::NoMem`
    /// (return the I/O: the forwarding layer retries it whole, through its backend's `submit`).
    /// So a module may count what it forwards and uncount it in the hook, and keep other I/O
    /// pointing at this one until the hook has run.
    ///
    /// Thread contract: call on this channel's thread, from the backend's `submit` (or from a
    /// [`ForwardDone`] hook). Nothing completes and no hook runs before it returns: the hook
    /// runs later in the thread's completion poller, on this thread.
    #[inline(always)]
    pub fn forward_with(
        &self,
        io: Box<BdevIo>,
        offset_blocks: u64,
        done: Option<ForwardDone>,
        ctx: [u64; 3],
    ) {
        let Some(st) = self.st else {
            return refuse(io, offset_blocks, done, ctx, IoStatus::Failed);
        };
        // SAFETY: the state belongs to the channel context this handle keeps alive (see
        // `st`); it is only touched on its own thread, which the check below asserts: the
        // I/O was submitted on the calling thread (checked by `submit`, or set by this layer
        // for its own children).
        let st = unsafe { st.as_ref() };
        if io.thread_id != st.thread_id {
            wrong_thread(st, &io);
        }
        let b = &*st.bdev;
        if !self.forwardable(&io, offset_blocks, b) {
            return reject(self, io, offset_blocks, done, ctx);
        }
        if let Some(io) = self.enter(st, io, offset_blocks, done, ctx) {
            // An I/O a layer handed its backend has its segments (the layer supplied a buffer
            // to a read without): no buffer check on the base.
            st.dispatch_forwarded(io);
        }
    }

    /// What `forward_with` does with an I/O it accepted, before dispatching it on the base's
    /// channel state `st` (this channel's): pushes the forwarding layer's frame and counts the
    /// I/O in flight on the base. `None` when the frame stack is full: the I/O went on with a
    /// child instead.
    #[inline(always)]
    fn enter(
        &self,
        st: &ChannelState,
        mut io: Box<BdevIo>,
        offset_blocks: u64,
        done: Option<ForwardDone>,
        ctx: [u64; 3],
    ) -> Option<Box<BdevIo>> {
        if !io.push_frame(offset_blocks, done, ctx) {
            forward_with_child(self, io, offset_blocks, done, ctx);
            return None;
        }
        io.chan = Some(st.ptr());
        io.flags = FLAG_COUNTED;
        st.inflight.set(st.inflight.get() + 1);
        Some(io)
    }

    /// For a stacked bdev that sends one I/O of its own to several bases (a mirror's write):
    /// submits `child` — a fresh I/O from [`crate::alloc_io`] with its type, block count and
    /// segments prepared, not yet submitted — to this channel of a base at `offset_blocks`,
    /// as part of `parent`, the I/O the stacked bdev's layer handed to its backend. The child
    /// takes the parent's thread and submission time (no clock read), and is accounted by the
    /// base as its own. When the base has completed it, `done` runs (in the completion
    /// poller) with the child and `ctx`; the child's own callback is never used. The hook
    /// either frees the child ([`crate::free_io`]) and returns `None`, or — for the last child
    /// of its parent — frees it and returns the parent with its final status
    /// ([`BdevIo::with_status`]): the parent then completes on the stacked bdev's layer in the
    /// same step (no completion-queue hop for the parent, one for the whole fan-out).
    ///
    /// A child the base refuses (range, type, read-only descriptor, block size) reaches `done`
    /// with `IoStatus::Invalid` through the completion queue. The parent must stay in flight
    /// on the stacked bdev's layer (not completed, not forwarded) until its last child's hook
    /// has run; the child's segments must stay valid as long (normally they are pieces of the
    /// parent's own, see [`BdevIo::append_iovs_from`]). The child is linked to the parent for
    /// an ABORT of the parent, which so reaches the child where a module below holds it
    /// (see [`BdevIo::set_fanout_parent`]).
    ///
    /// Thread contract: call on this channel's thread, from the backend's `submit` of
    /// `parent` (or from a hook of its children); nothing completes before it returns.
    #[inline]
    pub fn forward_child(
        &self,
        mut child: Box<BdevIo>,
        parent: &BdevIo,
        offset_blocks: u64,
        done: ForwardDone,
        ctx: [u64; 3],
    ) {
        assert!(
            child.depth == 0,
            "forward_child: the child is already in flight"
        );
        child.thread_id = parent.thread_id;
        child.block_size = parent.block_size;
        child.submit_tsc = parent.submit_tsc;
        child.chan = None;
        child.flags = 0;
        // For an abort of the parent (the child is a piece of it): `AbortTarget::names`.
        child.parent = crate::io::Parent::Fanout(std::ptr::NonNull::from(parent));
        // A fresh I/O has room for one frame: the stacked layer's view is "no channel, no
        // accounting", so when the base is done only `done` runs for it.
        let pushed = child.push_frame(offset_blocks, Some(done), ctx);
        debug_assert!(pushed);
        let Some(st) = self.st else {
            return child.complete(IoStatus::Failed);
        };
        // SAFETY: as in `forward_with`; the thread is checked below.
        let st = unsafe { st.as_ref() };
        if child.thread_id != st.thread_id {
            wrong_thread(st, &child);
        }
        if !self.forwardable(&child, offset_blocks, &st.bdev) {
            if let Some(bad) = self.validate_forward(&child, offset_blocks, &st.bdev) {
                tracing::debug!("bdev '{}': rejected {:?}: {bad}", st.bdev.name, child);
                // Not counted here: completes through the thread's queue, then `done` runs.
                return child.complete(IoStatus::Invalid);
            }
        }
        child.chan = Some(st.ptr());
        child.flags = FLAG_COUNTED;
        st.inflight.set(st.inflight.get() + 1);
        st.dispatch_fast(child);
    }

    /// The common case of [`BdevChannel::validate_forward`] in a few instructions: a data or
    /// flush-like type this channel accepts, the same block size, within the base. False
    /// sends the I/O to the full check (which may still accept it: reset, abort).
    #[inline(always)]
    fn forwardable(&self, io: &BdevIo, offset: u64, b: &Bdev) -> bool {
        let end = offset.wrapping_add(io.num_blocks);
        self.allowed & io.io_type.bit() & !ROUTED_ALWAYS != 0
            && io.block_size == b.block_size
            && end >= offset
            && end <= b.num_blocks()
    }

    /// What `forward` checks: the forwarding layer validated the request against its own
    /// geometry; the base's range, type support, writability and block size remain.
    #[inline]
    fn validate_forward(&self, io: &BdevIo, offset: u64, b: &Bdev) -> Option<&'static str> {
        let t = io.io_type;
        if self.allowed & t.bit() == 0 {
            return Some(self.refusal(t));
        }
        if matches!(t, IoType::Reset | IoType::Abort) {
            return None;
        }
        if t.has_data() && io.block_size != b.block_size {
            return Some("block size differs from the base's");
        }
        match offset.checked_add(io.num_blocks) {
            Some(end) if end <= b.num_blocks() => None,
            _ => Some("range outside the base bdev"),
        }
    }
}

/// Types `forwardable` leaves to the full check (no range, no block size).
const ROUTED_ALWAYS: u32 = (1 << IoType::Reset as u8) | (1 << IoType::Abort as u8);

/// The base channel of a backend that forwards every I/O unchanged
/// ([`crate::BackendChannel::forward_all`]), or the members of a striped backend
/// ([`crate::BackendChannel::forward_striped`]), kept by the forwarding layer's channel state.
/// (One type for both: the striped route is tested only where `fast` is `None`, so a null
/// or passthru channel pays nothing for it.)
pub(crate) struct Fwd {
    /// The base (`None`: a striped route, whose other I/O go to the backend's `submit`).
    chan: Option<BdevChannel>,
    /// The base's channel state when the checks `forward` makes on every I/O were settled
    /// once at channel creation: same thread, same block size, and every type the forwarding
    /// layer hands its backend accepted by this channel of the base. `None`: every I/O takes
    /// the full `forward`.
    fast: Option<NonNull<ChannelState>>,
    /// A striped route (then `chan` and `fast` are `None`).
    striped: Option<Box<crate::stripe::Striped>>,
}

// SAFETY: `fast` points to the state of the channel `chan` (itself Send) keeps alive, and is
// only dereferenced on that channel's thread (`Fwd::new` checked it is the forwarding layer's,
// whose channel state holds this and is confined to it); it moves between OS threads only with
// that channel state, as `chan` does.
unsafe impl Send for Fwd {}

impl Fwd {
    /// `upper` is the forwarding bdev, whose channel state on thread `thread_id` keeps this.
    pub(crate) fn new(chan: BdevChannel, upper: &Bdev, thread_id: u64) -> Self {
        let fast = chan.st.filter(|st| {
            // SAFETY: the state belongs to the channel context `chan` keeps alive; this runs
            // on the thread creating the forwarding layer's channel, and only reads fields
            // set at the base channel's creation.
            let st = unsafe { st.as_ref() };
            // The types the forwarding layer's `dispatch_fast` can hand its backend: accepted
            // there, and not handled by its layer (never reset or abort, which are always
            // routed).
            let handed = upper.accepted & !upper.routed;
            debug_assert!(handed & ROUTED_ALWAYS == 0);
            st.thread_id == thread_id
                && st.bdev.block_size == upper.block_size
                && handed & !chan.allowed == 0
        });
        Self {
            chan: Some(chan),
            fast,
            striped: None,
        }
    }

    /// The general path: `forward` with its full checks, at the same offset; for a striped
    /// route, the backend's `submit` (of `up`, the channel state that keeps this).
    #[inline]
    pub(crate) fn forward(&self, up: &ChannelState, io: Box<BdevIo>) {
        match &self.chan {
            Some(c) => {
                let off = io.offset_blocks;
                c.forward(io, off);
            }
            None => up.backend_submit(io),
        }
    }
}

/// What a forwarding layer's `dispatch_fast` does with an I/O for a backend that forwards
/// everything: `forward` without the checks `Fwd::new` settled (the I/O passed this layer's
/// validation, its type is one `Fwd::new` found accepted below, it runs on the base
/// channel's thread, a read has its segments); only the range is checked, as the base may
/// have been resized. Inlined into the forwarding layer's `dispatch_fast`, with the base's
/// dispatch; no module call on the way.
#[inline(always)]
pub(crate) fn forward_fast(up: &ChannelState, f: &Fwd, mut io: Box<BdevIo>) {
    let Some(st) = f.fast else {
        return match &f.striped {
            Some(s) => crate::stripe::forward_striped(up, s, io),
            None => f.forward(up, io),
        };
    };
    // SAFETY: the state belongs to the channel context `f.chan` keeps alive, and `Fwd::new`
    // found it on this channel's thread, where this runs (the caller's channel state is
    // confined to it).
    let st = unsafe { st.as_ref() };
    let off = io.offset_blocks;
    // No overflow: this layer checked the range against its own size.
    if off + io.num_blocks > st.bdev.num_blocks() || !io.push_frame(off, None, [0; 3]) {
        // Outside a resized base, or past the frame stack: the full path decides.
        return f.forward(up, io);
    }
    io.chan = Some(st.ptr());
    io.flags = FLAG_COUNTED;
    st.inflight.set(st.inflight.get() + 1);
    st.dispatch_forwarded(io);
}

/// `forward_fast` for a base that forwards everything too (and for I/O `forward` hands a
/// forwarder): out of line, so that a stack of forwarders does not inline into itself.
#[inline(never)]
pub(crate) fn forward_fast_nested(up: &ChannelState, f: &Fwd, io: Box<BdevIo>) {
    forward_fast(up, f, io);
}

/// Asks a fresh backend channel how it wants its I/O routed: `forward_all`, else
/// `forward_striped`; `upper` is its bdev, whose channel on `thread_id` keeps the route.
pub(crate) fn route(
    backend: &mut dyn crate::BackendChannel,
    upper: &Bdev,
    thread_id: u64,
) -> Option<Fwd> {
    if let Some(base) = backend.forward_all() {
        return Some(Fwd::new(base, upper, thread_id));
    }
    let striped = crate::stripe::Striped::new(backend.forward_striped()?, upper, thread_id)?;
    Some(Fwd {
        chan: None,
        fast: None,
        striped: Some(Box::new(striped)),
    })
}

#[cold]
#[inline(never)]
fn wrong_thread(st: &crate::channel::ChannelState, io: &BdevIo) -> ! {
    panic!(
        "bdev '{}': forward from thread {} to a channel of thread {}",
        st.bdev.name, io.thread_id, st.thread_id
    )
}

/// `forward_with` of an I/O `forwardable` did not pass: the full check, then forwarded or
/// refused with `IoStatus::Invalid` (to the hook, if any: `forward_refuse::refuse`).
#[cold]
#[inline(never)]
fn reject(
    base: &BdevChannel,
    io: Box<BdevIo>,
    offset_blocks: u64,
    done: Option<ForwardDone>,
    ctx: [u64; 3],
) {
    let b = &*base.bdev;
    match base.validate_forward(&io, offset_blocks, b) {
        Some(bad) => {
            tracing::debug!("bdev '{}': rejected forwarded {:?}: {bad}", b.name, io);
            refuse(io, offset_blocks, done, ctx, IoStatus::Invalid)
        }
        // Reset, abort, a flush-like type with another block size: accepted after all.
        None => base.forward_checked(io, offset_blocks, done, ctx),
    }
}

impl BdevChannel {
    /// The end of `forward_with` for an I/O that passed the full check (`reject`).
    fn forward_checked(
        &self,
        io: Box<BdevIo>,
        offset_blocks: u64,
        done: Option<ForwardDone>,
        ctx: [u64; 3],
    ) {
        let Some(st) = self.st else {
            return refuse(io, offset_blocks, done, ctx, IoStatus::Failed);
        };
        // SAFETY: as in `forward_with`, whose thread check this I/O passed.
        let st = unsafe { st.as_ref() };
        if let Some(io) = self.enter(st, io, offset_blocks, done, ctx) {
            st.dispatch_fast(io);
        }
    }
}

impl BdevIo {
    /// For a [`ForwardDone`] hook of a child sent with [`BdevChannel::forward_child`]: sets
    /// the final status of the parent the hook hands back (to be completed on its layer in
    /// the same step). Any thread that owns the I/O.
    #[inline]
    pub fn with_status(mut self: Box<Self>, status: IoStatus) -> Box<Self> {
        self.status = status;
        self
    }

    /// For a module that keeps the children it sends with [`BdevChannel::forward_child`] for
    /// its next fan-out instead of handing them back to the pool ([`crate::free_io`]) in
    /// its hook: clears what the last use left (segments, status, flags, words, parent,
    /// buffer), as the pool does for [`crate::alloc_io`]. A kept I/O still counts against
    /// the thread's [`crate::MAX_IOS_PER_THREAD`]: keep few, and give them back with
    /// `free_io` (on their thread) when done. Any thread that owns the I/O.
    #[inline]
    pub fn clear_for_reuse(&mut self) {
        self.reset();
    }
}

/// `forward` past the frame stack's depth: a child from the pool carries the I/O (as
/// [`BdevIo::forward`]); the hook and its words wait in the parent's `driver_ctx`, which no
/// base sees.
#[cold]
#[inline(never)]
fn forward_with_child(
    base: &BdevChannel,
    mut io: Box<BdevIo>,
    offset_blocks: u64,
    done: Option<ForwardDone>,
    ctx: [u64; 3],
) {
    let Some(mut child) = crate::thread::alloc_io() else {
        return match done {
            Some(done) => defer_hook(io, done, ctx, IoStatus::NoMem),
            None => io.complete(IoStatus::NoMem),
        };
    };
    io.driver_ctx[..3].copy_from_slice(&ctx);
    io.driver_ctx[3] = done.map_or(0, |f| f as usize as u64);
    child.forward(io, forward_child_done);
    child.offset_blocks = offset_blocks;
    base.submit(child);
}

fn forward_child_done(mut child: Box<BdevIo>) {
    let status = child.status;
    let parent = child.take_parent();
    let Some(mut io) = parent else {
        return crate::thread::free_io(child);
    };
    io.inherit_completion_time(&child);
    crate::thread::free_io(child);
    io.status = status;
    let ctx = [io.driver_ctx[0], io.driver_ctx[1], io.driver_ctx[2]];
    let done = io.driver_ctx[3];
    let io = if done == 0 {
        Some(io)
    } else {
        // SAFETY: a non-zero word 3 was stored by `forward_with_child` from a `ForwardDone`
        // function pointer, and nothing else writes the parent's driver_ctx while the child
        // carries it.
        let f: ForwardDone = unsafe { std::mem::transmute::<usize, ForwardDone>(done as usize) };
        f(io, ctx)
    };
    if let Some(io) = io {
        let st = io.status;
        io.complete(st);
    }
}
