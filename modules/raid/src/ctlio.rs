//! Control-path I/O: a batch of reads/writes of whole DMA buffers (superblock reads and
//! writes, examine, rebuild copies) with one closure called when all of them have completed.
//! Not the data path: it allocates (the batch, the closure) and that is fine here.

use ferrite_bdev::{BdevChannel, BdevIo, DmaBuf, IoStatus};

/// One request: read into or write from `buf` (its whole length) at `offset` on `ch`; or,
/// with `flush`, a flush of the whole bdev (`write`, `offset` and `buf` are then unused).
pub(crate) struct CtlOp {
    pub ch: BdevChannel,
    pub write: bool,
    pub offset: u64,
    pub buf: DmaBuf,
    pub flush: bool,
}

/// Outcome of one [`CtlOp`], in the same position as its request; the channel and buffer
/// come back to the caller.
pub(crate) struct CtlResult {
    pub ch: BdevChannel,
    pub status: IoStatus,
    pub buf: Option<DmaBuf>,
}

type Done = Box<dyn FnOnce(Vec<CtlResult>) + Send>;

struct Batch {
    chans: Vec<Option<BdevChannel>>,
    /// Buffers of flush ops (not attached to their I/O), given back with the results.
    spare: Vec<Option<DmaBuf>>,
    results: Vec<Option<CtlResult>>,
    remaining: usize,
    done: Option<Done>,
}

/// Submits every op on the calling (lightweight) thread; `done` runs on it once all have
/// completed, never before this returns.
pub(crate) fn submit(ops: Vec<CtlOp>, done: impl FnOnce(Vec<CtlResult>) + Send + 'static) {
    let n = ops.len();
    let batch = Box::new(Batch {
        chans: Vec::with_capacity(n),
        spare: Vec::with_capacity(n),
        results: (0..n).map(|_| None).collect(),
        remaining: n,
        done: Some(Box::new(done)),
    });
    let ptr = Box::into_raw(batch);
    if n == 0 {
        return finish_later(ptr);
    }
    let mut pending = Vec::with_capacity(n);
    // SAFETY: `ptr` comes from Box::into_raw just above; no completion can run before this
    // function returns (the bdev layer defers them), so this is the only reference.
    let b = unsafe { &mut *ptr };
    for (i, op) in ops.into_iter().enumerate() {
        let bs = u64::from(op.ch.bdev().block_size());
        let blocks = op.buf.len() as u64 / bs;
        b.chans.push(Some(op.ch));
        match ferrite_bdev::alloc_io() {
            Some(mut io) if op.flush => {
                io.prep_flush(0, 0, ctl_done);
                io.user = [ptr as u64, i as u64];
                b.spare.push(Some(op.buf));
                pending.push((i, io));
            }
            Some(mut io) => {
                b.spare.push(None);
                if op.write {
                    io.prep_write(op.offset, blocks, ctl_done);
                } else {
                    io.prep_read(op.offset, blocks, ctl_done);
                }
                io.attach_buf(op.buf);
                io.user = [ptr as u64, i as u64];
                pending.push((i, io));
            }
            None => {
                b.spare.push(None);
                b.results[i] = Some(CtlResult {
                    ch: take_chan(b, i),
                    status: IoStatus::Failed,
                    buf: Some(op.buf),
                });
                b.remaining -= 1;
            }
        }
    }
    if pending.is_empty() {
        return finish_later(ptr);
    }
    for (i, io) in pending {
        if let Some(ch) = &b.chans[i] {
            ch.submit(io);
        }
    }
}

fn take_chan(b: &mut Batch, i: usize) -> BdevChannel {
    match b.chans[i].take() {
        Some(c) => c,
        // Each slot is filled once before its op is submitted and taken once at completion.
        None => unreachable!("control I/O channel taken twice"),
    }
}

/// Runs the batch's closure on a later turn of this thread (used when nothing was
/// submitted, so the caller still never sees its closure run inside `submit`).
fn finish_later(ptr: *mut Batch) {
    // SAFETY: `ptr` is the Box leaked by `submit` and nothing else refers to it any more.
    let batch = unsafe { Box::from_raw(ptr) };
    let run = move || finish(*batch);
    match ferrite_reactor::current() {
        Some(t) => {
            if let Err(e) = t.send(run) {
                tracing::error!("raid: control I/O completion could not be queued: {e}");
            }
        }
        None => run(),
    }
}

fn finish(mut batch: Batch) {
    let results: Vec<CtlResult> = batch.results.drain(..).flatten().collect();
    if let Some(d) = batch.done.take() {
        d(results);
    }
}

fn ctl_done(mut io: Box<BdevIo>) {
    let ptr = io.user[0] as *mut Batch;
    let i = io.user[1] as usize;
    let status = io.status();
    let buf = io.take_buf();
    ferrite_bdev::free_io(io);
    // SAFETY: `ptr` is the batch leaked by `submit`; it is freed only below, by the last of
    // its I/O to complete, and all of them complete one at a time on this thread.
    let b = unsafe { &mut *ptr };
    let buf = buf.or_else(|| b.spare.get_mut(i).and_then(Option::take));
    b.results[i] = Some(CtlResult {
        ch: take_chan(b, i),
        status,
        buf,
    });
    b.remaining -= 1;
    if b.remaining == 0 {
        // SAFETY: last completion: nothing refers to the batch any more.
        finish(*unsafe { Box::from_raw(ptr) });
    }
}
