//! The packed virtqueue, device side (virtio 1.1+, 2.8).
//!
//! One descriptor ring of `size` × `{addr u64, len u32, id u16, flags u16}`; a descriptor is
//! available when its AVAIL bit equals the device's avail wrap counter and its USED bit does
//! not; the device returns a buffer by writing a used descriptor (both bits equal to its used
//! wrap counter) at its next used position, skipping as many positions as the chain had
//! descriptors. Event suppression: the driver's structure (`driver` address) says when the
//! device should interrupt, the device's (`device` address) when the driver should kick;
//! both are `{off_wrap u16, flags u16}` with flags ENABLE 0, DISABLE 1, DESC 2.

use std::sync::atomic::{fence, Ordering};

use crate::inflight::InflightQueue;
use crate::mem::{
    load_u16, range_ok, read_desc, store_u16, store_u32, RawDesc, F_INDIRECT, F_NEXT, F_WRITE,
};
use crate::split::need_event;
use crate::vring::{RingBase, RingConfig};
use crate::walk::Builder;
use crate::{Chain, ChainError, GuestMemory, RingError};

pub(crate) const P_AVAIL: u16 = 1 << 7;
pub(crate) const P_USED: u16 = 1 << 15;
const EV_ENABLE: u16 = 0;
const EV_DISABLE: u16 = 1;
const EV_DESC: u16 = 2;

/// Whether `flags` mark a descriptor available for a device whose avail wrap counter is `wrap`.
#[inline]
pub(crate) fn is_avail(flags: u16, wrap: bool) -> bool {
    (flags & P_AVAIL != 0) == wrap && (flags & P_USED != 0) != wrap
}

/// Ring position `pos` (with wrap counter) advanced by `n` descriptors.
#[inline]
pub(crate) fn advance(pos: u16, wrap: bool, n: u16, size: u16) -> (u16, bool) {
    let p = u32::from(pos) + u32::from(n);
    if p >= u32::from(size) {
        ((p - u32::from(size)) as u16, !wrap)
    } else {
        (p as u16, wrap)
    }
}

pub(crate) struct PackedRing {
    pub(crate) size: u16,
    desc: u64,
    driver_ev: u64,
    device_ev: u64,
    event_idx: bool,
    indirect: bool,
    next_avail: u16,
    avail_wrap: bool,
    next_used: u16,
    used_wrap: bool,
    /// First used descriptor of the unpublished batch: its position and the flags to store
    /// last (which make the whole batch visible).
    batch_head: Option<(u16, u16)>,
    /// Descriptors the used position advanced since the last notification decision.
    since_signal: u16,
    signalled: bool,
    /// Per buffer id: descriptors it occupies while in flight, 0 when not in flight.
    busy: Vec<u16>,
    /// Per buffer id: its head entry in the inflight region.
    entry: Vec<u16>,
    in_flight: usize,
    /// Buffer ids pushed since the last publish (capacity `size`).
    batch: Vec<u16>,
    inflight: Option<InflightQueue>,
    counter: u64,
    /// Head entries of the region to resubmit, in order.
    resubmit: Vec<u16>,
    resubmit_pos: usize,
}

fn cfg_err(what: &str, addr: u64) -> RingError {
    RingError::Config(format!(
        "{what} at {addr:#x} misaligned or outside guest memory"
    ))
}

fn mem_err(addr: u64) -> RingError {
    RingError::Memory { addr }
}

