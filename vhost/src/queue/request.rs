//! The queue's requests: parsing a popped chain, mapping it to a bdev I/O on the thread's
//! channel, completing it (status byte, used entry).

use ferrite_bdev::{BdevIo, IoVec};

use super::{Queue, Slot};
use crate::blk::request::{self, parse_common_with, parse_general, status, Kind};

impl Queue {
    pub(super) fn handle_chain(&mut self) {
        let id = self.chain.id();
        let readonly = self.ctrl.readonly;
        let (chain, mem) = (&self.chain, &self.mem);
        // The common request through the host addresses the ring's walk found (the chain was
        // popped from `mem`, which stays mapped while the queue runs); anything else through
        // the general parse.
        let known = [chain.host_addr(0), chain.host_addr(1), chain.host_addr(2)];
        let parsed = if parse_common_with(chain.segments(), known, mem, readonly, &mut self.scratch)
        {
            Ok(())
        } else {
            parse_general(chain.segments(), mem, readonly, &mut self.scratch)
        };
        match parsed {
            Ok(()) => {
                self.slot_mut(id).status = self.scratch.status_host;
                self.submit_parsed(id);
            }
            Err(e) => match request::answer_status(&e) {
                Some(st) => {
                    tracing::debug!(
                        "vhost controller '{}': queue {}: request failed: {e}",
                        self.ctrl.name,
                        self.index
                    );
                    let _ = self.write_status(self.scratch.status_gpa, st);
                    self.push(id, 1);
                }
                // No status byte the device may write: as for a refused chain without one
                // (`refuse_chain`), the chain stays in flight, unanswered, and the queue stops.
                None => self.set_broken(e.message()),
            },
        }
    }

    /// Writes status byte `st` at `gpa`; false if the byte is not in the memory table.
    pub(super) fn write_status(&self, gpa: u64, st: u8) -> bool {
        match self.mem.host_ptr(gpa, 1) {
            Some(p) => {
                // SAFETY: host_ptr checked the byte lies in mapped guest memory.
                unsafe { p.write_volatile(st) };
                true
            }
            None => false,
        }
    }

    /// Completes chain `id` with its status already written.
    #[inline]
    pub(super) fn push(&mut self, id: u16, written: u32) {
        if let Err(e) = self.vring.push_used(self.mem.guest(), id, written) {
            self.set_broken(&e.to_string());
            return;
        }
        self.pending_publish = true;
    }

    /// Completes a request at once (no bdev I/O) with status `st`.
    pub(super) fn finish_now(&mut self, id: u16, st: u8, data_written: u32) {
        let _ = self.write_status(self.scratch.status_gpa, st);
        self.push(id, data_written + 1);
    }

    pub(super) fn slot_mut(&mut self, id: u16) -> &mut Slot {
        let n = self.slots.len();
        // A chain id is below the queue size (= n); the modulo (a division) is only a guard.
        let i = usize::from(id);
        &mut self.slots[if i < n { i } else { i % n }]
    }

