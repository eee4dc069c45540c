//! Splitting I/O that crosses the bdev's optimal I/O boundary. The parent is leaked into a raw
//! pointer while its children are in flight and rebuilt by the last child to complete.

use std::ptr::NonNull;

use crate::channel::ChannelState;
use crate::io::{BdevIo, IoVec, Parent};
use crate::types::IoStatus;

/// Most pieces one I/O may be split into (a limit on everything).
pub const MAX_SPLIT_CHILDREN: u64 = 1024;

pub(crate) fn split(st: &ChannelState, mut parent: Box<BdevIo>) {
    let bound = u64::from(st.bdev.optimal_io_boundary);
    let bs = u64::from(st.bdev.block_size);
    let start = parent.offset_blocks;
    let end = start + parent.num_blocks;
    let pieces = (end - 1) / bound - start / bound + 1;
    if pieces > MAX_SPLIT_CHILDREN {
        return parent.complete(IoStatus::Invalid);
    }
    // A per-thread scratch list that keeps its capacity: no allocation per split in steady state.
    let mut children = crate::thread::take_split_scratch();
    let mut off = start;
    while off < end {
        let next = ((off / bound) + 1) * bound;
        let n = next.min(end) - off;
        let Some(mut c) = crate::thread::alloc_io() else {
            for c in children.drain(..) {
                crate::thread::free_io(c);
            }
            crate::thread::put_split_scratch(children);
            // Out of I/O objects: retry the whole parent later.
            parent.status = IoStatus::NoMem;
            return st.park_nomem(parent);
        };
        c.io_type = parent.io_type;
        c.offset_blocks = off;
        c.num_blocks = n;
        if parent.io_type.has_data() {
            slice_iovs(&parent.iovs, (off - start) * bs, n * bs, &mut c.iovs);
        }
        children.push(c);
        off += n;
    }
    parent.split_remaining = children.len() as u32;
    parent.split_status = IoStatus::Success;
    parent.dev_status = None;
    let pptr = NonNull::from(Box::leak(parent));
    for mut c in children.drain(..) {
        c.parent = Parent::Split(pptr);
        st.submit_child(c);
    }
    crate::thread::put_split_scratch(children);
}

/// Copies into `out` the segments covering bytes `[from, from+len)` of `iovs`.
pub(crate) fn slice_iovs(iovs: &[IoVec], from: u64, len: u64, out: &mut Vec<IoVec>) {
    out.clear();
    let mut pos = 0u64;
    let mut want = len;
    for v in iovs {
        let vlen = v.len as u64;
        if pos + vlen <= from {
            pos += vlen;
            continue;
        }
        let skip = from.saturating_sub(pos);
        let take = (vlen - skip).min(want);
        // SAFETY: skip < vlen, so the result stays inside the segment the submitter vouched for.
        let base = unsafe { v.base.add(skip as usize) };
        out.push(IoVec {
            base,
            len: take as usize,
        });
        want -= take;
        pos += vlen;
        if want == 0 {
            break;
        }
    }
}

pub(crate) fn child_done(mut child: Box<BdevIo>) {
    let Parent::Split(pptr) = std::mem::replace(&mut child.parent, Parent::None) else {
        return crate::thread::free_io(child);
    };
    let status = child.status;
    let dev_status = child.dev_status;
    crate::thread::free_io(child);
    // SAFETY: the parent was leaked by `split` and is only reclaimed below by the last child;
    // all children complete on this same thread, one at a time.
    let p = unsafe { &mut *pptr.as_ptr() };
    if status != IoStatus::Success && p.split_status == IoStatus::Success {
        p.split_status = status;
        p.dev_status = dev_status;
    }
    p.split_remaining -= 1;
    if p.split_remaining == 0 {
        // SAFETY: last child: nothing else refers to the parent any more.
        let parent = unsafe { Box::from_raw(pptr.as_ptr()) };
        let st = parent.split_status;
        parent.complete(st);
    }
}
