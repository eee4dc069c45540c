//! Inflight tracking for split rings, step by step as vhost-user.rst's "Inflight I/O
//! tracking" prescribes, and the recovery a restarted backend performs.

use std::sync::atomic::{fence, Ordering};

use super::{InflightQueue, SPLIT_DESC, SPLIT_HEADER, VERSION};
use crate::RingError;

const VERSION_OFF: usize = 8;
const DESC_NUM: usize = 10;
const LAST_BATCH_HEAD: usize = 12;
const USED_IDX: usize = 14;

fn desc(i: u16) -> usize {
    SPLIT_HEADER + SPLIT_DESC * usize::from(i)
}

fn bad(msg: String) -> RingError {
    RingError::Inflight(msg)
}

/// What a split queue region says was in flight.
pub(crate) struct SplitRecovery {
    /// Heads in flight, in submission (counter) order.
    pub heads: Vec<u16>,
    /// The next counter value to use.
    pub counter: u64,
    /// The region was never used (version 0) and has been initialised: the ring keeps the
    /// position it was given.
    pub fresh: bool,
}

impl InflightQueue {
    /// A head was fetched from the available ring: record its counter, then mark it.
    pub(crate) fn split_fetched(&self, head: u16, counter: u64) -> Result<(), RingError> {
        self.store::<u64>(desc(head) + 8, counter)?;
        fence(Ordering::Release);
        self.store::<u8>(desc(head), 1)
    }

    /// A head is being returned (steps 1–3 of "supplying used buffers"): link it into the
    /// last batch list.
    pub(crate) fn split_batch_add(&self, head: u16) -> Result<(), RingError> {
        let last = self.load::<u16>(LAST_BATCH_HEAD)?;
        self.store::<u16>(desc(head) + 6, last)?;
        fence(Ordering::Release);
        self.store::<u16>(LAST_BATCH_HEAD, head)
    }

    /// The used index was published: clear the batch's inflight flags, then record the index.
    pub(crate) fn split_batch_done(&self, heads: &[u16], used_idx: u16) -> Result<(), RingError> {
        for &h in heads {
            self.store::<u8>(desc(h), 0)?;
        }
        fence(Ordering::Release);
        self.store::<u16>(USED_IDX, used_idx)
    }

    /// Initialises a never-used region (version 0) for a ring whose used index is `used_idx`.
    pub(crate) fn split_init(&self, used_idx: u16) -> Result<(), RingError> {
        self.init()?;
        self.store::<u16>(USED_IDX, used_idx)?;
        fence(Ordering::Release);
        self.store::<u16>(VERSION_OFF, VERSION)
    }

    /// Validates the region for a ring of `size` whose used ring says `guest_used_idx`,
    /// finishes an interrupted batch, and returns the heads still in flight in order. Nothing
    /// is written unless the whole region validates.
    pub(crate) fn split_recover(
        &self,
        size: u16,
        guest_used_idx: u16,
    ) -> Result<SplitRecovery, RingError> {
        if self.packed {
            return Err(bad("region is for packed rings, ring is split".into()));
        }
        let features = self.load::<u64>(0)?;
        let version = self.load::<u16>(VERSION_OFF)?;
        let desc_num = self.load::<u16>(DESC_NUM)?;
        if version == 0 {
            self.split_init(guest_used_idx)?;
            return Ok(SplitRecovery {
                heads: Vec::new(),
                counter: 0,
                fresh: true,
            });
        }
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
        let region_used = self.load::<u16>(USED_IDX)?;
        let batch = guest_used_idx.wrapping_sub(region_used);
        if batch > size {
            return Err(bad(format!(
                "used index {guest_used_idx} is {batch} ahead of the region's {region_used}"
            )));
        }
        // Read-only pass: the last batch's list, then every entry.
        let mut batch_heads = Vec::with_capacity(usize::from(batch));
        let mut in_batch = vec![false; usize::from(size)];
        let mut h = self.load::<u16>(LAST_BATCH_HEAD)?;
        for _ in 0..batch {
            if h >= size {
                return Err(bad(format!("batch list entry {h} out of range")));
            }
            batch_heads.push(h);
            in_batch[usize::from(h)] = true;
            h = self.load::<u16>(desc(h) + 6)?;
        }
        let mut live: Vec<(u64, u16)> = Vec::new();
        let mut counter = 0u64;
        for i in 0..desc_num {
            let flag = self.load::<u8>(desc(i))?;
            if flag > 1 {
                return Err(bad(format!("entry {i} has inflight = {flag}")));
            }
            if flag == 1 && !in_batch.get(usize::from(i)).copied().unwrap_or(false) {
                if i >= size {
                    return Err(bad(format!(
                        "entry {i} in flight beyond the ring size {size}"
                    )));
                }
                let c = self.load::<u64>(desc(i) + 8)?;
                counter = counter.max(c.saturating_add(1));
                live.push((c, i));
            }
        }
        // Commit the interrupted batch: it was published in the used ring.
        if batch != 0 {
            self.split_batch_done(&batch_heads, guest_used_idx)?;
        }
        live.sort_unstable();
        Ok(SplitRecovery {
            heads: live.into_iter().map(|(_, h)| h).collect(),
            counter,
            fresh: false,
        })
    }
}
