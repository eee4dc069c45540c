//! One job's data path on its core's lightweight thread: keep `queue_depth` I/O outstanding,
//! record every completion, verify what verify jobs read back.
//!
//! Jobs live in the thread's [`BenchLocal`], each boxed so it stays put; an I/O carries the
//! address of its job in `user[0]` (no lookup per completion) and its slot (buffer) index in
//! `user[1]`. Nothing here allocates per I/O.

use std::cell::RefCell;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use ferrite_bdev::{BdevChannel, BdevIo, Desc, IoStatus, IoVec};
use ferrite_reactor::clock;

use super::buffers::SlotBuffers;
use crate::inflight::InFlight;
use crate::offsets::OffsetGen;
use crate::opmix::{IoOp, OpMix};
use crate::plan::JobPlan;
use crate::report::JobStatus;
use crate::stats::JobStats;
use crate::verify;

/// Fill byte used to poison a verify read's buffer, so a read that returns nothing is caught.
const POISON: u8 = 0xA5;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    Idle,
    Io,
    VerifyWrite,
    VerifyRead,
}

#[derive(Clone, Copy)]
pub(crate) struct Slot {
    pub phase: Phase,
    pub offset_slot: u64,
    pub generation: u32,
    pub submit_tsc: u64,
    pub timed_out: bool,
    /// Submission time of a verify write, while its read-back is in flight.
    pub verify_start: u64,
}

/// A running job.
pub(crate) struct Job {
    /// Position in the run's job list (for results).
    pub index: usize,
    /// Position in this thread's job list (carried by every I/O).
    pub local: usize,
    pub plan: JobPlan,
    // Field order is drop order: the channel goes before the descriptor. Both are taken
    // (channel first) when the bdev is removed during the run, once the job's I/O is back.
    pub ch: Option<BdevChannel>,
    pub desc: Option<Desc>,
    pub gen: OffsetGen,
    pub mix: OpMix,
    pub stats: JobStats,
    pub bufs: SlotBuffers,
    pub slots: Vec<Slot>,
    pub busy: InFlight,
    pub outstanding: u32,
    pub stopping: bool,
    pub status: JobStatus,
    pub generation: u32,
    pub end_tsc: u64,
    pub mismatch: Option<String>,
    /// The job's first failed I/O, described (named by the device's status when the backend
    /// attached one).
    pub first_error: Option<String>,
    pub ns_mult: u128,
    /// Record submit times per slot (only with `-k`: reading the clock costs).
    pub track_timeouts: bool,
    /// Stop the job at its first failed I/O (bdevperf's default; `-f` keeps it running).
    pub stop_on_failure: bool,
    /// Address of this job's cell in [`BenchLocal::jobs`] (carried in `user[0]`).
    pub me: u64,
    /// Blocks per I/O.
    pub io_blocks: u64,
    /// First block of the job's region, when it and the I/O size are whole blocks (else
    /// `u64::MAX`: offsets are computed in bytes).
    pub first_block: u64,
    /// The workload verifies (writes, reads back, checks).
    pub verifies: bool,
    /// The bdev is being removed (hot remove during the run): the job stopped and closes its
    /// channel and descriptor once its I/O is back.
    pub removed: bool,
    /// The run's count of jobs still running (see [`Job::ended`]).
    pub running: Arc<AtomicUsize>,
    /// This job has ended (counted off `running`).
    pub ended: bool,
}

/// The jobs of one lightweight thread. Each job is boxed: its address, carried by its I/O,
/// stays valid until the job list is taken at the end of the run, when no I/O is outstanding.
/// While I/O is in flight the list is only read (`borrow`), and each job borrowed through its
/// own cell.
#[derive(Default)]
pub(crate) struct BenchLocal {
    #[allow(clippy::vec_box)]
    pub jobs: RefCell<Vec<Box<RefCell<Job>>>>,
}

/// The calling bench thread's jobs.
pub(crate) static BENCH: ferrite_reactor::LocalKey<BenchLocal> = ferrite_reactor::LocalKey::new();

