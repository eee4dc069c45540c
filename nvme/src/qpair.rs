//! A submission/completion queue pair: ring indices, phase bit, doorbells (batched), command
//! identifiers from a fixed slot table, PRP lists and bounce buffers per slot.
//!
//! Thread contract: a queue pair belongs to one thread (the lightweight thread of the channel
//! that uses it, or the controller's admin lock for queue 0). Nothing here allocates, locks or
//! makes a system call after [`QueuePair::new`]; the only MMIO is the doorbell writes.

use std::sync::atomic::{fence, Ordering};
use std::sync::Arc;

use crate::prp;
use crate::regs::{cq_doorbell, sq_doorbell, Bar, Dma, DmaRegion};
use crate::spec::{Cqe, Sqe, Status};
use crate::{ErrorKind, NvmeError, Result};

/// Direction of a command's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataDir {
    /// No data.
    None,
    /// Host to controller (Write, Compare, DSM ranges).
    ToDevice,
    /// Controller to host (Read, Identify).
    FromDevice,
}

// Why a submission was refused (fixed messages: refusing never allocates).
/// No free slot or submission entry: retry after completions (back-pressure).
const FULL: NvmeError = NvmeError::fixed(
    ErrorKind::QueueFull,
    "the queue pair is full (retry after completions)",
);
/// The queue is being reset or failed.
const DOWN: NvmeError = NvmeError::fixed(
    ErrorKind::QueueDown,
    "the queue pair is being reset or has failed",
);
/// The data could not be expressed and is larger than a bounce buffer, or is empty.
const INVALID: NvmeError = NvmeError::fixed(
    ErrorKind::InvalidArgument,
    "the data cannot be transferred: not expressible as PRPs and no bounce buffer fits it, or empty",
);

/// Counters of one queue pair.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QpStats {
    /// Commands submitted.
    pub submitted: u64,
    /// Commands completed (including failed and aborted).
    pub completed: u64,
    /// Submissions refused because the queue was full.
    pub full: u64,
    /// Transfers copied through a driver bounce buffer.
    pub bounced: u64,
    /// Doorbell writes (submission and completion).
    pub doorbells: u64,
    /// Commands that exceeded their timeout.
    pub timeouts: u64,
    /// Completions with an identifier the driver did not have outstanding (ignored).
    pub bad_completions: u64,
}

#[derive(Clone, Copy)]
struct Slot {
    busy: bool,
    cookie: u64,
    submit_tick: u64,
    abort_sent: bool,
    /// Bounce buffer index + direction, when bounced.
    bounce: Option<(u16, DataDir, u32)>,
    /// The other half of a fused pair, and the status it finished with if it finished first.
    partner: Option<u16>,
    partner_status: Option<Status>,
    /// First half of a fused pair: completes silently into its partner.
    silent: bool,
}

const EMPTY: Slot = Slot {
    busy: false,
    cookie: 0,
    submit_tick: 0,
    abort_sent: false,
    bounce: None,
    partner: None,
    partner_status: None,
    silent: false,
};

/// Sizes of a queue pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QpConfig {
    /// Queue identifier (0 = admin).
    pub qid: u16,
    /// Entries per ring (2..=CAP.MQES+1).
    pub entries: u16,
    /// Controller memory page size.
    pub page: usize,
    /// Doorbell stride (CAP.DSTRD).
    pub stride: usize,
    /// Bounce buffers and their size (0 buffers: layouts PRP cannot express fail).
    pub bounce_count: u16,
    /// Bytes per bounce buffer (the largest transfer).
    pub bounce_size: usize,
}

