//! An in-memory model of an NVMe controller, for tests: registers (CAP, CC, CSTS, AQA, ASQ,
//! ACQ, doorbells with a configurable stride), submission queues read from memory, completion
//! entries posted with phase bits, admin commands (Identify, Set Features, queue creation and
//! deletion, Abort) and I/O commands (Read, Write, Flush, Compare, fused Compare-and-Write,
//! Write Zeroes, Dataset Management) executed against a RAM disk.
//!
//! Memory: [`ModelDma`] hands out heap memory whose bus address is its virtual address and
//! records it; the model refuses (Data Transfer Error) any address not recorded, as an IOMMU
//! would. In `auto` mode a doorbell write executes the queue at once; otherwise commands wait
//! for [`Model::step`] (commands in flight, queue full, timeouts, resets).
//!
//! Nothing here allocates after construction, so zero-allocation tests can run against it.

use std::alloc::Layout;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::regs::{self, Bar, Dma, DmaRegion};
use crate::spec::{self, admin, io, Cqe, DsmRange, Sqe, Status};
use crate::table::IovaTable;
use crate::{ErrorKind, NvmeError, Result};

/// Queues the model supports (admin + 64 I/O).
const MAX_Q: usize = 65;
const PAGE: usize = 4096;

/// How the model is built.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// Namespaces: (nsid, blocks).
    pub namespaces: Vec<(u32, u64)>,
    /// Logical block size.
    pub block_size: u32,
    /// Maximum queue entries (CAP.MQES + 1).
    pub max_entries: u16,
    /// Doorbell stride exponent (CAP.DSTRD).
    pub dstrd: u8,
    /// I/O queue pairs granted.
    pub max_io_queues: u16,
    /// MDTS.
    pub mdts: u8,
    /// Execute commands on the doorbell write.
    pub auto: bool,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            namespaces: vec![(1, 2048)],
            block_size: 512,
            max_entries: 1024,
            dstrd: 0,
            max_io_queues: 4,
            mdts: 5,
            auto: true,
        }
    }
}

#[derive(Clone, Copy, Default)]
struct Sq {
    live: bool,
    base: u64,
    size: u16,
    head: u16,
    tail: u16,
    cqid: u16,
}

#[derive(Clone, Copy, Default)]
struct Cq {
    live: bool,
    base: u64,
    size: u16,
    tail: u16,
    head: u16,
    phase: bool,
}

struct State {
    cfg_auto: bool,
    cc: u32,
    csts: u32,
    aqa: u32,
    asq: u64,
    acq: u64,
    sq: [Sq; MAX_Q],
    cq: [Cq; MAX_Q],
    disk: Vec<u8>,
    /// (nsid, first byte in disk, blocks)
    ns: Vec<(u32, usize, u64)>,
    inject: Option<(u8, Status, u32)>,
    granted: u16,
    scratch: Box<[u8; PAGE]>,
    held_compare: Option<(u16, Sqe)>,
    removed: bool,
}

/// The model controller (implements [`Bar`]). See the module documentation.
pub struct Model {
    cfg: ModelConfig,
    st: Mutex<State>,
    dma: Arc<ModelDma>,
    doorbells: AtomicU64,
    executed: AtomicU64,
}

/// Memory for the model: heap allocations whose bus address is their address.
#[derive(Default)]
pub struct ModelDma {
    table: IovaTable,
    owned: Mutex<Vec<(usize, Layout)>>,
}

