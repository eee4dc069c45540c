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
        let s = match t {
            IoType::Read => &mut self.read,
            IoType::Write => &mut self.write,
            IoType::Unmap => &mut self.unmap,
            IoType::WriteZeroes => &mut self.write_zeroes,
            IoType::Compare | IoType::CompareAndWrite => &mut self.compare,
            _ => &mut self.other,
        };
        s.record(bytes, lat);
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
