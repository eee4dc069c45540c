//! Packed ring: publishing used descriptors and event suppression in both directions.

use std::sync::atomic::{fence, Ordering};

use super::{mem_err, PackedRing, EV_DESC, EV_DISABLE, EV_ENABLE};
use crate::mem::{load_u16, store_u16};
use crate::split::need_event;
use crate::vring::{crash, CrashPoint};
use crate::{GuestMemory, RingError};

impl PackedRing {
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
        crash(self.crash, CrashPoint::PublishBeforeVisible)?;
        let at = self.desc_addr(pos);
        store_u16(mem, at + 14, flags, Ordering::Release).ok_or(mem_err(at))?;
        crash(self.crash, CrashPoint::PublishAfterVisible)?;
        if let Some(q) = &self.inflight {
            q.packed_batch_done(self.batch.iter().map(|&id| self.entry[usize::from(id)]))?;
        }
        self.batch.clear();
        // Descriptors the used position advanced in this batch (at most the ring size).
        let count = std::mem::take(&mut self.batch_descs);
        self.held_descs -= count;
        fence(Ordering::SeqCst);
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
}
