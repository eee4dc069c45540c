//! The split virtqueue, device side.
//!
//! Layout (virtio 1.x, 2.7): descriptor table of `size` × 16 bytes; available ring
//! `flags u16, idx u16, ring[size] u16, used_event u16`; used ring `flags u16, idx u16,
//! ring[size] {id u32, len u32}, avail_event u16`.

use std::sync::atomic::{fence, Ordering};

use crate::inflight::InflightQueue;
use crate::mem::{
    load_u16, range_ok, read_desc, store_u16, DescTable, RegionCache, F_INDIRECT, F_NEXT, F_WRITE,
    NO_HINT,
};
use crate::vring::{crash, CrashPoint, RingBase, RingConfig};
use crate::walk::{indirect_tail, status_segment, Builder, Span};
use crate::{Chain, ChainDefect, GuestMemory, PopBatch, RingError};

/// VIRTQ_USED_F_NO_NOTIFY.
const USED_F_NO_NOTIFY: u16 = 1;
/// VIRTQ_AVAIL_F_NO_INTERRUPT.
const AVAIL_F_NO_INTERRUPT: u16 = 1;

/// The EVENT_IDX rule: notify if `event` lies in `[old, new)` (mod 2^16).
#[inline]
pub(crate) fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

pub(crate) struct SplitRing {
    size: u16,
    desc: u64,
    avail: u64,
    used: u64,
    event_idx: bool,
    indirect: bool,
    /// Next available-ring index to read.
    last_avail: u16,
    /// The driver's avail->idx as last read.
    shadow_avail: u16,
    /// Next used-ring index to write.
    used_idx: u16,
    /// used->idx as last published.
    published: u16,
    /// used index at the last notification decision, once one was made.
    signalled: Option<u16>,
    /// Per head: popped and not yet pushed.
    busy: Vec<bool>,
    in_flight: usize,
    /// Heads pushed since the last publish (capacity `size`, never grows past it).
    batch: Vec<u16>,
    /// Used entries `(id, len)` pushed but not yet written to the used ring: `publish` writes
    /// them all with one region lookup, then the index (capacity `size`; written out early
    /// if a driver that re-offers heads before seeing them used would make it overflow).
    pending: Vec<(u16, u32)>,
    /// Used-ring index the first entry of `pending` goes to.
    pending_at: u16,
    inflight: Option<InflightQueue>,
    counter: u64,
    resubmit: Vec<u16>,
    resubmit_pos: usize,
    /// Region numbers (not pointers: see [`crate::mem::find_region_hinted`]) where the ring's
    /// areas and the last request's buffers were found, looked at first by the next call.
    ring_hint: usize,
    data_hint: usize,
    /// Test hook: where to stop as if crashed.
    pub(crate) crash: Option<CrashPoint>,
}

fn cfg_err(what: &str, addr: u64) -> RingError {
    RingError::Config(format!(
        "{what} at {addr:#x} misaligned or outside guest memory"
    ))
}

impl SplitRing {
    pub(crate) fn new(
        mem: &GuestMemory,
        cfg: &RingConfig,
        base: RingBase,
    ) -> Result<Self, RingError> {
        let n = u64::from(cfg.size);
        let a = cfg.addrs;
        if !a.desc.is_multiple_of(16) || !range_ok(mem, a.desc, 16 * n) {
            return Err(cfg_err("descriptor table", a.desc));
        }
        if !a.driver.is_multiple_of(2) || !range_ok(mem, a.driver, 6 + 2 * n) {
            return Err(cfg_err("available ring", a.driver));
        }
        if !a.device.is_multiple_of(4) || !range_ok(mem, a.device, 6 + 8 * n) {
            return Err(cfg_err("used ring", a.device));
        }
        let used_idx = load_u16(mem, a.device + 2, Ordering::Acquire)
            .ok_or(RingError::Memory { addr: a.device })?;
        Ok(SplitRing {
            size: cfg.size,
            desc: a.desc,
            avail: a.driver,
            used: a.device,
            event_idx: cfg.event_idx,
            indirect: cfg.indirect,
            last_avail: base.avail,
            shadow_avail: base.avail,
            used_idx,
            published: used_idx,
            signalled: None,
            busy: vec![false; usize::from(cfg.size)],
            in_flight: 0,
            batch: Vec::with_capacity(usize::from(cfg.size)),
            pending: Vec::with_capacity(usize::from(cfg.size)),
            pending_at: used_idx,
            inflight: None,
            counter: 0,
            resubmit: Vec::new(),
            resubmit_pos: 0,
            ring_hint: NO_HINT,
            data_hint: NO_HINT,
            crash: None,
        })
    }