/// One queue pair. See the module documentation.
pub struct QueuePair {
    cfg: QpConfig,
    bar: Arc<dyn Bar>,
    dma: Arc<dyn Dma>,
    sq: DmaRegion,
    cq: DmaRegion,
    lists: DmaRegion,
    bounces: Option<DmaRegion>,
    bounce_free: Vec<u16>,
    sq_tail: u16,
    sq_head: u16,
    cq_head: u16,
    phase: bool,
    sq_db_pending: bool,
    slots: Box<[Slot]>,
    free: Vec<u16>,
    down: bool,
    stats: QpStats,
}

impl QueuePair {
    /// Allocates the rings, PRP lists (one page per slot) and bounce buffers. Does not tell the
    /// controller: the caller creates the queues (admin commands or AQA/ASQ/ACQ).
    pub fn new(cfg: QpConfig, bar: Arc<dyn Bar>, dma: Arc<dyn Dma>) -> Result<Self> {
        if cfg.entries < 2 {
            return Err(NvmeError::new(
                ErrorKind::InvalidArgument,
                format!("queue {} needs at least 2 entries", cfg.qid),
            ));
        }
        let n = cfg.entries as usize;
        let sq = dma.alloc(n * 64, cfg.page)?;
        let cq = match dma.alloc(n * 16, cfg.page) {
            Ok(r) => r,
            Err(e) => {
                dma.free(sq);
                return Err(e);
            }
        };
        let lists = match dma.alloc((n - 1) * cfg.page, cfg.page) {
            Ok(r) => r,
            Err(e) => {
                dma.free(sq);
                dma.free(cq);
                return Err(e);
            }
        };
        let bounces = if cfg.bounce_count > 0 {
            match dma.alloc(cfg.bounce_count as usize * cfg.bounce_size, cfg.page) {
                Ok(r) => Some(r),
                Err(e) => {
                    dma.free(sq);
                    dma.free(cq);
                    dma.free(lists);
                    return Err(e);
                }
            }
        } else {
            None
        };
        let slots = vec![EMPTY; n - 1].into_boxed_slice();
        let free: Vec<u16> = (0..(n - 1) as u16).rev().collect();
        let bounce_free: Vec<u16> = (0..cfg.bounce_count).rev().collect();
        Ok(Self {
            cfg,
            bar,
            dma,
            sq,
            cq,
            lists,
            bounces,
            bounce_free,
            sq_tail: 0,
            sq_head: 0,
            cq_head: 0,
            phase: true,
            sq_db_pending: false,
            slots,
            free,
            down: false,
            stats: QpStats::default(),
        })
    }

    /// Queue identifier.
    pub fn qid(&self) -> u16 {
        self.cfg.qid
    }
    /// Entries per ring.
    pub fn entries(&self) -> u16 {
        self.cfg.entries
    }
    /// Bus address of the submission ring.
    pub fn sq_iova(&self) -> u64 {
        self.sq.iova
    }
    /// Bus address of the completion ring.
    pub fn cq_iova(&self) -> u64 {
        self.cq.iova
    }
    /// Counters.
    pub fn stats(&self) -> QpStats {
        self.stats
    }
    /// Commands outstanding.
    pub fn outstanding(&self) -> usize {
        self.slots.len() - self.free.len()
    }
    /// Commands that can still be submitted now.
    pub fn free_slots(&self) -> usize {
        self.free.len()
    }
    /// The largest transfer a bounce buffer takes.
    pub fn bounce_size(&self) -> usize {
        self.cfg.bounce_size
    }

    fn sq_free_entries(&self) -> usize {
        let n = self.cfg.entries as usize;
        let used = (self.sq_tail as usize + n - self.sq_head as usize) % n;
        n - 1 - used
    }

    /// Submits `cmd` with the data in `segs` (virtual address, length) moving in `dir`.
    /// `cookie` comes back with the completion. The doorbell is not written: call
    /// [`ring`](Self::ring) once per batch (or pass `ring_now`).
    pub fn submit<I>(
        &mut self,
        cmd: Sqe,
        dir: DataDir,
        segs: I,
        cookie: u64,
        now: u64,
    ) -> Result<u16>
    where
        I: Iterator<Item = (*const u8, usize)> + Clone,
    {
        if self.down {
            return Err(DOWN);
        }
        if self.free.is_empty() || self.sq_free_entries() == 0 {
            self.stats.full += 1;
            return Err(FULL);
        }
        self.prepare(cmd, dir, segs, cookie, now)
    }

