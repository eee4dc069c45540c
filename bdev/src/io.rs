//! The I/O object. A `Box<BdevIo>` is taken from the calling thread's pool, filled, submitted
//! on a channel, owned by the bdev (module) while in flight, and handed back to the submitter's
//! callback on completion; dropping it returns it to the pool (no heap allocation in steady
//! state).

use std::ptr::NonNull;

use crate::buf::DmaBuf;
use crate::types::{DeviceStatus, IoStatus, IoType};

/// One data segment. The memory must stay valid, and not be touched by the submitter, until the
/// I/O completes (see [`BdevIo::set_iovs`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IoVec {
    /// Start of the segment.
    pub base: *mut u8,
    /// Length in bytes.
    pub len: usize,
}

/// Completion callback: receives the finished I/O on the submitting thread, after the submit
/// call has returned.
pub type IoCallback = fn(Box<BdevIo>);

/// Who gets an I/O back when it completes.
pub(crate) enum Parent {
    /// The submitter's callback.
    None,
    /// A stacked module forwarded this I/O on behalf of a parent it owns.
    Owned(Box<BdevIo>),
    /// One child of a split parent; the parent is leaked until its last child completes.
    Split(NonNull<BdevIo>),
    /// A piece of a stacked module's fan-out (`forward_child`, or a child the module marked
    /// with [`BdevIo::set_fanout_parent`]): the parent stays in flight on the module's layer
    /// until this child is done. Not owned, never completed through this link: only an
    /// abort's matching follows it ([`crate::AbortTarget::names`]).
    Fanout(NonNull<BdevIo>),
}

/// Inline capacity kept in every pooled I/O for its segments.
pub const IOV_PREALLOC: usize = 8;

/// Layers one I/O can be forwarded through as the same object ([`crate::BdevChannel::forward`]).
/// A deeper stack still works: past this depth a layer forwards with a child I/O instead.
pub const MAX_FORWARD_DEPTH: usize = 4;

/// A forwarding module's completion hook ([`crate::BdevChannel::forward_with`]): called in the
/// completion poller when the base has completed a forwarded I/O, with the forwarding layer's
/// view of the I/O restored (its channel, offset, callback, flags; `status()` is the base's
/// status) and the three words the module passed. Return the I/O to complete it on the
/// forwarding layer at once (no second completion-queue hop); or keep it — forward it again
/// (a retry on another base), or call [`BdevIo::complete`] later — and return `None`.
pub type ForwardDone = fn(Box<BdevIo>, [u64; 3]) -> Option<Box<BdevIo>>;

/// What a forwarding layer keeps while its I/O is on the base: its view of the I/O. (Not its
/// block size: forwarding never changes an I/O's, which a base's data path requires to be
/// its own.)
#[derive(Clone, Copy, Default)]
pub(crate) struct Frame {
    pub(crate) chan: Option<NonNull<crate::channel::ChannelState>>,
    pub(crate) offset_blocks: u64,
    pub(crate) cb: Option<IoCallback>,
    pub(crate) done: Option<ForwardDone>,
    pub(crate) ctx: [u64; 3],
    pub(crate) flags: u32,
}

/// A block I/O request and, once completed, its result.
pub struct BdevIo {
    pub(crate) io_type: IoType,
    pub(crate) offset_blocks: u64,
    pub(crate) num_blocks: u64,
    pub(crate) iovs: Vec<IoVec>,
    pub(crate) cmp_iovs: Vec<IoVec>,
    pub(crate) status: IoStatus,
    /// What the device reported for a failed I/O, if its backend said.
    pub(crate) dev_status: Option<DeviceStatus>,
    pub(crate) cb: Option<IoCallback>,
    /// Two words for the submitter (job index, tag, ...). `user[0]` is what `Abort` matches.
    pub user: [u64; 2],
    /// Scratch space for the module that owns the I/O while it is in flight.
    pub driver_ctx: [u64; 8],
    pub(crate) parent: Parent,
    pub(crate) chan: Option<NonNull<crate::channel::ChannelState>>,
    pub(crate) thread_id: u64,
    pub(crate) submit_tsc: u64,
    pub(crate) complete_tsc: u64,
    pub(crate) block_size: u32,
    pub(crate) buf: Option<DmaBuf>,
    pub(crate) flags: u32,
    pub(crate) split_remaining: u32,
    pub(crate) split_status: IoStatus,
    pub(crate) abort_tag: u64,
    /// Forwarding layers above the one that owns the I/O now (frames in use).
    pub(crate) depth: u32,
    pub(crate) frames: [Frame; MAX_FORWARD_DEPTH],
    /// The next I/O in the completion queue holding this one ([`crate::iolist::IoList`]);
    /// meaningless while the I/O is not queued.
    pub(crate) link: *mut BdevIo,
}

