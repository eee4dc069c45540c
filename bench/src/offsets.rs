//! Offset generators: which I/O-sized slot of a job's region the next I/O targets.
//!
//! A region of `n` slots is numbered `0..n`; the engine turns a slot into a byte offset
//! with [`JobPlan::slot_offset`](crate::plan::JobPlan::slot_offset). Every generator is
//! O(1) per call and allocates nothing after construction.
//!
//! * [`Sequential`] — 0, 1, …, n−1, 0, … (bdevperf's sequential workloads).
//! * [`Uniform`] — independent uniform slots from xoshiro256**.
//! * [`RandomMap`] — every slot exactly once per pass, in a fresh pseudo-random order
//!   each pass (`-D`). Instead of bdevperf's O(n) bitmap (which also biases toward the
//!   slot after a long run of used ones), pass `p` emits `perm_p(0), perm_p(1), …` where
//!   `perm_p` is a keyed Feistel permutation with cycle walking ([`Permutation`]):
//!   O(1) memory for any n, unbiased, and exactly-once by construction.
//! * [`Zipf`] — P(rank k) ∝ 1/k^θ (`-F θ`), same distribution as fio/YCSB/SPDK zipf.
//!   Sampled with Hörmann & Derflinger's rejection-inversion method: constants are
//!   precomputed once in O(1) (no O(n) zeta sum, so multi-billion-slot bdevs start
//!   instantly), it is exact for every θ > 0 including θ = 1 (Gray's approximation used
//!   by YCSB needs θ ≠ 1), and a call costs one or two iterations in expectation. Ranks
//!   are scattered over the region by a keyed permutation (as fio hashes them), so the
//!   hot slots are not all at the start of the device.

use crate::permutation::Permutation;
use crate::rng::{splitmix64, Xoshiro256StarStar};

/// Sequential slots, wrapping at the end of the region.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequential {
    n: u64,
    next: u64,
}

impl Sequential {
    /// Starts at slot 0 of `n` slots (`n == 0` is treated as 1).
    pub fn new(n: u64) -> Self {
        Self {
            n: n.max(1),
            next: 0,
        }
    }

    /// The next slot.
    #[inline]
    pub fn next_slot(&mut self) -> u64 {
        let s = self.next;
        self.next += 1;
        if self.next == self.n {
            self.next = 0;
        }
        s
    }
}

/// Uniformly random slots.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Uniform {
    n: u64,
    rng: Xoshiro256StarStar,
}

impl Uniform {
    /// `n` slots (`0` treated as 1), deterministic for `seed`.
    pub fn new(n: u64, seed: u64) -> Self {
        Self {
            n: n.max(1),
            rng: Xoshiro256StarStar::new(seed),
        }
    }

    /// The next slot.
    #[inline]
    pub fn next_slot(&mut self) -> u64 {
        self.rng.next_below(self.n)
    }
}

/// Every slot exactly once per pass, a new random order every pass.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RandomMap {
    perm: Permutation,
    index: u64,
    key_state: u64,
    pass: u64,
}

impl RandomMap {
    /// `n` slots (`0` treated as 1), deterministic for `seed`.
    pub fn new(n: u64, seed: u64) -> Self {
        let mut key_state = seed;
        let perm = Permutation::new(n, splitmix64(&mut key_state));
        Self {
            perm,
            index: 0,
            key_state,
            pass: 0,
        }
    }

    /// The next slot.
    #[inline]
    pub fn next_slot(&mut self) -> u64 {
        if self.index == self.perm.len() {
            self.perm = Permutation::new(self.perm.len(), splitmix64(&mut self.key_state));
            self.index = 0;
            self.pass += 1;
        }
        let s = self.perm.apply(self.index);
        self.index += 1;
        s
    }

    /// How many full passes over the region have completed.
    pub fn passes_completed(&self) -> u64 {
        self.pass
    }
}

