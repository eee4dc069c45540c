//! raid1 writes (and unmap, write-zeroes, flush): one piece per usable member (see the
//! level's rules in `raid1`).
//!
//! **The parent is one of the pieces.** The lowest usable member gets the parent itself,
//! forwarded as the same object with its own segments (`BdevChannel::forward_with`, hook
//! [`parent_done`]); every other usable member gets a child from the channel's stock (else the
//! pool) carrying pieces of the same segments (`BdevChannel::forward_child`, hook
//! [`child_done`]). One child fewer per write than a fan-out of children only.
//!
//! **The join lives in the first child** (the *head*), not in the parent, whose `driver_ctx`
//! belongs to the member's module while it is forwarded: the head's `user` words (ours: we are
//! its submitter) hold the pieces still out, those that succeeded, the failure statuses seen,
//! and — once the parent's hook has run while children were still out — the parent, kept as
//! a raw pointer. Every hook (parent's or a child's) counts its piece there; the last one completes
//! the parent on the raid's layer in the same step. The head stays alive until then (its own
//! hook leaves it to the last piece when others are still out). Every piece's hook runs
//! exactly once on every path — success, failure, a member refusing it (`Invalid`), an abort
//! or a reset: the bdev layer guarantees it for `forward_with` as for `forward_child` —, so
//! the parent is never completed while a child still points at its segments.
//!
//! **No abort reaches the pieces** ([`BdevIo::shield_from_abort`]): an abort that reached the
//! piece held on one member and not the copy already written on another would end the write
//! aborted with the mirrors different, each read then answered by either copy. An abort of a
//! raid1 write finds nothing below; the write ends as its pieces do.
//!
//! Frame words of every piece: `[head, slot | (generation + 1) << 32, channel state]` (`head`
//! 0 when the parent is the only piece: a degraded mirror).

use std::sync::atomic::Ordering;

use ferrite_bdev::{BdevIo, IoStatus};

use crate::io::{prep_as, rank, status_of, usable, ChanCtx, Kids, SPARE_CHILDREN};
use crate::raid1::{overlaps_lock, write_counted_done};

/// The head's `user[0]`: pieces still out (low 32 bits), pieces that succeeded and count
/// toward success (next 16), and from bit 48 one bit per failure status seen (bit 48 +
/// [`rank`]: an OR, no comparison per piece).
const OK_ONE: u64 = 1 << 32;
const SEEN_SHIFT: u32 = 48;
const COUNTS: u64 = (1 << SEEN_SHIFT) - 1;
// Successes (at most one per member) fit their 16 bits; every rank has its bit.
const _: () = assert!(crate::types::MAX_BASE_BDEVS < 1 << 16);
const _: () = assert!(SEEN_SHIFT as u64 + 5 < 64);