impl Job {
    #[inline]
    fn ticks_to_ns(&self, t: u64) -> u64 {
        ((u128::from(t) * self.ns_mult) >> 32) as u64
    }

    /// The constants of the hot path, from the plan (call once the job has its address).
    pub(crate) fn precompute(&mut self, me: u64) {
        self.me = me;
        self.io_blocks = self.plan.io_blocks();
        let bs = u64::from(self.plan.block_size.max(1));
        self.first_block =
            if self.plan.offset.is_multiple_of(bs) && self.plan.io_size.is_multiple_of(bs) {
                self.plan.offset / bs
            } else {
                u64::MAX
            };
        self.verifies = self.plan.workload.verifies();
    }

    /// Block offset of `slot` (no division when the region is block-aligned).
    #[inline]
    fn slot_blocks(&self, slot: u64) -> u64 {
        if self.first_block != u64::MAX {
            self.first_block + slot * self.io_blocks
        } else {
            self.plan.slot_offset_blocks(slot)
        }
    }

    /// Prepares `io` for slot `s` and submits it; or retires it if the job is stopping.
    #[inline]
    pub(crate) fn submit_next(&mut self, mut io: Box<BdevIo>, s: usize) {
        if self.stopping {
            return self.retire(io, s);
        }
        io.user = [self.me, s as u64];
        if self.verifies {
            return self.submit_verify_write(io, s);
        }
        let blocks = self.io_blocks;
        let slot = self.gen.next();
        let off = self.slot_blocks(slot);
        let sl = &mut self.slots[s];
        sl.phase = Phase::Io;
        sl.offset_slot = slot;
        sl.timed_out = false;
        match self.mix.next() {
            IoOp::Read => io.prep_read(off, blocks, on_done),
            IoOp::Write => io.prep_write(off, blocks, on_done),
            IoOp::Unmap => io.prep_unmap(off, blocks, on_done),
            IoOp::Flush => io.prep_flush(off, blocks, on_done),
            IoOp::WriteZeroes => io.prep_write_zeroes(off, blocks, on_done),
        };
        self.send(io, s);
    }

    /// A stopping job's I/O comes back: the slot goes idle and the I/O to the pool.
    #[cold]
    #[inline(never)]
    fn retire(&mut self, io: Box<BdevIo>, s: usize) {
        self.slots[s].phase = Phase::Idle;
        self.outstanding -= 1;
        ferrite_bdev::free_io(io);
        if self.outstanding == 0 {
            self.end_tsc = clock::ticks();
            if self.removed {
                self.close();
            }
            self.ended();
        }
    }

