//! The packed virtqueue, device side (virtio 1.1+, 2.8).
//!
//! One descriptor ring of `size` × `{addr u64, len u32, id u16, flags u16}`; a descriptor is
//! available when its AVAIL bit equals the device's avail wrap counter and its USED bit does
//! not; the device returns a buffer by writing a used descriptor (both bits equal to its used
//! wrap counter) at its next used position, skipping as many positions as the chain had
//! descriptors. Event suppression: the driver's structure (`driver` address) says when the
//! device should interrupt, the device's (`device` address) when the driver should kick;
//! both are `{off_wrap u16, flags u16}` with flags ENABLE 0, DISABLE 1, DESC 2.
//!
//! `notify.rs` holds publication and event suppression, `recover.rs` inflight recovery.

mod notify;
mod recover;

use std::sync::atomic::Ordering;

use crate::inflight::InflightQueue;
use crate::mem::{
    load_u16, range_ok, read_desc, store_u16, store_u32, RawDesc, F_INDIRECT, F_NEXT, F_WRITE,
};
use crate::vring::{crash, CrashPoint, RingBase, RingConfig};
use crate::walk::{indirect_tail, status_segment, Builder};
use crate::{Chain, ChainDefect, GuestMemory, RingError, Segment};

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

/// What a packed chain walk remembers to find a refused chain's status descriptor: its last
/// descriptor (flags in `w14`), its length and whether any descriptor was indirect.
#[derive(Default)]
pub(crate) struct Tail {
    last: RawDesc,
    ndesc: u16,
    any_indirect: bool,
}

impl Tail {
    /// Notes the next descriptor of the chain (flags in `w14`).
    pub(crate) fn see(&mut self, d: &RawDesc) {
        self.last = *d;
        self.ndesc = self.ndesc.saturating_add(1);
        self.any_indirect |= d.w14 & F_INDIRECT != 0;
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
    signalled: bool,
    /// Per buffer id: descriptors it occupies while in flight, 0 when not in flight.
    busy: Vec<u16>,
    /// Per buffer id: its head entry in the inflight region.
    entry: Vec<u16>,
    in_flight: usize,
    /// Descriptors of the ring the driver cannot have reused: held by chains in flight or
    /// returned in the unpublished batch. A legitimate driver never offers more than the ring
    /// minus these; the inflight region has an entry for each.
    held_descs: u16,
    /// Descriptors returned in the unpublished batch: how far the used position advanced
    /// since the last notification decision.
    batch_descs: u16,
    /// Buffer ids pushed since the last publish (capacity `size`).
    batch: Vec<u16>,
    inflight: Option<InflightQueue>,
    counter: u64,
    /// Head entries of the region to resubmit, in order.
    resubmit: Vec<u16>,
    resubmit_pos: usize,
    /// Test hook: where to stop as if crashed.
    pub(crate) crash: Option<CrashPoint>,
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
        if !a.desc.is_multiple_of(16) || !range_ok(mem, a.desc, 16 * u64::from(cfg.size)) {
            return Err(cfg_err("descriptor ring", a.desc));
        }
        if !a.driver.is_multiple_of(4) || !range_ok(mem, a.driver, 4) {
            return Err(cfg_err("driver event suppression", a.driver));
        }
        if !a.device.is_multiple_of(4) || !range_ok(mem, a.device, 4) {
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
            signalled: false,
            busy: vec![0; n],
            entry: vec![0; n],
            in_flight: 0,
            held_descs: 0,
            batch_descs: 0,
            batch: Vec::with_capacity(n),
            inflight: None,
            counter: 0,
            resubmit: Vec::new(),
            resubmit_pos: 0,
            crash: None,
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
    ) -> Result<(), ChainDefect> {
        let flags = d.w14;
        if flags & F_INDIRECT != 0 {
            if !self.indirect {
                return Err(ChainDefect::IndirectNotNegotiated);
            }
            if !first || flags & F_NEXT != 0 {
                return Err(ChainDefect::IndirectChained);
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
        let mut err: Option<ChainDefect> = None;
        let mut d = head;
        let mut n: u16 = 1;
        let (mut pos, mut wrap) = start;
        let mut tail = Tail::default();
        // Walk to the chain's end even past a defect, to consume exactly its descriptors.
        loop {
            if err.is_none() {
                err = self.add_desc(mem, &mut b, out, &d, n == 1).err();
            }
            tail.see(&d);
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
        if u32::from(self.held_descs) + u32::from(n) > u32::from(self.size) {
            return Err(RingError::Broken(
                "more descriptors offered than the ring holds",
            ));
        }
        self.held_descs += n;
        (self.next_avail, self.avail_wrap) = advance(start.0, start.1, n, self.size);
        self.busy[usize::from(id)] = n;
        self.in_flight += 1;
        out.id = id;
        out.ndesc = n;
        if let Some(q) = &self.inflight {
            let e = q.packed_begin(self.counter)?;
            self.counter += 1;
            let mut p = start;
            for i in 0..n {
                let at = self.desc_addr(p.0);
                let mut d = read_desc(mem, at).ok_or(mem_err(at))?;
                // Record the chain's structure as walked (NEXT on all but the last, the id on
                // the last), whatever the driver wrote since; a resubmitted chain's buffers
                // are validated again.
                let last = i + 1 == n;
                d.w14 = (d.w14 & !F_NEXT) | if last { 0 } else { F_NEXT };
                if last {
                    d.w12 = id;
                }
                q.packed_record(e, &d, last)?;
                if !last {
                    crash(self.crash, CrashPoint::PopPartial)?;
                }
                p = advance(p.0, p.1, 1, self.size);
            }
            self.entry[usize::from(id)] = e;
        }
        match err {
            None => Ok(true),
            Some(defect) => {
                out.count = 0;
                let status = self.status_hint(mem, &tail);
                Err(RingError::Chain { id, defect, status })
            }
        }
    }

    /// The status segment of a refused chain walked to its end (see
    /// [`RingError::status_hint`]).
    pub(crate) fn status_hint(&self, mem: &GuestMemory, t: &Tail) -> Option<Segment> {
        let (a, l, f) = if t.ndesc == 1 && t.last.w14 & F_INDIRECT != 0 {
            if !self.indirect {
                return None;
            }
            indirect_tail(mem, t.last.addr, t.last.len, true)?
        } else if t.any_indirect {
            return None;
        } else {
            (t.last.addr, t.last.len, t.last.w14)
        };
        status_segment(mem, a, l, f)
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
        self.busy[usize::from(id)] = 0;
        self.batch_descs += n;
        self.in_flight -= 1;
        if self.inflight.is_some() {
            self.batch.push(id);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn availability_by_wrap_counter() {
        assert!(is_avail(P_AVAIL, true));
        assert!(!is_avail(P_AVAIL | P_USED, true), "used in lap 1");
        assert!(is_avail(P_USED, false));
        assert!(!is_avail(0, false), "used in lap 0");
        assert!(!is_avail(0, true));
    }

    #[test]
    fn advance_wraps() {
        assert_eq!(advance(3, true, 2, 8), (5, true));
        assert_eq!(advance(6, true, 2, 8), (0, false));
        assert_eq!(advance(7, false, 3, 8), (2, true));
        assert_eq!(advance(2, true, 5, 5), (2, false), "a whole lap");
        assert_eq!(advance(32767, true, 1, 32768), (0, false));
    }
}