#[inline(never)]
pub(crate) fn write(ctx: &ChanCtx, mut parent: Box<BdevIo>) {
    let sh = &*ctx.shared;
    let (o, l) = (parent.offset_blocks(), parent.num_blocks());
    if overlaps_lock(ctx, o, l) {
        ctx.parked.borrow_mut().push_back(parent);
        return;
    }
    let t = parent.io_type();
    let bytes = l * u64::from(sh.block_size);
    let bases = ctx.bases.borrow();
    // `gone` first: the control path activates the bitmap before it marks a member gone, so
    // a write that skips a member which may come back always marks its regions.
    let gone = sh.gone.load(Ordering::Acquire);
    if sh.wib_active.load(Ordering::Acquire) {
        if sh.wib.mark(o, l) && sh.wib.persisted() {
            sh.wib_persist_request();
        }
        // Persisted bitmap: the write waits until its regions are on disk.
        if !sh.wib.durable(o, l) {
            drop(bases);
            ctx.wib_parked.borrow_mut().push_back(parent);
            return;
        }
    }
    // The parent's member (the lowest usable), then a child for every other usable member,
    // all taken first (all or none: out of I/O objects, the raid layer retries the parent).
    let Some(first) = (0..sh.n).find(|&s| usable(&bases, gone, s).is_some()) else {
        drop(bases);
        return parent.complete(IoStatus::Failed);
    };
    let mut kids = Kids::new();
    let mut pieces = 1u64;
    for slot in (first + 1..sh.n).rev() {
        if usable(&bases, gone, slot).is_none() {
            continue;
        }
        let spare = ctx.spare.borrow_mut().pop();
        let Some(c) = spare.or_else(ferrite_bdev::alloc_io) else {
            drop(kids);
            drop(bases);
            return parent.complete(IoStatus::NoMem);
        };
        kids.push(c, slot);
        pieces += 1;
    }
    // Every mirror takes the write, or the copies differ: an abort must not reach some
    // pieces and not the others (module docs).
    parent.shield_from_abort();
    let g = ctx.gen.get();
    ctx.writes[g].set(ctx.writes[g].get() + 1);
    let gen_word = (g as u64 + 1) << 32;
    let cptr = ctx as *const ChanCtx as u64;
    let p: &BdevIo = &parent;
    let mut head = 0u64;
    while let Some((mut c, slot)) = kids.pop() {
        let off = if l == 0 { 0 } else { o + sh.offset_of(slot) };
        prep_as(&mut c, t, off, l, write_cb_unused);
        if t.has_data() {
            // SAFETY: the parent's own segments; the parent completes only after this child
            // (its last piece's hook completes it).
            unsafe { c.append_iovs_from(p.iovs(), 0, bytes) };
        }
        if head == 0 {
            // The first child is the head: the join starts with every piece out.
            c.user = [pieces, 0];
            head = &*c as *const BdevIo as u64;
        }
        let w = [head, slot as u64 | gen_word, cptr];
        match bases.get(slot).and_then(Option::as_ref) {
            Some(ch) => ch.forward_child(c, p, off, child_done, w),
            // Checked above; the bases cannot change while we hold them.
            None => unreachable_member(c),
        }
    }
    let off = if l == 0 { 0 } else { o + sh.offset_of(first) };
    let w = [head, first as u64 | gen_word, cptr];
    match bases.get(first).and_then(Option::as_ref) {
        // Last: the children above were prepared from it. Nothing completes (and no hook
        // runs) inside a submit, so the head's join is complete before any piece is back.
        Some(ch) => ch.forward_with(parent, off, Some(parent_done), w),
        None => unreachable_member(parent),
    }
}

/// A member counted as usable had no channel (cannot happen: the bases are borrowed across
/// the write). Never reached.
#[cold]
fn unreachable_member(c: Box<BdevIo>) {
    ferrite_bdev::free_io(c);
    unreachable!("raid1: a usable member without a channel");
}

/// The callback of a mirror child: never runs (the child's completion goes to
/// [`child_done`], its hook).
fn write_cb_unused(c: Box<BdevIo>) {
    ferrite_bdev::free_io(c);
}

/// What a piece back from member `slot` with `status` adds to a join word: one success
/// (if the member is in sync: a member being rebuilt is not a valid copy yet), or the bit of
/// its status.
#[inline(always)]
fn piece(ctx: &ChanCtx, slot: usize, status: IoStatus) -> u64 {
    if status != IoStatus::Success {
        return 1 << (SEEN_SHIFT as u64 + rank(status));
    }
    if ctx.shared.rebuilding.load(Ordering::Acquire) & (1u64 << slot) == 0 {
        OK_ONE
    } else {
        0
    }
}

/// Counts a piece back from member `slot` with `status` in the head's join word; true when
/// it was the last piece out.
#[inline(always)]
fn join(ctx: &ChanCtx, head: &mut BdevIo, slot: usize, status: IoStatus) -> bool {
    let add = piece(ctx, slot, status);
    let j = ((head.user[0] + (add & COUNTS)) | (add & !COUNTS)) - 1;
    head.user[0] = j;
    j & 0xffff_ffff == 0
}

/// A piece from member `slot` is back: the member is dropped if it failed or refused the
/// piece ([`crate::io::Shared::write_piece_back`]). A piece that missed its member without a
/// verdict on it (aborted by a reset below) is noted against the write (`head`, 0 for a
/// write with one piece), for [`finish`] to settle; one that found no I/O object (`NoMem`)
/// has the whole write retried.
#[inline(always)]
fn piece_back(ctx: &ChanCtx, slot: usize, io: &BdevIo, head: u64) {
    let status = io.status();
    if ctx.shared.write_piece_back(slot, status)
        && status == IoStatus::Aborted
        && head != 0
        && io.io_type().is_write()
    {
        note_kept_miss(ctx, head, slot);
    }
}