    pub(crate) fn base(&self) -> RingBase {
        RingBase {
            avail: self.last_avail,
            used: self.used_idx,
        }
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    pub(crate) fn resubmit_pending(&self) -> usize {
        self.resubmit.len() - self.resubmit_pos
    }

    /// Walks the chain at `head` into `out`, looking for its buffers first in `cache`'s
    /// region and in `*other` (the last other region a buffer lay in, left there for the
    /// next walk over the same memory).
    fn walk<'m>(
        &self,
        cache: &mut RegionCache<'m>,
        mem: &'m GuestMemory,
        head: u16,
        out: &mut Chain,
        hint: &mut usize,
        other: &mut Span,
    ) -> Result<(), ChainDefect> {
        // At most one region lookup for the whole walk when the table lies in one region
        // (none when it is the region the available ring was just read from).
        let table = DescTable::resolve(cache, mem, self.desc, self.size);
        let mut b = Builder::seeded(cache, *other, *hint);
        let r = self.walk_chain(&mut b, table, mem, head, out);
        *hint = b.hint;
        *other = b.other();
        r
    }

    #[inline]
    fn walk_chain(
        &self,
        b: &mut Builder,
        table: Option<DescTable<'_>>,
        mem: &GuestMemory,
        head: u16,
        out: &mut Chain,
    ) -> Result<(), ChainDefect> {
        let mut i = head;
        let mut steps: u16 = 0;
        loop {
            let at = self.desc + 16 * u64::from(i);
            let d = match &table {
                Some(t) => t.get(i),
                None => read_desc(mem, at),
            }
            .ok_or(ChainDefect::Unreadable { addr: at })?;
            let flags = d.w12;
            if flags & F_INDIRECT != 0 {
                if !self.indirect {
                    return Err(ChainDefect::IndirectNotNegotiated);
                }
                if steps != 0 || flags & F_NEXT != 0 {
                    return Err(ChainDefect::IndirectChained);
                }
                return b.indirect(mem, out, d.addr, d.len, false);
            }
            b.add(mem, out, d.addr, d.len, flags & F_WRITE != 0)?;
            if flags & F_NEXT == 0 {
                return Ok(());
            }
            if d.w14 >= self.size {
                return Err(ChainDefect::IndexOutOfRange {
                    index: d.w14,
                    size: self.size,
                });
            }
            steps += 1;
            if steps >= self.size {
                return Err(ChainDefect::Loop);
            }
            i = d.w14;
        }
    }

    /// The last descriptor `(addr, len, flags)` of the chain at `head`, following only its
    /// structure (links and indirect table, not the buffers), if that structure is sound:
    /// `None` on a link out of range, a loop, or an indirect descriptor the walk refuses.
    /// Touches at most `size` descriptors plus one indirect table.
    fn tail(&self, mem: &GuestMemory, head: u16) -> Option<(u64, u32, u16)> {
        let mut i = head;
        let mut steps: u16 = 0;
        loop {
            let d = read_desc(mem, self.desc + 16 * u64::from(i))?;
            let flags = d.w12;
            if flags & F_INDIRECT != 0 {
                if !self.indirect || steps != 0 || flags & F_NEXT != 0 {
                    return None;
                }
                return indirect_tail(mem, d.addr, d.len, false);
            }
            if flags & F_NEXT == 0 {
                return Some((d.addr, d.len, flags));
            }
            steps += 1;
            if d.w14 >= self.size || steps >= self.size {
                return None;
            }
            i = d.w14;
        }
    }