    /// Submits a fused Compare (`first`, data `cmp`) + Write (`second`, data `data`) pair;
    /// one completion comes back with `cookie`, carrying the first failure of the two.
    pub fn submit_fused<I, J>(
        &mut self,
        first: Sqe,
        cmp: I,
        second: Sqe,
        data: J,
        cookie: u64,
        now: u64,
    ) -> Result<u16>
    where
        I: Iterator<Item = (*const u8, usize)> + Clone,
        J: Iterator<Item = (*const u8, usize)> + Clone,
    {
        if self.down {
            return Err(DOWN);
        }
        if self.free.len() < 2 || self.sq_free_entries() < 2 {
            self.stats.full += 1;
            return Err(FULL);
        }
        let a = self.prepare(first, DataDir::ToDevice, cmp, cookie, now)?;
        let b = match self.prepare(second, DataDir::ToDevice, data, cookie, now) {
            Ok(b) => b,
            Err(e) => {
                // The first entry is already in the ring (not yet rung): take it back.
                self.sq_tail = (self.sq_tail + self.cfg.entries - 1) % self.cfg.entries;
                self.release(a);
                return Err(e);
            }
        };
        self.slots[a as usize].partner = Some(b);
        self.slots[a as usize].silent = true;
        self.slots[b as usize].partner = Some(a);
        Ok(b)
    }

    fn prepare<I>(
        &mut self,
        mut cmd: Sqe,
        dir: DataDir,
        segs: I,
        cookie: u64,
        now: u64,
    ) -> Result<u16>
    where
        I: Iterator<Item = (*const u8, usize)> + Clone,
    {
        let Some(cid) = self.free.pop() else {
            return Err(FULL);
        };
        let mut slot = EMPTY;
        if dir != DataDir::None {
            let page = self.cfg.page;
            let list_off = cid as usize * page;
            // SAFETY: the list region holds one page per slot; this slot's page is used only
            // by this command, which the controller has not been told about yet.
            let list = unsafe {
                std::slice::from_raw_parts_mut(self.lists.vaddr.add(list_off) as *mut u64, page / 8)
            };
            let list_iova = self.lists.iova + list_off as u64;
            match prp::build(&*self.dma, page, segs.clone(), list, list_iova) {
                Ok(p) => {
                    cmd.prp1 = p.prp1;
                    cmd.prp2 = p.prp2;
                }
                Err(e) if e.kind() == ErrorKind::EmptyTransfer => {
                    self.free.push(cid);
                    return Err(INVALID);
                }
                Err(_) => {
                    let total: usize = segs.clone().map(|s| s.1).sum();
                    let (Some(region), Some(b)) = (self.bounces, self.bounce_free.last().copied())
                    else {
                        self.free.push(cid);
                        return Err(if self.bounces.is_some() {
                            FULL
                        } else {
                            INVALID
                        });
                    };
                    if total > self.cfg.bounce_size || total == 0 {
                        self.free.push(cid);
                        return Err(INVALID);
                    }
                    self.bounce_free.pop();
                    let off = b as usize * self.cfg.bounce_size;
                    // SAFETY: bounce buffer `b` is ours until released; segments are valid
                    // for reading per the submitter's contract.
                    let base = unsafe { region.vaddr.add(off) };
                    if dir == DataDir::ToDevice {
                        let mut o = 0;
                        for (p, l) in segs {
                            // SAFETY: see above; `o + l <= total <= bounce_size`.
                            unsafe { std::ptr::copy_nonoverlapping(p, base.add(o), l) };
                            o += l;
                        }
                    }
                    let one = std::iter::once((base as *const u8, total));
                    match prp::build(&*self.dma, page, one, list, list_iova) {
                        Ok(p) => {
                            cmd.prp1 = p.prp1;
                            cmd.prp2 = p.prp2;
                        }
                        Err(_) => {
                            self.bounce_free.push(b);
                            self.free.push(cid);
                            return Err(INVALID);
                        }
                    }
                    slot.bounce = Some((b, dir, total as u32));
                    self.stats.bounced += 1;
                }
            }
        }
        slot.busy = true;
        slot.cookie = cookie;
        slot.submit_tick = now;
        self.slots[cid as usize] = slot;
        cmd.set_cid(cid);
        // SAFETY: sq_tail < entries; the entry is free (checked by the caller) and the
        // controller does not read it until the doorbell moves past it.
        unsafe {
            std::ptr::write_volatile((self.sq.vaddr as *mut Sqe).add(self.sq_tail as usize), cmd)
        };
        self.sq_tail = (self.sq_tail + 1) % self.cfg.entries;
        self.sq_db_pending = true;
        self.stats.submitted += 1;
        Ok(cid)
    }