impl Dma for ModelDma {
    fn alloc(&self, len: usize, align: usize) -> Result<DmaRegion> {
        let layout = Layout::from_size_align(len.max(1), align.max(64))
            .map_err(|e| NvmeError::new(ErrorKind::InvalidArgument, e.to_string()))?;
        // SAFETY: non-zero size.
        let p = unsafe { std::alloc::alloc_zeroed(layout) };
        if p.is_null() {
            return Err(NvmeError::new(
                ErrorKind::NoMemory,
                "model DMA allocation failed",
            ));
        }
        if !self.table.insert(p as usize, len, p as u64) {
            // SAFETY: allocated above with this layout.
            unsafe { std::alloc::dealloc(p, layout) };
            return Err(NvmeError::new(ErrorKind::NoMemory, "model DMA table full"));
        }
        self.owned
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((p as usize, layout));
        Ok(DmaRegion {
            vaddr: p,
            iova: p as u64,
            len,
        })
    }

    fn free(&self, r: DmaRegion) {
        self.table.remove(r.vaddr as usize);
        let mut o = self.owned.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(i) = o.iter().position(|(a, _)| *a == r.vaddr as usize) {
            let (a, l) = o.swap_remove(i);
            // SAFETY: allocated by `alloc` with this layout and not freed before.
            unsafe { std::alloc::dealloc(a as *mut u8, l) };
        }
    }

    fn register(&self, vaddr: *mut u8, len: usize) -> Result<()> {
        if self.table.insert(vaddr as usize, len, vaddr as u64) {
            Ok(())
        } else {
            Err(NvmeError::new(ErrorKind::NoMemory, "model DMA table full"))
        }
    }

    fn translate(&self, vaddr: *const u8, len: usize) -> Option<u64> {
        self.table.translate(vaddr as usize, len)
    }
}

impl Drop for ModelDma {
    fn drop(&mut self) {
        for (a, l) in self
            .owned
            .get_mut()
            .unwrap_or_else(|p| p.into_inner())
            .drain(..)
        {
            // SAFETY: allocated by `alloc` with this layout and not freed before.
            unsafe { std::alloc::dealloc(a as *mut u8, l) };
        }
    }
}

