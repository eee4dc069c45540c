//! What the bdev layer does for a backend that lacks an I/O type: write_zeroes with writes of a
//! zero buffer, compare with a read, compare-and-write with a quiesce around read-compare-write,
//! and reset by draining every channel around the backend's own reset (if any).
//!
//! Each emulation is a chain of child I/O on the same channel; the original I/O travels as the
//! owned parent of the current child and its `driver_ctx` holds the chain's progress (the
//! backend never sees it, so the words are the bdev layer's to use).

use std::sync::Arc;

use crate::bdev::Bdev;
use crate::buf::DmaBuf;
use crate::channel::{ChannelState, FLAG_QUIESCE_HELD};
use crate::io::{BdevIo, IoVec, Parent};
use crate::types::{IoStatus, IoType};

fn chan(io: &BdevIo) -> Option<&ChannelState> {
    // SAFETY: the parent is a counted I/O, which keeps its channel state alive.
    io.chan.map(|c| unsafe { &*c.as_ptr() })
}

fn take_parent(child: &mut BdevIo) -> Option<Box<BdevIo>> {
    match std::mem::replace(&mut child.parent, Parent::None) {
        Parent::Owned(mut p) => {
            p.dev_status = child.dev_status;
            Some(p)
        }
        _ => None,
    }
}

/// A child owning `parent`, or `None` with the parent parked for retry (out of I/O objects).
fn new_child(st: &ChannelState, parent: Box<BdevIo>) -> Option<Box<BdevIo>> {
    match crate::thread::alloc_io() {
        Some(mut c) => {
            c.parent = Parent::Owned(parent);
            Some(c)
        }
        None => {
            let mut p = parent;
            p.status = IoStatus::NoMem;
            st.park_nomem(p);
            None
        }
    }
}

// ---- write_zeroes ----------------------------------------------------------------------------

pub(crate) fn write_zeroes(st: &ChannelState, mut io: Box<BdevIo>) {
    let bs = u64::from(st.bdev.block_size);
    let cap = crate::buf::pool_cfg().large_size as u64;
    let chunk_blocks = (cap / bs).max(1);
    let mut buf = match DmaBuf::get((chunk_blocks.min(io.num_blocks) * bs) as usize) {
        Ok(Some(b)) => b,
        Ok(None) => {
            io.status = IoStatus::NoMem;
            return st.park_nomem(io);
        }
        Err(_) => return io.complete(IoStatus::Failed),
    };
    buf.as_mut_slice().fill(0);
    io.driver_ctx[0] = io.offset_blocks;
    io.driver_ctx[1] = io.offset_blocks + io.num_blocks;
    io.driver_ctx[2] = chunk_blocks;
    let Some(mut c) = new_child(st, io) else {
        return;
    };
    c.buf = Some(buf);
    wz_next(st, c);
}

fn wz_next(st: &ChannelState, mut c: Box<BdevIo>) {
    let (next, end, chunk) = match &c.parent {
        Parent::Owned(p) => (p.driver_ctx[0], p.driver_ctx[1], p.driver_ctx[2]),
        _ => return crate::thread::free_io(c),
    };
    let n = chunk.min(end - next);
    let bs = u64::from(st.bdev.block_size);
    if let Parent::Owned(p) = &mut c.parent {
        p.driver_ctx[0] = next + n;
    }
    c.io_type = IoType::Write;
    c.offset_blocks = next;
    c.num_blocks = n;
    let base = c
        .buf
        .as_ref()
        .map(|b| b.as_ptr())
        .unwrap_or(std::ptr::null_mut());
    c.iovs.clear();
    c.iovs.push(IoVec {
        base,
        len: (n * bs) as usize,
    });
    c.cb = Some(wz_done);
    st.submit_child(c);
}