pub(crate) const FLAG_BYPASS_LOCK: u32 = 1;
pub(crate) const FLAG_AUTO_BUF: u32 = 2;
pub(crate) const FLAG_COUNTED: u32 = 4;
/// `submit_tsc` was set by `forward` (the parent's): `submit` must not read the clock again.
pub(crate) const FLAG_TSC_SET: u32 = 64;
/// An ABORT does not reach this I/O below the layer that set it, nor any piece made of it
/// ([`BdevIo::shield_from_abort`]). Kept in that layer's view (its frame while forwarded);
/// cleared when the I/O completes to its submitter.
pub(crate) const FLAG_NO_ABORT: u32 = 512;

// Every I/O flag, wherever it is defined, has a bit of its own (a shared bit made one flag
// read as the other: FLAG_TSC_SET and FLAG_QUIESCE_HELD were both 32 once).
const _: () = {
    let all = [
        FLAG_BYPASS_LOCK,
        FLAG_AUTO_BUF,
        FLAG_COUNTED,
        crate::channel::FLAG_CHILD,
        crate::channel::FLAG_ACCEPTED,
        crate::channel::FLAG_UNDRAINED,
        crate::channel::FLAG_QUIESCE_HELD,
        FLAG_TSC_SET,
        crate::forward_refuse::FLAG_HOOK_DEFERRED,
        FLAG_NO_ABORT,
    ];
    let mut seen = 0u32;
    let mut i = 0;
    while i < all.len() {
        assert!(all[i].is_power_of_two(), "an I/O flag is not a single bit");
        assert!(seen & all[i] == 0, "two I/O flags share a bit");
        seen |= all[i];
        i += 1;
    }
};

// SAFETY: a BdevIo is owned by exactly one party at a time. Its raw pointers (segments, channel
// state, split parent) are only dereferenced on the thread recorded in `thread_id`, which
// `complete` asserts; it moves between threads only as an owned Box (for modules whose
// backends complete on other OS threads), never shared.
unsafe impl Send for BdevIo {}

/// A fresh I/O object tagged with `tag` in its first user word, for the unit tests of the
/// intrusive I/O lists.
#[cfg(test)]
pub(crate) fn tagged_io(tag: u64) -> Box<BdevIo> {
    let mut io = Box::<BdevIo>::default();
    io.user[0] = tag;
    io
}

impl Default for BdevIo {
    fn default() -> Self {
        Self {
            io_type: IoType::Read,
            offset_blocks: 0,
            num_blocks: 0,
            iovs: Vec::with_capacity(IOV_PREALLOC),
            cmp_iovs: Vec::new(),
            status: IoStatus::Pending,
            dev_status: None,
            cb: None,
            user: [0; 2],
            driver_ctx: [0; 8],
            parent: Parent::None,
            chan: None,
            thread_id: 0,
            submit_tsc: 0,
            complete_tsc: 0,
            block_size: 0,
            buf: None,
            flags: 0,
            split_remaining: 0,
            split_status: IoStatus::Success,
            abort_tag: 0,
            depth: 0,
            frames: [Frame::default(); MAX_FORWARD_DEPTH],
            link: std::ptr::null_mut(),
        }
    }
}

