//! raid0: striping. Raid block `b` lives on member `(b / strip) % n` at block
//! `(b / strip / n) * strip + b % strip` of its data area.
//!
//! An I/O is cut at strip boundaries; the pieces that fall on one member are contiguous there
//! (consecutive strips of a member follow each other), so each member gets at most one child,
//! whose segments gather its pieces of the parent's buffer. Flush, unmap and write-zeroes go to
//! the range each member covers, computed directly (no walk over the strips). An I/O within
//! one strip (the common small I/O) is forwarded to its member as the same object.

use std::sync::atomic::Ordering;

use ferrite_bdev::{BdevIo, IoStatus};

use crate::io::{abandon, launch, prep_as, striped_child_done, usable, ChanCtx};

/// Range `[start, end)` of member `j`'s data area covered by raid blocks `[o, o + l)`
/// (`l > 0`), with the first and last strip (raid strip numbers) that fall on it; `None` if
/// the range touches no strip of member `j`.
#[inline]
pub(crate) fn member_range(
    o: u64,
    l: u64,
    n: u64,
    shift: u32,
    j: u64,
) -> Option<(u64, u64, u64, u64)> {
    let strip = 1u64 << shift;
    let mask = strip - 1;
    let end = o + l;
    let s0 = o >> shift;
    let s1 = (end - 1) >> shift;
    let sf = s0 + (j + n - s0 % n) % n;
    if sf > s1 {
        return None;
    }
    let sl = s1 - (s1 % n + n - j) % n;
    let start = ((sf / n) << shift) + if sf == s0 { o & mask } else { 0 };
    let stop = ((sl / n) << shift)
        + if sl == s1 {
            ((end - 1) & mask) + 1
        } else {
            strip
        };
    Some((start, stop, sf, sl))
}

/// The common small I/O: within one strip, forwarded to its member as the same object (no
/// child, one completion hop; the member's status is the raid's). The member and the row come
/// from a mask and a shift (`Shared::locate`) when the member count is a power of two.
#[inline(always)]
pub(crate) fn submit(ctx: &ChanCtx, parent: Box<BdevIo>) {
    let sh = &*ctx.shared;
    let (o, l) = (parent.offset_blocks(), parent.num_blocks());
    let shift = sh.strip_shift;
    let s0 = o >> shift;
    if l == 0 || s0 != (o + l - 1) >> shift {
        return submit_split(ctx, parent);
    }
    let (slot, row) = sh.locate(s0);
    let bases = ctx.bases.borrow();
    let Some(ch) = usable(&bases, sh.gone.load(Ordering::Acquire), slot) else {
        drop(bases);
        return parent.complete(IoStatus::Failed);
    };
    let off = (row << shift) + (o & ((1u64 << shift) - 1)) + sh.offset_of(slot);
    ch.forward(parent, off);
}

/// Flushes of the whole device and I/O crossing strips: one child per member touched.
#[inline(never)]
fn submit_split(ctx: &ChanCtx, parent: Box<BdevIo>) {
    let sh = &*ctx.shared;
    let (o, l) = (parent.offset_blocks(), parent.num_blocks());
    if l == 0 {
        return crate::io::flush_all(ctx, parent, striped_child_done);
    }
    let n = sh.n as u64;
    let shift = sh.strip_shift;
    let t = parent.io_type();
    let bs = u64::from(sh.block_size);
    let end = o + l;
    let bases = ctx.bases.borrow();
    let mut staged = ctx.staging.borrow_mut();
    let gone = sh.gone.load(Ordering::Acquire);
    for j in 0..n {
        let Some((start, stop, sf, sl)) = member_range(o, l, n, shift, j) else {
            continue;
        };
        let slot = j as usize;
        let Some(ch) = usable(&bases, gone, slot) else {
            // A striped raid without one of its members cannot serve the range.
            return abandon(&mut staged, parent, IoStatus::Failed);
        };
        let Some(mut c) = ch.alloc_io() else {
            return abandon(&mut staged, parent, IoStatus::NoMem);
        };
        prep_as(
            &mut c,
            t,
            start + sh.offset_of(slot),
            stop - start,
            striped_child_done,
        );
        if t.has_data() {
            let mut s = sf;
            while s <= sl {
                let ps = (s << shift).max(o);
                let pe = ((s + 1) << shift).min(end);
                // SAFETY: the pieces are the parent's own segments, and the parent completes
                // only after this child (it is released by the last child's callback).
                unsafe { c.append_iovs_from(parent.iovs(), (ps - o) * bs, (pe - ps) * bs) };
                s += n;
            }
        }
        staged.push((slot, c));
    }
    if staged.is_empty() {
        return parent.complete(IoStatus::Failed);
    }
    launch(ctx, &bases, parent, &mut staged);
}

#[cfg(test)]
mod tests {
    use super::member_range;

    /// The direct computation agrees with a block-by-block walk of the layout.
    #[test]
    fn member_ranges_match_the_layout() {
        for n in 1..=5u64 {
            for shift in 0..=3u32 {
                let strip = 1u64 << shift;
                for o in 0..40u64 {
                    for l in 1..40u64 {
                        for j in 0..n {
                            let mut lo = u64::MAX;
                            let mut hi = 0;
                            let mut count = 0;
                            for b in o..o + l {
                                if (b / strip) % n == j {
                                    let m = (b / strip / n) * strip + b % strip;
                                    lo = lo.min(m);
                                    hi = hi.max(m + 1);
                                    count += 1;
                                }
                            }
                            match member_range(o, l, n, shift, j) {
                                None => assert_eq!(count, 0),
                                Some((s, e, _, _)) => {
                                    assert_eq!(
                                        (s, e),
                                        (lo, hi),
                                        "n={n} shift={shift} o={o} l={l} j={j}"
                                    );
                                    assert_eq!(e - s, count, "contiguous on the member");
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