fn wz_done(mut c: Box<BdevIo>) {
    let ok = c.status.is_success();
    let done = match &c.parent {
        Parent::Owned(p) => p.driver_ctx[0] >= p.driver_ctx[1],
        _ => true,
    };
    if ok && !done {
        let st = match &c.parent {
            Parent::Owned(p) => chan(p).map(|s| s as *const ChannelState),
            _ => None,
        };
        if let Some(st) = st {
            // SAFETY: derived from the parent's counted channel pointer just above.
            return wz_next(unsafe { &*st }, c);
        }
    }
    let parent = take_parent(&mut c);
    crate::thread::free_io(c);
    if let Some(p) = parent {
        p.complete(if ok {
            IoStatus::Success
        } else {
            IoStatus::Failed
        });
    }
}

// ---- compare ---------------------------------------------------------------------------------

fn read_for_compare(st: &ChannelState, io: Box<BdevIo>, cb: crate::io::IoCallback) {
    let len = (io.num_blocks * u64::from(st.bdev.block_size)) as usize;
    let buf = match DmaBuf::get(len) {
        Ok(Some(b)) => b,
        Ok(None) => {
            let mut io = io;
            io.status = IoStatus::NoMem;
            return st.park_nomem(io);
        }
        Err(_) => {
            // No buffer can hold the range. A compare-and-write holds the quiesce: release it.
            if io.flags & FLAG_QUIESCE_HELD != 0 {
                crate::quiesce::unquiesce(&st.bdev);
            }
            return io.complete(IoStatus::Invalid);
        }
    };
    let (off, n) = (io.offset_blocks, io.num_blocks);
    let Some(mut c) = new_child(st, io) else {
        return;
    };
    c.io_type = IoType::Read;
    c.offset_blocks = off;
    c.num_blocks = n;
    c.attach_buf(buf);
    c.cb = Some(cb);
    st.submit_child(c);
}

fn matches(data: &[u8], iovs: &[IoVec]) -> bool {
    let mut pos = 0usize;
    for v in iovs {
        // SAFETY: the submitter guarantees the segments are valid until completion.
        let seg = unsafe { std::slice::from_raw_parts(v.base, v.len) };
        if data.get(pos..pos + v.len) != Some(seg) {
            return false;
        }
        pos += v.len;
    }
    pos == data.len()
}

pub(crate) fn compare(st: &ChannelState, io: Box<BdevIo>) {
    read_for_compare(st, io, compare_done);
}

fn compare_done(mut c: Box<BdevIo>) {
    let ok = c.status.is_success();
    let buf = c.take_buf();
    let parent = take_parent(&mut c);
    crate::thread::free_io(c);
    let Some(p) = parent else { return };
    let status = match (&buf, ok) {
        (Some(b), true) if matches(b.as_slice(), &p.iovs) => IoStatus::Success,
        (Some(_), true) => IoStatus::Miscompare,
        _ => IoStatus::Failed,
    };
    p.complete(status);
}

// ---- compare-and-write -----------------------------------------------------------------------

pub(crate) fn compare_and_write(st: &ChannelState, mut io: Box<BdevIo>) {
    if io.flags & FLAG_QUIESCE_HELD != 0 {
        // Retried after NOMEM while already holding the quiesce: resume.
        return read_for_compare(st, io, caw_compared);
    }
    let bdev = st.bdev.clone();
    crate::quiesce::quiesce(&bdev.clone(), move || {
        io.flags |= FLAG_QUIESCE_HELD;
        let Some(st) = chan(&io).map(|s| s as *const ChannelState) else {
            crate::quiesce::unquiesce(&bdev);
            return io.complete(IoStatus::Failed);
        };
        // SAFETY: the I/O is counted on that channel, which keeps it alive.
        read_for_compare(unsafe { &*st }, io, caw_compared);
    });
}

