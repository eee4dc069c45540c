//! The controller: reset and enable, the admin queue, Identify, Set Features (number of
//! queues), I/O queue creation and deletion, abort, controller reset.
//!
//! Thread contract: every method may be called from any thread. Admin commands hold the admin
//! lock and wait for their completion (polling, bounded by `admin_timeout_ms`): they belong on
//! the control path (attach, channel creation, reset), never on the I/O path. [`Controller::abort`]
//! and [`Controller::poll_admin`] never wait.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::identify::{parse_ctrlr, parse_ns, parse_ns_list, parse_ns_uuid, CtrlrData, NsData};
use crate::qpair::{DataDir, QpConfig, QueuePair};
use crate::regs::{self, Bar, Cap, Dma};
use crate::spec::{self, Sqe, Status};
use crate::{ErrorKind, NvmeError, Result};

/// Controller options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CtrlrOpts {
    /// Admin queue entries.
    pub admin_entries: u16,
    /// Entries per I/O queue (capped by CAP.MQES).
    pub io_entries: u16,
    /// I/O queue pairs to ask for with Set Features.
    pub io_queues: u16,
    /// Bounce buffers per I/O queue pair.
    pub bounce_count: u16,
    /// Admin command timeout.
    pub admin_timeout_ms: u64,
}

impl Default for CtrlrOpts {
    fn default() -> Self {
        Self {
            admin_entries: 32,
            io_entries: 256,
            io_queues: 64,
            bounce_count: 32,
            admin_timeout_ms: 10_000,
        }
    }
}

/// Cookie of admin commands sent without waiting (aborts): their completions are dropped.
const NOWAIT: u64 = u64::MAX;

/// An enabled controller.
pub struct Controller {
    bar: Arc<dyn Bar>,
    dma: Arc<dyn Dma>,
    cap: Cap,
    page: usize,
    stride: usize,
    opts: CtrlrOpts,
    admin: Mutex<QueuePair>,
    data: CtrlrData,
    granted: Mutex<u16>,
    qids: Mutex<Vec<bool>>,
    max_xfer: usize,
    failed: AtomicBool,
    /// Between [`Controller::disable`] and the end of [`Controller::enable`]'s wait for
    /// CSTS.RDY: no queue exists, so admin commands are refused at once (`QueueDown`) instead
    /// of waiting out their timeout (a reactor creating or dropping a channel during a reset
    /// would otherwise spin for seconds).
    disabled: AtomicBool,
}