impl PackedRing {
    pub(crate) fn new(
        mem: &GuestMemory,
        cfg: &RingConfig,
        base: RingBase,
    ) -> Result<Self, RingError> {
        let a = cfg.addrs;
        if a.desc % 16 != 0 || !range_ok(mem, a.desc, 16 * u64::from(cfg.size)) {
            return Err(cfg_err("descriptor ring", a.desc));
        }
        if a.driver % 4 != 0 || !range_ok(mem, a.driver, 4) {
            return Err(cfg_err("driver event suppression", a.driver));
        }
        if a.device % 4 != 0 || !range_ok(mem, a.device, 4) {
            return Err(cfg_err("device event suppression", a.device));
        }
        let (next_avail, avail_wrap) = (base.avail & 0x7fff, base.avail & 0x8000 != 0);
        let (next_used, used_wrap) = (base.used & 0x7fff, base.used & 0x8000 != 0);
        if next_avail >= cfg.size || next_used >= cfg.size {
            return Err(RingError::Config(format!(
                "ring base {:#x}/{:#x} outside a ring of {}",
                base.avail, base.used, cfg.size
            )));
        }
        let n = usize::from(cfg.size);
        Ok(PackedRing {
            size: cfg.size,
            desc: a.desc,
            driver_ev: a.driver,
            device_ev: a.device,
            event_idx: cfg.event_idx,
            indirect: cfg.indirect,
            next_avail,
            avail_wrap,
            next_used,
            used_wrap,
            batch_head: None,
            since_signal: 0,
            signalled: false,
            busy: vec![0; n],
            entry: vec![0; n],
            in_flight: 0,
            batch: Vec::with_capacity(n),
            inflight: None,
            counter: 0,
            resubmit: Vec::new(),
            resubmit_pos: 0,
        })
    }

    pub(crate) fn base(&self) -> RingBase {
        RingBase {
            avail: self.next_avail | (u16::from(self.avail_wrap) << 15),
            used: self.next_used | (u16::from(self.used_wrap) << 15),
        }
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight
    }

    pub(crate) fn resubmit_pending(&self) -> usize {
        self.resubmit.len() - self.resubmit_pos
    }

    fn desc_addr(&self, pos: u16) -> u64 {
        self.desc + 16 * u64::from(pos)
    }

    /// Reads the descriptor at `pos` if it is available for wrap counter `wrap`.
    fn avail_desc(
        &self,
        mem: &GuestMemory,
        pos: u16,
        wrap: bool,
    ) -> Result<Option<RawDesc>, RingError> {
        let at = self.desc_addr(pos);
        let flags = load_u16(mem, at + 14, Ordering::Acquire).ok_or(mem_err(at))?;
        if !is_avail(flags, wrap) {
            return Ok(None);
        }
        let mut d = read_desc(mem, at).ok_or(mem_err(at))?;
        d.w14 = flags;
        Ok(Some(d))
    }

    /// Adds one descriptor (direct or indirect) of a chain.
    pub(crate) fn add_desc(
        &self,
        mem: &GuestMemory,
        b: &mut Builder,
        out: &mut Chain,
        d: &RawDesc,
        first: bool,
    ) -> Result<(), ChainError> {
        let flags = d.w14;
        if flags & F_INDIRECT != 0 {
            if !self.indirect {
                return Err(ChainError::IndirectNotNegotiated);
            }
            if !first || flags & F_NEXT != 0 {
                return Err(ChainError::IndirectChained);
            }
            return b.indirect(mem, out, d.addr, d.len, true);
        }
        b.add(mem, out, d.addr, d.len, flags & F_WRITE != 0)
    }

