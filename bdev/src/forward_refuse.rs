//! The end of a forward with a hook that did not reach the base (refused, no channel state,
//! no I/O object for a child past the frame stack): the hook still runs, once, in the
//! completion poller (see `BdevChannel::forward_with`).

use std::ptr::NonNull;

use crate::channel::ChannelState;
use crate::io::{BdevIo, ForwardDone};
use crate::types::IoStatus;

/// A forward that did not reach the base ends with `status`: without a hook, the I/O
/// completes on the forwarding layer; with one, it reaches the hook first, as if the base had
/// completed it — through the completion queue (never inside the submit), uncounted on the
/// base: a frame is pushed (the forwarding layer's view, the hook and its words) and the I/O
/// queued without a channel, so the completion poller pops the frame and runs the hook.
#[cold]
#[inline(never)]
pub(crate) fn refuse(
    mut io: Box<BdevIo>,
    offset_blocks: u64,
    done: Option<ForwardDone>,
    ctx: [u64; 3],
    status: IoStatus,
) {
    let Some(f) = done else {
        return io.complete(status);
    };
    if io.push_frame(offset_blocks, Some(f), ctx) {
        // `push_frame` cleared the flags: not counted anywhere until the frame is popped.
        io.chan = None;
        return io.complete(status);
    }
    defer_hook(io, f, ctx, status)
}

/// An I/O whose hook must run for a forward that took no frame (the frame stack is full):
/// `refuse` and `forward_with_child`'s out-of-I/O case. The hook, its words and the
/// forwarding layer's channel and flags wait in `driver_ctx` (the base's while forwarded; no
/// base has it) and the I/O is queued uncounted with `FLAG_HOOK_DEFERRED`, which the thread's
/// completion poller hands to [`run_deferred_hook`].
#[cold]
#[inline(never)]
pub(crate) fn defer_hook(mut io: Box<BdevIo>, done: ForwardDone, ctx: [u64; 3], status: IoStatus) {
    io.driver_ctx[..3].copy_from_slice(&ctx);
    io.driver_ctx[3] = done as usize as u64;
    io.driver_ctx[4] = u64::from(io.flags);
    io.driver_ctx[5] = io.chan.map_or(0, |c| c.as_ptr() as usize as u64);
    io.flags = FLAG_HOOK_DEFERRED;
    io.chan = None;
    io.complete(status);
}

/// Marks an I/O queued by [`defer_hook`] (only ever on an uncounted I/O in the thread's queue).
pub(crate) const FLAG_HOOK_DEFERRED: u32 = 256;

/// The completion poller's end of [`defer_hook`]: the forwarding layer's view is restored,
/// the hook runs, and what it hands back completes on that layer.
#[cold]
#[inline(never)]
pub(crate) fn run_deferred_hook(mut io: Box<BdevIo>) {
    let ctx = [io.driver_ctx[0], io.driver_ctx[1], io.driver_ctx[2]];
    // SAFETY: `defer_hook` stored word 3 from a `ForwardDone` function pointer, and the I/O
    // has been in no one else's hands since (queued uncounted, `FLAG_HOOK_DEFERRED` set).
    let f: ForwardDone =
        unsafe { std::mem::transmute::<usize, ForwardDone>(io.driver_ctx[3] as usize) };
    // The flags were a u32 (`defer_hook`).
    io.flags = io.driver_ctx[4] as u32;
    io.chan = NonNull::new(io.driver_ctx[5] as usize as *mut ChannelState);
    if let Some(io) = f(io, ctx) {
        crate::channel::finish_io(io);
    }
}
