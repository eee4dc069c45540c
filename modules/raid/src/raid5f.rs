//! raid5f: striping with one rotating parity strip per stripe, full-stripe writes only (as
//! SPDK's raid5f, which never reads to update parity).
//!
//! Geometry with `n` members and strips of `S` blocks: a stripe holds `n - 1` data strips
//! (`(n - 1) * S` raid blocks) and one parity strip. Stripe `s` lives at block `s * S` of
//! every member's data area; its parity is on member `n - 1 - s % n`, and data strip `k` on
//! member `k` if `k` is below the parity member, else `k + 1`.
//!
//! - **Writes** must cover exactly one whole stripe (the bdev layer cuts larger I/O on stripe
//!   boundaries: the raid's optimal I/O boundary is the stripe); anything else completes
//!   `Invalid`. Parity is the XOR of the data strips, computed into a buffer from the DMA pool
//!   (no heap allocation; none free → NoMem, retried by the bdev layer). Each member gets one
//!   child; a write succeeds as long as at most one member of the stripe missed it (skipped
//!   because absent, or failed or refused it — that member is then dropped). A strip that
//!   ended otherwise (aborted by a reset below) left its member with the old strip: when it
//!   is the only strip missing and no rebuild runs, that member is dropped too and the write
//!   succeeds (its strip is then rebuilt from the new stripe); otherwise the write fails. No
//!   abort reaches the strips (`BdevIo::shield_from_abort`).
//! - **Reads** (within one stripe) go to the members holding the data strips. A strip whose
//!   member is missing is **reconstructed**: the same range is read from every other member
//!   (parity included) into pool buffers and XORed into the caller's buffer.
//! - A member failing a read is reported and dropped; that read fails (later reads of the
//!   stripe reconstruct).
//! - **During a rebuild** (see `rebuild`) the member being rebuilt takes every write (a
//!   full-stripe write is correct on it above and below the rebuild point alike) and serves
//!   no read (its strips are reconstructed). Writes to the stripes of the window being
//!   copied wait on the window lock shared with raid1 (`raid1::lock_window`), so a copy never
//!   overwrites newer data on the new member.

use std::sync::atomic::Ordering;

use ferrite_bdev::{BdevIo, DmaBuf, IoStatus, IoType, IoVec};

use crate::io::{
    abandon, finish_child, launch, parent_of, status_of, usable, ChanCtx, CTX_GEN, CTX_OK,
    CTX_STRIPE, CTX_TRIED, CTX_WORST,
};

/// Parent `driver_ctx` word of a write: window-lock generation + 1 (see
/// `raid1::count_write`); reads use the same word for [`CTX_STRIPE`].
const CTX_WGEN: usize = CTX_STRIPE;
/// Parent `driver_ctx` word (raid5f write): the members (one bit per slot) whose strip ended
/// neither written nor with the member dropped (aborted by a reset below, or any other
/// status that says nothing about the member). Such a member keeps its old strip while the
/// others hold the new stripe: see [`write_done`].
const CTX_KEPT: usize = 7;
const _: () = assert!(CTX_KEPT < 8 && CTX_KEPT != CTX_WGEN);

/// `user[1]` flag of a child reading for a reconstruction.
const RECON: u64 = 1 << 32;
/// The same flag in a staged slot word (above [`crate::io::SLOT_MASK`]).
const RECON_SLOT: usize = 1 << 32;

/// Member holding the parity of stripe `s`.
#[inline]
pub(crate) fn parity_member(s: u64, n: usize) -> usize {
    n - 1 - (s % n as u64) as usize
}

/// Member holding data strip `k` of a stripe whose parity is on member `p`.
#[inline]
pub(crate) fn chunk_member(k: usize, p: usize) -> usize {
    if k < p {
        k
    } else {
        k + 1
    }
}