/// Zipf-distributed slots: rank k (1-based) has probability ∝ 1/k^θ.
#[derive(Debug, Clone, PartialEq)]
pub struct Zipf {
    n: u64,
    exponent: f64,
    h_integral_x1: f64,
    h_integral_n: f64,
    s: f64,
    rng: Xoshiro256StarStar,
    scatter: Option<Permutation>,
}

/// `ln(1+x)/x`, accurate near 0.
fn helper1(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.ln_1p() / x
    } else {
        1.0 - x * (0.5 - x * (1.0 / 3.0 - 0.25 * x))
    }
}

/// `(e^x − 1)/x`, accurate near 0.
fn helper2(x: f64) -> f64 {
    if x.abs() > 1e-8 {
        x.exp_m1() / x
    } else {
        1.0 + x * 0.5 * (1.0 + x * (1.0 / 3.0) * (1.0 + 0.25 * x))
    }
}

impl Zipf {
    /// `n` slots (`0` treated as 1) with skew `theta` (> 0; non-positive or non-finite
    /// values are clamped to a tiny positive θ, i.e. nearly uniform). Hot ranks are
    /// scattered over the region by a permutation keyed from `seed`.
    pub fn new(n: u64, theta: f64, seed: u64) -> Self {
        let mut z = Self::unscattered(n, theta, seed);
        let mut key = seed ^ 0x5A1F_5A1F_5A1F_5A1F;
        z.scatter = Some(Permutation::new(z.n, splitmix64(&mut key)));
        z
    }

    /// As [`Zipf::new`] but slot = rank − 1: slot 0 is the hottest.
    pub fn unscattered(n: u64, theta: f64, seed: u64) -> Self {
        let n = n.max(1);
        let exponent = if theta.is_finite() && theta > 0.0 {
            theta
        } else {
            1e-6
        };
        let mut z = Zipf {
            n,
            exponent,
            h_integral_x1: 0.0,
            h_integral_n: 0.0,
            s: 0.0,
            rng: Xoshiro256StarStar::new(seed),
            scatter: None,
        };
        z.h_integral_x1 = z.h_integral(1.5) - 1.0;
        z.h_integral_n = z.h_integral(n as f64 + 0.5);
        z.s = 2.0 - z.h_integral_inverse(z.h_integral(2.5) - z.h(2.0));
        z
    }

    /// The skew parameter in use.
    pub fn theta(&self) -> f64 {
        self.exponent
    }

    /// `H(x) = ∫ x^-θ`, shifted so that it is continuous at θ = 1.
    fn h_integral(&self, x: f64) -> f64 {
        let log_x = x.ln();
        helper2((1.0 - self.exponent) * log_x) * log_x
    }

    /// `h(x) = x^-θ`.
    fn h(&self, x: f64) -> f64 {
        (-self.exponent * x.ln()).exp()
    }

    fn h_integral_inverse(&self, x: f64) -> f64 {
        let t = (x * (1.0 - self.exponent)).max(-1.0);
        (helper1(t) * x).exp()
    }

    /// The next rank, 1-based (1 is the most frequent).
    #[inline]
    pub fn next_rank(&mut self) -> u64 {
        loop {
            let u =
                self.h_integral_n + self.rng.next_f64() * (self.h_integral_x1 - self.h_integral_n);
            let x = self.h_integral_inverse(u);
            let k_float = (x + 0.5).floor();
            let k = if k_float < 1.0 {
                1
            } else if k_float >= self.n as f64 {
                self.n
            } else {
                k_float as u64
            };
            let kf = k as f64;
            if kf - x <= self.s || u >= self.h_integral(kf + 0.5) - self.h(kf) {
                return k;
            }
        }
    }

    /// The next slot.
    #[inline]
    pub fn next_slot(&mut self) -> u64 {
        let rank0 = self.next_rank() - 1;
        match &self.scatter {
            Some(p) => p.apply(rank0),
            None => rank0,
        }
    }
}