fn caw_compared(mut c: Box<BdevIo>) {
    let ok = c.status.is_success();
    let buf = c.take_buf();
    let Some(p) = take_parent(&mut c) else {
        return crate::thread::free_io(c);
    };
    let Some(st) = chan(&p).map(|s| s as *const ChannelState) else {
        crate::thread::free_io(c);
        return p.complete(IoStatus::Failed);
    };
    // SAFETY: counted parent keeps the channel alive.
    let st = unsafe { &*st };
    let verdict = match (&buf, ok) {
        (Some(b), true) if matches(b.as_slice(), &p.cmp_iovs) => None,
        (Some(_), true) => Some(IoStatus::Miscompare),
        _ => Some(IoStatus::Failed),
    };
    drop(buf);
    if let Some(status) = verdict {
        crate::thread::free_io(c);
        crate::quiesce::unquiesce(&st.bdev);
        return p.complete(status);
    }
    c.io_type = IoType::Write;
    c.offset_blocks = p.offset_blocks;
    c.num_blocks = p.num_blocks;
    c.iovs.clear();
    c.iovs.extend_from_slice(&p.iovs);
    c.parent = Parent::Owned(p);
    c.cb = Some(caw_written);
    st.submit_child(c);
}

fn caw_written(mut c: Box<BdevIo>) {
    let ok = c.status.is_success();
    let parent = take_parent(&mut c);
    crate::thread::free_io(c);
    if let Some(p) = parent {
        if let Some(st) = chan(&p) {
            crate::quiesce::unquiesce(&st.bdev);
        }
        p.complete(if ok {
            IoStatus::Success
        } else {
            IoStatus::Failed
        });
    }
}

// ---- reset -----------------------------------------------------------------------------------

pub(crate) fn reset(st: &ChannelState, io: Box<BdevIo>) {
    if io.flags & FLAG_QUIESCE_HELD != 0 {
        // Retried after NOMEM while already holding the quiesce: resume.
        return reset_quiesced(st, io);
    }
    let bdev = st.bdev.clone();
    // Modules holding I/O of this bdev or under it complete it first (see `held`), else the
    // drain would wait for it forever; the quiesce then starts back on this thread.
    let hooks = crate::held::hooks_for(&bdev);
    if !hooks.is_empty() {
        let origin = ferrite_reactor::current();
        return crate::held::reset_start(
            &hooks,
            Box::new(move || {
                let go = move || reset_quiesce(bdev, io);
                match origin {
                    Some(t) if ferrite_reactor::current().as_ref() != Some(&t) => {
                        if let Err(e) = t.send(go) {
                            tracing::error!("reset: cannot resume on its thread: {e}");
                        }
                    }
                    _ => go(),
                }
            }),
        );
    }
    reset_quiesce(bdev, io);
}

/// Quiesces `bdev` for the reset `io`, then sends it on. On the reset's thread.
fn reset_quiesce(bdev: Arc<Bdev>, mut io: Box<BdevIo>) {
    crate::quiesce::quiesce(&bdev.clone(), move || {
        io.flags |= FLAG_QUIESCE_HELD;
        let Some(st) = chan(&io).map(|s| s as *const ChannelState) else {
            reset_end(&bdev);
            crate::quiesce::unquiesce(&bdev);
            return io.complete(IoStatus::Failed);
        };
        // SAFETY: counted I/O keeps the channel alive.
        reset_quiesced(unsafe { &*st }, io);
    });
}

fn reset_quiesced(st: &ChannelState, io: Box<BdevIo>) {
    if !st.bdev.native(IoType::Reset) {
        reset_end(&st.bdev);
        crate::quiesce::unquiesce(&st.bdev);
        return io.complete(IoStatus::Success);
    }
    let Some(mut c) = new_child(st, io) else {
        return;
    };
    c.io_type = IoType::Reset;
    c.cb = Some(reset_done);
    // Straight to the backend: dispatch would route a reset back here.
    st.submit_backend_child(c);
}

fn reset_done(mut c: Box<BdevIo>) {
    let status = c.status;
    let parent = take_parent(&mut c);
    crate::thread::free_io(c);
    if let Some(p) = parent {
        if let Some(st) = chan(&p) {
            reset_end(&st.bdev);
            crate::quiesce::unquiesce(&st.bdev);
        }
        p.complete(status);
    }
}

/// The reset of `bdev` is over: a module holding I/O may hold again (before the thaw).
fn reset_end(bdev: &Bdev) {
    for h in crate::held::hooks_for(bdev) {
        h.reset_end();
    }
}