    pub(crate) fn pop(&mut self, mem: &GuestMemory, out: &mut Chain) -> Result<bool, RingError> {
        if self.resubmit_pos < self.resubmit.len() {
            return self.pop_resubmit(mem, out);
        }
        let Some(head) = self.avail_desc(mem, self.next_avail, self.avail_wrap)? else {
            return Ok(false);
        };
        let start = (self.next_avail, self.avail_wrap);
        let mut b = Builder::new();
        out.reset(0);
        let mut err: Option<ChainError> = None;
        let mut d = head;
        let mut n: u16 = 1;
        let (mut pos, mut wrap) = start;
        // Walk to the chain's end even past a defect, to consume exactly its descriptors.
        loop {
            if err.is_none() {
                err = self.add_desc(mem, &mut b, out, &d, n == 1).err();
            }
            if d.w14 & F_NEXT == 0 {
                break;
            }
            if n == self.size {
                return Err(RingError::Broken("packed chain longer than the ring"));
            }
            (pos, wrap) = advance(pos, wrap, 1, self.size);
            d = match self.avail_desc(mem, pos, wrap)? {
                Some(d) => d,
                None => {
                    return Err(RingError::Broken(
                        "packed chain runs into an unavailable descriptor",
                    ))
                }
            };
            n += 1;
        }
        let id = d.w12;
        if id >= self.size {
            return Err(RingError::Broken("packed buffer id out of range"));
        }
        if self.busy[usize::from(id)] != 0 {
            return Err(RingError::Broken("packed buffer id reused while in flight"));
        }
        (self.next_avail, self.avail_wrap) = advance(start.0, start.1, n, self.size);
        self.busy[usize::from(id)] = n;
        self.in_flight += 1;
        out.id = id;
        out.ndesc = n;
        if let Some(q) = &self.inflight {
            let e = q.packed_begin(self.counter)?;
            self.counter += 1;
            let (mut p, mut w) = start;
            for i in 0..n {
                let at = self.desc_addr(p);
                let mut d = read_desc(mem, at).ok_or(mem_err(at))?;
                // Record what was validated, whatever the driver wrote since.
                let last = i + 1 == n;
                d.w14 = (d.w14 & !F_NEXT) | if last { 0 } else { F_NEXT };
                if last {
                    d.w12 = id;
                }
                q.packed_record(e, &d, last)?;
                (p, w) = advance(p, w, 1, self.size);
            }
            let _ = w;
            self.entry[usize::from(id)] = e;
        }
        match err {
            None => Ok(true),
            Some(error) => {
                out.count = 0;
                Err(RingError::Chain { id, error })
            }
        }
    }

    pub(crate) fn pop_resubmit(
        &mut self,
        mem: &GuestMemory,
        out: &mut Chain,
    ) -> Result<bool, RingError> {
        let Some(&e) = self.resubmit.get(self.resubmit_pos) else {
            return Ok(false);
        };
        self.resubmit_pos += 1;
        if self.resubmit_pos == self.resubmit.len() {
            self.resubmit = Vec::new();
            self.resubmit_pos = 0;
        }
        let Some(q) = &self.inflight else {
            return Ok(false);
        };
        out.reset(0);
        let mut b = Builder::new();
        let mut err = None;
        let (id, n) = q.packed_walk(e, |i, d| {
            if err.is_none() {
                err = self.add_desc(mem, &mut b, out, d, i == 0).err();
            }
        })?;
        out.id = id;
        out.ndesc = n;
        match err {
            None => Ok(true),
            Some(error) => {
                out.count = 0;
                Err(RingError::Chain { id, error })
            }
        }
    }

    pub(crate) fn push_used(
        &mut self,
        mem: &GuestMemory,
        id: u16,
        written: u32,
    ) -> Result<(), RingError> {
        let n = match self.busy.get(usize::from(id)) {
            Some(&n) if n != 0 => n,
            _ => return Err(RingError::Usage("push_used of an id that is not in flight")),
        };
        let at = self.desc_addr(self.next_used);
        store_u16(mem, at + 12, id, Ordering::Relaxed).ok_or(mem_err(at))?;
        store_u32(mem, at + 8, written, Ordering::Relaxed).ok_or(mem_err(at))?;
        let mut flags = if self.used_wrap { P_AVAIL | P_USED } else { 0 };
        if written > 0 {
            flags |= F_WRITE;
        }
        if self.batch_head.is_none() {
            self.batch_head = Some((self.next_used, flags));
        } else {
            store_u16(mem, at + 14, flags, Ordering::Release).ok_or(mem_err(at))?;
        }
        (self.next_used, self.used_wrap) = advance(self.next_used, self.used_wrap, n, self.size);
        self.since_signal = self.since_signal.saturating_add(n);
        self.busy[usize::from(id)] = 0;
        self.in_flight -= 1;
        if self.inflight.is_some() {
            self.batch.push(id);
        }
        Ok(())
    }