impl std::fmt::Debug for BdevIo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BdevIo")
            .field("type", &self.io_type)
            .field("offset_blocks", &self.offset_blocks)
            .field("num_blocks", &self.num_blocks)
            .field("iovcnt", &self.iovs.len())
            .field("status", &self.status)
            .finish()
    }
}

impl BdevIo {
    #[inline]
    pub(crate) fn reset(&mut self) {
        self.iovs.clear();
        self.cmp_iovs.clear();
        self.status = IoStatus::Pending;
        self.dev_status = None;
        self.cb = None;
        self.user = [0; 2];
        self.parent = Parent::None;
        self.chan = None;
        self.buf = None;
        self.flags = 0;
        self.split_remaining = 0;
        self.split_status = IoStatus::Success;
        self.abort_tag = 0;
        self.depth = 0;
    }

    /// Saves the current layer's view and hands the I/O to the layer below at
    /// `offset_blocks`; false (nothing changed) if the frame stack is full. Always inlined:
    /// it is most of a forward's own cost, and a call would add a tenth to it.
    #[inline(always)]
    pub(crate) fn push_frame(
        &mut self,
        offset_blocks: u64,
        done: Option<ForwardDone>,
        ctx: [u64; 3],
    ) -> bool {
        let d = self.depth as usize;
        let Some(f) = self.frames.get_mut(d) else {
            return false;
        };
        f.chan = self.chan;
        f.offset_blocks = self.offset_blocks;
        f.cb = self.cb;
        f.done = done;
        // The words only matter to a hook (a plain `forward` stores none).
        if done.is_some() {
            f.ctx = ctx;
        }
        f.flags = self.flags;
        self.depth += 1;
        self.offset_blocks = offset_blocks;
        self.dev_status = None;
        self.flags = 0;
        self.complete_tsc = 0;
        true
    }

    /// Back to the layer that forwarded the I/O (`depth > 0`): restores its view and returns
    /// its hook (whose words [`BdevIo::popped_ctx`] gives).
    #[inline]
    pub(crate) fn pop_frame(&mut self) -> Option<ForwardDone> {
        self.depth -= 1;
        let f = &self.frames[self.depth as usize];
        self.chan = f.chan;
        self.offset_blocks = f.offset_blocks;
        self.cb = f.cb;
        self.flags = f.flags;
        f.done
    }

    /// The words of the hook `pop_frame` just returned.
    #[inline]
    pub(crate) fn popped_ctx(&self) -> [u64; 3] {
        self.frames[self.depth as usize].ctx
    }

    /// True while the I/O is on a base bdev on behalf of a layer that forwarded it.
    pub fn is_forwarded(&self) -> bool {
        self.depth > 0
    }

    fn prep(
        &mut self,
        t: IoType,
        offset_blocks: u64,
        num_blocks: u64,
        cb: IoCallback,
    ) -> &mut Self {
        self.io_type = t;
        self.offset_blocks = offset_blocks;
        self.num_blocks = num_blocks;
        self.cb = Some(cb);
        self.status = IoStatus::Pending;
        self.dev_status = None;
        self
    }

    /// Prepares a read of `num_blocks` at `offset_blocks`. Without segments (no
    /// [`BdevIo::set_iovs`] / [`BdevIo::attach_buf`]) the bdev layer supplies a pool buffer,
    /// which the callback finds in [`BdevIo::buf`].
    pub fn prep_read(&mut self, offset_blocks: u64, num_blocks: u64, cb: IoCallback) -> &mut Self {
        self.prep(IoType::Read, offset_blocks, num_blocks, cb)
    }

    /// Prepares a write; attach data with [`BdevIo::attach_buf`] or [`BdevIo::set_iovs`].
    pub fn prep_write(&mut self, offset_blocks: u64, num_blocks: u64, cb: IoCallback) -> &mut Self {
        self.prep(IoType::Write, offset_blocks, num_blocks, cb)
    }

    /// Prepares a compare against the attached data.
    pub fn prep_compare(
        &mut self,
        offset_blocks: u64,
        num_blocks: u64,
        cb: IoCallback,
    ) -> &mut Self {
        self.prep(IoType::Compare, offset_blocks, num_blocks, cb)
    }

