//! The NVMe data path: one I/O queue pair per (controller, thread), shared by every namespace
//! bdev of the controller on that thread, and a poller that rings the submission doorbell
//! (once per poll when `delay_cmd_submit`), reaps completions and checks timeouts.
//!
//! - `submit` builds the command (Read, Write, Flush, Dataset Management, Write Zeroes,
//!   Compare, fused Compare-and-Write) and queues it; the I/O's address is the command's
//!   cookie, so the I/O stays owned by the queue pair until its completion. A full queue
//!   completes the I/O with NOMEM: the bdev layer retries it (back-pressure, nothing lost).
//! - Segments the controller cannot reach are bounced by the driver (counted per queue pair).
//! - Completions: success; Compare Failure → miscompare; a failure without Do Not Retry is
//!   retried up to `bdev_retry_count` times (through NOMEM); commands failed by a controller
//!   reset are resubmitted once it is back; anything else fails the I/O and the status is
//!   counted by name on the controller (`bdev_nvme_get_controllers`), logged, and attached
//!   to the I/O ([`BdevIo::device_status`]) so its submitter can name it.
//! - Idle behaviour (adaptive mode): there is no interrupt or eventfd without MSI-X here, so
//!   the poller refuses to let the reactor sleep while commands are outstanding or a doorbell
//!   is pending; with nothing in flight it allows sleep (new I/O arrives by message).
//!
//! Thread contract: everything here runs on the thread that owns the channel.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use ferrite_bdev::{BackendChannel, BdevIo, DeviceStatus, IoStatus, IoType};
use ferrite_nvme::regs::DmaRegion;
use ferrite_nvme::spec::{self, io as opc, DsmRange};
use ferrite_nvme::{DataDir, ErrorKind, QueuePair, Status};
use ferrite_reactor::{clock, IoChannel, Poll, PollerHandle};

use crate::control::{CtrlrState, NvmeCtrlr};
use crate::opts::TimeoutAction;

/// DSM range lists per queue pair (one page each).
const DSM_PAGES: usize = 32;
/// Completions reaped per batch.
const BATCH: usize = 64;
/// Largest Write Zeroes per command (the NLB field is 16 bits).
const WZ_MAX: u64 = 65536;

// driver_ctx words of an I/O owned by this module.
const CTX_PARTS: usize = 0; // commands outstanding
const CTX_ERR: usize = 1; // first failure: status | 1 << 16
const CTX_RETRIES: usize = 2; // retries done
const CTX_DSM: usize = 3; // DSM page + 1
const CTX_NEXT: usize = 4; // next block to issue (write zeroes)
const CTX_MARK: usize = 5; // RETRY_MARK while a retry is on its way back
const RETRY_MARK: u64 = 0x6e76_6d65_7265_7472;

pub(crate) struct QpInner {
    pub(crate) ctrlr: Arc<NvmeCtrlr>,
    pub(crate) qp: Option<QueuePair>,
    dsm: Option<DmaRegion>,
    dsm_free: Vec<u16>,
    next_timeout_check: u64,
    timeout_ticks: u64,
    delay_submit: bool,
    action: TimeoutAction,
    retry_limit: i32,
}

/// The per-thread state shared by the namespaces' backend channels and the poller.
pub(crate) struct QpShared(pub(crate) Rc<RefCell<QpInner>>);

// SAFETY: every holder of the Rc (the controller channel in this thread's channel list, the
// poller registered on this thread) belongs to one lightweight thread and moves with it; the
// Rc and RefCell are never touched by two OS threads at once.
unsafe impl Send for QpShared {}

/// The controller's per-thread channel (an `IoDevice` channel).
pub(crate) struct CtrlrChannel {
    pub(crate) shared: QpShared,
    _poller: Option<PollerHandle>,
}

struct QpPoller(QpShared);

impl Poll for QpPoller {
    fn poll(&mut self) -> usize {
        poll_qp(&self.0 .0)
    }
    fn can_sleep(&mut self) -> bool {
        match self.0 .0.try_borrow() {
            Ok(i) => {
                i.qp.as_ref()
                    .map(|q| q.outstanding() == 0 && !q.ring_pending())
                    .unwrap_or(true)
            }
            Err(_) => false,
        }
    }
}

