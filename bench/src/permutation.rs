//! A keyed pseudo-random permutation of `[0, n)` in O(1) memory.
//!
//! Used by the random map (every slot exactly once per pass, no O(n) bitmap) and to
//! scatter zipf's hot ranks across the device.
//!
//! Construction: a 4-round Feistel network over the smallest power-of-two domain
//! `2^b >= n` (halves of `floor(b/2)` and `ceil(b/2)` bits, alternating widths so any
//! `b` works), with round function `mix64(half ^ round_key)`. A Feistel network is a
//! bijection on `[0, 2^b)` whatever the round function, so *cycle walking* (re-applying
//! it until the value lands below `n`) yields a bijection on `[0, n)`. Because
//! `2^b < 2n`, fewer than two applications are needed on average.

use crate::rng::{mix64, splitmix64};

const ROUNDS: usize = 4;

/// A bijection on `[0, n)` selected by a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permutation {
    n: u64,
    left_bits: u32,
    right_bits: u32,
    keys: [u64; ROUNDS],
}

#[inline]
fn mask(bits: u32) -> u64 {
    if bits >= 64 {
        u64::MAX
    } else {
        (1u64 << bits) - 1
    }
}

impl Permutation {
    /// A permutation of `[0, n)` chosen by `key`. `n == 0` is treated as 1.
    pub fn new(n: u64, key: u64) -> Self {
        let n = n.max(1);
        let bits = (64 - (n - 1).leading_zeros()).max(2);
        let right_bits = bits / 2;
        let left_bits = bits - right_bits;
        let mut state = key;
        let mut keys = [0u64; ROUNDS];
        for k in &mut keys {
            *k = splitmix64(&mut state);
        }
        Self {
            n,
            left_bits,
            right_bits,
            keys,
        }
    }

    /// The size of the permuted range.
    pub fn len(&self) -> u64 {
        self.n
    }

    /// Always false: a permutation covers at least one value.
    pub fn is_empty(&self) -> bool {
        false
    }

    #[inline]
    fn feistel(&self, x: u64) -> u64 {
        let (mut lbits, mut rbits) = (self.left_bits, self.right_bits);
        let mut left = x >> rbits;
        let mut right = x & mask(rbits);
        for &k in &self.keys {
            // (L, R) -> (R, L ^ F(R)); the halves swap widths each round.
            let new_right = left ^ (mix64(right ^ k) & mask(lbits));
            left = right;
            right = new_right;
            std::mem::swap(&mut lbits, &mut rbits);
        }
        // ROUNDS is even, so widths are back to the original layout.
        (left << rbits) | right
    }

    /// The image of `i` (`i < n`); values `>= n` are reduced modulo `n` first.
    #[inline]
    pub fn apply(&self, i: u64) -> u64 {
        let mut x = self.feistel(i % self.n);
        while x >= self.n {
            x = self.feistel(x);
        }
        x
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_bijection(n: u64, key: u64) {
        let p = Permutation::new(n, key);
        let mut seen = vec![false; n as usize];
        for i in 0..n {
            let v = p.apply(i);
            assert!(v < n, "n={n} i={i} v={v}");
            assert!(!seen[v as usize], "n={n}: {v} produced twice");
            seen[v as usize] = true;
        }
    }

    #[test]
    fn bijection_for_many_sizes() {
        for n in [
            1u64, 2, 3, 4, 5, 7, 8, 9, 15, 16, 17, 100, 255, 256, 257, 1000, 4097, 65_537,
        ] {
            for key in [0u64, 1, 0xDEAD_BEEF] {
                assert_bijection(n, key);
            }
        }
    }

    #[test]
    fn keys_give_different_orders() {
        let a = Permutation::new(1000, 1);
        let b = Permutation::new(1000, 2);
        let same = (0..1000).filter(|&i| a.apply(i) == b.apply(i)).count();
        assert!(same < 20, "{same} fixed points in common");
        assert_eq!(a, Permutation::new(1000, 1));
    }

    #[test]
    fn not_the_identity() {
        let p = Permutation::new(1 << 20, 99);
        let fixed = (0..10_000).filter(|&i| p.apply(i) == i).count();
        assert!(fixed < 5, "{fixed}");
    }

    #[test]
    fn huge_domains_stay_in_range() {
        for n in [u64::MAX, (1 << 63) + 1, 1 << 40, (1 << 33) + 7] {
            let p = Permutation::new(n, 5);
            for i in [0, 1, 12345, n - 1] {
                assert!(p.apply(i) < n);
            }
        }
    }

    #[test]
    fn zero_is_treated_as_one() {
        let p = Permutation::new(0, 3);
        assert_eq!(p.len(), 1);
        assert!(!p.is_empty());
        assert_eq!(p.apply(0), 0);
        assert_eq!(p.apply(17), 0);
    }
}
