//! The hot-path side of the latency histogram: HdrHistogram's own bucketing for the job's
//! bounds, kept as a flat array of counts and folded into the [`Histogram`] when it is read
//! (every status interval and at the end of a job). Recording is an index computation and
//! one increment (about 10 instructions) where `Histogram::saturating_record` also keeps its
//! total, minimum and maximum and checks bounds twice (about 60); the folded histogram is the
//! one direct recording would have produced (same counts in the same buckets, tested below).

use hdrhistogram::Histogram;

use crate::stats::{HIST_LOW_NS, HIST_SIGFIG};

/// log2 of half the number of sub-buckets per bucket, for [`HIST_SIGFIG`] digits
/// (HdrHistogram's `sub_bucket_half_count_magnitude`).
const HALF_MAG: u32 = {
    let largest_single_unit = 2 * 10u64.pow(HIST_SIGFIG as u32);
    let count_mag = 64 - (largest_single_unit - 1).leading_zeros();
    if count_mag > 1 {
        count_mag - 1
    } else {
        1
    }
};
/// log2 of the lowest discernible value, [`HIST_LOW_NS`] (HdrHistogram's `unit_magnitude`).
const UNIT_MAG: u32 = 63 - HIST_LOW_NS.leading_zeros();

/// Counts per HdrHistogram bucket index, not yet folded into the histogram.
#[derive(Clone)]
pub(crate) struct FastHist {
    counts: Box<[u64]>,
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
    /// The fast side of `hist`, which must have been created with [`HIST_LOW_NS`] and
    /// [`HIST_SIGFIG`] (and no auto-resize). `None` if the layout does not match the
    /// histogram's (another hdrhistogram version, other bounds): the caller then records
    /// directly.
    pub(crate) fn new(hist: &Histogram<u64>) -> Option<FastHist> {
        let len = hist.distinct_values();
        let high_idx = index(hist.high());
        // The last index must hold the histogram's highest values, as HdrHistogram's own.
        if high_idx >= len
            || value_for(high_idx) > hist.high()
            || value_for(len - 1) != hist.lowest_equivalent(value_for(len - 1))
            || hist.lowest_equivalent(u64::MAX >> 1) < value_for(len - 1)
        {
            return None;
        }
        Some(FastHist {
            counts: vec![0u64; len].into_boxed_slice(),
            high_idx,
            pending: 0,
        })
    }

    /// Counts one value (values past the histogram's range count as its highest value, as
    /// `saturating_record`).
    #[inline]
    pub(crate) fn record(&mut self, v: u64) {
        match self.counts.get_mut(index(v)) {
            Some(c) => *c += 1,
            None => self.counts[self.high_idx] += 1,
        }
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
                hist.saturating_record_n(value_for(i), c);
            }
        }
        self.pending = 0;
    }

    /// Adds the counts into `hist` without clearing them.
    pub(crate) fn add_to(&self, hist: &mut Histogram<u64>) {
        for (i, &c) in self.counts.iter().enumerate() {
            if c > 0 {
                hist.saturating_record_n(value_for(i), c);
            }
        }
    }
}

/// HdrHistogram's bucket index of `v`.
#[inline]
fn index(v: u64) -> usize {
    const BASE: u32 = 64 - UNIT_MAG - HALF_MAG - 1;
    const MASK: u64 = ((1u64 << (HALF_MAG + 1)) - 1) << UNIT_MAG;
    let bucket = BASE - (v | MASK).leading_zeros();
    let sub = (v >> (bucket + UNIT_MAG)) as usize;
    ((bucket as usize + 1) << HALF_MAG) + sub - (1usize << HALF_MAG)
}

/// The lowest value of bucket index `i`.
fn value_for(i: usize) -> u64 {
    let half = 1usize << HALF_MAG;
    let mut bucket = (i >> HALF_MAG) as i64 - 1;
    let mut sub = (i & (half - 1)) + half;
    if bucket < 0 {
        sub -= half;
        bucket = 0;
    }
    (sub as u64) << (bucket as u32 + UNIT_MAG)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rng::Xoshiro256StarStar;
    use crate::stats::HIST_HIGH_NS;

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

    /// Folding gives the histogram direct recording gives, for the bench's bounds and others
    /// with the same lowest value and precision.
    #[test]
    fn folded_counts_equal_direct_recording() {
        for high in [HIST_HIGH_NS, 1 << 40, 1 << 62] {
            let mut direct =
                Histogram::<u64>::new_with_bounds(HIST_LOW_NS, high, HIST_SIGFIG).unwrap();
            let mut folded = direct.clone();
            let mut fast = FastHist::new(&folded).unwrap();
            let mut rng = Xoshiro256StarStar::new(high);
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

    /// Other bounds than the ones the constants were derived for: refused (direct recording).
    #[test]
    fn other_layouts_are_refused() {
        let h = Histogram::<u64>::new_with_bounds(1, 1 << 40, 2).unwrap();
        assert!(FastHist::new(&h).is_none());
        let h = Histogram::<u64>::new_with_bounds(1000, 1 << 40, HIST_SIGFIG).unwrap();
        assert!(FastHist::new(&h).is_none());
    }

    #[test]
    fn add_to_keeps_the_counts() {
        let h = Histogram::<u64>::new_with_bounds(HIST_LOW_NS, HIST_HIGH_NS, HIST_SIGFIG).unwrap();
        let mut fast = FastHist::new(&h).unwrap();
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