#[cold]
fn note_kept_miss(ctx: &ChanCtx, head: u64, slot: usize) {
    let mut kept = ctx.kept_misses.borrow_mut();
    match kept.iter_mut().find(|(h, _)| *h == head) {
        Some((_, mask)) => *mask |= 1 << slot,
        None => kept.push((head, 1 << slot)),
    }
}

/// The parent's final status from the join word `j`: success if an in-sync member took it;
/// else the worst status. `NoMem` (a piece found no I/O object) first: the raid's layer
/// retries the whole write, so every member gets it again. An aborted piece (a reset below
/// ended it where a module held it; an abort no longer reaches the pieces) makes the write
/// aborted, unless [`finish`] settled it.
#[inline(always)]
fn final_status(j: u64) -> IoStatus {
    let seen = j >> SEEN_SHIFT;
    if seen & (1 << rank(IoStatus::NoMem)) != 0 {
        return IoStatus::NoMem;
    }
    if seen & (1 << rank(IoStatus::Aborted)) != 0 {
        return IoStatus::Aborted;
    }
    if (j >> 32) & 0xffff > 0 {
        return IoStatus::Success;
    }
    // The worst status seen: the highest bit (none: every piece was a member being rebuilt).
    match seen.checked_ilog2().map(u64::from) {
        Some(worst) => match status_of(worst) {
            IoStatus::Success => IoStatus::Failed,
            s => s,
        },
        None => IoStatus::Failed,
    }
}

/// The write is done (every piece back): its window-lock generation (`w1 >> 32`) drains,
/// and the parent goes back to the raid's layer with its final status. `head` is the
/// write's head piece (0: one piece).
#[inline(always)]
fn finish(ctx: &ChanCtx, parent: Box<BdevIo>, w1: u64, head: u64, j: u64) -> Option<Box<BdevIo>> {
    write_counted_done(ctx, w1 >> 32);
    let mut st = final_status(j);
    if (j >> SEEN_SHIFT) & (1 << rank(IoStatus::Aborted)) != 0 && head != 0 {
        st = settle_kept_misses(ctx, head, j, st);
    }
    Some(parent.with_status(st))
}

/// A write with pieces aborted below, whose status would be `st`. If an in-sync member took
/// it and it is not retried (`NoMem`), the members that missed a data-changing piece (write,
/// unmap, write-zeroes) now hold other data on these blocks and reads would return either
/// version: they are dropped (as SPDK drops a member on any write error) and the write
/// succeeds on the members that have it. If no in-sync member took it, the write is aborted
/// and only a member being rebuilt that did not miss it is dropped (it may hold data its
/// sources lack); an aborted flush, which leaves the copies alike, drops nobody.
#[cold]
fn settle_kept_misses(ctx: &ChanCtx, head: u64, j: u64, st: IoStatus) -> IoStatus {
    let missed = {
        let mut kept = ctx.kept_misses.borrow_mut();
        match kept.iter().position(|(h, _)| *h == head) {
            Some(i) => kept.swap_remove(i).1,
            None => 0,
        }
    };
    if st != IoStatus::Aborted || missed == 0 {
        return st;
    }
    if (j >> 32) & 0xffff == 0 {
        // No in-sync member took it, but a member being rebuilt may have: it would keep
        // the new data where the copies it is rebuilt from have the old. It is dropped (its
        // rebuild starts over when it comes back); one that missed the write too stays.
        let rebuilding = ctx.shared.rebuilding.load(Ordering::Acquire) & !missed;
        for slot in (0..ctx.shared.n).filter(|s| rebuilding & (1 << s) != 0) {
            tracing::warn!(
                "raid '{}': member in slot {slot}, being rebuilt, may hold a write its source members missed (aborted below); dropping it",
                ctx.shared.name
            );
            ctx.shared.fail_slot(slot);
        }
        return st;
    }
    for slot in (0..ctx.shared.n).filter(|s| missed & (1 << s) != 0) {
        tracing::warn!(
            "raid '{}': member in slot {slot} missed a write its mirror took (aborted below); dropping it",
            ctx.shared.name
        );
        ctx.shared.fail_slot(slot);
    }
    IoStatus::Success
}