fn wait_ready(bar: &dyn Bar, want: bool, timeout_ms: u64) -> Result<()> {
    let start = Instant::now();
    loop {
        let csts = bar.read32(regs::CSTS);
        if csts == u32::MAX {
            return Err(NvmeError::new(
                ErrorKind::Controller,
                "controller registers read all ones: the device is gone",
            ));
        }
        if want && csts & regs::CSTS_CFS != 0 {
            return Err(NvmeError::new(
                ErrorKind::Controller,
                "controller fatal status (CSTS.CFS) while enabling",
            ));
        }
        if (csts & regs::CSTS_RDY != 0) == want {
            return Ok(());
        }
        if start.elapsed() > Duration::from_millis(timeout_ms.max(500)) {
            return Err(NvmeError::new(
                ErrorKind::Timeout,
                format!(
                    "controller did not become {} within {} ms (CSTS {csts:#x})",
                    if want { "ready" } else { "disabled" },
                    timeout_ms.max(500)
                ),
            ));
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

impl Controller {
    /// Resets and enables the controller behind `bar`, creates the admin queue, identifies the
    /// controller and asks for `opts.io_queues` I/O queue pairs.
    pub fn init(bar: Arc<dyn Bar>, dma: Arc<dyn Dma>, opts: CtrlrOpts) -> Result<Self> {
        let cap = Cap(bar.read64(regs::CAP));
        if cap.0 == u64::MAX {
            return Err(NvmeError::new(
                ErrorKind::Controller,
                "controller registers read all ones: the device is gone",
            ));
        }
        if !cap.nvm_css() {
            return Err(NvmeError::new(
                ErrorKind::Controller,
                "controller does not support the NVM command set",
            ));
        }
        let page = cap.mps_min().max(4096);
        if page > cap.mps_max() || page > 65536 {
            return Err(NvmeError::new(
                ErrorKind::Controller,
                format!("unsupported controller page size {page}"),
            ));
        }
        let stride = cap.doorbell_stride();
        let mqes = cap.max_queue_entries().min(u16::MAX as u32) as u16;
        let admin_entries = opts.admin_entries.clamp(2, mqes.min(4096));
        let admin = QueuePair::new(
            QpConfig {
                qid: 0,
                entries: admin_entries,
                page,
                stride,
                bounce_count: 0,
                bounce_size: 0,
            },
            bar.clone(),
            dma.clone(),
        )?;
        let mut c = Self {
            bar,
            dma,
            cap,
            page,
            stride,
            opts,
            admin: Mutex::new(admin),
            data: CtrlrData::default(),
            granted: Mutex::new(0),
            qids: Mutex::new(Vec::new()),
            max_xfer: 0,
            failed: AtomicBool::new(false),
            disabled: AtomicBool::new(true),
        };
        c.enable()?;
        let ident = c.identify(spec::CNS_CTRLR, 0)?;
        c.data = parse_ctrlr(&ident);
        c.max_xfer = c
            .data
            .max_transfer(cap.mps_min())
            .unwrap_or(1 << 20)
            .min(page / 8 * page) // one PRP list page
            .min(1 << 20);
        Ok(c)
    }

    /// Disables the controller (CC.EN = 0, waiting for CSTS.RDY = 0): every queue is gone and
    /// no command runs afterwards. The queue pairs must then be failed
    /// ([`QueuePair::fail_all`]) before [`enable`](Self::enable) and
    /// [`recreate_io_qpair`](Self::recreate_io_qpair).
    pub fn disable(&self) -> Result<()> {
        self.disabled.store(true, Ordering::Release);
        let cc = self.bar.read32(regs::CC);
        if cc & regs::CC_EN != 0 {
            self.bar.write32(regs::CC, cc & !regs::CC_EN);
        }
        wait_ready(&*self.bar, false, self.cap.timeout_ms())
    }

    /// (Re-)enables the controller: disables it first if needed, sets up the admin queue and
    /// asks for the I/O queues again. Outstanding admin commands are dropped.
    pub fn enable(&self) -> Result<()> {
        self.disable()?;
        {
            let mut a = self.admin_lock();
            a.fail_all(Status::ABORTED_SQ_DELETION, |_, _| {});
            a.restart();
            let n = a.entries() as u32 - 1;
            self.bar.write32(regs::AQA, n | (n << 16));
            self.bar.write64(regs::ASQ, a.sq_iova());
            self.bar.write64(regs::ACQ, a.cq_iova());
        }
        self.bar.write32(regs::CC, regs::cc_value(self.page));
        wait_ready(&*self.bar, true, self.cap.timeout_ms())?;
        self.disabled.store(false, Ordering::Release);
        let (_, dw0) = self.admin_cmd(spec::set_num_queues(self.opts.io_queues), None)?;
        let granted = ((dw0 & 0xffff) as u16)
            .min((dw0 >> 16) as u16)
            .saturating_add(1);
        let granted = granted.min(self.opts.io_queues);
        *self.granted.lock().unwrap_or_else(|p| p.into_inner()) = granted;
        let mut q = self.qids.lock().unwrap_or_else(|p| p.into_inner());
        if q.len() != granted as usize {
            q.resize(granted as usize, false);
        }
        self.failed.store(false, Ordering::Release);
        Ok(())
    }

    fn admin_lock(&self) -> MutexGuard<'_, QueuePair> {
        self.admin.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs an admin command and waits for it. `buf` is the data region (one page or less).
    /// A non-success status is an [`ErrorKind::Command`] error naming it; while the controller
    /// is disabled (a reset between [`disable`](Self::disable) and
    /// [`enable`](Self::enable)) the command is refused, or given up, at once with
    /// [`ErrorKind::QueueDown`].
    pub fn admin_cmd(
        &self,
        cmd: Sqe,
        buf: Option<(crate::DmaRegion, DataDir)>,
    ) -> Result<(Status, u32)> {
        let opc = cmd.opcode();
        let down = || {
            NvmeError::new(
                ErrorKind::QueueDown,
                format!("admin command {opc:#04x}: the controller is disabled (being reset)"),
            )
        };
        if self.disabled.load(Ordering::Acquire) {
            return Err(down());
        }
        let mut a = self.admin_lock();
        let (dir, seg) = match buf {
            Some((r, d)) => (d, Some((r.vaddr as *const u8, r.len))),
            None => (DataDir::None, None),
        };
        let now = ferrite_reactor::clock::ticks();
        let cookie = now & 0x7fff_ffff_ffff_ffff;
        a.submit(cmd, dir, seg.into_iter(), cookie, now)
            .map_err(|e| {
                NvmeError::new(
                    ErrorKind::Controller,
                    format!("admin command {opc:#04x} could not be queued: {e:?}"),
                )
            })?;
        a.ring();
        let start = Instant::now();
        let mut result = None;
        loop {
            a.process_completions(usize::MAX, |c, st, dw0, _| {
                if c == cookie {
                    result = Some((st, dw0));
                }
            });
            if let Some((st, dw0)) = result {
                if !st.is_success() {
                    return Err(NvmeError::new(
                        ErrorKind::Command,
                        format!("admin command {opc:#04x} failed: {st}"),
                    ));
                }
                return Ok((st, dw0));
            }
            if self.disabled.load(Ordering::Acquire) {
                // Disabled while we waited: the command is gone with the admin queue.
                return Err(down());
            }
            if start.elapsed() > Duration::from_millis(self.opts.admin_timeout_ms) {
                return Err(NvmeError::new(
                    ErrorKind::Timeout,
                    format!(
                        "admin command {opc:#04x} timed out after {} ms",
                        self.opts.admin_timeout_ms
                    ),
                ));
            }
            std::thread::yield_now();
        }
    }

    fn identify(&self, cns: u8, nsid: u32) -> Result<Box<[u8; 4096]>> {
        let r = self.dma.alloc(4096, self.page)?;
        let res = self.admin_cmd(spec::identify(cns, nsid), Some((r, DataDir::FromDevice)));
        let mut out = Box::new([0u8; 4096]);
        if res.is_ok() {
            // SAFETY: the region holds 4096 bytes the controller finished writing.
            out.copy_from_slice(unsafe { std::slice::from_raw_parts(r.vaddr, 4096) });
        }
        self.dma.free(r);
        res.map(|_| out)
    }

    /// Identify Controller data.
    pub fn data(&self) -> &CtrlrData {
        &self.data
    }
    /// CAP register.
    pub fn cap(&self) -> Cap {
        self.cap
    }
    /// Memory page size in use.
    pub fn page_size(&self) -> usize {
        self.page
    }
    /// Largest transfer per command in bytes.
    pub fn max_transfer(&self) -> usize {
        self.max_xfer
    }
    /// I/O queue pairs the controller granted.
    pub fn granted_io_queues(&self) -> u16 {
        *self.granted.lock().unwrap_or_else(|p| p.into_inner())
    }
    /// I/O queue pairs in use.
    pub fn io_queues_in_use(&self) -> usize {
        self.qids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .filter(|b| **b)
            .count()
    }
    /// The DMA implementation (to register memory).
    pub fn dma(&self) -> &Arc<dyn Dma> {
        &self.dma
    }

    /// Active namespace IDs (CNS 2; all of 1..=NN if the controller refuses that list).
    pub fn active_namespaces(&self) -> Result<Vec<u32>> {
        match self.identify(spec::CNS_ACTIVE_NS, 0) {
            Ok(b) => Ok(parse_ns_list(&b).collect()),
            Err(e) if e.kind() == ErrorKind::Command => Ok((1..=self.data.nn.min(1024)).collect()),
            Err(e) => Err(e),
        }
    }

    /// Identify Namespace `nsid` (and its UUID from the identification descriptors, when the
    /// controller has them); `None` if inactive or in an unusable format.
    pub fn namespace(&self, nsid: u32) -> Result<Option<NsData>> {
        let Some(mut ns) = parse_ns(&*self.identify(spec::CNS_NS, nsid)?) else {
            return Ok(None);
        };
        if let Ok(d) = self.identify(spec::CNS_NS_DESC, nsid) {
            ns.uuid = parse_ns_uuid(&d).unwrap_or([0; 16]);
        }
        Ok(Some(ns))
    }

    fn io_cfg(&self, qid: u16) -> QpConfig {
        QpConfig {
            qid,
            entries: self
                .opts
                .io_entries
                .clamp(2, self.cap.max_queue_entries().min(4096) as u16),
            page: self.page,
            stride: self.stride,
            bounce_count: self.opts.bounce_count,
            bounce_size: self.max_xfer,
        }
    }

    /// Creates an I/O queue pair (the next free queue ID). Fails with
    /// [`ErrorKind::Busy`] when every granted queue is in use.
    pub fn create_io_qpair(&self) -> Result<QueuePair> {
        let qid = {
            let mut q = self.qids.lock().unwrap_or_else(|p| p.into_inner());
            let Some(i) = q.iter().position(|b| !*b) else {
                return Err(NvmeError::new(
                    ErrorKind::Busy,
                    format!(
                        "all {} I/O queue pairs the controller granted are in use",
                        q.len()
                    ),
                ));
            };
            q[i] = true;
            i as u16 + 1
        };
        let res = QueuePair::new(self.io_cfg(qid), self.bar.clone(), self.dma.clone()).and_then(
            |mut qp| {
                self.create_queues(&qp)?;
                qp.restart();
                Ok(qp)
            },
        );
        if res.is_err() {
            self.release_qid(qid);
        }
        res
    }

    fn create_queues(&self, qp: &QueuePair) -> Result<()> {
        let (qid, n) = (qp.qid(), qp.entries());
        self.admin_cmd(spec::create_cq(qid, n, qp.cq_iova()), None)?;
        if let Err(e) = self.admin_cmd(spec::create_sq(qid, n, qp.sq_iova(), qid), None) {
            let _ = self.admin_cmd(spec::delete_queue(false, qid), None);
            return Err(e);
        }
        Ok(())
    }

    /// Re-creates a queue pair's queues after a reset (same ID and memory); the queue pair
    /// must have been failed ([`QueuePair::fail_all`]) while the controller was disabled.
    pub fn recreate_io_qpair(&self, qp: &mut QueuePair) -> Result<()> {
        self.create_queues(qp)?;
        qp.restart();
        Ok(())
    }

    fn release_qid(&self, qid: u16) {
        let mut q = self.qids.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(b) = q.get_mut(qid as usize - 1) {
            *b = false;
        }
    }

    /// Deletes a queue pair's queues and frees its queue ID. Outstanding commands are failed
    /// with "Command Aborted due to SQ Deletion" (cookies to `f`).
    pub fn delete_io_qpair(&self, mut qp: QueuePair, f: impl FnMut(u64, Status)) {
        let qid = qp.qid();
        // A failed or disabled controller has no queues left to delete.
        if !self.failed.load(Ordering::Acquire)
            && !self.disabled.load(Ordering::Acquire)
            && !qp.is_down()
        {
            let _ = self.admin_cmd(spec::delete_queue(true, qid), None);
            let _ = self.admin_cmd(spec::delete_queue(false, qid), None);
        }
        qp.fail_all(Status::ABORTED_SQ_DELETION, f);
        self.release_qid(qid);
    }

    /// Sends Abort for command `cid` of queue `sqid` without waiting; the command then
    /// completes on its own queue (with "Command Abort Requested" if the abort took). Returns
    /// false if the admin queue is busy or full (try again later, or reset).
    pub fn abort(&self, sqid: u16, cid: u16) -> bool {
        let Ok(mut a) = self.admin.try_lock() else {
            return false;
        };
        let ok = a
            .submit(
                spec::abort(sqid, cid),
                DataDir::None,
                std::iter::empty(),
                NOWAIT,
                0,
            )
            .is_ok();
        a.ring();
        ok
    }

    /// Reaps admin completions of commands nobody waits for (aborts) and checks controller
    /// health. Returns true if the controller reports a fatal status or is gone (reset it).
    pub fn poll_admin(&self) -> bool {
        if let Ok(mut a) = self.admin.try_lock() {
            a.process_completions(64, |_, _, _, _| {});
        }
        let csts = self.bar.read32(regs::CSTS);
        let fatal = csts == u32::MAX || csts & regs::CSTS_CFS != 0;
        if fatal {
            self.failed.store(true, Ordering::Release);
        }
        fatal
    }

    /// True if the registers read all ones (the device was removed or is inaccessible).
    pub fn is_gone(&self) -> bool {
        self.bar.read32(regs::CSTS) == u32::MAX
    }

    /// Marks the controller failed (queues are not deleted through admin commands anymore).
    pub fn set_failed(&self) {
        self.failed.store(true, Ordering::Release);
    }

    /// Shuts the controller down (CC.SHN normal, then disable); best effort.
    pub fn shutdown(&self) {
        let cc = self.bar.read32(regs::CC);
        if cc & regs::CC_EN != 0 && cc != u32::MAX {
            self.bar.write32(regs::CC, (cc & !(3 << 14)) | (1 << 14));
            let start = Instant::now();
            while (self.bar.read32(regs::CSTS) >> 2) & 3 != 2
                && start.elapsed() < Duration::from_millis(self.cap.timeout_ms().max(500))
            {
                std::thread::sleep(Duration::from_micros(200));
            }
        }
        let _ = self.disable();
    }
}