    /// Prepares a compare-and-write: compare with `set_cmp_iovs` data, write the attached data.
    pub fn prep_compare_and_write(
        &mut self,
        offset_blocks: u64,
        num_blocks: u64,
        cb: IoCallback,
    ) -> &mut Self {
        self.prep(IoType::CompareAndWrite, offset_blocks, num_blocks, cb)
    }

    /// Prepares an unmap.
    pub fn prep_unmap(&mut self, offset_blocks: u64, num_blocks: u64, cb: IoCallback) -> &mut Self {
        self.prep(IoType::Unmap, offset_blocks, num_blocks, cb)
    }

    /// Prepares a write-zeroes.
    pub fn prep_write_zeroes(
        &mut self,
        offset_blocks: u64,
        num_blocks: u64,
        cb: IoCallback,
    ) -> &mut Self {
        self.prep(IoType::WriteZeroes, offset_blocks, num_blocks, cb)
    }

    /// Prepares a flush of the range.
    pub fn prep_flush(&mut self, offset_blocks: u64, num_blocks: u64, cb: IoCallback) -> &mut Self {
        self.prep(IoType::Flush, offset_blocks, num_blocks, cb)
    }

    /// Prepares a reset of the whole bdev.
    pub fn prep_reset(&mut self, cb: IoCallback) -> &mut Self {
        self.prep(IoType::Reset, 0, 0, cb)
    }

    /// Prepares an abort of queued I/O on this channel whose `user[0] == tag`.
    pub fn prep_abort(&mut self, tag: u64, cb: IoCallback) -> &mut Self {
        self.abort_tag = tag;
        self.prep(IoType::Abort, 0, 0, cb)
    }

    /// Sets the data segments.
    ///
    /// # Safety
    /// Every segment must be valid for reads and writes of its length until the I/O completes,
    /// and must not be accessed by anyone else meanwhile.
    pub unsafe fn set_iovs(&mut self, iovs: &[IoVec]) -> &mut Self {
        self.iovs.clear();
        // One segment (the common request): a push into the room every pooled I/O keeps,
        // not a copy call.
        if let [one] = iovs {
            self.iovs.push(*one);
        } else {
            self.iovs.extend_from_slice(iovs);
        }
        self
    }

    /// Sets one data segment: [`BdevIo::set_iovs`] of `&[iov]` (the common request), small
    /// enough to inline into the submitter.
    ///
    /// # Safety
    /// As [`BdevIo::set_iovs`].
    #[inline]
    pub unsafe fn set_iov(&mut self, iov: IoVec) -> &mut Self {
        self.iovs.clear();
        self.iovs.push(iov);
        self
    }

    /// Sets the compare segments of a compare-and-write.
    ///
    /// # Safety
    /// As [`BdevIo::set_iovs`].
    pub unsafe fn set_cmp_iovs(&mut self, iovs: &[IoVec]) -> &mut Self {
        self.cmp_iovs.clear();
        self.cmp_iovs.extend_from_slice(iovs);
        self
    }

    /// Gives the I/O an owned buffer and points its single segment at the first `len` bytes
    /// (the buffer's length). The buffer comes back with the I/O ([`BdevIo::take_buf`]).
    pub fn attach_buf(&mut self, buf: DmaBuf) -> &mut Self {
        self.iovs.clear();
        self.iovs.push(IoVec {
            base: buf.as_ptr(),
            len: buf.len(),
        });
        self.buf = Some(buf);
        self
    }

    /// The buffer attached to (or supplied for) this I/O.
    pub fn buf(&self) -> Option<&DmaBuf> {
        self.buf.as_ref()
    }

    /// Mutable access to the attached buffer.
    pub fn buf_mut(&mut self) -> Option<&mut DmaBuf> {
        self.buf.as_mut()
    }

    /// Takes the attached buffer back.
    pub fn take_buf(&mut self) -> Option<DmaBuf> {
        let b = self.buf.take();
        if b.is_some() {
            self.iovs.clear();
        }
        b
    }