/// The parent is back from member `w[1]` (words: module docs), with the raid's view restored.
fn parent_done(parent: Box<BdevIo>, w: [u64; 3]) -> Option<Box<BdevIo>> {
    // SAFETY: `w[2]` is the channel state of the thread that submitted the write; it outlives
    // the parent, which is still in flight on the raid's channel (module docs of `io`).
    let ctx = unsafe { &*(w[2] as *const ChanCtx) };
    let slot = (w[1] & 0xffff_ffff) as usize;
    let status = parent.status();
    piece_back(ctx, slot, &parent, w[0]);
    if w[0] == 0 {
        // The only piece (one usable member).
        return finish(ctx, parent, w[1], 0, piece(ctx, slot, status));
    }
    let hptr = w[0] as *mut BdevIo;
    // SAFETY: the head child, alive until the last piece is back (module docs); pieces come
    // back one at a time on this thread, so this is the only reference while we use it.
    let head = unsafe { &mut *hptr };
    if !join(ctx, head, slot, status) {
        // Children still out: the last one completes the parent.
        head.user[1] = Box::into_raw(parent) as u64;
        return None;
    }
    let j = head.user[0];
    // SAFETY: every piece is back and the head's own hook left it to us (it was still
    // counted then): rebuild the box its hook leaked.
    let head = unsafe { Box::from_raw(hptr) };
    keep_child(ctx, head);
    finish(ctx, parent, w[1], w[0], j)
}

/// A child is back from member `w[1]` (words: module docs). The last piece back hands the
/// parent to the raid's layer, to complete in this same step.
fn child_done(child: Box<BdevIo>, w: [u64; 3]) -> Option<Box<BdevIo>> {
    // SAFETY: as in `parent_done`.
    let ctx = unsafe { &*(w[2] as *const ChanCtx) };
    let slot = (w[1] & 0xffff_ffff) as usize;
    let status = child.status();
    piece_back(ctx, slot, &child, w[0]);
    let hptr = w[0] as *mut BdevIo;
    let is_head = std::ptr::eq(&*child, hptr);
    let child = if is_head {
        // The head stays alive (leaked) until the last piece; `hptr` is it.
        let _ = Box::into_raw(child);
        None
    } else {
        Some(child)
    };
    // SAFETY: the head child, alive until the last piece is back (just leaked above if this
    // is it); only reference while we use it (pieces come back one at a time here).
    let head = unsafe { &mut *hptr };
    let last = join(ctx, head, slot, status);
    if !last {
        if let Some(c) = child {
            keep_child(ctx, c);
        }
        return None;
    }
    let (j, pptr) = (head.user[0], head.user[1] as *mut BdevIo);
    // SAFETY: every piece is back: nothing refers to the head any more; rebuild the box
    // leaked above (now or by its own earlier hook).
    let head = unsafe { Box::from_raw(hptr) };
    // SAFETY: the last piece is a child, so the parent's hook ran before and kept the
    // parent as this raw pointer (it cannot be null: that hook counted its piece).
    let mut parent = unsafe { Box::from_raw(pptr) };
    parent.inherit_completion_time(child.as_deref().unwrap_or(&head));
    if let Some(c) = child {
        keep_child(ctx, c);
    }
    keep_child(ctx, head);
    finish(ctx, parent, w[1], w[0], j)
}

/// A mirror child is back: kept for the next write on this channel, or given back to the
/// pool when enough are kept — at most [`SPARE_CHILDREN`], and no more than two writes' worth
/// per write in flight here, so an idle channel keeps only a few (the stock counts against
/// the thread's pool budget).
#[inline(always)]
fn keep_child(ctx: &ChanCtx, mut c: Box<BdevIo>) {
    let busy = (ctx.writes[0].get() + ctx.writes[1].get()) as usize;
    let cap = (busy + 1)
        .saturating_mul(2 * ctx.shared.n)
        .min(SPARE_CHILDREN);
    let mut spare = ctx.spare.borrow_mut();
    if spare.len() < cap {
        c.clear_for_reuse();
        spare.push(c);
    } else {
        drop(spare);
        ferrite_bdev::free_io(c);
    }
}
