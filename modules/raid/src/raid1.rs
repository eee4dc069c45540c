//! raid1: mirroring.
//!
//! - **Writes** (and unmap, write-zeroes, flush) go to every usable member, including a member
//!   being rebuilt. The parent succeeds if at least one in-sync member succeeded; a member
//!   that fails is reported ([`crate::io::Shared::fail_slot`]) and dropped by the control path
//!   (degraded), and no error reaches the submitter. So is a member whose piece a reset
//!   below aborted while an in-sync member took the write (`raid1_write`).
//! - **Reads** go to the in-sync member with the fewest blocks of reads outstanding on this
//!   channel. A read that fails is retried on the next member not yet tried (the failing
//!   member is reported as for writes); only when every member failed does the read fail.
//! - **Rebuild window lock.** While a rebuild copies a window, writes that overlap it wait on
//!   this channel (parked) until the window is released, so a copy can never overwrite newer
//!   data on the target. Taking the lock also waits for the writes already in flight on every
//!   channel (two generations of writes per channel: the lock flips the generation and waits
//!   until the older one has drained), which covers writes submitted before the target's
//!   channel existed. Writes elsewhere proceed. This is the raid's own range lock rather than
//!   the bdev layer's quiesce, which would stop all I/O of the raid for every window.
//! - **Write-intent bitmap.** While a member that was removed in sync (not failed) is away,
//!   every write first marks the regions it covers in a shared bitmap (atomic OR, no lock, no
//!   allocation). If that same member is added back, the rebuild copies only the marked
//!   regions (see `rebuild`). With a superblock the bitmap is persisted: a write that marks
//!   a region asks the control path for a bitmap write (one message per round, not per I/O)
//!   and every write waits (parked per channel) until its regions are on disk.

use std::sync::atomic::Ordering;

use ferrite_bdev::{BdevChannel, BdevIo, IoStatus, IoType};
use ferrite_reactor::ForEachCont;

use crate::io::ChanCtx;
use crate::raid1_write::write;

#[inline(always)]
pub(crate) fn submit(ctx: &ChanCtx, parent: Box<BdevIo>) {
    if parent.io_type() == IoType::Read {
        read(ctx, parent)
    } else {
        write(ctx, parent)
    }
}

/// The readable member with the fewest blocks outstanding here, avoiding `avoid`, with its
/// channel; ties go round robin (the search starts one member further each call).
#[inline(always)]
fn pick<'a>(
    ctx: &ChanCtx,
    bases: &'a [Option<BdevChannel>],
    avoid: u64,
) -> Option<(usize, &'a BdevChannel)> {
    // One length for both slices (both have `n` entries): no bounds check in the loop.
    let n = ctx.outstanding.len().min(bases.len());
    let outs = &ctx.outstanding[..n];
    let bases = &bases[..n];
    let start = ctx.rr.get();
    if let ([a, b], [oa, ob]) = (bases, outs) {
        // Two members (the usual mirror): the loop below, unrolled — the same choice.
        let first = usize::from(start == 1);
        ctx.rr.set(first ^ 1);
        let a = if avoid & 1 == 0 { a.as_ref() } else { None };
        let b = if avoid & 2 == 0 { b.as_ref() } else { None };
        return match (a, b) {
            (Some(a), Some(b)) => {
                let (oa, ob) = (oa.get(), ob.get());
                if oa < ob || (oa == ob && first == 0) {
                    Some((0, a))
                } else {
                    Some((1, b))
                }
            }
            (Some(a), None) => Some((0, a)),
            (None, Some(b)) => Some((1, b)),
            (None, None) => None,
        };
    }
    let mut slot = if start < n { start } else { 0 };
    ctx.rr.set(if slot + 1 >= n { 0 } else { slot + 1 });
    let mut best: Option<(usize, &BdevChannel)> = None;
    let mut best_o = u64::MAX;
    for _ in 0..n {
        if avoid & (1u64 << slot) == 0 {
            if let Some(ch) = &bases[slot] {
                let o = outs[slot].get();
                if best.is_none() || o < best_o {
                    best = Some((slot, ch));
                    best_o = o;
                }
            }
        }
        slot = if slot + 1 == n { 0 } else { slot + 1 };
    }
    best
}

fn unreadable(ctx: &ChanCtx) -> u64 {
    ctx.shared.gone.load(Ordering::Acquire) | ctx.shared.rebuilding.load(Ordering::Acquire)
}

#[inline(always)]
fn read(ctx: &ChanCtx, parent: Box<BdevIo>) {
    let sh = &*ctx.shared;
    let bases = ctx.bases.borrow();
    let Some((slot, ch)) = pick(ctx, &bases, unreadable(ctx)) else {
        drop(bases);
        return parent.complete(IoStatus::Failed);
    };
    let (o, l) = (parent.offset_blocks(), parent.num_blocks());
    let out = &ctx.outstanding[slot];
    out.set(out.get() + l);
    // The read itself goes to the member (no child I/O); `read_done` sees it come back.
    let words = [ctx as *const ChanCtx as u64, slot as u64, 1u64 << slot];
    ch.forward_with(parent, o + sh.offset_of(slot), Some(read_done), words);
}