    /// For a stacked module: makes this (fresh) I/O a copy of `parent`'s request (type, range,
    /// segments, abort tag) that will carry `parent` along, to be taken back with
    /// [`BdevIo::take_parent`] in this I/O's callback. The segments are the parent's: the
    /// submitter's guarantee covers them until the parent completes, which is after this I/O.
    pub fn forward(&mut self, parent: Box<BdevIo>, cb: IoCallback) -> &mut Self {
        self.io_type = parent.io_type;
        self.offset_blocks = parent.offset_blocks;
        self.num_blocks = parent.num_blocks;
        self.iovs.clear();
        self.iovs.extend_from_slice(&parent.iovs);
        self.cmp_iovs.clear();
        self.cmp_iovs.extend_from_slice(&parent.cmp_iovs);
        self.abort_tag = parent.abort_tag;
        self.cb = Some(cb);
        self.status = IoStatus::Pending;
        // The child is submitted within nanoseconds of its parent: it takes the parent's
        // submission time instead of reading the clock again (14 ns per read on a VM).
        self.submit_tsc = parent.submit_tsc;
        self.flags |= FLAG_TSC_SET;
        self.parent = Parent::Owned(parent);
        self
    }

    /// For a module that builds child I/O from pieces of a parent's data (striping,
    /// concatenation, mirroring): appends to this I/O's segments the bytes
    /// `[from, from + len)` of the segments `src` (normally `parent.iovs()`). Several calls
    /// gather several pieces into one child. Bytes past the end of `src` are not appended (the
    /// child is then shorter than its block count and the bdev layer rejects it at submit).
    /// No allocation once the pooled I/O's segment list has grown to the size it needs.
    ///
    /// # Safety
    /// The memory `src` describes must stay valid, and untouched by anyone else, until this
    /// I/O completes. That holds when `src` is the segment list of a parent I/O that is
    /// completed only after this child — the guarantee [`BdevIo::forward`] relies on — and not
    /// for segments of an unrelated I/O.
    pub unsafe fn append_iovs_from(&mut self, src: &[IoVec], from: u64, len: u64) -> &mut Self {
        let mut pos = 0u64;
        let mut want = len;
        for v in src {
            if want == 0 {
                break;
            }
            let vlen = v.len as u64;
            if pos + vlen <= from {
                pos += vlen;
                continue;
            }
            let skip = from.saturating_sub(pos);
            let take = (vlen - skip).min(want);
            // SAFETY: skip < vlen, so the pointer stays inside the segment, which the caller
            // vouches for (see the function's contract).
            let base = unsafe { v.base.add(skip as usize) };
            self.iovs.push(IoVec {
                base,
                len: take as usize,
            });
            want -= take;
            pos += vlen;
        }
        self
    }

    /// For a stacked module completing its parent from the child's callback: the parent takes
    /// the child's completion time rather than reading the clock again. Its latency then ends
    /// when its base I/O's completion was processed (the forwarding layer's own completion
    /// step, a few nanoseconds, is not counted).
    pub fn inherit_completion_time(&mut self, child: &BdevIo) {
        self.complete_tsc = child.complete_tsc;
    }

    /// For a stacked module whose pieces of one I/O must all be tried once begun (a mirror's
    /// write, a parity stripe's): an ABORT of this I/O no longer reaches it where a module
    /// below holds it — neither this object forwarded nor a piece linked to it
    /// ([`crate::AbortTarget::names`] stops here). An abort reaching only some pieces would
    /// leave the copies (or the data and its parity) different while the I/O completes
    /// aborted; SPDK's raid takes no abort at all. The I/O still ends on every other path
    /// (completion, failure, a reset). Set on the module's own view, in its `submit`, before
    /// it forwards the I/O or makes pieces of it; it lasts until the I/O leaves that layer.
    /// Thread contract: the I/O's thread, while the module owns it.
    #[inline]
    pub fn shield_from_abort(&mut self) {
        self.flags |= FLAG_NO_ABORT;
    }

