//! The hot-path side of the latency histogram: HdrHistogram's own bucketing for the job's
//! bounds, kept as a flat array of counts and folded into the [`Histogram`] when it is read
//! (every status interval and at the end of a job). Recording is an index computation and
//! one increment (about 10 instructions) where `Histogram::saturating_record` also keeps its
//! total, minimum and maximum and checks bounds twice (about 60); the folded histogram is the
//! one direct recording would have produced (same counts in the same buckets, tested below).

use hdrhistogram::Histogram;

/// Counts per HdrHistogram bucket index, not yet folded into the histogram.
#[derive(Clone)]
pub(crate) struct FastHist {
    counts: Box<[u64]>,
    /// log2 of half the number of sub-buckets per bucket.
    half_mag: u32,
    /// log2 of the lowest discernible value.
    unit_mag: u32,
    /// Where values beyond the histogram's highest trackable value go.
    high_idx: usize,
    /// Values recorded since the last fold.
    pending: u64,
}

impl std::fmt::Debug for FastHist {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FastHist")
            .field("buckets", &self.counts.len())
            .field("pending", &self.pending)
            .finish()
    }
}

impl FastHist {
    /// The fast side of `hist`, which must have been created with `low` and `sigfig` (and no
    /// auto-resize). `None` if the layout does not match the histogram's (a different
    /// hdrhistogram version): the caller then records directly.
    pub(crate) fn new(hist: &Histogram<u64>, low: u64, sigfig: u8) -> Option<FastHist> {
        let largest_single_unit = 2 * 10u64.checked_pow(u32::from(sigfig))?;
        let count_mag = 64 - (largest_single_unit - 1).leading_zeros();
        let half_mag = count_mag.checked_sub(1)?.max(1);
        let unit_mag = 63 - low.max(1).leading_zeros();
        let mut f = FastHist {
            counts: Box::new([]),
            half_mag,
            unit_mag,
            high_idx: 0,
            pending: 0,
        };
        let len = hist.distinct_values();
        let high_idx = f.index(hist.high());
        if high_idx >= len || f.value_for(high_idx) > hist.high() {
            return None;
        }
        f.counts = vec![0u64; len].into_boxed_slice();
        f.high_idx = high_idx;
        Some(f)
    }

    /// HdrHistogram's bucket index of `v`.
    #[inline]
    fn index(&self, v: u64) -> usize {
        let base = 64 - self.unit_mag - self.half_mag - 1;
        let mask = ((1u64 << (self.half_mag + 1)) - 1) << self.unit_mag;
        let bucket = base - (v | mask).leading_zeros();
        let sub = (v >> (bucket + self.unit_mag)) as usize;
        ((bucket as usize + 1) << self.half_mag) + sub - (1usize << self.half_mag)
    }

    /// The lowest value of bucket index `i`.
    fn value_for(&self, i: usize) -> u64 {
        let half = 1usize << self.half_mag;
        let mut bucket = (i >> self.half_mag) as i64 - 1;
        let mut sub = (i & (half - 1)) + half;
        if bucket < 0 {
            sub -= half;
            bucket = 0;
        }
        (sub as u64) << (bucket as u32 + self.unit_mag)
    }

    /// Counts one value (values past the histogram's range count as its highest value, as
    /// `saturating_record`).
    #[inline]
    pub(crate) fn record(&mut self, v: u64) {
        let i = self.index(v);
        let i = if i < self.counts.len() {
            i
        } else {
            self.high_idx
        };
        self.counts[i] += 1;
        self.pending += 1;
    }

    /// True if values were recorded since the last fold.
    pub(crate) fn has_pending(&self) -> bool {
        self.pending > 0
    }

    /// Moves the counts into `hist` (no allocation: the histogram has fixed bounds).
    pub(crate) fn fold_into(&mut self, hist: &mut Histogram<u64>) {
        if self.pending == 0 {
            return;
        }
        for i in 0..self.counts.len() {
            let c = std::mem::take(&mut self.counts[i]);
            if c > 0 {
                hist.saturating_record_n(self.value_for(i), c);
            }
        }
        self.pending = 0;
    }

    /// Adds the counts into `hist` without clearing them.
    pub(crate) fn add_to(&self, hist: &mut Histogram<u64>) {
        for (i, &c) in self.counts.iter().enumerate() {
            if c > 0 {
                hist.saturating_record_n(self.value_for(i), c);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Xoshiro256StarStar;
    use crate::stats::{HIST_HIGH_NS, HIST_LOW_NS, HIST_SIGFIG};

    fn same(a: &Histogram<u64>, b: &Histogram<u64>) {
        assert_eq!(a.len(), b.len());
        assert_eq!((a.min(), a.max()), (b.min(), b.max()));
        assert_eq!(a.mean(), b.mean());
        for p in [0.0, 1.0, 10.0, 50.0, 90.0, 99.0, 99.9, 99.99, 99.999, 100.0] {
            assert_eq!(a.value_at_percentile(p), b.value_at_percentile(p), "p{p}");
        }
        let ca: Vec<_> = a
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect();
        let cb: Vec<_> = b
            .iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect();
        assert_eq!(ca, cb);
    }

    /// Folding gives the histogram direct recording gives, for the bench's bounds and others.
    #[test]
    fn folded_counts_equal_direct_recording() {
        for (low, high, sigfig) in [
            (HIST_LOW_NS, HIST_HIGH_NS, HIST_SIGFIG),
            (1, 1 << 40, 2),
            (1000, 1 << 50, 4),
        ] {
            let mut direct = Histogram::<u64>::new_with_bounds(low, high, sigfig).unwrap();
            let mut folded = direct.clone();
            let mut fast = FastHist::new(&folded, low, sigfig).unwrap();
            let mut rng = Xoshiro256StarStar::new(low ^ high);
            let mut values: Vec<u64> = vec![
                0,
                1,
                2,
                1023,
                1024,
                2047,
                2048,
                4095,
                4096,
                high,
                high + 1,
                u64::MAX,
            ];
            for _ in 0..200_000 {
                // Log-uniform over the whole range, plus the exact bucket edges above.
                let bits = rng.next_below(64) as u32;
                values.push(rng.next_u64() >> (63 - bits.min(63)));
            }
            for (k, &v) in values.iter().enumerate() {
                direct.saturating_record(v);
                fast.record(v);
                if k % 50_000 == 0 {
                    fast.fold_into(&mut folded);
                }
            }
            fast.fold_into(&mut folded);
            assert!(!fast.has_pending());
            same(&direct, &folded);
        }
    }

    #[test]
    fn add_to_keeps_the_counts() {
        let h = Histogram::<u64>::new_with_bounds(HIST_LOW_NS, HIST_HIGH_NS, HIST_SIGFIG).unwrap();
        let mut fast = FastHist::new(&h, HIST_LOW_NS, HIST_SIGFIG).unwrap();
        for v in [5, 500, 50_000, 5_000_000] {
            fast.record(v);
        }
        let mut a = h.clone();
        fast.add_to(&mut a);
        assert_eq!(a.len(), 4);
        assert!(fast.has_pending());
        let mut b = h.clone();
        fast.fold_into(&mut b);
        same(&a, &b);
    }
}