/// Visits bytes `[from, from + len)` of `iovs` as mutable slices.
///
/// # Safety
/// The segments must be valid for reads and writes and not used by anyone else meanwhile
/// (true for the segments of a parent I/O we own while no child writes into that range).
unsafe fn for_each_piece(
    iovs: &[IoVec],
    from: usize,
    len: usize,
    mut f: impl FnMut(&mut [u8], usize),
) {
    let mut pos = 0usize;
    let mut done = 0usize;
    for v in iovs {
        if done == len {
            break;
        }
        if pos + v.len <= from {
            pos += v.len;
            continue;
        }
        let skip = from.saturating_sub(pos);
        let take = (v.len - skip).min(len - done);
        // SAFETY: skip + take <= v.len: inside the segment the caller vouches for.
        let s = unsafe { std::slice::from_raw_parts_mut(v.base.add(skip), take) };
        f(s, done);
        done += take;
        pos += v.len;
    }
}

fn xor(dst: &mut [u8], src: &[u8]) {
    for (d, s) in dst.iter_mut().zip(src) {
        *d ^= *s;
    }
}

pub(crate) fn submit(ctx: &ChanCtx, parent: Box<BdevIo>) {
    match parent.io_type() {
        IoType::Read => read(ctx, parent),
        IoType::Write => write(ctx, parent),
        _ => parent.complete(IoStatus::Invalid),
    }
}

pub(crate) fn write(ctx: &ChanCtx, mut parent: Box<BdevIo>) {
    let sh = &*ctx.shared;
    let n = sh.n;
    let strip = 1u64 << sh.strip_shift;
    let stripe = strip * (n as u64 - 1);
    let (o, l) = (parent.offset_blocks(), parent.num_blocks());
    if o % stripe != 0 || l != stripe {
        return parent.complete(IoStatus::Invalid);
    }
    if crate::raid1::overlaps_lock(ctx, o, l) {
        ctx.parked.borrow_mut().push_back(parent);
        return;
    }
    let bs = u64::from(sh.block_size);
    let strip_bytes = (strip * bs) as usize;
    let s = o / stripe;
    let p = parity_member(s, n);
    let mut pbuf = match DmaBuf::get(strip_bytes) {
        Ok(Some(b)) => b,
        Ok(None) => return parent.complete(IoStatus::NoMem),
        Err(_) => return parent.complete(IoStatus::Failed),
    };
    let par = pbuf.as_mut_slice();
    par.fill(0);
    for k in 0..n - 1 {
        // SAFETY: the parent's segments, read only, before any child is submitted.
        unsafe {
            for_each_piece(parent.iovs(), k * strip_bytes, strip_bytes, |seg, at| {
                xor(&mut par[at..at + seg.len()], seg)
            })
        };
    }
    let bases = ctx.bases.borrow();
    let mut staged = ctx.staging.borrow_mut();
    let gone = sh.gone.load(Ordering::Acquire);
    let mut skipped = 0u64;
    let mut pbuf = Some(pbuf);
    for m in 0..n {
        let Some(ch) = usable(&bases, gone, m) else {
            skipped += 1;
            continue;
        };
        let Some(mut c) = ch.alloc_io() else {
            return abandon(&mut staged, parent, IoStatus::NoMem);
        };
        c.prep_write(s * strip + sh.offset_of(m), strip, write_done);
        if m == p {
            if let Some(b) = pbuf.take() {
                c.attach_buf(b);
            }
        } else {
            let k = if m < p { m } else { m - 1 };
            // SAFETY: the parent's own segments; it completes only after this child.
            unsafe {
                c.append_iovs_from(parent.iovs(), (k * strip_bytes) as u64, strip_bytes as u64)
            };
        }
        staged.push((m, c));
    }
    if skipped > 1 || staged.is_empty() {
        return abandon(&mut staged, parent, IoStatus::Failed);
    }
    parent.driver_ctx[CTX_TRIED] = skipped;
    parent.driver_ctx[CTX_GEN] = staged.len() as u64;
    parent.driver_ctx[CTX_WGEN] = crate::raid1::count_write(ctx);
    parent.driver_ctx[CTX_KEPT] = 0;
    // Data and parity are written together or the stripe is torn: an abort must not reach
    // some of the strips and not the others.
    parent.shield_from_abort();
    launch(ctx, &bases, parent, &mut staged);
}