impl CtrlrChannel {
    /// Creates the thread's queue pair (admin commands: control path, at channel creation).
    /// A queue pair that cannot be created (the controller is being reset, or out of queues)
    /// leaves a channel that fails every I/O until a reset of the controller creates one.
    pub(crate) fn new(ctrlr: Arc<NvmeCtrlr>) -> CtrlrChannel {
        let o = crate::opts::current();
        let qp = match ctrlr.driver.create_io_qpair() {
            Ok(q) => Some(q),
            Err(e) => {
                tracing::error!(
                    "nvme controller '{}': no I/O queue pair for this thread: {e}; its I/O fails until a reset creates one",
                    ctrlr.name
                );
                None
            }
        };
        let dsm = match ctrlr.driver.dma().alloc(DSM_PAGES * 4096, 4096) {
            Ok(r) => Some(r),
            Err(e) => {
                tracing::warn!(
                    "nvme controller '{}': no DSM memory ({e}): unmap fails",
                    ctrlr.name
                );
                None
            }
        };
        let inner = QpInner {
            ctrlr,
            qp,
            dsm,
            dsm_free: (0..DSM_PAGES as u16).collect(),
            next_timeout_check: 0,
            timeout_ticks: clock::us_to_ticks(o.timeout_us),
            delay_submit: o.delay_cmd_submit,
            action: o.timeout_action(),
            retry_limit: o.bdev_retry_count,
        };
        let shared = Rc::new(RefCell::new(inner));
        let poller = ferrite_reactor::register_poller_obj(
            "nvme_poll",
            o.nvme_ioq_poll_period_us,
            Box::new(QpPoller(QpShared(shared.clone()))),
        )
        .map_err(|e| tracing::error!("nvme: cannot register the queue poller: {e}"))
        .ok();
        CtrlrChannel {
            shared: QpShared(shared),
            _poller: poller,
        }
    }
}

impl Drop for QpInner {
    fn drop(&mut self) {
        if let Some(qp) = self.qp.take() {
            let mut leftover = Vec::new();
            self.ctrlr
                .driver
                .delete_io_qpair(qp, |ck, _| leftover.push(ck));
            for ck in leftover {
                // SAFETY: cookies are I/O leaked by `issue`; each is completed once here.
                let io = unsafe { Box::from_raw(ck as *mut BdevIo) };
                io.complete(IoStatus::Failed);
            }
        }
        if let Some(r) = self.dsm.take() {
            self.ctrlr.driver.dma().free(r);
        }
    }
}

fn segs(v: &[ferrite_bdev::IoVec]) -> impl Iterator<Item = (*const u8, usize)> + Clone + '_ {
    v.iter().map(|s| (s.base as *const u8, s.len))
}

impl QpInner {
    fn now(&self) -> u64 {
        if self.timeout_ticks > 0 {
            clock::ticks()
        } else {
            0
        }
    }