/// Back from member `w[1]` (`w[0]`: this thread's [`ChanCtx`]; `w[2]`: members tried): the
/// member's read count goes down; a success completes the raid's read at once, a failure
/// goes to [`read_failed`]. Every read `read` or `read_failed` forwards comes back here
/// exactly once, whatever its end (success, failure, a refusal by the member, an abort, a
/// reset of the raid completing what a member held): the bdev layer runs a forward's hook on
/// every path, so the counts `pick` balances on never drift.
fn read_done(io: Box<BdevIo>, w: [u64; 3]) -> Option<Box<BdevIo>> {
    // SAFETY: `w[0]` is the channel state of the thread that forwarded this read; it is owned
    // by our channel, which the bdev layer frees only when idle, and this read still counts
    // as in flight there.
    let ctx = unsafe { &*(w[0] as *const ChanCtx) };
    if let Some(out) = ctx.outstanding.get(w[1] as usize) {
        out.set(out.get().saturating_sub(io.num_blocks()));
    }
    if io.status() == IoStatus::Success {
        return Some(io);
    }
    read_failed(ctx, io, w)
}

/// A read failed on member `w[1]` (words as [`read_done`]; a read the member refused comes
/// here too, with `Invalid`): try the next member not yet tried; else the raid completes with
/// the member's status. An aborted read is not retried: the abort that reached it below
/// answered success, so the read ends aborted. `NoMem` (out of I/O objects for a forward past
/// the frame stack) goes back to the raid's layer, which parks it and submits it again whole
/// (`read` counts it again; this hook uncounted it).
#[cold]
#[inline(never)]
fn read_failed(ctx: &ChanCtx, io: Box<BdevIo>, w: [u64; 3]) -> Option<Box<BdevIo>> {
    let status = io.status();
    if matches!(status, IoStatus::Aborted | IoStatus::NoMem) {
        return Some(io);
    }
    if status == IoStatus::Failed {
        ctx.shared.fail_slot(w[1] as usize);
    }
    let bases = ctx.bases.borrow();
    if let Some((next, ch)) = pick(ctx, &bases, unreadable(ctx) | w[2]) {
        let out = &ctx.outstanding[next];
        out.set(out.get() + io.num_blocks());
        let off = io.offset_blocks() + ctx.shared.offset_of(next);
        // The same read, from another member.
        let words = [w[0], next as u64, w[2] | 1u64 << next];
        ch.forward_with(io, off, Some(read_done), words);
        return None;
    }
    Some(io)
}

/// True if blocks `[o, o + l)` overlap the window a rebuild is copying (the write waits).
pub(crate) fn overlaps_lock(ctx: &ChanCtx, o: u64, l: u64) -> bool {
    match ctx.lock.get() {
        Some((a, b)) => l > 0 && o < b && a < o + l,
        None => false,
    }
}

/// Counts a write in the current window-lock generation; returns the word to keep in the
/// parent for [`write_counted_done`] (generation + 1).
pub(crate) fn count_write(ctx: &ChanCtx) -> u64 {
    let g = ctx.gen.get();
    ctx.writes[g].set(ctx.writes[g].get() + 1);
    g as u64 + 1
}

/// A write counted by [`count_write`] (word `w`; 0: not counted) is done: a lock waiting
/// for its generation to drain may proceed.
pub(crate) fn write_counted_done(ctx: &ChanCtx, w: u64) {
    if w == 0 {
        return;
    }
    let g = (w - 1) as usize;
    let left = ctx.writes[g].get().saturating_sub(1);
    ctx.writes[g].set(left);
    if left == 0 && g != ctx.gen.get() {
        let w = ctx.lock_waiter.borrow_mut().take();
        if let Some(w) = w {
            w.finish(0);
        }
    }
}

/// The write-intent bitmap was persisted: writes that waited for it go again, in order
/// (those still waiting for a later round wait again).
pub(crate) fn bitmap_persisted(ctx: &ChanCtx) {
    let n = ctx.wib_parked.borrow().len();
    for _ in 0..n {
        let next = ctx.wib_parked.borrow_mut().pop_front();
        match next {
            Some(io) => write(ctx, io),
            None => break,
        }
    }
}

/// Rebuild (raid1 and raid5f): locks `[a, b)` on this channel; `cont` finishes once the writes in flight here
/// when the lock was taken have completed.
pub(crate) fn lock_window(ctx: &ChanCtx, a: u64, b: u64, cont: ForEachCont) {
    ctx.lock.set(Some((a, b)));
    let old = ctx.gen.get();
    ctx.gen.set(old ^ 1);
    if ctx.writes[old].get() == 0 {
        cont.finish(0);
    } else {
        *ctx.lock_waiter.borrow_mut() = Some(cont);
    }
}

/// Rebuild: releases the window on this channel and resubmits the writes that waited, in
/// order.
pub(crate) fn unlock_window(ctx: &ChanCtx) {
    ctx.lock.set(None);
    // A lock abandoned while still waiting (rebuild stopped): let the walk go on.
    let w = ctx.lock_waiter.borrow_mut().take();
    if let Some(w) = w {
        w.finish(0);
    }
    loop {
        let next = ctx.parked.borrow_mut().pop_front();
        match next {
            Some(io) if ctx.shared.level == crate::types::RaidLevel::Raid5f => {
                crate::raid5f::write(ctx, io)
            }
            Some(io) => write(ctx, io),
            None => break,
        }
    }
}