/// A strip of a stripe write is back. A member that failed it or refused it is dropped, as
/// in raid1 ([`crate::io::Shared::write_piece_back`]): left in, it would serve this stripe's
/// old strip as current. Any other miss leaves the member in without the strip, noted in
/// `CTX_KEPT`. When the write is done and every other strip is written (and no rebuild
/// runs), the one member that missed its strip is dropped too (its strip is then rebuilt from
/// the others, which hold the new stripe) and the write succeeds; otherwise the write fails.
fn write_done(child: Box<BdevIo>) {
    let slot = (child.user[1] & 0xffff_ffff) as usize;
    let status = child.status();
    if status != IoStatus::Success {
        // SAFETY: submitted by `launch`; the parent is in flight, and only this callback
        // touches it now (one child at a time on this thread).
        let p = unsafe { parent_of(&child) };
        // SAFETY: set up by `launch` on the parent just obtained.
        let ctx = unsafe { crate::io::ctx_of(p) };
        if ctx.shared.write_piece_back(slot, status) {
            p.driver_ctx[CTX_KEPT] |= 1 << slot;
        }
    }
    // SAFETY: as above.
    let Some(parent) = (unsafe { finish_child(child, true) }) else {
        return;
    };
    // SAFETY: set up by `launch`; the parent is still ours (not completed).
    let ctx = unsafe { crate::io::ctx_of(&parent) };
    crate::raid1::write_counted_done(ctx, parent.driver_ctx[CTX_WGEN]);
    let failed = parent.driver_ctx[CTX_GEN] - parent.driver_ctx[CTX_OK];
    let kept = parent.driver_ctx[CTX_KEPT];
    // Dropping the member that missed its strip leaves the stripe whole only if every other
    // member is in sync: beside a member being rebuilt it would be a second one missing.
    let droppable = kept == 0 || ctx.shared.rebuilding.load(Ordering::Acquire) == 0;
    let st = if failed + parent.driver_ctx[CTX_TRIED] <= 1 && droppable {
        if kept != 0 {
            drop_kept_member(ctx, kept);
        }
        IoStatus::Success
    } else {
        match status_of(parent.driver_ctx[CTX_WORST]) {
            IoStatus::Success => IoStatus::Failed,
            s => s,
        }
    };
    parent.complete(st);
}

/// The one member (`kept`: its bit) that missed its strip of a write every other member
/// took: dropped, so its strip is reconstructed from the new stripe rather than read stale.
#[cold]
fn drop_kept_member(ctx: &ChanCtx, kept: u64) {
    let slot = kept.trailing_zeros() as usize;
    tracing::warn!(
        "raid '{}': member in slot {slot} missed a stripe write (aborted below); dropping it",
        ctx.shared.name
    );
    ctx.shared.fail_slot(slot);
}