    /// Issues the command(s) of `io`. Returns the I/O back if nothing was issued, with the
    /// status to complete it with.
    fn issue(&mut self, mut io: Box<BdevIo>) -> Result<(), (Box<BdevIo>, IoStatus)> {
        match self.ctrlr.state() {
            CtrlrState::Enabled => {}
            CtrlrState::Resetting => return Err((io, IoStatus::NoMem)),
            _ => return Err((io, IoStatus::Failed)),
        }
        let now = self.now();
        let nsid = io.driver_ctx[7] as u32;
        let Some(qp) = self.qp.as_mut() else {
            return Err((io, IoStatus::Failed));
        };
        let slba = io.offset_blocks();
        let nlb = io.num_blocks();
        let t = io.io_type();
        if matches!(
            t,
            IoType::Read | IoType::Write | IoType::Compare | IoType::CompareAndWrite
        ) && nlb > WZ_MAX
        {
            return Err((io, IoStatus::Invalid));
        }
        let ck = &*io as *const BdevIo as u64;
        let r = match t {
            IoType::Read => qp.submit(
                spec::rw(opc::READ, nsid, slba, nlb as u32),
                DataDir::FromDevice,
                segs(io.iovs()),
                ck,
                now,
            ),
            IoType::Write => qp.submit(
                spec::rw(opc::WRITE, nsid, slba, nlb as u32),
                DataDir::ToDevice,
                segs(io.iovs()),
                ck,
                now,
            ),
            IoType::Compare => qp.submit(
                spec::compare(nsid, slba, nlb as u32),
                DataDir::ToDevice,
                segs(io.iovs()),
                ck,
                now,
            ),
            IoType::CompareAndWrite => {
                let (c, w) = spec::compare_and_write(nsid, slba, nlb as u32);
                qp.submit_fused(c, segs(io.cmp_iovs()), w, segs(io.iovs()), ck, now)
            }
            IoType::Flush => qp.submit(
                spec::flush(nsid),
                DataDir::None,
                std::iter::empty(),
                ck,
                now,
            ),
            IoType::Unmap => {
                let (Some(region), Some(page)) = (self.dsm, self.dsm_free.last().copied()) else {
                    return Err((
                        io,
                        if self.dsm.is_some() {
                            IoStatus::NoMem
                        } else {
                            IoStatus::Failed
                        },
                    ));
                };
                let nr = nlb.div_ceil(u32::MAX as u64);
                if nr > 256 {
                    return Err((io, IoStatus::Invalid));
                }
                // SAFETY: DSM page `page` is free (ours until the command completes); it holds
                // 256 ranges.
                let ranges = unsafe {
                    std::slice::from_raw_parts_mut(
                        region.vaddr.add(page as usize * 4096) as *mut DsmRange,
                        256,
                    )
                };
                let mut lba = slba;
                let end = slba + nlb;
                for r in ranges.iter_mut().take(nr as usize) {
                    let n = (end - lba).min(u32::MAX as u64);
                    *r = DsmRange {
                        attrs: 0,
                        nlb: n as u32,
                        slba: lba,
                    };
                    lba += n;
                }
                let base = ranges.as_ptr() as *const u8;
                let res = qp.submit(
                    spec::dsm_deallocate(nsid, nr as u32),
                    DataDir::ToDevice,
                    std::iter::once((base, nr as usize * 16)),
                    ck,
                    now,
                );
                if res.is_ok() {
                    self.dsm_free.pop();
                    io.driver_ctx[CTX_DSM] = page as u64 + 1;
                }
                res
            }
            IoType::WriteZeroes => {
                io.driver_ctx[CTX_NEXT] = slba;
                io.driver_ctx[CTX_PARTS] = 0;
                let n = self.issue_zeroes(&mut io, now);
                if n == 0 {
                    return Err((io, IoStatus::NoMem));
                }
                let _ = Box::into_raw(io);
                return Ok(());
            }
            _ => return Err((io, IoStatus::Invalid)),
        };
        match r {
            Ok(_) => {
                io.driver_ctx[CTX_PARTS] = 1;
                if !self.delay_submit {
                    if let Some(q) = self.qp.as_mut() {
                        q.ring();
                    }
                }
                let _ = Box::into_raw(io);
                Ok(())
            }
            Err(e) => match e.kind() {
                ErrorKind::QueueFull | ErrorKind::QueueDown => Err((io, IoStatus::NoMem)),
                _ => Err((io, IoStatus::Invalid)),
            },
        }
    }

    /// Issues Write Zeroes commands for `io` from `driver_ctx[CTX_NEXT]` while slots are free;
    /// returns how many were issued.
    fn issue_zeroes(&mut self, io: &mut BdevIo, now: u64) -> usize {
        let nsid = io.driver_ctx[7] as u32;
        let end = io.offset_blocks() + io.num_blocks();
        let ck = io as *const BdevIo as u64;
        let Some(qp) = self.qp.as_mut() else { return 0 };
        let mut n = 0;
        while io.driver_ctx[CTX_NEXT] < end && qp.free_slots() > 1 {
            let lba = io.driver_ctx[CTX_NEXT];
            let cnt = (end - lba).min(WZ_MAX);
            if qp
                .submit(
                    spec::write_zeroes(nsid, lba, cnt as u32),
                    DataDir::None,
                    std::iter::empty(),
                    ck,
                    now,
                )
                .is_err()
            {
                break;
            }
            io.driver_ctx[CTX_NEXT] = lba + cnt;
            io.driver_ctx[CTX_PARTS] += 1;
            n += 1;
        }
        n
    }