    pub(super) fn submit_parsed(&mut self, id: u16) {
        let me = self as *mut Queue as u64;
        let p = &self.scratch;
        let bs = self.block_size;
        let kind = p.kind;
        let (offset, len) = match kind {
            Kind::GetId => {
                let n = self.write_id();
                return self.finish_now(id, status::OK, n);
            }
            Kind::Read | Kind::Write => (p.sector.saturating_mul(512), p.data_len),
            Kind::Flush => (0, 0),
            Kind::Discard | Kind::WriteZeroes => match request::read_range(p, &self.mem) {
                Some(r) => (r.sector.saturating_mul(512), u64::from(r.num_sectors) * 512),
                None => return self.finish_now(id, status::IOERR, 0),
            },
        };
        // Block sizes are powers of two in practice: masks and shifts, not four divisions.
        let (ob, nb) = if bs.is_power_of_two() {
            if (offset | len) & (bs - 1) != 0 {
                return self.finish_now(id, status::IOERR, 0);
            }
            let sh = bs.trailing_zeros();
            (offset >> sh, len >> sh)
        } else {
            if offset % bs != 0 || len % bs != 0 {
                return self.finish_now(id, status::IOERR, 0);
            }
            (offset / bs, len / bs)
        };
        let rw = matches!(kind, Kind::Read | Kind::Write);
        // The one-step parse's one data piece, translated by the ring's walk: set as the
        // I/O's one segment directly, without the segment list.
        let one = (rw && !p.data_host.is_null()).then_some(IoVec {
            base: p.data_host,
            len: p.data_len as usize,
        });
        if rw && one.is_none() {
            for (i, s) in p.data().iter().enumerate() {
                match self.mem.host_ptr(s.gpa, u64::from(s.len)) {
                    Some(h) => {
                        self.iovs[i] = IoVec {
                            base: h,
                            len: s.len as usize,
                        }
                    }
                    None => return self.finish_now(id, status::IOERR, 0),
                }
            }
        }
        let written = if kind == Kind::Read {
            len as u32 + 1
        } else {
            1
        };
        self.slot_mut(id).written = written;
        let Some(chan) = &self.chan else {
            // The bdev was hot-removed: the device fails requests until deleted.
            return self.finish_now(id, status::IOERR, 0);
        };
        let Some(mut io) = chan.alloc_io() else {
            // The thread's I/O pool is empty: try again on the next poll.
            self.retry = Some(id);
            return;
        };
        io.user = [me, u64::from(id)];
        match kind {
            Kind::Read => {
                io.prep_read(ob, nb, io_done);
            }
            Kind::Write => {
                io.prep_write(ob, nb, io_done);
            }
            Kind::Flush => {
                io.prep_flush(0, chan.bdev().num_blocks(), io_done);
            }
            Kind::Discard => {
                io.prep_unmap(ob, nb, io_done);
            }
            Kind::WriteZeroes => {
                io.prep_write_zeroes(ob, nb, io_done);
            }
            Kind::GetId => {}
        }
        if rw {
            // SAFETY: the segments are guest memory checked to be mapped (by the ring's walk
            // or host_ptr); the mapping stays alive until this I/O completes because the queue
            // (holding the table) cannot finish before `outstanding` is back to zero.
            unsafe {
                match one {
                    Some(v) => io.set_iov(v),
                    None => io.set_iovs(&self.iovs[..self.scratch.nsegs]),
                }
            };
        }
        self.outstanding += 1;
        self.window_ios += 1;
        chan.submit(io);
    }

    pub(super) fn write_id(&self) -> u32 {
        let mut left = &self.ctrl.serial[..];
        let mut n = 0u32;
        for s in self.scratch.data() {
            if left.is_empty() {
                break;
            }
            let take = left.len().min(s.len as usize);
            if let Some(h) = self.mem.host_ptr(s.gpa, take as u64) {
                // SAFETY: host_ptr checked `take` mapped bytes at `h`.
                unsafe { std::ptr::copy_nonoverlapping(left.as_ptr(), h, take) };
                n += take as u32;
            }
            left = &left[take..];
        }
        n
    }

    pub(super) fn complete_io(&mut self, id: u16, ok: bool) {
        self.outstanding -= 1;
        if self.abandoned {
            return; // the ring is not ours any more (module docs of `queue`)
        }
        let slot = *self.slot_mut(id);
        let st = if ok { status::OK } else { status::IOERR };
        if !slot.status.is_null() {
            // SAFETY: the status pointer was checked against the memory table, which stays
            // mapped while this queue runs.
            unsafe { slot.status.write_volatile(st) };
        }
        let written = if ok { slot.written } else { 1 };
        self.push(id, written);
    }
}

/// Completion of a bdev I/O: on the queue's thread, after the submit call returned.
fn io_done(io: Box<BdevIo>) {
    let [ptr, id] = io.user;
    let ok = io.status().is_success();
    // SAFETY: `ptr` is the queue that submitted this I/O; a queue stays alive while it has
    // I/O outstanding (it finishes only when `outstanding` is zero) and completions run on
    // its thread.
    let q = unsafe { &mut *(ptr as *mut Queue) };
    // The object goes back to the channel the queue submits on, for its next request (the
    // channel is released only once nothing is outstanding, so it is there).
    match &q.chan {
        Some(c) => c.free_io(io),
        None => ferrite_bdev::free_io(io),
    }
    q.complete_io(id as u16, ok);
}
