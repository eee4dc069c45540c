//! Inflight tracking for packed rings as vhost-user.rst's "Inflight I/O tracking" prescribes:
//! a free list of descriptor-state entries; each fetched chain takes entries from it (its
//! head entry carries counter, num and last), a used batch returns them, and the `old_*`
//! fields mark the last consistent state so that recovery can roll an interrupted batch back
//! or commit it.
//!
//! One refinement keeps the spec's invariant that a fetch starts at `old_free_head ==
//! free_head`: the ring returns entries to the free list when it publishes a batch, not when
//! each buffer is pushed, so fetches never interleave with an open batch.

use std::sync::atomic::{fence, Ordering};

use super::{InflightQueue, PACKED_DESC, PACKED_HEADER, VERSION};
use crate::mem::{RawDesc, F_NEXT};
use crate::packed::{P_AVAIL, P_USED};
use crate::RingError;

const VERSION_OFF: usize = 8;
const DESC_NUM: usize = 10;
const FREE_HEAD: usize = 12;
const OLD_FREE_HEAD: usize = 14;
const USED_IDX: usize = 16;
const OLD_USED_IDX: usize = 18;
const USED_WRAP: usize = 20;
const OLD_USED_WRAP: usize = 21;

// Fields of a descriptor state entry.
const E_INFLIGHT: usize = 0;
const E_NEXT: usize = 2;
const E_LAST: usize = 4;
const E_NUM: usize = 6;
const E_COUNTER: usize = 8;
const E_ID: usize = 16;
const E_FLAGS: usize = 18;
const E_LEN: usize = 20;
const E_ADDR: usize = 24;

fn ent(i: u16) -> usize {
    PACKED_HEADER + PACKED_DESC * usize::from(i)
}

fn bad(msg: String) -> RingError {
    RingError::Inflight(msg)
}

/// A chain found in flight.
pub(crate) struct PackedChain {
    pub entry: u16,
    pub id: u16,
    pub num: u16,
    counter: u64,
}

/// What a packed queue region says.
pub(crate) struct PackedRecovery {
    /// Never used: initialised, the ring keeps its position.
    pub fresh: bool,
    /// The device's used position (index, wrap counter) after rollback or commit.
    pub used: (u16, bool),
    /// Chains in flight, in submission order.
    pub chains: Vec<PackedChain>,
    pub counter: u64,
}

impl InflightQueue {
    fn entry_index(&self, off: usize, what: &str) -> Result<u16, RingError> {
        let v = self.load::<u16>(off)?;
        if v >= self.queue_size {
            return Err(bad(format!("{what} {v} out of range")));
        }
        Ok(v)
    }

    /// A chain's first descriptor was fetched: start its head entry (at old_free_head).
    pub(crate) fn packed_begin(&self, counter: u64) -> Result<u16, RingError> {
        let head = self.entry_index(OLD_FREE_HEAD, "old_free_head")?;
        self.store::<u16>(ent(head) + E_NUM, 0)?;
        self.store::<u64>(ent(head) + E_COUNTER, counter)?;
        fence(Ordering::Release);
        self.store::<u8>(ent(head) + E_INFLIGHT, 1)?;
        Ok(head)
    }

    /// Records one fetched descriptor of the chain whose head entry is `head`.
    pub(crate) fn packed_record(
        &self,
        head: u16,
        d: &RawDesc,
        last: bool,
    ) -> Result<(), RingError> {
        let fh = self.entry_index(FREE_HEAD, "free_head")?;
        if last {
            self.store::<u16>(ent(head) + E_LAST, fh)?;
        }
        let num = self.load::<u16>(ent(head) + E_NUM)?;
        self.store::<u16>(ent(head) + E_NUM, num.wrapping_add(1))?;
        let e = ent(fh);
        self.store::<u64>(e + E_ADDR, d.addr)?;
        self.store::<u32>(e + E_LEN, d.len)?;
        self.store::<u16>(e + E_FLAGS, d.w14)?;
        self.store::<u16>(e + E_ID, d.w12)?;
        let next = self.load::<u16>(e + E_NEXT)?;
        fence(Ordering::Release);
        self.store::<u16>(FREE_HEAD, next)?;
        if last {
            fence(Ordering::Release);
            self.store::<u16>(OLD_FREE_HEAD, next)?;
        }
        Ok(())
    }

