//! concat: the members' data areas end to end (each rounded down to a whole number of
//! strips, as SPDK). An I/O within one member is forwarded to it as the same object; one that
//! spans members gets one child per member it touches, each a contiguous piece of the parent's
//! buffer.

use std::sync::atomic::Ordering;

use ferrite_bdev::{BdevIo, IoStatus};

use crate::io::{abandon, launch, prep_as, striped_child_done, usable, ChanCtx};

pub(crate) fn submit(ctx: &ChanCtx, parent: Box<BdevIo>) {
    let sh = &*ctx.shared;
    let (o, l) = (parent.offset_blocks(), parent.num_blocks());
    if l == 0 {
        return crate::io::flush_all(ctx, parent, striped_child_done);
    }
    let t = parent.io_type();
    let bs = u64::from(sh.block_size);
    let end = o + l;
    let bases = ctx.bases.borrow();
    let gone = sh.gone.load(Ordering::Acquire);
    // Within one member (the common case): forward the I/O itself.
    if let Some(slot) = (0..sh.n).find(|&s| o < sh.concat_start[s + 1]) {
        let (a, b) = (sh.concat_start[slot], sh.concat_start[slot + 1]);
        if o >= a && end <= b {
            let Some(ch) = usable(&bases, gone, slot) else {
                return parent.complete(IoStatus::Failed);
            };
            return ch.forward(parent, o - a + sh.offset_of(slot));
        }
    }
    let mut staged = ctx.staging.borrow_mut();
    for slot in 0..sh.n {
        let (a, b) = (sh.concat_start[slot], sh.concat_start[slot + 1]);
        let lo = o.max(a);
        let hi = end.min(b);
        if lo >= hi {
            continue;
        }
        let Some(ch) = usable(&bases, gone, slot) else {
            return abandon(&mut staged, parent, IoStatus::Failed);
        };
        let Some(mut c) = ch.alloc_io() else {
            return abandon(&mut staged, parent, IoStatus::NoMem);
        };
        prep_as(
            &mut c,
            t,
            lo - a + sh.offset_of(slot),
            hi - lo,
            striped_child_done,
        );
        if t.has_data() {
            // SAFETY: the parent's own segments; it completes only after this child.
            unsafe { c.append_iovs_from(parent.iovs(), (lo - o) * bs, (hi - lo) * bs) };
        }
        staged.push((slot, c));
    }
    if staged.is_empty() {
        return parent.complete(IoStatus::Failed);
    }
    launch(ctx, &bases, parent, &mut staged);
}