    /// The job has stopped and has no I/O outstanding: it is counted off the run's running
    /// jobs (once), so that the coordinator ends the run when none is left, as bdevperf ends
    /// its test when its last job has ended. Called on the job's thread.
    #[cold]
    pub(crate) fn ended(&mut self) {
        if !self.ended {
            self.ended = true;
            self.running.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// The bdev is being removed (its descriptor's `Remove` event, on this thread): as
    /// bdevperf, the job stops submitting, ends failed, and closes its channel and descriptor
    /// once its I/O in flight has come back, so that the removal can finish while the other
    /// jobs run on.
    #[cold]
    pub(crate) fn on_removed(&mut self) {
        if self.removed || self.desc.is_none() {
            return;
        }
        self.removed = true;
        self.stopping = true;
        self.status = JobStatus::Failed;
        tracing::warn!(
            "job '{}': bdev '{}' is being removed: stopping the job",
            self.plan.label(),
            self.plan.bdev
        );
        if self.outstanding == 0 {
            if self.end_tsc == 0 {
                self.end_tsc = clock::ticks();
            }
            self.close();
            self.ended();
        }
    }

    /// Closes the channel, then the descriptor (no I/O of the job is in flight).
    #[cold]
    fn close(&mut self) {
        self.ch = None;
        self.desc = None;
    }

    /// A verify job's next I/O: a write of fresh pattern data to a slot no other I/O of the
    /// job is using (read back and checked when it completes).
    #[inline(never)]
    fn submit_verify_write(&mut self, mut io: Box<BdevIo>, s: usize) {
        let slot = self.gen.next_free(&self.busy);
        self.busy.insert(slot);
        self.generation = self.generation.wrapping_add(1);
        let off = self.plan.slot_offset(slot);
        verify::fill(
            self.bufs.slice_mut(s),
            self.plan.block_size as usize,
            off,
            self.plan.verify_seed,
            self.generation,
        );
        // Filling took a while: date the write from now, not from the completion.
        ferrite_bdev::restamp();
        self.slots[s] = Slot {
            phase: Phase::VerifyWrite,
            offset_slot: slot,
            generation: self.generation,
            submit_tsc: 0,
            timed_out: false,
            verify_start: 0,
        };
        io.prep_write(self.slot_blocks(slot), self.io_blocks, on_done);
        self.send(io, s);
    }

    /// Points a read or write at slot `s`'s buffer and submits it.
    #[inline(always)]
    fn send(&mut self, mut io: Box<BdevIo>, s: usize) {
        if matches!(
            io.io_type(),
            ferrite_bdev::IoType::Read | ferrite_bdev::IoType::Write
        ) {
            let buf = self.bufs.ptr(s);
            // The I/O of a slot keeps its segment from one submission to the next (the bdev
            // layer hands segments back as submitted): set it only when it differs.
            if io.iovs().len() != 1 || io.iovs()[0].base != buf {
                let iov = [IoVec {
                    base: buf,
                    len: self.bufs.size(),
                }];
                // SAFETY: slot `s`'s buffer belongs to this I/O until it completes; the job
                // (and its buffers) outlives every I/O it submits (the job ends only at
                // outstanding 0).
                unsafe { io.set_iovs(&iov) };
            }
        }
        if self.track_timeouts {
            self.slots[s].submit_tsc = clock::ticks();
        }
        self.send_raw(io, s);
    }

    /// Handles a completion: records it and resubmits the I/O (or retires it).
    #[inline]
    fn complete(&mut self, io: Box<BdevIo>, s: usize) {
        let lat = match io.latency_ticks() {
            0 => self.ticks_to_ns(clock::ticks().wrapping_sub(io.submit_tsc())),
            t => self.ticks_to_ns(t),
        };
        let ok = io.status() == IoStatus::Success;
        // The common case inline: a plain I/O that succeeded.
        if ok && self.slots[s].phase == Phase::Io {
            self.stats.record(lat, self.plan.io_size, true);
            return self.submit_next(io, s);
        }
        self.complete_other(io, s, lat, ok)
    }

    /// [`Job::complete`] for a failed I/O or a verify step.
    #[inline(never)]
    fn complete_other(&mut self, mut io: Box<BdevIo>, s: usize, lat: u64, ok: bool) {
        let bytes = self.plan.io_size;
        match self.slots[s].phase {
            // As bdevperf: a verify write and its read-back count as one I/O, whose latency
            // runs from the write's submission to the read's completion.
            Phase::VerifyWrite if ok => self.slots[s].verify_start = io.submit_tsc(),
            Phase::VerifyRead => {
                let total = (io.submit_tsc() + io.latency_ticks())
                    .saturating_sub(self.slots[s].verify_start);
                self.stats.record(self.ticks_to_ns(total), bytes, ok);
            }
            _ => self.stats.record(lat, bytes, ok),
        }
        if !ok {
            if self.first_error.is_none() {
                // Formatted once per job, at its first failure: no allocation per I/O.
                self.first_error = Some(describe_failure(&self.plan.bdev, &io));
            }
            if self.status == JobStatus::Finished {
                self.status = JobStatus::Failed;
            }
            if self.stop_on_failure {
                self.stopping = true;
            }
        }
        match self.slots[s].phase {
            Phase::VerifyWrite if ok && !self.removed => {
                // Read back what was just written, into a poisoned buffer.
                let slot = self.slots[s].offset_slot;
                self.bufs.slice_mut(s).fill(POISON);
                ferrite_bdev::restamp();
                self.slots[s].phase = Phase::VerifyRead;
                io.prep_read(self.slot_blocks(slot), self.io_blocks, on_done);
                let iov = [IoVec {
                    base: self.bufs.ptr(s),
                    len: self.bufs.size(),
                }];
                // SAFETY: as in submit_next.
                unsafe { io.set_iovs(&iov) };
                if self.track_timeouts {
                    self.slots[s].submit_tsc = clock::ticks();
                }
                self.send_raw(io, s);
                return;
            }
            Phase::VerifyRead => {
                let st = self.slots[s];
                if ok {
                    let off = self.plan.slot_offset(st.offset_slot);
                    if let Err(m) = verify::check(
                        self.bufs.slice(s),
                        self.plan.block_size as usize,
                        off,
                        self.plan.verify_seed,
                        st.generation,
                    ) {
                        if self.mismatch.is_none() {
                            self.mismatch = Some(format!("bdev '{}': {m}", self.plan.bdev));
                        }
                        self.status = JobStatus::Failed;
                        self.stopping = true;
                    }
                }
                self.busy.remove(st.offset_slot);
            }
            Phase::VerifyWrite => {
                let slot = self.slots[s].offset_slot;
                self.busy.remove(slot);
            }
            _ => {}
        }
        self.submit_next(io, s);
    }

    /// Submits `io` as prepared. The channel is closed only once no I/O is outstanding, so
    /// the closed case is cold (it retires the I/O unsubmitted).
    #[inline(always)]
    fn send_raw(&mut self, io: Box<BdevIo>, s: usize) {
        match &self.ch {
            Some(ch) => ch.submit(io),
            None => self.retire_unsent(io, s),
        }
    }

    /// The channel is closed (the bdev was removed): `io` is retired without being sent.
    #[cold]
    #[inline(never)]
    fn retire_unsent(&mut self, io: Box<BdevIo>, s: usize) {
        self.retire(io, s);
    }

    /// Counts I/O outstanding longer than `limit_ticks` (once each).
    pub(crate) fn check_timeouts(&mut self, limit_ticks: u64) -> usize {
        let now = clock::ticks();
        let mut n = 0;
        for i in 0..self.slots.len() {
            let sl = &mut self.slots[i];
            if sl.phase != Phase::Idle
                && !sl.timed_out
                && now.wrapping_sub(sl.submit_tsc) > limit_ticks
            {
                sl.timed_out = true;
                n += 1;
            }
        }
        for _ in 0..n {
            self.stats.record_timeout();
        }
        n
    }
}

/// One line for a failed I/O: "Nvme0n1: read at offset 4096 failed: NVMe status LBA Out of
/// Range (sct 0 sc 0x80)", or the bdev layer's status when the device said nothing.
pub fn describe_failure(bdev: &str, io: &BdevIo) -> String {
    let off = io.offset_blocks() * u64::from(io.block_size());
    let t = io.io_type().spdk_name();
    match io.device_status() {
        Some(d) => format!("{bdev}: {t} at offset {off} failed: {d}"),
        None => format!("{bdev}: {t} at offset {off} failed: {:?}", io.status()),
    }
}

/// Completion callback of every bench I/O.
pub(crate) fn on_done(io: Box<BdevIo>) {
    let [job, slot] = io.user;
    // SAFETY: `user[0]` is the address of the job's cell, set by `submit_next`; the job is
    // boxed in this thread's `BenchLocal` and stays there until every I/O it submitted has
    // come back through here (the list is taken only once `outstanding` is 0 for all jobs).
    let cell = unsafe { &*(job as *const RefCell<Job>) };
    cell.borrow_mut().complete(io, slot as usize);
}

/// Completion of a periodic reset (reset workload).
pub(crate) fn on_reset_done(io: Box<BdevIo>) {
    ferrite_bdev::free_io(io);
}