    fn release(&mut self, cid: u16) {
        let s = &mut self.slots[cid as usize];
        if let Some((b, _, _)) = s.bounce.take() {
            self.bounce_free.push(b);
        }
        *s = EMPTY;
        self.free.push(cid);
    }

    /// Writes the submission doorbell if entries were queued since the last write.
    pub fn ring(&mut self) {
        if self.sq_db_pending {
            self.sq_db_pending = false;
            // Entries must be visible before the doorbell.
            fence(Ordering::SeqCst);
            self.bar.write32(
                sq_doorbell(self.cfg.qid, self.cfg.stride),
                self.sq_tail as u32,
            );
            self.stats.doorbells += 1;
        }
    }

    /// True if entries wait for [`ring`](Self::ring).
    pub fn ring_pending(&self) -> bool {
        self.sq_db_pending
    }

    /// Reaps up to `max` completions, calling `f(cookie, status, cdw0, bounce)` for each
    /// (`bounce` holds a bounced read's data, to copy to the submitter's segments). Writes
    /// the completion doorbell once. Returns the number reaped.
    pub fn process_completions(
        &mut self,
        max: usize,
        mut f: impl FnMut(u64, Status, u32, Option<&[u8]>),
    ) -> usize {
        let mut n = 0;
        let cqs = self.cq.vaddr as *const Cqe;
        while n < max {
            // SAFETY: cq_head < entries; the ring is ours and the controller writes whole
            // entries before flipping their phase bit; read the status word first.
            let sw = unsafe {
                std::ptr::read_volatile(std::ptr::addr_of!(
                    (*cqs.add(self.cq_head as usize)).status_cid
                ))
            };
            if (sw & (1 << 16) != 0) != self.phase {
                break;
            }
            fence(Ordering::Acquire);
            // SAFETY: as above.
            let cqe = unsafe { std::ptr::read_volatile(cqs.add(self.cq_head as usize)) };
            self.cq_head += 1;
            if self.cq_head == self.cfg.entries {
                self.cq_head = 0;
                self.phase = !self.phase;
            }
            n += 1;
            if (cqe.sq_head() as usize) < self.cfg.entries as usize {
                self.sq_head = cqe.sq_head();
            }
            self.complete_cid(cqe.cid(), cqe.status(), cqe.dw0, &mut f);
        }
        if n > 0 {
            self.bar.write32(
                cq_doorbell(self.cfg.qid, self.cfg.stride),
                self.cq_head as u32,
            );
            self.stats.doorbells += 1;
        }
        n
    }