fn read(ctx: &ChanCtx, mut parent: Box<BdevIo>) {
    let sh = &*ctx.shared;
    let n = sh.n;
    let strip = 1u64 << sh.strip_shift;
    let stripe = strip * (n as u64 - 1);
    let (o, l) = (parent.offset_blocks(), parent.num_blocks());
    let s = o / stripe;
    if (o + l - 1) / stripe != s {
        // The bdev layer cuts I/O on stripes; a read across two is a bug upstream.
        return parent.complete(IoStatus::Invalid);
    }
    let bs = u64::from(sh.block_size);
    let p = parity_member(s, n);
    let base = s * stripe;
    let bases = ctx.bases.borrow();
    let mut staged = ctx.staging.borrow_mut();
    // A member being rebuilt is not read: its strips are reconstructed.
    let gone = sh.gone.load(Ordering::Acquire) | sh.rebuilding.load(Ordering::Acquire);
    parent.driver_ctx[CTX_STRIPE] = 0;
    let first = ((o - base) / strip) as usize;
    let last = ((o + l - 1 - base) / strip) as usize;
    for k in first..=last {
        let cs = o.max(base + k as u64 * strip);
        let ce = (o + l).min(base + (k as u64 + 1) * strip);
        let a = cs - (base + k as u64 * strip);
        let len = ce - cs;
        let dest = (cs - o) * bs;
        let m = chunk_member(k, p);
        if let Some(ch) = usable(&bases, gone, m) {
            let Some(mut c) = ch.alloc_io() else {
                return abandon(&mut staged, parent, IoStatus::NoMem);
            };
            c.prep_read(s * strip + a + sh.offset_of(m), len, read_done);
            // SAFETY: the parent's own segments; it completes only after this child.
            unsafe { c.append_iovs_from(parent.iovs(), dest, len * bs) };
            staged.push((m, c));
            continue;
        }
        // Member `m` is missing: rebuild the range from all the others.
        if parent.driver_ctx[CTX_STRIPE] != 0 {
            return abandon(&mut staged, parent, IoStatus::Failed);
        }
        for j in (0..n).filter(|&j| j != m) {
            let Some(ch) = usable(&bases, gone, j) else {
                return abandon(&mut staged, parent, IoStatus::Failed);
            };
            let buf = match DmaBuf::get((len * bs) as usize) {
                Ok(Some(b)) => b,
                Ok(None) => return abandon(&mut staged, parent, IoStatus::NoMem),
                Err(_) => return abandon(&mut staged, parent, IoStatus::Failed),
            };
            let Some(mut c) = ch.alloc_io() else {
                return abandon(&mut staged, parent, IoStatus::NoMem);
            };
            c.prep_read(s * strip + a + sh.offset_of(j), len, read_done);
            c.attach_buf(buf);
            staged.push((j | RECON_SLOT, c));
        }
        // The reconstruction XORs into the caller's buffer: start from zeroes.
        // SAFETY: the parent's segments; no child writes into this range (the others read
        // into their own buffers).
        unsafe {
            for_each_piece(
                parent.iovs(),
                dest as usize,
                (len * bs) as usize,
                |seg, _| seg.fill(0),
            )
        };
        parent.driver_ctx[CTX_STRIPE] = dest + 1;
    }
    if staged.is_empty() {
        return parent.complete(IoStatus::Failed);
    }
    // `launch` takes the slot from the staging entry; RECON rides along in `user[1]`.
    launch(ctx, &bases, parent, &mut staged);
}

fn read_done(mut child: Box<BdevIo>) {
    let recon = child.user[1] & RECON != 0;
    let slot = (child.user[1] & 0xffff_ffff) as usize;
    // SAFETY: submitted by `launch`; the parent is in flight until its last child is done.
    let p = unsafe { parent_of(&child) };
    if child.status() == IoStatus::Failed {
        // SAFETY: as above.
        let ctx = unsafe { crate::io::ctx_of(p) };
        ctx.shared.fail_slot(slot);
    }
    if recon && child.status() == IoStatus::Success {
        let dest = p.driver_ctx[CTX_STRIPE].saturating_sub(1) as usize;
        if let Some(buf) = child.take_buf() {
            let src = buf.as_slice();
            // SAFETY: the parent's segments; children complete one at a time on this thread
            // and the range is only ever XORed into by reconstruction children.
            unsafe {
                for_each_piece(p.iovs(), dest, src.len(), |seg, at| {
                    xor(seg, &src[at..at + seg.len()])
                })
            };
        }
    }
    // SAFETY: as above.
    if let Some(parent) = unsafe { finish_child(child, true) } {
        let st = status_of(parent.driver_ctx[CTX_WORST]);
        parent.complete(st);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parity_rotates_over_every_member() {
        for n in 3..8usize {
            let mut seen = vec![0; n];
            for s in 0..n as u64 * 4 {
                let p = parity_member(s, n);
                seen[p] += 1;
                let mut members: Vec<usize> = (0..n - 1).map(|k| chunk_member(k, p)).collect();
                members.push(p);
                members.sort();
                assert_eq!(members, (0..n).collect::<Vec<_>>());
            }
            assert!(seen.iter().all(|c| *c == 4));
        }
    }
}