    /// One command of `ck` finished with `st`.
    fn finish(&mut self, ck: u64, st: Status) {
        let ptr = ck as *mut BdevIo;
        // SAFETY: `ck` is an I/O leaked by `issue`, still outstanding (its parts count > 0).
        let io = unsafe { &mut *ptr };
        io.driver_ctx[CTX_PARTS] = io.driver_ctx[CTX_PARTS].saturating_sub(1);
        if !st.is_success() && io.driver_ctx[CTX_ERR] == 0 {
            io.driver_ctx[CTX_ERR] = st.0 as u64 | (1 << 16);
        }
        if io.io_type() == IoType::WriteZeroes
            && io.driver_ctx[CTX_ERR] == 0
            && self.ctrlr.state() == CtrlrState::Enabled
        {
            let now = self.now();
            self.issue_zeroes(io, now);
        }
        if io.driver_ctx[CTX_PARTS] > 0 {
            return;
        }
        if io.driver_ctx[CTX_DSM] != 0 {
            self.dsm_free.push((io.driver_ctx[CTX_DSM] - 1) as u16);
            io.driver_ctx[CTX_DSM] = 0;
        }
        // SAFETY: last part: take the I/O back (leaked in `issue`).
        let mut io = unsafe { Box::from_raw(ptr) };
        let status = self.io_status(&mut io);
        io.complete(status);
    }

    fn io_status(&self, io: &mut BdevIo) -> IoStatus {
        let e = io.driver_ctx[CTX_ERR];
        if e == 0 {
            if io.io_type() == IoType::WriteZeroes
                && io.driver_ctx[CTX_NEXT] < io.offset_blocks() + io.num_blocks()
            {
                return IoStatus::NoMem; // partly done (queue was full): redo, it is idempotent
            }
            return IoStatus::Success;
        }
        let st = Status(e as u16);
        if st.code() == Status::COMPARE_FAILURE {
            return IoStatus::Miscompare;
        }
        if st.code() == Status::ABORTED_SQ_DELETION && self.ctrlr.state() != CtrlrState::Failed {
            return IoStatus::NoMem; // failed by a reset: resubmitted once the controller is back
        }
        self.ctrlr.note_error(st);
        let retries = io.driver_ctx[CTX_RETRIES];
        if !st.dnr() && (self.retry_limit < 0 || retries < self.retry_limit as u64) {
            // The retry count survives the NOMEM resubmission (see `NsChannel::submit`).
            io.driver_ctx[CTX_RETRIES] = retries + 1;
            io.driver_ctx[CTX_MARK] = RETRY_MARK;
            return IoStatus::NoMem;
        }
        tracing::warn!(
            "nvme controller '{}': {:?} of {} blocks at {} failed: {st}",
            self.ctrlr.name,
            io.io_type(),
            io.num_blocks(),
            io.offset_blocks()
        );
        io.set_device_status(DeviceStatus::Nvme {
            sct: st.sct(),
            sc: st.sc(),
            name: st.name(),
        });
        IoStatus::Failed
    }
}

/// One poll: ring, reap, time-outs. Returns the work done.
fn poll_qp(shared: &Rc<RefCell<QpInner>>) -> usize {
    let Ok(mut inner) = shared.try_borrow_mut() else {
        return 0;
    };
    let mut work = 0;
    loop {
        let Some(qp) = inner.qp.as_mut() else {
            return work;
        };
        if qp.ring_pending() {
            qp.ring();
            work += 1;
        }
        let mut batch = [(0u64, Status(0)); BATCH];
        let mut n = 0;
        qp.process_completions(BATCH, |ck, st, _, data| {
            if let Some(d) = data {
                // SAFETY: `ck` is an outstanding I/O leaked by `issue`; its segments are
                // valid for writes until it completes.
                let io = unsafe { &*(ck as *const BdevIo) };
                scatter(io.iovs(), d);
            }
            batch[n] = (ck, st);
            n += 1;
        });
        for &(ck, st) in &batch[..n] {
            inner.finish(ck, st);
        }
        work += n;
        if n < BATCH {
            break;
        }
    }
    if inner.timeout_ticks > 0 {
        let now = clock::ticks();
        if now >= inner.next_timeout_check {
            inner.next_timeout_check = now + clock::us_to_ticks(1000);
            check_timeouts(&mut inner, now);
        }
    }
    work
}