    /// Returns the chain with head entry `head` to the free list (part of publishing a batch).
    pub(crate) fn packed_release(&self, head: u16) -> Result<(), RingError> {
        let last = self.entry_index(ent(head) + E_LAST, "last")?;
        let fh = self.load::<u16>(FREE_HEAD)?;
        self.store::<u16>(ent(last) + E_NEXT, fh)?;
        fence(Ordering::Release);
        self.store::<u16>(FREE_HEAD, head)
    }

    /// Records the device's used position after the batch.
    pub(crate) fn packed_set_used(&self, idx: u16, wrap: bool) -> Result<(), RingError> {
        self.store::<u16>(USED_IDX, idx)?;
        self.store::<u8>(USED_WRAP, u8::from(wrap))
    }

    /// The batch is visible to the driver: clear its heads and make the state the consistent
    /// one.
    pub(crate) fn packed_batch_done(
        &self,
        heads: impl Iterator<Item = u16>,
    ) -> Result<(), RingError> {
        for h in heads {
            self.store::<u8>(ent(h) + E_INFLIGHT, 0)?;
        }
        fence(Ordering::Release);
        self.commit()
    }

    /// old_free_head, old_used_idx, old_used_wrap_counter := the current ones.
    fn commit(&self) -> Result<(), RingError> {
        self.store::<u16>(OLD_FREE_HEAD, self.load::<u16>(FREE_HEAD)?)?;
        self.store::<u16>(OLD_USED_IDX, self.load::<u16>(USED_IDX)?)?;
        self.store::<u8>(OLD_USED_WRAP, self.load::<u8>(USED_WRAP)?)
    }

    /// Visits the `num` descriptors of the chain at head entry `head` (validated by
    /// [`InflightQueue::packed_recover`]); returns the buffer id and descriptor count.
    pub(crate) fn packed_walk(
        &self,
        head: u16,
        mut f: impl FnMut(u16, &RawDesc),
    ) -> Result<(u16, u16), RingError> {
        let num = self.load::<u16>(ent(head) + E_NUM)?;
        let mut cur = head;
        let mut id = 0;
        for i in 0..num {
            let e = ent(cur);
            let d = RawDesc {
                addr: self.load::<u64>(e + E_ADDR)?,
                len: self.load::<u32>(e + E_LEN)?,
                w12: self.load::<u16>(e + E_ID)?,
                w14: self.load::<u16>(e + E_FLAGS)?,
            };
            f(i, &d);
            id = d.w12;
            if i + 1 < num {
                cur = self.entry_index(e + E_NEXT, "next")?;
            }
        }
        Ok((id, num))
    }

