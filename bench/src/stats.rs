//! Per-job statistics: counters, exact min/max/sum latency, an HdrHistogram of
//! latencies, and IOPS-over-time samples.
//!
//! [`JobStats::record`] is the hot path: it only updates integers and a pre-allocated
//! array of histogram buckets, folded into the histogram (fixed bounds, no auto-resize;
//! out-of-range values are clamped) every interval and when read, so it never allocates.
//! The histogram spans 1 ns .. 60 s at 3 significant digits, so every percentile is within
//! 0.1 % of the true value.

use std::borrow::Cow;

use hdrhistogram::Histogram;

use crate::error::BenchError;
use crate::fasthist::FastHist;

/// Lowest latency the histogram distinguishes, in ns.
pub const HIST_LOW_NS: u64 = 1;
/// Highest latency the histogram records (larger values are clamped), in ns: 60 s.
pub const HIST_HIGH_NS: u64 = 60_000_000_000;
/// Significant decimal digits kept by the histogram.
pub const HIST_SIGFIG: u8 = 3;

/// Plain counters, cheap to copy for progress reporting.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    /// Successfully completed I/O.
    pub ios: u64,
    /// Bytes moved by successful I/O.
    pub bytes: u64,
    /// Failed I/O.
    pub failed: u64,
    /// I/O that exceeded the `-k` timeout (they may still complete later).
    pub timed_out: u64,
    /// Sum of latencies of all completed I/O (successful and failed), ns.
    pub lat_sum_ns: u128,
    /// Smallest latency seen, ns (`u64::MAX` while nothing was recorded).
    pub lat_min_ns: u64,
    /// Largest latency seen, ns.
    pub lat_max_ns: u64,
}

impl Default for Counters {
    fn default() -> Self {
        Counters {
            ios: 0,
            bytes: 0,
            failed: 0,
            timed_out: 0,
            lat_sum_ns: 0,
            lat_min_ns: u64::MAX,
            lat_max_ns: 0,
        }
    }
}

impl Counters {
    /// Completions with a latency (successful + failed).
    pub fn completions(&self) -> u64 {
        self.ios + self.failed
    }

    /// Mean latency over all completions in ns (0 when there are none), as bdevperf.
    pub fn avg_latency_ns(&self) -> f64 {
        let n = self.completions();
        if n == 0 {
            0.0
        } else {
            self.lat_sum_ns as f64 / n as f64
        }
    }

    /// Smallest latency in ns, 0 when nothing was recorded.
    pub fn min_latency_ns(&self) -> u64 {
        if self.lat_min_ns == u64::MAX {
            0
        } else {
            self.lat_min_ns
        }
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Counters) {
        self.ios += other.ios;
        self.bytes += other.bytes;
        self.failed += other.failed;
        self.timed_out += other.timed_out;
        self.lat_sum_ns += other.lat_sum_ns;
        self.lat_min_ns = self.lat_min_ns.min(other.lat_min_ns);
        self.lat_max_ns = self.lat_max_ns.max(other.lat_max_ns);
    }

    /// The counts accumulated since `earlier` (latency fields are left as in `self`).
    pub fn since(&self, earlier: &Counters) -> Counters {
        Counters {
            ios: self.ios.saturating_sub(earlier.ios),
            bytes: self.bytes.saturating_sub(earlier.bytes),
            failed: self.failed.saturating_sub(earlier.failed),
            timed_out: self.timed_out.saturating_sub(earlier.timed_out),
            lat_sum_ns: self.lat_sum_ns.saturating_sub(earlier.lat_sum_ns),
            ..*self
        }
    }
}

/// Activity during one progress interval.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct IntervalSample {
    /// Seconds since the start of the run at the end of the interval.
    pub end_s: f64,
    /// Length of the interval in seconds.
    pub duration_s: f64,
    /// Successful I/O completed during the interval.
    pub ios: u64,
    /// Bytes moved during the interval.
    pub bytes: u64,
    /// Failed I/O during the interval.
    pub failed: u64,
}

impl IntervalSample {
    /// I/O per second over the interval.
    pub fn iops(&self) -> f64 {
        if self.duration_s > 0.0 {
            self.ios as f64 / self.duration_s
        } else {
            0.0
        }
    }

    /// MiB per second over the interval.
    pub fn mibps(&self) -> f64 {
        if self.duration_s > 0.0 {
            crate::units::mib_per_s(self.bytes as f64 / self.duration_s)
        } else {
            0.0
        }
    }
}

/// Latency percentiles in nanoseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Percentiles {
    /// Median.
    pub p50: u64,
    /// 90th percentile.
    pub p90: u64,
    /// 99th percentile.
    pub p99: u64,
    /// 99.9th percentile.
    pub p99_9: u64,
    /// 99.99th percentile.
    pub p99_99: u64,
}