fn check_timeouts(inner: &mut QpInner, now: u64) {
    let t = inner.timeout_ticks;
    let action = inner.action;
    let ctrlr = inner.ctrlr.clone();
    let Some(qp) = inner.qp.as_mut() else { return };
    let qid = qp.qid();
    let mut reset = false;
    qp.check_timeouts(now, t, |cid| {
        tracing::warn!(
            "nvme controller '{}': command {cid} on queue {qid} timed out",
            ctrlr.name
        );
        match action {
            TimeoutAction::Abort => {
                if !ctrlr.driver.abort(qid, cid) {
                    reset = true;
                }
            }
            TimeoutAction::Reset => reset = true,
            TimeoutAction::None => {}
        }
    });
    if reset {
        ctrlr.request_reset("command timeout");
    }
}

fn scatter(iovs: &[ferrite_bdev::IoVec], mut d: &[u8]) {
    for v in iovs {
        let n = v.len.min(d.len());
        // SAFETY: the segment is valid for `v.len` bytes of writes (submitter's contract).
        unsafe { std::ptr::copy_nonoverlapping(d.as_ptr(), v.base, n) };
        d = &d[n..];
        if d.is_empty() {
            break;
        }
    }
}

/// Fails every command of this thread's queue pair with "aborted by SQ deletion" (after the
/// controller was disabled for a reset).
pub(crate) fn fail_all(ch: &CtrlrChannel) {
    let mut inner = ch.shared.0.borrow_mut();
    let mut cks = Vec::new();
    if let Some(qp) = inner.qp.as_mut() {
        qp.fail_all(Status::ABORTED_SQ_DELETION, |ck, st| cks.push((ck, st)));
    }
    for (ck, st) in cks {
        inner.finish(ck, st);
    }
}

/// Re-creates this thread's queue pair on the re-enabled controller; a channel that has
/// none (created while the controller was disabled, or when creation failed) gets one now.
pub(crate) fn recreate(ch: &CtrlrChannel) -> ferrite_nvme::Result<()> {
    let mut inner = ch.shared.0.borrow_mut();
    let ctrlr = inner.ctrlr.clone();
    match inner.qp.as_mut() {
        Some(qp) => ctrlr.driver.recreate_io_qpair(qp),
        None => {
            inner.qp = Some(ctrlr.driver.create_io_qpair()?);
            Ok(())
        }
    }
}

/// Queue pair counters of this thread (for `bdev_nvme_get_controllers`).
pub(crate) fn qp_stats(ch: &CtrlrChannel) -> Option<ferrite_nvme::QpStats> {
    ch.shared
        .0
        .try_borrow()
        .ok()?
        .qp
        .as_ref()
        .map(|q| q.stats())
}

/// A namespace bdev's per-thread channel.
pub(crate) struct NsChannel {
    pub(crate) ch: Option<IoChannel<CtrlrChannel>>,
    pub(crate) nsid: u32,
}

impl BackendChannel for NsChannel {
    fn submit(&mut self, mut io: Box<BdevIo>) {
        let Some(ch) = self.ch.as_ref() else {
            io.complete(IoStatus::Failed);
            return;
        };
        let retries = if io.driver_ctx[CTX_MARK] == RETRY_MARK {
            io.driver_ctx[CTX_RETRIES]
        } else {
            0
        };
        io.driver_ctx = [0; 8];
        io.driver_ctx[CTX_RETRIES] = retries;
        io.driver_ctx[7] = self.nsid as u64;
        let Ok(mut inner) = ch.shared.0.try_borrow_mut() else {
            io.complete(IoStatus::NoMem);
            return;
        };
        if let Err((io, st)) = inner.issue(io) {
            io.complete(st);
        }
    }
}
