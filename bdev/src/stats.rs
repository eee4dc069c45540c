//! Per-channel I/O statistics, summed on demand across channels.

use crate::types::{IoStatus, IoType};

/// Counters for one I/O type.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct OpStats {
    /// Completed operations.
    pub ops: u64,
    /// Bytes transferred (data types) or covered (unmap, write_zeroes).
    pub bytes: u64,
    /// Sum of latencies, ticks.
    pub latency_ticks: u64,
    /// Largest latency, ticks.
    pub max_latency_ticks: u64,
    /// Smallest latency, ticks (0 until the first op, and again after a max/min reset).
    pub min_latency_ticks: u64,
}

impl OpStats {
    #[inline]
    fn record(&mut self, bytes: u64, lat: u64) {
        self.ops += 1;
        self.bytes += bytes;
        self.latency_ticks += lat;
        if lat > self.max_latency_ticks {
            self.max_latency_ticks = lat;
        }
        // 0 means "none yet": after a max/min reset `ops` is no longer 1 for the first op.
        if self.min_latency_ticks == 0 || lat < self.min_latency_ticks {
            self.min_latency_ticks = lat;
        }
    }

    fn add(&mut self, o: &OpStats) {
        if o.ops == 0 {
            return;
        }
        // A side with 0 has no latency since its last max/min reset.
        let min = match (self.min_latency_ticks, o.min_latency_ticks) {
            (0, m) | (m, 0) => m,
            (a, b) => a.min(b),
        };
        self.ops += o.ops;
        self.bytes += o.bytes;
        self.latency_ticks += o.latency_ticks;
        self.max_latency_ticks = self.max_latency_ticks.max(o.max_latency_ticks);
        self.min_latency_ticks = min;
    }

    fn reset_maxmin(&mut self) {
        self.max_latency_ticks = 0;
        self.min_latency_ticks = 0;
    }
}

/// The offset in [`IoStats`] of the figures of each I/O type, by `IoType as usize`: one load
/// instead of a chain of compares per recorded I/O. Checked against [`IoStats::slot`] by a test.
const SLOT: [usize; crate::types::ALL_IO_TYPES.len()] = {
    use std::mem::offset_of;
    let mut t = [offset_of!(IoStats, other); crate::types::ALL_IO_TYPES.len()];
    t[IoType::Read as usize] = offset_of!(IoStats, read);
    t[IoType::Write as usize] = offset_of!(IoStats, write);
    t[IoType::Unmap as usize] = offset_of!(IoStats, unmap);
    t[IoType::WriteZeroes as usize] = offset_of!(IoStats, write_zeroes);
    t[IoType::Compare as usize] = offset_of!(IoStats, compare);
    t[IoType::CompareAndWrite as usize] = offset_of!(IoStats, compare);
    t
};

/// Statistics of one bdev on one channel (or summed over channels).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoStats {
    /// Reads.
    pub read: OpStats,
    /// Writes.
    pub write: OpStats,
    /// Unmaps.
    pub unmap: OpStats,
    /// Write-zeroes.
    pub write_zeroes: OpStats,
    /// Flushes, resets, compares and everything else.
    pub other: OpStats,
    /// Compares and compare-and-writes.
    pub compare: OpStats,
    /// Failed I/O.
    pub failed: u64,
    /// Compare mismatches.
    pub miscompares: u64,
    /// I/O parked for resources at least once.
    pub nomem_retries: u64,
}

impl IoStats {
    #[inline]
    pub(crate) fn record(&mut self, t: IoType, bytes: u64, lat: u64, status: IoStatus) {
        if !status.is_success() {
            self.failed += 1;
            if status == IoStatus::Miscompare {
                self.miscompares += 1;
            }
        }
        let off = SLOT[t as usize];
        // SAFETY: `SLOT` holds, for every I/O type, the offset of one of this struct's
        // `OpStats` fields (`offset_of!`), so the pointer is to a field of `*self`, properly
        // aligned, and borrowed mutably through `self` for the call.
        let s = unsafe { &mut *(self as *mut Self).cast::<u8>().add(off).cast::<OpStats>() };
        s.record(bytes, lat);
    }

    /// Which figures count an I/O of type `t` (what `record` reaches through [`SLOT`]).
    #[cfg(test)]
    pub(crate) fn slot(&mut self, t: IoType) -> &mut OpStats {
        match t {
            IoType::Read => &mut self.read,
            IoType::Write => &mut self.write,
            IoType::Unmap => &mut self.unmap,
            IoType::WriteZeroes => &mut self.write_zeroes,
            IoType::Compare | IoType::CompareAndWrite => &mut self.compare,
            IoType::Flush | IoType::Reset | IoType::Abort => &mut self.other,
        }
    }

    /// Adds another channel's figures.
    pub fn add(&mut self, o: &IoStats) {
        self.read.add(&o.read);
        self.write.add(&o.write);
        self.unmap.add(&o.unmap);
        self.write_zeroes.add(&o.write_zeroes);
        self.other.add(&o.other);
        self.compare.add(&o.compare);
        self.failed += o.failed;
        self.miscompares += o.miscompares;
        self.nomem_retries += o.nomem_retries;
    }

    /// Resets max/min latencies (SPDK's reset_mode "maxmin").
    pub fn reset_maxmin(&mut self) {
        for s in [
            &mut self.read,
            &mut self.write,
            &mut self.unmap,
            &mut self.write_zeroes,
            &mut self.other,
            &mut self.compare,
        ] {
            s.reset_maxmin();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::ALL_IO_TYPES;

    /// The offset table agrees with the named fields for every type, and every type index is
    /// inside it.
    #[test]
    fn each_type_is_recorded_in_its_own_figures() {
        for (i, t) in ALL_IO_TYPES.into_iter().enumerate() {
            assert_eq!(t as usize, i);
            let mut a = IoStats::default();
            a.record(t, 4096, 7, IoStatus::Success);
            let mut b = IoStats::default();
            b.slot(t).record(4096, 7);
            assert_eq!(a, b, "{t:?}");
            assert_eq!(a.slot(t).ops, 1, "{t:?}");
        }
        let mut s = IoStats::default();
        s.record(IoType::Compare, 512, 3, IoStatus::Miscompare);
        assert_eq!((s.failed, s.miscompares, s.compare.ops), (1, 1, 1));
    }
}