impl Percentiles {
    /// The percentile points reported, with their labels.
    pub const POINTS: [(&'static str, f64); 5] = [
        ("p50", 50.0),
        ("p90", 90.0),
        ("p99", 99.0),
        ("p99.9", 99.9),
        ("p99.99", 99.99),
    ];

    /// The values in [`Percentiles::POINTS`] order, in ns.
    pub fn values_ns(&self) -> [u64; 5] {
        [self.p50, self.p90, self.p99, self.p99_9, self.p99_99]
    }
}

/// Statistics of one job (or of several, merged).
#[derive(Debug, Clone)]
pub struct JobStats {
    counters: Counters,
    hist: Histogram<u64>,
    /// Latencies recorded since the last fold into `hist` (`None`: record into `hist`).
    fast: Option<FastHist>,
    samples: Vec<IntervalSample>,
    mark_s: f64,
    mark_counters: Counters,
}

impl JobStats {
    /// Empty statistics with room for `expected_samples` interval samples (e.g.
    /// `ceil(time / status_interval) + 1`), so that marking intervals does not
    /// reallocate during the run.
    pub fn new(expected_samples: usize) -> Result<JobStats, BenchError> {
        let hist = Histogram::new_with_bounds(HIST_LOW_NS, HIST_HIGH_NS, HIST_SIGFIG)
            .map_err(|e| BenchError::Histogram(format!("cannot create histogram: {e:?}")))?;
        let fast = FastHist::new(&hist);
        Ok(JobStats {
            counters: Counters::default(),
            hist,
            fast,
            samples: Vec::with_capacity(expected_samples),
            mark_s: 0.0,
            mark_counters: Counters::default(),
        })
    }

    /// Records one completed I/O. `ok == false` counts a failure (its latency still
    /// counts toward the latency statistics, as in bdevperf). Never allocates.
    #[inline]
    pub fn record(&mut self, latency_ns: u64, bytes: u64, ok: bool) {
        let c = &mut self.counters;
        if ok {
            c.ios += 1;
            c.bytes += bytes;
        } else {
            c.failed += 1;
        }
        c.lat_sum_ns += u128::from(latency_ns);
        c.lat_min_ns = c.lat_min_ns.min(latency_ns);
        c.lat_max_ns = c.lat_max_ns.max(latency_ns);
        match &mut self.fast {
            Some(f) => f.record(latency_ns),
            None => self.hist.saturating_record(latency_ns),
        }
    }

    /// Folds the latencies recorded on the hot path into the histogram (done by
    /// [`JobStats::mark_interval`]; readers see them either way). Never allocates.
    pub fn settle(&mut self) {
        if let Some(f) = &mut self.fast {
            f.fold_into(&mut self.hist);
        }
    }

    /// The histogram with every recorded latency (a copy only if some are not folded yet).
    fn settled(&self) -> Cow<'_, Histogram<u64>> {
        match &self.fast {
            Some(f) if f.has_pending() => {
                let mut h = self.hist.clone();
                f.add_to(&mut h);
                Cow::Owned(h)
            }
            _ => Cow::Borrowed(&self.hist),
        }
    }

    /// Counts one I/O that exceeded the timeout (bdevperf's `io_timeout`).
    #[inline]
    pub fn record_timeout(&mut self) {
        self.counters.timed_out += 1;
    }

    /// The counters so far.
    pub fn counters(&self) -> Counters {
        self.counters
    }

