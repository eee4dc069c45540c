//! Packed ring: attaching the inflight region and resubmitting what it holds.

use std::sync::atomic::Ordering;

use super::{advance, mem_err, PackedRing, Tail};
use crate::inflight::InflightQueue;
use crate::mem::load_u16;
use crate::walk::Builder;
use crate::{Chain, GuestMemory, RingError};

impl PackedRing {
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
        let mut tail = Tail::default();
        let (id, n) = q.packed_walk(e, |i, d| {
            if err.is_none() {
                err = self.add_desc(mem, &mut b, out, d, i == 0).err();
            }
            tail.see(d);
        })?;
        out.id = id;
        out.ndesc = n;
        match err {
            None => Ok(true),
            Some(defect) => {
                out.count = 0;
                let status = self.status_hint(mem, &tail);
                Err(RingError::Chain { id, defect, status })
            }
        }
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
            self.held_descs = total as u16;
            self.counter = rec.counter;
            self.resubmit = rec.chains.iter().map(|c| c.entry).collect();
            self.resubmit_pos = 0;
        }
        self.inflight = Some(q);
        Ok(())
    }
}
