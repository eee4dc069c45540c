//! The set of slots that have an I/O in flight.
//!
//! Verify jobs must not start a new write to a slot whose previous write + read-back
//! has not completed, or the read-back would see the newer data and report a false
//! miscompare (bdevperf keeps an "outstanding" bitmap for this). [`InFlight`] holds at
//! most `queue_depth` slots in a fixed open-addressing table (linear probing with
//! backward-shift deletion), so it costs O(queue depth) memory whatever the region size,
//! O(1) expected time per operation, and never allocates after construction.

use crate::offsets::OffsetGen;
use crate::rng::GOLDEN_GAMMA;

const EMPTY: u64 = u64::MAX;

/// A fixed-capacity set of slot numbers (any `u64` except `u64::MAX`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InFlight {
    table: Vec<u64>,
    shift: u32,
    len: usize,
    capacity: usize,
}

impl InFlight {
    /// A set able to hold `capacity` slots (at least 1).
    pub fn new(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        let size = (capacity * 2).next_power_of_two().max(2);
        InFlight {
            table: vec![EMPTY; size],
            shift: 64 - size.trailing_zeros(),
            len: 0,
            capacity,
        }
    }

    #[inline]
    fn home(&self, slot: u64) -> usize {
        (slot.wrapping_mul(GOLDEN_GAMMA) >> self.shift) as usize
    }

    #[inline]
    fn mask(&self) -> usize {
        self.table.len() - 1
    }

    fn find(&self, slot: u64) -> Option<usize> {
        let mut i = self.home(slot);
        loop {
            match self.table[i] {
                EMPTY => return None,
                s if s == slot => return Some(i),
                _ => i = (i + 1) & self.mask(),
            }
        }
    }

    /// Whether `slot` is in flight.
    #[inline]
    pub fn contains(&self, slot: u64) -> bool {
        slot != EMPTY && self.find(slot).is_some()
    }

    /// Adds `slot`; false if it was already present, the set is full, or `slot` is
    /// `u64::MAX`.
    pub fn insert(&mut self, slot: u64) -> bool {
        if slot == EMPTY || self.len == self.capacity {
            return false;
        }
        let mut i = self.home(slot);
        loop {
            match self.table[i] {
                EMPTY => {
                    self.table[i] = slot;
                    self.len += 1;
                    return true;
                }
                s if s == slot => return false,
                _ => i = (i + 1) & self.mask(),
            }
        }
    }

    /// Removes `slot`; false if it was not present.
    pub fn remove(&mut self, slot: u64) -> bool {
        if slot == EMPTY {
            return false;
        }
        let Some(mut hole) = self.find(slot) else {
            return false;
        };
        self.table[hole] = EMPTY;
        self.len -= 1;
        let mask = self.mask();
        let mut j = hole;
        loop {
            j = (j + 1) & mask;
            let s = self.table[j];
            if s == EMPTY {
                return true;
            }
            let home = self.home(s);
            // The entry at j may stay only if its home lies cyclically in (hole, j].
            let stays = if hole <= j {
                hole < home && home <= j
            } else {
                hole < home || home <= j
            };
            if !stays {
                self.table[hole] = s;
                self.table[j] = EMPTY;
                hole = j;
            }
        }
    }

    /// Slots currently in flight.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when nothing is in flight.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The most slots the set holds.
    pub fn capacity(&self) -> usize {
        self.capacity
    }
}

/// Draws before [`OffsetGen::next_free`] falls back to scanning.
const MAX_REDRAWS: u32 = 64;

impl OffsetGen {
    /// The next slot that is not in `busy`. Draws from the generator (so the pattern is
    /// kept), and if `MAX_REDRAWS` draws in a row are busy — e.g. a very hot zipf slot —
    /// takes the first free slot after the last draw. Returns a busy slot only when
    /// every slot is busy (queue depth ≥ slots; plans prevent that for verify jobs).
    pub fn next_free(&mut self, busy: &InFlight) -> u64 {
        let n = self.slots();
        let mut slot = self.next();
        for _ in 0..MAX_REDRAWS {
            if !busy.contains(slot) {
                return slot;
            }
            slot = self.next();
        }
        let start = slot;
        for _ in 0..n.min(busy.len() as u64 + 1) {
            if !busy.contains(slot) {
                return slot;
            }
            slot = if slot + 1 == n { 0 } else { slot + 1 };
        }
        start
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::offsets::{Sequential, Zipf};
    use crate::rng::Xoshiro256StarStar;
    use std::collections::HashSet;

    #[test]
    fn behaves_like_a_set() {
        let mut set = InFlight::new(64);
        let mut model = HashSet::new();
        let mut rng = Xoshiro256StarStar::new(1);
        for _ in 0..200_000 {
            let slot = rng.next_below(200);
            if rng.next_below(2) == 0 {
                let expect = model.len() < 64 && !model.contains(&slot);
                assert_eq!(set.insert(slot), expect, "insert {slot}");
                if expect {
                    model.insert(slot);
                }
            } else {
                assert_eq!(set.remove(slot), model.remove(&slot), "remove {slot}");
            }
            assert_eq!(set.len(), model.len());
            let probe = rng.next_below(200);
            assert_eq!(set.contains(probe), model.contains(&probe));
        }
    }

    #[test]
    fn capacity_and_sentinel() {
        let mut s = InFlight::new(0);
        assert_eq!(s.capacity(), 1);
        assert!(s.is_empty());
        assert!(s.insert(5));
        assert!(!s.insert(6), "full");
        assert!(!s.insert(5), "duplicate");
        assert!(!s.insert(u64::MAX));
        assert!(!s.contains(u64::MAX));
        assert!(!s.remove(u64::MAX));
        assert!(s.remove(5));
        assert!(!s.remove(5));
        assert!(s.insert(6));
    }

    #[test]
    fn next_free_skips_busy_slots_in_order() {
        let mut busy = InFlight::new(4);
        busy.insert(1);
        busy.insert(2);
        let mut g = OffsetGen::Sequential(Sequential::new(5));
        let v: Vec<u64> = (0..4).map(|_| g.next_free(&busy)).collect();
        assert_eq!(v, vec![0, 3, 4, 0]);
    }

    #[test]
    fn next_free_with_a_hot_zipf_slot() {
        let mut g = OffsetGen::Zipf(Zipf::unscattered(4, 5.0, 1));
        let mut busy = InFlight::new(4);
        busy.insert(0);
        for _ in 0..1000 {
            assert_ne!(g.next_free(&busy), 0);
        }
        for s in 1..4 {
            busy.insert(s);
        }
        // Everything busy: returns some slot rather than spinning forever.
        assert!(g.next_free(&busy) < 4);
    }
}