    /// The latency histogram (ns).
    pub fn histogram(&self) -> Cow<'_, Histogram<u64>> {
        self.settled()
    }

    /// Closes the interval ending at `elapsed_s` (seconds since the run started) and
    /// stores its sample. Calls with a non-increasing time are ignored.
    pub fn mark_interval(&mut self, elapsed_s: f64) {
        self.settle();
        if elapsed_s.is_nan() || elapsed_s <= self.mark_s {
            return;
        }
        let delta = self.counters.since(&self.mark_counters);
        self.samples.push(IntervalSample {
            end_s: elapsed_s,
            duration_s: elapsed_s - self.mark_s,
            ios: delta.ios,
            bytes: delta.bytes,
            failed: delta.failed,
        });
        self.mark_s = elapsed_s;
        self.mark_counters = self.counters;
    }

    /// The interval samples so far.
    pub fn samples(&self) -> &[IntervalSample] {
        &self.samples
    }

    /// Adds `other` into `self`: counters, histogram, and interval samples (summed by
    /// index, so jobs sampled on the same schedule give the total IOPS over time).
    pub fn merge(&mut self, other: &JobStats) -> Result<(), BenchError> {
        self.counters.merge(&other.counters);
        self.settle();
        self.hist
            .add(&*other.settled())
            .map_err(|e| BenchError::Histogram(format!("cannot merge histograms: {e:?}")))?;
        for (i, s) in other.samples.iter().enumerate() {
            match self.samples.get_mut(i) {
                Some(mine) => {
                    mine.ios += s.ios;
                    mine.bytes += s.bytes;
                    mine.failed += s.failed;
                }
                None => self.samples.push(*s),
            }
        }
        Ok(())
    }

    /// The merge of all `stats` (empty statistics for an empty iterator).
    pub fn merged<'a, I>(stats: I) -> Result<JobStats, BenchError>
    where
        I: IntoIterator<Item = &'a JobStats>,
    {
        let mut total = JobStats::new(0)?;
        for s in stats {
            total.merge(s)?;
        }
        Ok(total)
    }

    /// Latency at `percentile` (0..=100) in ns; 0 when nothing was recorded.
    pub fn percentile_ns(&self, percentile: f64) -> u64 {
        at_percentile(&self.settled(), percentile)
    }

    /// The standard percentile set in ns.
    pub fn percentiles(&self) -> Percentiles {
        let h = self.settled();
        Percentiles {
            p50: at_percentile(&h, 50.0),
            p90: at_percentile(&h, 90.0),
            p99: at_percentile(&h, 99.0),
            p99_9: at_percentile(&h, 99.9),
            p99_99: at_percentile(&h, 99.99),
        }
    }

    /// Points of the latency percentile curve for plotting: `(percentile, ns)` at
    /// percentiles `100·(1 − 10^(−k/steps_per_decade))`, from 0 up to the resolution the
    /// sample count supports (1 − 1/count), plus the maximum (100).
    pub fn latency_curve(&self, steps_per_decade: u32) -> Vec<(f64, u64)> {
        let h = self.settled();
        let count = h.len();
        if count == 0 {
            return Vec::new();
        }
        let steps = steps_per_decade.max(1);
        let decades = (count as f64).log10().max(1.0);
        let last = (decades * f64::from(steps)).floor() as u32;
        let mut points = Vec::with_capacity(last as usize + 2);
        for k in 0..=last {
            let p = 100.0 * (1.0 - 10f64.powf(-f64::from(k) / f64::from(steps)));
            points.push((p, at_percentile(&h, p)));
        }
        points.push((100.0, h.max()));
        points
    }
}