/// Any offset generator; `next()` returns a slot in `[0, slots())`.
#[derive(Debug, Clone, PartialEq)]
pub enum OffsetGen {
    /// See [`Sequential`].
    Sequential(Sequential),
    /// See [`Uniform`].
    Uniform(Uniform),
    /// See [`RandomMap`].
    RandomMap(RandomMap),
    /// See [`Zipf`].
    Zipf(Zipf),
}

impl OffsetGen {
    /// The next slot. O(1), no allocation.
    #[inline(always)]
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> u64 {
        match self {
            OffsetGen::Sequential(g) => g.next_slot(),
            OffsetGen::Uniform(g) => g.next_slot(),
            OffsetGen::RandomMap(g) => g.next_slot(),
            OffsetGen::Zipf(g) => g.next_slot(),
        }
    }

    /// The number of slots in the region.
    pub fn slots(&self) -> u64 {
        match self {
            OffsetGen::Sequential(g) => g.n,
            OffsetGen::Uniform(g) => g.n,
            OffsetGen::RandomMap(g) => g.perm.len(),
            OffsetGen::Zipf(g) => g.n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hits(gen: &mut OffsetGen, draws: usize) -> Vec<u64> {
        let mut counts = vec![0u64; gen.slots() as usize];
        for _ in 0..draws {
            counts[gen.next() as usize] += 1;
        }
        counts
    }

    #[test]
    fn sequential_wraps() {
        let mut g = OffsetGen::Sequential(Sequential::new(3));
        let v: Vec<u64> = (0..7).map(|_| g.next()).collect();
        assert_eq!(v, vec![0, 1, 2, 0, 1, 2, 0]);
        let mut one = Sequential::new(1);
        assert_eq!((one.next_slot(), one.next_slot()), (0, 0));
        assert_eq!(OffsetGen::Sequential(Sequential::new(0)).slots(), 1);
    }

    #[test]
    fn uniform_is_roughly_flat_and_in_range() {
        let mut g = OffsetGen::Uniform(Uniform::new(100, 1));
        let counts = hits(&mut g, 200_000);
        for (slot, &c) in counts.iter().enumerate() {
            assert!((1_700..2_300).contains(&c), "slot {slot}: {c}");
        }
    }

    #[test]
    fn random_map_covers_every_slot_exactly_once_per_pass() {
        for n in [1u64, 2, 3, 5, 7, 16, 17, 100, 1000, 1023, 1025, 4099] {
            let mut g = RandomMap::new(n, 0xC0FFEE ^ n);
            for pass in 0..3 {
                let mut seen = vec![false; n as usize];
                for _ in 0..n {
                    let s = g.next_slot();
                    assert!(s < n);
                    assert!(!seen[s as usize], "n={n} pass={pass}: slot {s} twice");
                    seen[s as usize] = true;
                }
                assert!(seen.iter().all(|&b| b), "n={n} pass={pass}");
                assert_eq!(g.passes_completed(), pass);
            }
        }
    }

    #[test]
    fn random_map_passes_use_new_orders() {
        let n = 1000u64;
        let mut g = RandomMap::new(n, 5);
        let first: Vec<u64> = (0..n).map(|_| g.next_slot()).collect();
        let second: Vec<u64> = (0..n).map(|_| g.next_slot()).collect();
        assert_ne!(first, second);
        let sequential_run = first.windows(2).filter(|w| w[1] == w[0] + 1).count();
        assert!(
            sequential_run < 20,
            "order looks sequential: {sequential_run}"
        );
    }

    #[test]
    fn zipf_high_theta_is_skewed() {
        let mut g = OffsetGen::Zipf(Zipf::new(1000, 1.2, 11));
        let mut counts = hits(&mut g, 200_000);
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let top10: u64 = counts[..100].iter().sum();
        let share = top10 as f64 / 200_000.0;
        // Exact share of the top 100 ranks for θ=1.2, n=1000 is ≈ 0.83.
        assert!(share > 0.78 && share < 0.88, "top 10% share {share}");
        // Rank 1 has probability 1/H(1000, 1.2) ≈ 0.23.
        let p1 = counts[0] as f64 / 200_000.0;
        assert!((p1 - 0.231).abs() < 0.01, "p(rank 1) = {p1}");
    }

    #[test]
    fn zipf_low_theta_is_near_uniform() {
        let mut g = OffsetGen::Zipf(Zipf::new(1000, 0.01, 3));
        let mut counts = hits(&mut g, 200_000);
        counts.sort_unstable_by(|a, b| b.cmp(a));
        let top10: u64 = counts[..100].iter().sum();
        let share = top10 as f64 / 200_000.0;
        assert!(share < 0.13, "top 10% share {share}");
    }

    #[test]
    fn zipf_matches_exact_pmf() {
        for theta in [0.5, 0.99, 1.0, 1.2, 2.0] {
            let n = 10u64;
            let norm: f64 = (1..=n).map(|k| (k as f64).powf(-theta)).sum();
            let mut z = Zipf::unscattered(n, theta, 77);
            let draws = 400_000;
            let mut counts = [0u64; 10];
            for _ in 0..draws {
                counts[z.next_slot() as usize] += 1;
            }
            for k in 1..=n {
                let expected = (k as f64).powf(-theta) / norm;
                let got = counts[(k - 1) as usize] as f64 / draws as f64;
                assert!(
                    (got - expected).abs() < 0.005,
                    "theta={theta} k={k}: expected {expected:.4} got {got:.4}"
                );
            }
        }
    }

    #[test]
    fn zipf_edge_cases() {
        let mut one = Zipf::new(1, 1.2, 1);
        for _ in 0..10 {
            assert_eq!(one.next_slot(), 0);
        }
        let mut huge = Zipf::new(1 << 40, 0.9, 1);
        for _ in 0..1000 {
            assert!(huge.next_slot() < 1 << 40);
        }
        let bad = Zipf::new(10, -1.0, 1);
        assert!(bad.theta() > 0.0);
    }

    #[test]
    fn zipf_scatter_moves_hot_slot() {
        let mut plain = Zipf::unscattered(1000, 1.2, 9);
        let mut counts = vec![0u32; 1000];
        for _ in 0..10_000 {
            counts[plain.next_slot() as usize] += 1;
        }
        let hottest = counts
            .iter()
            .enumerate()
            .max_by_key(|(_, c)| **c)
            .unwrap()
            .0;
        assert_eq!(hottest, 0);
        let mut scattered = Zipf::new(1000, 1.2, 9);
        let mut counts = vec![0u32; 1000];
        for _ in 0..10_000 {
            counts[scattered.next_slot() as usize] += 1;
        }
        let hottest = counts
            .iter()
            .enumerate()
            .max_by_key(|(_, c)| **c)
            .unwrap()
            .0;
        assert_ne!(hottest, 0);
    }

    #[test]
    fn generators_are_deterministic_for_a_seed() {
        let make = |seed| {
            vec![
                OffsetGen::Uniform(Uniform::new(1000, seed)),
                OffsetGen::RandomMap(RandomMap::new(1000, seed)),
                OffsetGen::Zipf(Zipf::new(1000, 0.9, seed)),
            ]
        };
        for (mut a, (mut b, mut c)) in make(1).into_iter().zip(make(1).into_iter().zip(make(2))) {
            let va: Vec<u64> = (0..100).map(|_| a.next()).collect();
            let vb: Vec<u64> = (0..100).map(|_| b.next()).collect();
            let vc: Vec<u64> = (0..100).map(|_| c.next()).collect();
            assert_eq!(va, vb);
            assert_ne!(va, vc);
        }
    }
}