    pub(crate) fn publish(&mut self, mem: &GuestMemory) -> Result<bool, RingError> {
        let Some((pos, flags)) = self.batch_head.take() else {
            return Ok(false);
        };
        if let Some(q) = &self.inflight {
            for &id in &self.batch {
                q.packed_release(self.entry[usize::from(id)])?;
            }
            q.packed_set_used(self.next_used, self.used_wrap)?;
        }
        let at = self.desc_addr(pos);
        store_u16(mem, at + 14, flags, Ordering::Release).ok_or(mem_err(at))?;
        if let Some(q) = &self.inflight {
            q.packed_batch_done(self.batch.iter().map(|&id| self.entry[usize::from(id)]))?;
        }
        self.batch.clear();
        fence(Ordering::SeqCst);
        let count = std::mem::take(&mut self.since_signal);
        if !std::mem::replace(&mut self.signalled, true) {
            return Ok(true);
        }
        let off_wrap =
            load_u16(mem, self.driver_ev, Ordering::Relaxed).ok_or(mem_err(self.driver_ev))?;
        let ev_flags =
            load_u16(mem, self.driver_ev + 2, Ordering::Relaxed).ok_or(mem_err(self.driver_ev))?;
        match ev_flags & 3 {
            EV_DISABLE => Ok(false),
            EV_DESC if self.event_idx => {
                let new = self.next_used;
                let old = new.wrapping_sub(count);
                let mut off = off_wrap & 0x7fff;
                if (off_wrap & 0x8000 != 0) != self.used_wrap {
                    off = off.wrapping_sub(self.size);
                }
                Ok(need_event(off, new, old))
            }
            _ => Ok(true),
        }
    }

    pub(crate) fn disable_notify(&mut self, mem: &GuestMemory) -> Result<(), RingError> {
        store_u16(mem, self.device_ev + 2, EV_DISABLE, Ordering::Relaxed)
            .ok_or(mem_err(self.device_ev))
    }

    pub(crate) fn enable_notify(&mut self, mem: &GuestMemory) -> Result<bool, RingError> {
        if self.resubmit_pending() > 0 {
            return Ok(true);
        }
        let ev = self.device_ev;
        if self.event_idx {
            let off_wrap = self.next_avail | (u16::from(self.avail_wrap) << 15);
            store_u16(mem, ev, off_wrap, Ordering::Relaxed).ok_or(mem_err(ev))?;
            store_u16(mem, ev + 2, EV_DESC, Ordering::Release).ok_or(mem_err(ev))?;
        } else {
            store_u16(mem, ev + 2, EV_ENABLE, Ordering::Release).ok_or(mem_err(ev))?;
        }
        // Publish the request for kicks before looking at the ring once more.
        fence(Ordering::SeqCst);
        Ok(self
            .avail_desc(mem, self.next_avail, self.avail_wrap)?
            .is_some())
    }

    pub(crate) fn attach_inflight(
        &mut self,
        mem: &GuestMemory,
        q: InflightQueue,
    ) -> Result<(), RingError> {
        if self.in_flight != 0 || self.inflight.is_some() {
            return Err(RingError::Usage("attach_inflight after chains were popped"));
        }
        let rec = q.packed_recover(self.size, (self.next_used, self.used_wrap), |pos| {
            let at = self.desc_addr(pos);
            load_u16(mem, at + 14, Ordering::Acquire).ok_or(mem_err(at))
        })?;
        if !rec.fresh {
            (self.next_used, self.used_wrap) = rec.used;
            let mut total: u32 = 0;
            for c in &rec.chains {
                self.busy[usize::from(c.id)] = c.num;
                self.entry[usize::from(c.id)] = c.entry;
                total += u32::from(c.num);
            }
            // validated by packed_recover: total <= size
            (self.next_avail, self.avail_wrap) =
                advance(self.next_used, self.used_wrap, total as u16, self.size);
            self.in_flight = rec.chains.len();
            self.counter = rec.counter;
            self.resubmit = rec.chains.iter().map(|c| c.entry).collect();
            self.resubmit_pos = 0;
        }
        self.inflight = Some(q);
        Ok(())
    }
}