/// Latency at `percentile` of `h` in ns; 0 when nothing was recorded.
fn at_percentile(h: &Histogram<u64>, percentile: f64) -> u64 {
    if h.is_empty() {
        0
    } else {
        h.value_at_percentile(percentile)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn within(value: u64, expected: u64, rel: f64) -> bool {
        (value as f64 - expected as f64).abs() <= expected as f64 * rel
    }

    #[test]
    fn counters_and_min_max_avg() {
        let mut s = JobStats::new(4).unwrap();
        s.record(1_000, 4096, true);
        s.record(3_000, 4096, true);
        s.record(5_000, 4096, false);
        s.record_timeout();
        let c = s.counters();
        assert_eq!((c.ios, c.bytes, c.failed, c.timed_out), (2, 8192, 1, 1));
        assert_eq!(c.completions(), 3);
        assert_eq!((c.min_latency_ns(), c.lat_max_ns), (1_000, 5_000));
        assert_eq!(c.avg_latency_ns(), 3_000.0);
        assert_eq!(s.histogram().len(), 3);
    }

    #[test]
    fn empty_stats_report_zeros() {
        let s = JobStats::new(0).unwrap();
        let c = s.counters();
        assert_eq!(c.avg_latency_ns(), 0.0);
        assert_eq!(c.min_latency_ns(), 0);
        assert_eq!(s.percentiles(), Percentiles::default());
        assert!(s.latency_curve(5).is_empty());
    }

    #[test]
    fn percentiles_on_known_uniform_data() {
        let mut s = JobStats::new(0).unwrap();
        for v in 1..=100_000u64 {
            s.record(v * 10, 512, true); // 10 ns .. 1 ms, uniform
        }
        let p = s.percentiles();
        assert!(within(p.p50, 500_000, 0.002), "{p:?}");
        assert!(within(p.p90, 900_000, 0.002), "{p:?}");
        assert!(within(p.p99, 990_000, 0.002), "{p:?}");
        assert!(within(p.p99_9, 999_000, 0.002), "{p:?}");
        assert!(within(p.p99_99, 999_900, 0.002), "{p:?}");
        assert_eq!(p.values_ns()[0], p.p50);
        assert!(within(s.percentile_ns(100.0), 1_000_000, 0.001));
    }

    #[test]
    fn percentiles_on_bimodal_data() {
        let mut s = JobStats::new(0).unwrap();
        for _ in 0..990 {
            s.record(10_000, 4096, true);
        }
        for _ in 0..10 {
            s.record(5_000_000, 4096, true);
        }
        let p = s.percentiles();
        assert!(within(p.p50, 10_000, 0.001));
        assert!(within(p.p90, 10_000, 0.001));
        assert!(within(p.p99, 10_000, 0.001));
        assert!(within(p.p99_9, 5_000_000, 0.001));
    }

    #[test]
    fn out_of_range_latencies_are_clamped() {
        let mut s = JobStats::new(0).unwrap();
        s.record(0, 1, true);
        s.record(u64::MAX, 1, true);
        assert_eq!(s.histogram().len(), 2);
        assert_eq!(s.counters().lat_max_ns, u64::MAX);
        assert!(within(s.percentile_ns(100.0), HIST_HIGH_NS, 0.001));
    }

    #[test]
    fn merging_sums_counters_histograms_and_samples() {
        let mut a = JobStats::new(4).unwrap();
        let mut b = JobStats::new(4).unwrap();
        for _ in 0..100 {
            a.record(1_000, 4096, true);
        }
        a.mark_interval(1.0);
        for _ in 0..300 {
            b.record(3_000, 4096, true);
        }
        b.record(9_000, 4096, false);
        b.record_timeout();
        b.mark_interval(1.0);
        for _ in 0..50 {
            b.record(2_000, 4096, true);
        }
        b.mark_interval(2.0);

        let total = JobStats::merged([&a, &b]).unwrap();
        let c = total.counters();
        assert_eq!((c.ios, c.failed, c.timed_out), (450, 1, 1));
        assert_eq!(c.bytes, 450 * 4096);
        assert_eq!((c.min_latency_ns(), c.lat_max_ns), (1_000, 9_000));
        let expected_avg = (100.0 * 1_000.0 + 300.0 * 3_000.0 + 9_000.0 + 50.0 * 2_000.0) / 451.0;
        assert!((c.avg_latency_ns() - expected_avg).abs() < 1e-9);
        assert_eq!(total.histogram().len(), 451);
        assert!(within(total.percentile_ns(50.0), 3_000, 0.001));
        let samples = total.samples();
        assert_eq!(samples.len(), 2);
        assert_eq!(samples[0].ios, 400);
        assert_eq!(samples[0].failed, 1);
        assert_eq!(samples[1].ios, 50);
        assert_eq!(samples[1].iops(), 50.0);
    }

    #[test]
    fn interval_samples_are_deltas() {
        let mut s = JobStats::new(8).unwrap();
        for _ in 0..1000 {
            s.record(100, 1 << 20, true);
        }
        s.mark_interval(0.5);
        s.mark_interval(0.5); // ignored: time did not advance
        for _ in 0..3000 {
            s.record(100, 1 << 20, true);
        }
        s.mark_interval(1.5);
        let v = s.samples();
        assert_eq!(v.len(), 2);
        assert_eq!((v[0].end_s, v[0].duration_s, v[0].ios), (0.5, 0.5, 1000));
        assert_eq!(v[0].iops(), 2000.0);
        assert_eq!(v[0].mibps(), 2000.0);
        assert_eq!((v[1].end_s, v[1].duration_s, v[1].ios), (1.5, 1.0, 3000));
        let zero = IntervalSample {
            end_s: 0.0,
            duration_s: 0.0,
            ios: 5,
            bytes: 5,
            failed: 0,
        };
        assert_eq!((zero.iops(), zero.mibps()), (0.0, 0.0));
    }

    #[test]
    fn counters_since() {
        let a = Counters {
            ios: 10,
            bytes: 100,
            ..Counters::default()
        };
        let b = Counters {
            ios: 25,
            bytes: 400,
            failed: 2,
            ..a
        };
        let d = b.since(&a);
        assert_eq!((d.ios, d.bytes, d.failed), (15, 300, 2));
    }

    #[test]
    fn latency_curve_is_monotonic_and_ends_at_max() {
        let mut s = JobStats::new(0).unwrap();
        for v in 1..=10_000u64 {
            s.record(v, 1, true);
        }
        let curve = s.latency_curve(4);
        assert_eq!(curve[0].0, 0.0);
        assert_eq!(curve.last().unwrap().0, 100.0);
        assert_eq!(curve.last().unwrap().1, s.histogram().max());
        assert_eq!(curve.len(), 4 * 4 + 2);
        for w in curve.windows(2) {
            assert!(w[1].0 > w[0].0 && w[1].1 >= w[0].1, "{w:?}");
        }
    }
}