impl Model {
    /// A model with `cfg`'s namespaces (zero-filled).
    pub fn new(cfg: ModelConfig) -> Arc<Model> {
        let bs = cfg.block_size as usize;
        let mut ns = Vec::new();
        let mut off = 0;
        for &(id, blocks) in &cfg.namespaces {
            ns.push((id, off, blocks));
            off += blocks as usize * bs;
        }
        Arc::new(Model {
            st: Mutex::new(State {
                cfg_auto: cfg.auto,
                cc: 0,
                csts: 0,
                aqa: 0,
                asq: 0,
                acq: 0,
                sq: [Sq::default(); MAX_Q],
                cq: [Cq::default(); MAX_Q],
                disk: vec![0; off],
                ns,
                inject: None,
                granted: 0,
                scratch: Box::new([0; PAGE]),
                held_compare: None,
                removed: false,
            }),
            cfg,
            dma: Arc::new(ModelDma::default()),
            doorbells: AtomicU64::new(0),
            executed: AtomicU64::new(0),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.st.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The model's DMA memory.
    pub fn dma(&self) -> Arc<ModelDma> {
        self.dma.clone()
    }
    /// Switches between executing on the doorbell and waiting for [`step`](Self::step).
    pub fn set_auto(&self, auto: bool) {
        self.lock().cfg_auto = auto;
    }
    /// Executes every queued command of every queue; returns how many.
    pub fn step(&self) -> usize {
        let mut st = self.lock();
        let mut n = 0;
        for q in 0..MAX_Q {
            n += self.run_queue(&mut st, q, usize::MAX);
        }
        n
    }
    /// Executes at most `max` queued commands of queue `qid`.
    pub fn step_queue(&self, qid: u16, max: usize) -> usize {
        let mut st = self.lock();
        self.run_queue(&mut st, qid as usize, max)
    }
    /// Commands submitted (doorbell rung) and not executed yet.
    pub fn queued(&self) -> usize {
        let st = self.lock();
        st.sq
            .iter()
            .filter(|s| s.live)
            .map(|s| (s.tail as usize + s.size as usize - s.head as usize) % s.size as usize)
            .sum()
    }
    /// Makes the next `count` commands with opcode `opc` (I/O commands only) fail with `st`.
    pub fn inject(&self, opc: u8, st: Status, count: u32) {
        self.lock().inject = Some((opc, st, count));
    }
    /// Sets CSTS.CFS (controller fatal status).
    pub fn set_fatal(&self) {
        self.lock().csts |= regs::CSTS_CFS;
    }
    /// Surprise removal: registers read all ones and writes are ignored from now on.
    pub fn remove(&self) {
        self.lock().removed = true;
    }
    /// Doorbell writes seen.
    pub fn doorbells(&self) -> u64 {
        self.doorbells.load(Ordering::Relaxed)
    }
    /// Commands executed.
    pub fn executed(&self) -> u64 {
        self.executed.load(Ordering::Relaxed)
    }
    /// Copies bytes of namespace `nsid` at `off` into `buf`.
    pub fn read_disk(&self, nsid: u32, off: usize, buf: &mut [u8]) {
        let st = self.lock();
        if let Some(&(_, base, _)) = st.ns.iter().find(|n| n.0 == nsid) {
            buf.copy_from_slice(&st.disk[base + off..base + off + buf.len()]);
        }
    }
    /// Writes `buf` into namespace `nsid` at `off`.
    pub fn write_disk(&self, nsid: u32, off: usize, buf: &[u8]) {
        let mut st = self.lock();
        if let Some(&(_, base, _)) = st.ns.iter().find(|n| n.0 == nsid) {
            st.disk[base + off..base + off + buf.len()].copy_from_slice(buf);
        }
    }

    fn reg_write(&self, st: &mut State, off: usize, v: u32) {
        match off {
            regs::CC => {
                let was = st.cc & regs::CC_EN != 0;
                st.cc = v;
                let now = v & regs::CC_EN != 0;
                if (v >> 14) & 3 != 0 {
                    st.csts = (st.csts & !(3 << 2)) | (2 << 2);
                }
                if was && !now {
                    st.sq = [Sq::default(); MAX_Q];
                    st.cq = [Cq::default(); MAX_Q];
                    st.held_compare = None;
                    st.csts &= !(regs::CSTS_RDY | regs::CSTS_CFS);
                } else if !was && now {
                    let n_sq = (st.aqa & 0xfff) as u16 + 1;
                    let n_cq = ((st.aqa >> 16) & 0xfff) as u16 + 1;
                    st.sq[0] = Sq {
                        live: true,
                        base: st.asq,
                        size: n_sq,
                        ..Sq::default()
                    };
                    st.cq[0] = Cq {
                        live: true,
                        base: st.acq,
                        size: n_cq,
                        phase: true,
                        ..Cq::default()
                    };
                    st.csts = (st.csts | regs::CSTS_RDY) & !(3 << 2);
                }
            }
            regs::AQA => st.aqa = v,
            regs::ASQ => st.asq = (st.asq & !0xffff_ffff) | v as u64,
            o if o == regs::ASQ + 4 => st.asq = (st.asq & 0xffff_ffff) | ((v as u64) << 32),
            regs::ACQ => st.acq = (st.acq & !0xffff_ffff) | v as u64,
            o if o == regs::ACQ + 4 => st.acq = (st.acq & 0xffff_ffff) | ((v as u64) << 32),
            o if o >= regs::DOORBELL_BASE => {
                self.doorbells.fetch_add(1, Ordering::Relaxed);
                let stride = 4usize << self.cfg.dstrd;
                let idx = (o - regs::DOORBELL_BASE) / stride;
                let q = idx / 2;
                if q >= MAX_Q || !(o - regs::DOORBELL_BASE).is_multiple_of(stride) {
                    return;
                }
                if idx.is_multiple_of(2) {
                    if st.sq[q].live && (v as u16) < st.sq[q].size {
                        st.sq[q].tail = v as u16;
                        if st.cfg_auto || q == 0 {
                            self.run_queue(st, q, usize::MAX);
                        }
                    }
                } else if st.cq[q].live && (v as u16) < st.cq[q].size {
                    st.cq[q].head = v as u16;
                }
            }
            _ => {}
        }
    }

    fn run_queue(&self, st: &mut State, q: usize, max: usize) -> usize {
        let mut n = 0;
        while n < max && st.sq[q].live && st.sq[q].head != st.sq[q].tail {
            let s = st.sq[q];
            let cq = &st.cq[s.cqid as usize];
            if !cq.live || (cq.tail + 1) % cq.size == cq.head {
                break; // completion queue full: wait for the host
            }
            // SAFETY: the queue's memory was given by the host at creation and stays mapped.
            let cmd =
                unsafe { std::ptr::read_volatile((s.base as *const Sqe).add(s.head as usize)) };
            st.sq[q].head = (s.head + 1) % s.size;
            n += 1;
            self.executed.fetch_add(1, Ordering::Relaxed);
            let (status, dw0) = if q == 0 {
                self.admin(st, &cmd)
            } else {
                match self.io(st, q as u16, &cmd) {
                    Some(r) => r,
                    None => continue, // first half of a fused pair: completes with the second
                }
            };
            self.post(st, q, cmd.cid(), status, dw0);
        }
        n
    }

    fn post(&self, st: &mut State, q: usize, cid: u16, status: Status, dw0: u32) {
        let sqhd = st.sq[q].head;
        let cqid = st.sq[q].cqid as usize;
        let cq = &mut st.cq[cqid];
        let e = Cqe {
            dw0,
            dw1: 0,
            sq: sqhd as u32 | ((q as u32) << 16),
            status_cid: cid as u32 | ((cq.phase as u32) << 16) | ((status.0 as u32) << 17),
        };
        // SAFETY: the completion queue's memory was given by the host and stays mapped.
        unsafe { std::ptr::write_volatile((cq.base as *mut Cqe).add(cq.tail as usize), e) };
        cq.tail += 1;
        if cq.tail == cq.size {
            cq.tail = 0;
            cq.phase = !cq.phase;
        }
    }

    fn mapped(&self, iova: u64, len: usize) -> bool {
        self.dma.translate(iova as *const u8, len).is_some()
    }

    /// Calls `f(ptr, len)` for each piece of the command's data; false if an address is not
    /// mapped (the command then fails with Data Transfer Error).
    fn walk(&self, cmd: &Sqe, len: usize, mut f: impl FnMut(*mut u8, usize)) -> bool {
        let off = (cmd.prp1 as usize) & (PAGE - 1);
        let first = len.min(PAGE - off);
        if !self.mapped(cmd.prp1, first) {
            return false;
        }
        f(cmd.prp1 as *mut u8, first);
        let mut left = len - first;
        if left == 0 {
            return true;
        }
        if left <= PAGE {
            if !self.mapped(cmd.prp2, left) {
                return false;
            }
            f(cmd.prp2 as *mut u8, left);
            return true;
        }
        let entries = left.div_ceil(PAGE);
        if !self.mapped(cmd.prp2, entries * 8) || cmd.prp2 & 7 != 0 {
            return false;
        }
        for i in 0..entries {
            // SAFETY: checked mapped above.
            let p = unsafe { std::ptr::read_volatile((cmd.prp2 as *const u64).add(i)) };
            let l = left.min(PAGE);
            if p & (PAGE as u64 - 1) != 0 || !self.mapped(p, l) {
                return false;
            }
            f(p as *mut u8, l);
            left -= l;
        }
        true
    }

    fn admin(&self, st: &mut State, cmd: &Sqe) -> (Status, u32) {
        match cmd.opcode() {
            admin::IDENTIFY => {
                let page = &mut st.scratch;
                page.fill(0);
                match cmd.cdw10 as u8 {
                    spec::CNS_CTRLR => {
                        page[0..2].copy_from_slice(&0x1b36u16.to_le_bytes());
                        page[4..12].copy_from_slice(b"MODEL001");
                        page[24..34].copy_from_slice(b"Ferrite NVMe model".split_at(10).0);
                        page[77] = self.cfg.mdts;
                        page[516..520].copy_from_slice(&(st.ns.len() as u32 + 1).to_le_bytes());
                        page[520..522].copy_from_slice(&0x000du16.to_le_bytes());
                        page[522] = 1;
                        page[525] = 1;
                    }
                    spec::CNS_ACTIVE_NS => {
                        let mut ids: [u32; 64] = [0; 64];
                        for (i, n) in st.ns.iter().take(64).enumerate() {
                            ids[i] = n.0;
                        }
                        ids[..st.ns.len().min(64)].sort_unstable();
                        for (i, id) in ids.iter().enumerate() {
                            page[4 * i..4 * i + 4].copy_from_slice(&id.to_le_bytes());
                        }
                    }
                    spec::CNS_NS => {
                        let Some(&(_, _, blocks)) = st.ns.iter().find(|n| n.0 == cmd.nsid) else {
                            return (Status::new(0, 0x0b), 0);
                        };
                        page[0..8].copy_from_slice(&blocks.to_le_bytes());
                        page[8..16].copy_from_slice(&blocks.to_le_bytes());
                        let lbads = self.cfg.block_size.trailing_zeros();
                        page[128..132].copy_from_slice(&(lbads << 16).to_le_bytes());
                    }
                    _ => return (Status::INVALID_FIELD, 0),
                }
                let mut o = 0;
                let src = st.scratch.as_ptr();
                let ok = self.walk(cmd, PAGE, |p, l| {
                    // SAFETY: `p` is mapped host memory of `l` bytes; scratch has PAGE bytes.
                    unsafe { std::ptr::copy_nonoverlapping(src.add(o), p, l) };
                    o += l;
                });
                (if ok { Status::SUCCESS } else { Status(0x04) }, 0)
            }
            admin::SET_FEATURES if cmd.cdw10 as u8 == spec::FEAT_NUM_QUEUES => {
                let want = (cmd.cdw11 & 0xffff) as u16 + 1;
                st.granted = want.min(self.cfg.max_io_queues).min(MAX_Q as u16 - 1);
                let g = st.granted as u32 - 1;
                (Status::SUCCESS, g | (g << 16))
            }
            admin::CREATE_CQ => {
                let qid = (cmd.cdw10 & 0xffff) as usize;
                let size = (cmd.cdw10 >> 16) as u16 + 1;
                if qid == 0 || qid > st.granted as usize || st.cq[qid].live {
                    return (Status::new(1, 0x01), 0);
                }
                if size < 2 || size > self.cfg.max_entries {
                    return (Status::new(1, 0x02), 0);
                }
                st.cq[qid] = Cq {
                    live: true,
                    base: cmd.prp1,
                    size,
                    phase: true,
                    ..Cq::default()
                };
                (Status::SUCCESS, 0)
            }
            admin::CREATE_SQ => {
                let qid = (cmd.cdw10 & 0xffff) as usize;
                let size = (cmd.cdw10 >> 16) as u16 + 1;
                let cqid = (cmd.cdw11 >> 16) as usize;
                if qid == 0 || qid > st.granted as usize || st.sq[qid].live {
                    return (Status::new(1, 0x01), 0);
                }
                if cqid >= MAX_Q || !st.cq[cqid].live {
                    return (Status::new(1, 0x00), 0);
                }
                if size < 2 || size > self.cfg.max_entries {
                    return (Status::new(1, 0x02), 0);
                }
                st.sq[qid] = Sq {
                    live: true,
                    base: cmd.prp1,
                    size,
                    cqid: cqid as u16,
                    ..Sq::default()
                };
                (Status::SUCCESS, 0)
            }
            admin::DELETE_SQ | admin::DELETE_CQ => {
                let qid = (cmd.cdw10 & 0xffff) as usize;
                if qid == 0 || qid >= MAX_Q {
                    return (Status::new(1, 0x01), 0);
                }
                if cmd.opcode() == admin::DELETE_SQ {
                    // Commands still queued complete as aborted by the deletion.
                    while st.sq[qid].live && st.sq[qid].head != st.sq[qid].tail {
                        let s = st.sq[qid];
                        // SAFETY: queue memory given by the host.
                        let c = unsafe {
                            std::ptr::read_volatile((s.base as *const Sqe).add(s.head as usize))
                        };
                        st.sq[qid].head = (s.head + 1) % s.size;
                        self.post(st, qid, c.cid(), Status::ABORTED_SQ_DELETION, 0);
                    }
                    st.sq[qid].live = false;
                } else {
                    st.cq[qid].live = false;
                }
                (Status::SUCCESS, 0)
            }
            admin::ABORT => {
                let sqid = (cmd.cdw10 & 0xffff) as usize;
                let cid = (cmd.cdw10 >> 16) as u16;
                if sqid == 0 || sqid >= MAX_Q || !st.sq[sqid].live {
                    return (Status::SUCCESS, 1);
                }
                // Abort a command still queued: it completes with Abort Requested (and its
                // entry becomes a no-op the model skips).
                let s = st.sq[sqid];
                let mut i = s.head;
                while i != s.tail {
                    let p = (s.base as *mut Sqe).wrapping_add(i as usize);
                    // SAFETY: queue memory given by the host.
                    let mut c = unsafe { std::ptr::read_volatile(p) };
                    if c.cid() == cid && c.cdw0 & 0xff != 0xff {
                        c.cdw0 |= 0xff; // vendor no-op marker
                        c.cdw2[0] = 0xab07;
                        // SAFETY: as above.
                        unsafe { std::ptr::write_volatile(p, c) };
                        return (Status::SUCCESS, 0);
                    }
                    i = (i + 1) % s.size;
                }
                (Status::SUCCESS, 1)
            }
            _ => (Status::INVALID_OPCODE, 0),
        }
    }

    fn io(&self, st: &mut State, q: u16, cmd: &Sqe) -> Option<(Status, u32)> {
        if cmd.opcode() == 0xff && cmd.cdw2[0] == 0xab07 {
            return Some((Status::ABORT_REQUESTED, 0));
        }
        let bs = self.cfg.block_size as usize;
        if let Some((opc, s, n)) = st.inject {
            if opc == cmd.opcode() && n > 0 && cmd.fuse() != 1 {
                st.inject = if n > 1 { Some((opc, s, n - 1)) } else { None };
                return Some((s, 0));
            }
        }
        let Some(&(_, base, blocks)) = st.ns.iter().find(|n| n.0 == cmd.nsid) else {
            return Some((Status::new(0, 0x0b), 0));
        };
        let range = |c: &Sqe| -> Option<(usize, usize)> {
            let end = c.slba().checked_add(c.nlb() as u64)?;
            (end <= blocks).then(|| (base + c.slba() as usize * bs, c.nlb() as usize * bs))
        };
        if cmd.fuse() == 1 {
            st.held_compare = Some((q, *cmd));
            return None;
        }
        let compare = |st: &mut State, c: &Sqe| -> Status {
            let Some((off, len)) = range(c) else {
                return Status::LBA_OUT_OF_RANGE;
            };
            let mut o = off;
            let mut same = true;
            let disk = st.disk.as_ptr();
            let ok = self.walk(c, len, |p, l| {
                // SAFETY: `p` is mapped host memory of `l` bytes; the disk holds `off+len`.
                let (a, b) = unsafe {
                    (
                        std::slice::from_raw_parts(p, l),
                        std::slice::from_raw_parts(disk.add(o), l),
                    )
                };
                same &= a == b;
                o += l;
            });
            match (ok, same) {
                (false, _) => Status(0x04),
                (true, false) => Status::COMPARE_FAILURE,
                (true, true) => Status::SUCCESS,
            }
        };
        let st_ = match cmd.opcode() {
            io::FLUSH => Status::SUCCESS,
            io::READ | io::WRITE => {
                if cmd.fuse() == 2 {
                    let Some((hq, first)) = st.held_compare.take() else {
                        return Some((Status::new(0, 0x0a), 0));
                    };
                    if hq != q || first.slba() != cmd.slba() || first.nlb() != cmd.nlb() {
                        return Some((Status::new(0, 0x0a), 0));
                    }
                    let c = compare(st, &first);
                    // The compare's completion is posted first.
                    self.post(st, q as usize, first.cid(), c, 0);
                    if !c.is_success() {
                        return Some((Status::ABORTED_FAILED_FUSED, 0));
                    }
                }
                let Some((off, len)) = range(cmd) else {
                    return Some((Status::LBA_OUT_OF_RANGE, 0));
                };
                let write = cmd.opcode() == io::WRITE;
                let mut o = off;
                let disk = st.disk.as_mut_ptr();
                let ok = self.walk(cmd, len, |p, l| {
                    // SAFETY: `p` is mapped host memory of `l` bytes; the disk holds off+len.
                    unsafe {
                        if write {
                            std::ptr::copy_nonoverlapping(p, disk.add(o), l)
                        } else {
                            std::ptr::copy_nonoverlapping(disk.add(o), p, l)
                        }
                    };
                    o += l;
                });
                if ok {
                    Status::SUCCESS
                } else {
                    Status(0x04)
                }
            }
            io::COMPARE => compare(st, cmd),
            io::WRITE_ZEROES => match range(cmd) {
                Some((off, len)) => {
                    st.disk[off..off + len].fill(0);
                    Status::SUCCESS
                }
                None => Status::LBA_OUT_OF_RANGE,
            },
            io::DSM => {
                let nr = (cmd.cdw10 & 0xff) as usize + 1;
                let mut ranges = [DsmRange::default(); 256];
                let mut o = 0usize;
                let dst = ranges.as_mut_ptr() as *mut u8;
                let ok = self.walk(cmd, nr * 16, |p, l| {
                    // SAFETY: `p` is mapped host memory of `l` bytes; ranges holds 4 KiB.
                    unsafe { std::ptr::copy_nonoverlapping(p, dst.add(o), l) };
                    o += l;
                });
                if !ok {
                    return Some((Status(0x04), 0));
                }
                for r in &ranges[..nr] {
                    if r.slba + r.nlb as u64 > blocks {
                        return Some((Status::LBA_OUT_OF_RANGE, 0));
                    }
                    let off = base + r.slba as usize * bs;
                    st.disk[off..off + r.nlb as usize * bs].fill(0);
                }
                Status::SUCCESS
            }
            _ => Status::INVALID_OPCODE,
        };
        Some((st_, 0))
    }
}

impl Bar for Model {
    fn read32(&self, off: usize) -> u32 {
        let st = self.lock();
        if st.removed {
            return u32::MAX;
        }
        let cap: u64 = (self.cfg.max_entries as u64 - 1)
            | (1 << 16)
            | (2 << 24)
            | ((self.cfg.dstrd as u64) << 32)
            | (1 << 37);
        match off {
            regs::CAP => cap as u32,
            o if o == regs::CAP + 4 => (cap >> 32) as u32,
            regs::VS => 0x0001_0400,
            regs::CC => st.cc,
            regs::CSTS => st.csts,
            regs::AQA => st.aqa,
            _ => 0,
        }
    }

    fn write32(&self, off: usize, v: u32) {
        let mut st = self.lock();
        if st.removed {
            return;
        }
        self.reg_write(&mut st, off, v);
    }
}