    /// Validates the region for a ring of `size`, commits or rolls back an interrupted batch
    /// (`flags_at(pos)` reads the flags of ring descriptor `pos`), and returns the chains in
    /// flight in order. `current` is the ring's used position, recorded in a fresh region.
    pub(crate) fn packed_recover(
        &self,
        size: u16,
        current: (u16, bool),
        flags_at: impl Fn(u16) -> Result<u16, RingError>,
    ) -> Result<PackedRecovery, RingError> {
        if !self.packed {
            return Err(bad("region is for split rings, ring is packed".into()));
        }
        let version = self.load::<u16>(VERSION_OFF)?;
        if version == 0 {
            self.init()?;
            self.packed_set_used(current.0, current.1)?;
            self.commit()?;
            fence(Ordering::Release);
            self.store::<u16>(VERSION_OFF, VERSION)?;
            return Ok(PackedRecovery {
                fresh: true,
                used: current,
                chains: Vec::new(),
                counter: 0,
            });
        }
        let features = self.load::<u64>(0)?;
        let desc_num = self.load::<u16>(DESC_NUM)?;
        if version != VERSION || features != 0 {
            return Err(bad(format!(
                "unknown region version {version} / features {features:#x}"
            )));
        }
        if desc_num < size || desc_num > self.queue_size {
            return Err(bad(format!(
                "desc_num {desc_num} does not fit a ring of {size} in a region of {}",
                self.queue_size
            )));
        }
        let wrap = |off: usize| -> Result<bool, RingError> {
            match self.load::<u8>(off)? {
                0 => Ok(false),
                1 => Ok(true),
                v => Err(bad(format!("wrap counter {v}"))),
            }
        };
        let idx = |off: usize| -> Result<u16, RingError> {
            let v = self.load::<u16>(off)?;
            if v >= size {
                return Err(bad(format!("used index {v} outside a ring of {size}")));
            }
            Ok(v)
        };
        let head = |off: usize| -> Result<u16, RingError> {
            let v = self.load::<u16>(off)?;
            if v > desc_num {
                return Err(bad(format!("free list head {v} out of range")));
            }
            Ok(v)
        };
        let (fh, ofh) = (head(FREE_HEAD)?, head(OLD_FREE_HEAD)?);
        let (ui, oui) = (idx(USED_IDX)?, idx(OLD_USED_IDX)?);
        let (uw, ouw) = (wrap(USED_WRAP)?, wrap(OLD_USED_WRAP)?);
        let mut commit = false;
        if (ui, uw) != (oui, ouw) {
            // The batch's first used descriptor is written last: if it no longer looks
            // available, the driver has seen the batch.
            let expect = if ouw { P_AVAIL } else { P_USED };
            commit = flags_at(oui)? & (P_AVAIL | P_USED) != expect;
        }
        let (free, used) = if commit {
            (fh, (ui, uw))
        } else {
            (ofh, (oui, ouw))
        };
        // Read-only pass: the free list, then the chains in flight.
        let n = usize::from(desc_num);
        let mut in_free = vec![false; n];
        let mut free_list = Vec::new();
        let mut cur = free;
        while cur < desc_num {
            if in_free[usize::from(cur)] {
                return Err(bad(format!("free list loops at entry {cur}")));
            }
            in_free[usize::from(cur)] = true;
            free_list.push(cur);
            cur = self.load::<u16>(ent(cur) + E_NEXT)?;
        }
        let mut owned = in_free.clone();
        let mut chains = Vec::new();
        let mut ids = vec![false; usize::from(size)];
        let mut total: u32 = 0;
        for i in 0..desc_num {
            if in_free[usize::from(i)] {
                continue;
            }
            match self.load::<u8>(ent(i) + E_INFLIGHT)? {
                0 => continue,
                1 => {}
                v => return Err(bad(format!("entry {i} has inflight = {v}"))),
            }
            let num = self.load::<u16>(ent(i) + E_NUM)?;
            if num == 0 || num > size {
                return Err(bad(format!("entry {i}: chain of {num} descriptors")));
            }
            let mut cur = i;
            for k in 0..num {
                if owned[usize::from(cur)] {
                    return Err(bad(format!("entry {cur} belongs to two lists")));
                }
                owned[usize::from(cur)] = true;
                let flags = self.load::<u16>(ent(cur) + E_FLAGS)?;
                if (flags & F_NEXT != 0) == (k + 1 == num) {
                    return Err(bad(format!("entry {cur}: NEXT flag inconsistent with num")));
                }
                if k + 1 < num {
                    cur = self.entry_index(ent(cur) + E_NEXT, "next")?;
                }
            }
            if self.load::<u16>(ent(i) + E_LAST)? != cur {
                return Err(bad(format!("entry {i}: last does not end its chain")));
            }
            let id = self.load::<u16>(ent(cur) + E_ID)?;
            if id >= size || std::mem::replace(&mut ids[usize::from(id)], true) {
                return Err(bad(format!(
                    "entry {i}: buffer id {id} invalid or duplicated"
                )));
            }
            total += u32::from(num);
            let counter = self.load::<u64>(ent(i) + E_COUNTER)?;
            chains.push(PackedChain {
                entry: i,
                id,
                num,
                counter,
            });
        }
        if owned.iter().any(|o| !o) {
            return Err(bad("entries neither free nor in flight".into()));
        }
        if total > u32::from(size) {
            return Err(bad(format!(
                "{total} descriptors in flight on a ring of {size}"
            )));
        }
        // Write pass: commit or roll back, then clear stale heads in the free list.
        if commit {
            self.commit()?;
        } else {
            self.store::<u16>(FREE_HEAD, ofh)?;
            self.packed_set_used(oui, ouw)?;
        }
        for &f in &free_list {
            self.store::<u8>(ent(f) + E_INFLIGHT, 0)?;
        }
        chains.sort_unstable_by_key(|c| (c.counter, c.entry));
        let counter = chains.last().map_or(0, |c| c.counter.saturating_add(1));
        Ok(PackedRecovery {
            fresh: false,
            used,
            chains,
            counter,
        })
    }
}