    fn walk_into<'m>(
        &mut self,
        cache: &mut RegionCache<'m>,
        mem: &'m GuestMemory,
        head: u16,
        out: &mut Chain,
        other: &mut Span,
    ) -> Result<bool, RingError> {
        out.reset(head);
        let mut hint = self.data_hint;
        let r = self.walk(cache, mem, head, out, &mut hint, other);
        self.data_hint = hint;
        self.ring_hint = cache.hint;
        match r {
            Ok(()) => Ok(true),
            Err(defect) => {
                out.count = 0;
                let status = self
                    .tail(mem, head)
                    .and_then(|(a, l, f)| status_segment(mem, a, l, f));
                Err(RingError::Chain {
                    id: head,
                    defect,
                    status,
                })
            }
        }
    }

    pub(crate) fn pop_resubmit(
        &mut self,
        mem: &GuestMemory,
        out: &mut Chain,
    ) -> Result<bool, RingError> {
        let Some(&head) = self.resubmit.get(self.resubmit_pos) else {
            return Ok(false);
        };
        self.resubmit_pos += 1;
        if self.resubmit_pos == self.resubmit.len() {
            self.resubmit = Vec::new();
            self.resubmit_pos = 0;
        }
        let mut other = Span::EMPTY;
        self.walk_into(
            &mut RegionCache::with_hint(self.ring_hint),
            mem,
            head,
            out,
            &mut other,
        )
    }

    pub(crate) fn pop(&mut self, mem: &GuestMemory, out: &mut Chain) -> Result<bool, RingError> {
        self.pop_in(&mut PopBatch::new(mem), out)
    }

    /// [`SplitRing::pop`] with the region lookups of `batch`'s earlier pops: one region
    /// lookup serves the index, the ring entries and (usually) the descriptor table and the
    /// requests' buffers of the whole batch.
    pub(crate) fn pop_in(
        &mut self,
        batch: &mut PopBatch<'_>,
        out: &mut Chain,
    ) -> Result<bool, RingError> {
        let mem = batch.mem;
        if self.resubmit_pos < self.resubmit.len() {
            return self.pop_resubmit(mem, out);
        }
        let cache = &mut batch.cache;
        cache.hint = self.ring_hint;
        if self.shadow_avail == self.last_avail {
            self.shadow_avail = cache
                .load_u16(mem, self.avail + 2, Ordering::Acquire)
                .ok_or(RingError::Memory { addr: self.avail })?;
            self.ring_hint = cache.hint;
            if self.shadow_avail == self.last_avail {
                return Ok(false);
            }
        }
        if self.shadow_avail.wrapping_sub(self.last_avail) > self.size {
            return Err(RingError::Broken(
                "available index moved by more than the queue size",
            ));
        }
        let slot = self.avail + 4 + 2 * u64::from(self.last_avail & (self.size - 1));
        let head = cache
            .load_u16(mem, slot, Ordering::Relaxed)
            .ok_or(RingError::Memory { addr: slot })?;
        if head >= self.size {
            return Err(RingError::Broken(
                "available ring holds a head index out of range",
            ));
        }
        if self.busy[usize::from(head)] {
            return Err(RingError::Broken(
                "available ring offers a head already in flight",
            ));
        }
        self.last_avail = self.last_avail.wrapping_add(1);
        self.busy[usize::from(head)] = true;
        self.in_flight += 1;
        if let Some(q) = &self.inflight {
            crash(self.crash, CrashPoint::PopPartial)?;
            q.split_fetched(head, self.counter)?;
            self.counter += 1;
        }
        self.walk_into(cache, mem, head, out, &mut batch.other)
    }

    #[inline]
    pub(crate) fn push_used(
        &mut self,
        mem: &GuestMemory,
        id: u16,
        written: u32,
    ) -> Result<(), RingError> {
        if id >= self.size || !self.busy[usize::from(id)] {
            return Err(RingError::Usage("push_used of an id that is not in flight"));
        }
        if let Some(q) = &self.inflight {
            q.split_batch_add(id)?;
        }
        if self.pending.len() == usize::from(self.size) {
            self.write_pending(&mut RegionCache::new(), mem)?;
        }
        self.pending.push((id, written));
        self.used_idx = self.used_idx.wrapping_add(1);
        self.busy[usize::from(id)] = false;
        self.in_flight -= 1;
        if self.inflight.is_some() {
            self.batch.push(id);
        }
        Ok(())
    }

    /// Writes the pending used entries into the used ring (not the index).
    fn write_pending<'m>(
        &mut self,
        cache: &mut RegionCache<'m>,
        mem: &'m GuestMemory,
    ) -> Result<(), RingError> {
        let mut at = self.pending_at;
        let mask = self.size - 1;
        // The whole ring of entries resolved once (`new` checked it lies in guest memory;
        // one region holds it unless the front-end split it): one range check per batch.
        match cache.host(mem, self.used + 4, 8 * u64::from(self.size)) {
            Some(ring) if (ring as usize).is_multiple_of(4) => {
                for &(id, len) in &self.pending {
                    // SAFETY: `host` checked that the `8 * size` bytes at `ring` lie in one
                    // mapped region of `mem` (borrowed for 'm), 4-aligned; `at & mask <
                    // size`. Guest-shared memory: atomic stores, as vm-memory's `store`.
                    unsafe {
                        let e = ring.add(8 * usize::from(at & mask));
                        let e = &*(e as *const [std::sync::atomic::AtomicU32; 2]);
                        e[0].store(u32::from(id).to_le(), Ordering::Relaxed);
                        e[1].store(len.to_le(), Ordering::Relaxed);
                    }
                    at = at.wrapping_add(1);
                }
            }
            _ => {
                for &(id, len) in &self.pending {
                    let elem = self.used + 4 + 8 * u64::from(at & mask);
                    cache
                        .store_u32(mem, elem, u32::from(id), Ordering::Relaxed)
                        .ok_or(RingError::Memory { addr: elem })?;
                    cache
                        .store_u32(mem, elem + 4, len, Ordering::Relaxed)
                        .ok_or(RingError::Memory { addr: elem })?;
                    at = at.wrapping_add(1);
                }
            }
        }
        self.pending.clear();
        self.pending_at = at;
        Ok(())
    }

    pub(crate) fn publish(&mut self, mem: &GuestMemory) -> Result<bool, RingError> {
        if self.used_idx == self.published {
            return Ok(false);
        }
        let old = self.published;
        let new = self.used_idx;
        // One region lookup for the batch's entries, the index and the driver's fields.
        let mut cache = RegionCache::with_hint(self.ring_hint);
        self.write_pending(&mut cache, mem)?;
        crash(self.crash, CrashPoint::PublishBeforeVisible)?;
        cache
            .store_u16(mem, self.used + 2, new, Ordering::Release)
            .ok_or(RingError::Memory { addr: self.used })?;
        self.published = new;
        crash(self.crash, CrashPoint::PublishAfterVisible)?;
        if let Some(q) = &self.inflight {
            q.split_batch_done(&self.batch, new)?;
        }
        self.batch.clear();
        // The driver's suppression fields must be read after the index is visible.
        fence(Ordering::SeqCst);
        let old = match self.signalled.replace(new) {
            Some(_) => old,
            None => return Ok(true),
        };
        if self.event_idx {
            let at = self.avail + 4 + 2 * u64::from(self.size);
            let used_event = cache
                .load_u16(mem, at, Ordering::Relaxed)
                .ok_or(RingError::Memory { addr: at })?;
            Ok(need_event(used_event, new, old))
        } else {
            let flags = cache
                .load_u16(mem, self.avail, Ordering::Relaxed)
                .ok_or(RingError::Memory { addr: self.avail })?;
            Ok(flags & AVAIL_F_NO_INTERRUPT == 0)
        }
    }

    fn set_used_flags(&self, mem: &GuestMemory, no_notify: bool) -> Result<(), RingError> {
        let flags = if no_notify { USED_F_NO_NOTIFY } else { 0 };
        store_u16(mem, self.used, flags, Ordering::Relaxed)
            .ok_or(RingError::Memory { addr: self.used })
    }

    pub(crate) fn disable_notify(&mut self, mem: &GuestMemory) -> Result<(), RingError> {
        if self.event_idx {
            // avail_event stays where it was: the driver kicks at most once more.
            return Ok(());
        }
        self.set_used_flags(mem, true)
    }

    pub(crate) fn enable_notify(&mut self, mem: &GuestMemory) -> Result<bool, RingError> {
        if self.resubmit_pending() > 0 {
            return Ok(true);
        }
        if self.event_idx {
            let at = self.used + 4 + 8 * u64::from(self.size);
            store_u16(mem, at, self.last_avail, Ordering::Relaxed)
                .ok_or(RingError::Memory { addr: at })?;
        } else {
            self.set_used_flags(mem, false)?;
        }
        // Publish the request for kicks before looking at the ring once more: a buffer the
        // driver adds after this fence is kicked, one added before it is seen here.
        fence(Ordering::SeqCst);
        self.shadow_avail = load_u16(mem, self.avail + 2, Ordering::Acquire)
            .ok_or(RingError::Memory { addr: self.avail })?;
        Ok(self.shadow_avail != self.last_avail)
    }

    pub(crate) fn attach_inflight(
        &mut self,
        mem: &GuestMemory,
        q: InflightQueue,
    ) -> Result<(), RingError> {
        if self.in_flight != 0 || self.inflight.is_some() {
            return Err(RingError::Usage("attach_inflight after chains were popped"));
        }
        let guest_used = load_u16(mem, self.used + 2, Ordering::Acquire)
            .ok_or(RingError::Memory { addr: self.used })?;
        let rec = q.split_recover(self.size, guest_used)?;
        if rec.fresh {
            self.inflight = Some(q);
            return Ok(());
        }
        self.used_idx = guest_used;
        self.published = guest_used;
        self.pending.clear();
        self.pending_at = guest_used;
        let n = rec.heads.len() as u16;
        self.last_avail = guest_used.wrapping_add(n);
        self.shadow_avail = self.last_avail;
        for &h in &rec.heads {
            self.busy[usize::from(h)] = true;
        }
        self.in_flight = rec.heads.len();
        self.counter = rec.counter;
        self.resubmit = rec.heads;
        self.resubmit_pos = 0;
        self.inflight = Some(q);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::need_event;

    #[test]
    fn need_event_window() {
        // notify iff event lies in [old, new), modulo 2^16
        assert!(need_event(5, 6, 5));
        assert!(!need_event(5, 5, 4));
        assert!(need_event(4, 8, 2));
        assert!(!need_event(1, 8, 2));
        assert!(need_event(65535, 2, 65534), "across the 16-bit wrap");
        assert!(!need_event(3, 3, 3), "empty window");
    }
}
