//! The forwarding fast path: a stacked bdev's backend hands the I/O it was given to a channel
//! of its base as the same object (see ARCHITECTURE.md, "Life of an I/O"). The frames are
//! pushed here and popped by `channel::finish_io`.

use crate::channel::BdevChannel;
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
    #[inline]
    pub fn forward_with(
        &self,
        mut io: Box<BdevIo>,
        offset_blocks: u64,
        done: Option<ForwardDone>,
        ctx: [u64; 3],
    ) {
        let Some(st) = self.st else {
            return io.complete(IoStatus::Failed);
        };
        // SAFETY: the state belongs to the channel context this handle keeps alive (see
        // `st`); it is only touched on its own thread, which the assertion below checks: the
        // I/O was submitted on the calling thread (checked by `submit`, or set by this layer
        // for its own children).
        let st = unsafe { st.as_ref() };
        assert!(
            io.thread_id == st.thread_id,
            "bdev '{}': forward from thread {} to a channel of thread {}",
            st.bdev.name,
            io.thread_id,
            st.thread_id
        );
        let b = &*st.bdev;
        if let Some(bad) = self.validate_forward(&io, offset_blocks, b) {
            tracing::debug!("bdev '{}': rejected forwarded {:?}: {bad}", b.name, io);
            return io.complete(IoStatus::Invalid);
        }
        if !io.push_frame(offset_blocks, done, ctx) {
            return forward_with_child(self, io, offset_blocks, done, ctx);
        }
        io.chan = Some(st.ptr());
        io.flags = FLAG_COUNTED;
        st.inflight.set(st.inflight.get() + 1);
        st.dispatch_fast(io);
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

/// `forward` past the frame stack's depth: a child from the pool carries the I/O (as
/// [`BdevIo::forward`]); the hook and its words wait in the parent's `driver_ctx`, which no
/// base sees.
#[cold]
fn forward_with_child(
    base: &BdevChannel,
    mut io: Box<BdevIo>,
    offset_blocks: u64,
    done: Option<ForwardDone>,
    ctx: [u64; 3],
) {
    let Some(mut child) = crate::thread::alloc_io() else {
        return io.complete(IoStatus::NoMem);
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