    fn complete_cid(
        &mut self,
        cid: u16,
        status: Status,
        dw0: u32,
        f: &mut impl FnMut(u64, Status, u32, Option<&[u8]>),
    ) {
        let Some(slot) = self.slots.get(cid as usize).copied().filter(|s| s.busy) else {
            self.stats.bad_completions += 1;
            tracing::warn!(
                "nvme queue {}: completion for command {cid} that is not outstanding (ignored)",
                self.cfg.qid
            );
            return;
        };
        if let Some(p) = slot.partner {
            let other = self.slots[p as usize];
            if other.busy && other.partner == Some(cid) {
                // First half of the pair to finish: remember the status in the partner.
                self.slots[p as usize].partner_status = Some(status);
                self.slots[p as usize].partner = None;
                self.release(cid);
                return;
            }
        }
        // A fused pair reports the Compare's failure if it failed (the Write then says
        // "Aborted due to Failed Fused Command"), else the Write's status.
        let status = match slot.partner_status {
            Some(other) => {
                let (cmp, write) = if slot.silent {
                    (status, other)
                } else {
                    (other, status)
                };
                if cmp.is_success() {
                    write
                } else {
                    cmp
                }
            }
            None => status,
        };
        self.stats.completed += 1;
        let data = match (slot.bounce, self.bounces) {
            (Some((b, DataDir::FromDevice, len)), Some(r)) => {
                // SAFETY: bounce buffer `b` holds `len` bytes the controller wrote; it is
                // released only after the callback.
                Some(unsafe {
                    std::slice::from_raw_parts(
                        r.vaddr.add(b as usize * self.cfg.bounce_size),
                        len as usize,
                    )
                })
            }
            _ => None,
        };
        f(slot.cookie, status, dw0, data);
        self.release(cid);
    }

    /// Commands outstanding longer than `timeout` ticks at `now` for which no abort was sent
    /// yet: `f(cid)` is called for each and the command is marked. Returns how many.
    pub fn check_timeouts(&mut self, now: u64, timeout: u64, mut f: impl FnMut(u16)) -> usize {
        let mut n = 0;
        for (cid, s) in self.slots.iter_mut().enumerate() {
            if s.busy && !s.abort_sent && !s.silent && now.saturating_sub(s.submit_tick) > timeout {
                s.abort_sent = true;
                self.stats.timeouts += 1;
                n += 1;
                f(cid as u16);
            }
        }
        n
    }

    /// Fails every outstanding command with `status` (their cookies are handed to `f`) and
    /// empties the rings, as after the controller deleted the queue or was reset. The queue
    /// refuses submissions until [`restart`](Self::restart).
    pub fn fail_all(&mut self, status: Status, mut f: impl FnMut(u64, Status)) {
        self.down = true;
        for cid in 0..self.slots.len() {
            let s = self.slots[cid];
            if s.busy {
                if !s.silent || s.partner.is_none() {
                    self.stats.completed += 1;
                    f(s.cookie, status);
                }
                self.release(cid as u16);
            }
        }
        self.sq_tail = 0;
        self.sq_head = 0;
        self.cq_head = 0;
        self.phase = true;
        self.sq_db_pending = false;
        // SAFETY: the controller no longer uses the rings (disabled or queue deleted).
        unsafe { std::ptr::write_bytes(self.cq.vaddr, 0, self.cq.len) };
    }

    /// Marks the queue usable again after the controller re-created it.
    pub fn restart(&mut self) {
        self.down = false;
    }

    /// True while refusing submissions (reset in progress or failed).
    pub fn is_down(&self) -> bool {
        self.down
    }
}

impl Drop for QueuePair {
    fn drop(&mut self) {
        self.dma.free(self.sq);
        self.dma.free(self.cq);
        self.dma.free(self.lists);
        if let Some(b) = self.bounces.take() {
            self.dma.free(b);
        }
    }
}

// SAFETY: the queue pair's raw memory is only touched through `&mut self`; moving it to
// another OS thread (with its lightweight thread) is sound.
unsafe impl Send for QueuePair {}