    /// True when this I/O, in any layer's view it carries, was shielded from abort
    /// ([`BdevIo::shield_from_abort`]).
    pub(crate) fn abort_shielded(&self) -> bool {
        let d = (self.depth as usize).min(MAX_FORWARD_DEPTH);
        self.frames[..d]
            .iter()
            .fold(self.flags, |acc, f| acc | f.flags)
            & FLAG_NO_ABORT
            != 0
    }

    /// For a stacked module that sends one I/O of its own as several children it submits
    /// itself (not with [`crate::BdevChannel::forward_child`], which does this): names
    /// `parent` as the I/O this fresh child (not yet submitted) is a piece of, so that an
    /// ABORT of the parent reaches the child where a module below holds it
    /// ([`crate::AbortTarget::names`] follows the link). The link is only read, by an abort
    /// on this thread; the child's completion still goes to its own callback. Cleared when
    /// the child goes back to the pool or is reused. Any thread that owns the I/O.
    ///
    /// # Safety
    /// `parent` must stay alive, at the same address, until this child has completed (its
    /// callback has run): the module keeps it in flight until its last child is back.
    #[inline]
    pub unsafe fn set_fanout_parent(&mut self, parent: &BdevIo) {
        self.parent = Parent::Fanout(NonNull::from(parent));
    }

    /// Takes back the parent given to [`BdevIo::forward`]. The parent takes this I/O's
    /// device status ([`BdevIo::device_status`]), so a failure it is completed with can be
    /// named.
    pub fn take_parent(&mut self) -> Option<Box<BdevIo>> {
        match std::mem::replace(&mut self.parent, Parent::None) {
            Parent::Owned(mut p) => {
                p.dev_status = self.dev_status;
                Some(p)
            }
            other => {
                self.parent = other;
                None
            }
        }
    }

    /// I/O type.
    pub fn io_type(&self) -> IoType {
        self.io_type
    }

    /// First block.
    pub fn offset_blocks(&self) -> u64 {
        self.offset_blocks
    }

    /// Number of blocks.
    pub fn num_blocks(&self) -> u64 {
        self.num_blocks
    }

    /// Block size of the bdev it was submitted to (set at submit).
    pub fn block_size(&self) -> u32 {
        self.block_size
    }

    /// Data segments.
    pub fn iovs(&self) -> &[IoVec] {
        &self.iovs
    }

    /// Compare segments (compare-and-write).
    pub fn cmp_iovs(&self) -> &[IoVec] {
        &self.cmp_iovs
    }

    /// Final status (valid in the completion callback).
    pub fn status(&self) -> IoStatus {
        self.status
    }

    /// What the device reported, for an I/O that failed on a device whose backend attaches
    /// it (NVMe: status code type, code and name). Kept through forwarding layers, and a split
    /// parent takes its failing child's. Valid in the completion callback.
    pub fn device_status(&self) -> Option<DeviceStatus> {
        self.dev_status
    }

    /// Module side, before [`BdevIo::complete`] with a failure: attaches the device's status.
    /// No allocation.
    #[inline]
    pub fn set_device_status(&mut self, s: DeviceStatus) {
        self.dev_status = Some(s);
    }

    /// Ticks at submission (for latency).
    pub fn submit_tsc(&self) -> u64 {
        self.submit_tsc
    }

    /// Ticks from submission to completion, as the bdev layer measured them for its
    /// statistics (valid in the completion callback; 0 for I/O rejected at submit).
    pub fn latency_ticks(&self) -> u64 {
        self.complete_tsc.saturating_sub(self.submit_tsc)
    }

    /// Total bytes of the data segments.
    pub fn iov_len(&self) -> usize {
        self.iovs.iter().map(|v| v.len).sum()
    }

    /// Completes the I/O with `status`. Module side: call on the thread the I/O was submitted
    /// on (asserted), from a poller or callback — or even inside `submit`: the bdev layer never
    /// runs the submitter's callback inside this call; the I/O goes onto the thread's completion
    /// queue and the callback runs on a later poll.
    #[inline]
    pub fn complete(mut self: Box<Self>, status: IoStatus) {
        self.status = status;
        crate::thread::enqueue_completion(self);
    }
}
