//! The verify data pattern.
//!
//! Every block (`block_size` bytes) of a verify write is self-describing. Viewed as
//! little-endian 64-bit words:
//!
//! | word | contents                                                         |
//! |------|------------------------------------------------------------------|
//! | 0    | [`MAGIC`] (`"FERRVRFY"`)                                          |
//! | 1    | byte offset of this block on the bdev                            |
//! | 2    | the run seed                                                     |
//! | 3    | the write generation                                             |
//! | i≥4  | `mix64(key + i·φ)`, `key` derived from offset, seed and generation |
//!
//! Block sizes that are not a multiple of 8 (or shorter than the header) simply truncate
//! this word stream. Because the fill depends on all three inputs, a block read back from
//! the wrong offset, a stale (older generation) block, data from another run, and any
//! flipped byte are all detected, and the header lets [`check`] say which it was.
//! Neither [`fill`] nor [`check`] allocates.

use std::fmt;

use crate::rng::{mix64, GOLDEN_GAMMA};

/// Word 0 of every verify block.
pub const MAGIC: u64 = u64::from_le_bytes(*b"FERRVRFY");

#[inline]
fn block_key(offset_bytes: u64, seed: u64, generation: u32) -> u64 {
    mix64(offset_bytes ^ mix64(seed ^ mix64((u64::from(generation) << 1) | 1)))
}

#[inline]
fn word(index: usize, offset_bytes: u64, seed: u64, generation: u32, key: u64) -> u64 {
    match index {
        0 => MAGIC,
        1 => offset_bytes,
        2 => seed,
        3 => u64::from(generation),
        i => mix64(key.wrapping_add((i as u64).wrapping_mul(GOLDEN_GAMMA))),
    }
}

#[inline]
fn chunk_len(buf_len: usize, block_size: usize) -> usize {
    if block_size == 0 {
        buf_len.max(1)
    } else {
        block_size
    }
}

/// Fills `buf` with the pattern for blocks starting at byte `offset_bytes` on the bdev.
///
/// `buf` is split into `block_size` chunks (a short final chunk gets a truncated block;
/// `block_size == 0` treats the whole buffer as one block).
pub fn fill(buf: &mut [u8], block_size: usize, offset_bytes: u64, seed: u64, generation: u32) {
    let bs = chunk_len(buf.len(), block_size);
    for (b, block) in buf.chunks_mut(bs).enumerate() {
        let off = offset_bytes.wrapping_add((b * bs) as u64);
        let key = block_key(off, seed, generation);
        let mut words = block.chunks_exact_mut(8);
        let mut i = 0usize;
        for w in &mut words {
            w.copy_from_slice(&word(i, off, seed, generation, key).to_le_bytes());
            i += 1;
        }
        let tail = words.into_remainder();
        if !tail.is_empty() {
            let bytes = word(i, off, seed, generation, key).to_le_bytes();
            tail.copy_from_slice(&bytes[..tail.len()]);
        }
    }
}

/// Why a block did not match, diagnosed from its header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MismatchCause {
    /// The block does not start with [`MAGIC`]: never written by a verify run, zeroed,
    /// or overwritten by something else.
    NoPattern,
    /// The block was written by a run with a different seed.
    ForeignSeed {
        /// The seed found in the block.
        found: u64,
    },
    /// The block holds data that was written for another offset (misdirected I/O).
    WrongOffset {
        /// The offset the data was written for.
        found: u64,
    },
    /// The block holds an older (or newer) write of this offset.
    StaleGeneration {
        /// The generation found in the block.
        found: u32,
        /// The generation that was expected.
        expected: u32,
    },
    /// The header is right but the data after it is not: corruption inside the block.
    Corrupted,
}

impl fmt::Display for MismatchCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            MismatchCause::NoPattern => write!(f, "block does not hold a verify pattern"),
            MismatchCause::ForeignSeed { found } => {
                write!(f, "block was written by another run (seed {found:#x})")
            }
            MismatchCause::WrongOffset { found } => {
                write!(f, "block holds data written for offset {found:#x}")
            }
            MismatchCause::StaleGeneration { found, expected } => write!(
                f,
                "block holds generation {found} of this offset, expected generation {expected}"
            ),
            MismatchCause::Corrupted => {
                write!(f, "data corrupted inside a correctly labelled block")
            }
        }
    }
}

/// The first difference between a buffer and the pattern it should hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mismatch {
    /// Byte offset on the bdev of the first bad byte.
    pub offset: u64,
    /// Index of the block containing it (`offset / block_size`).
    pub block: u64,
    /// The expected 8-byte word containing the bad byte (little-endian; a truncated
    /// final word is zero-padded).
    pub expected: u64,
    /// The word actually found there.
    pub found: u64,
    /// What the block's header says happened.
    pub cause: MismatchCause,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "miscompare at offset {:#x} (block {}): expected {:#018x}, found {:#018x} ({})",
            self.offset, self.block, self.expected, self.found, self.cause
        )
    }
}

impl std::error::Error for Mismatch {}

#[inline]
fn read_word(bytes: &[u8]) -> u64 {
    let mut w = [0u8; 8];
    w[..bytes.len()].copy_from_slice(bytes);
    u64::from_le_bytes(w)
}

fn diagnose(block: &[u8], offset: u64, seed: u64, generation: u32) -> MismatchCause {
    let header = |i: usize| block.get(i * 8..i * 8 + 8).map(read_word);
    if header(0) != Some(MAGIC) {
        return MismatchCause::NoPattern;
    }
    match header(2) {
        Some(s) if s != seed => return MismatchCause::ForeignSeed { found: s },
        _ => {}
    }
    match header(1) {
        Some(o) if o != offset => return MismatchCause::WrongOffset { found: o },
        _ => {}
    }
    match header(3) {
        Some(g) if g != u64::from(generation) => MismatchCause::StaleGeneration {
            found: g as u32,
            expected: generation,
        },
        _ => MismatchCause::Corrupted,
    }
}

/// Checks that `buf` holds exactly what [`fill`] writes for the same arguments.
pub fn check(
    buf: &[u8],
    block_size: usize,
    offset_bytes: u64,
    seed: u64,
    generation: u32,
) -> Result<(), Mismatch> {
    let bs = chunk_len(buf.len(), block_size);
    for (b, block) in buf.chunks(bs).enumerate() {
        let off = offset_bytes.wrapping_add((b * bs) as u64);
        let key = block_key(off, seed, generation);
        for (i, got) in block.chunks(8).enumerate() {
            let want = word(i, off, seed, generation, key).to_le_bytes();
            let want = &want[..got.len()];
            if got != want {
                let byte = got.iter().zip(want).position(|(a, b)| a != b).unwrap_or(0);
                let bad = off.wrapping_add((i * 8 + byte) as u64);
                let block_index = if block_size == 0 {
                    0
                } else {
                    bad / block_size as u64
                };
                return Err(Mismatch {
                    offset: bad,
                    block: block_index,
                    expected: read_word(want),
                    found: read_word(got),
                    cause: diagnose(block, off, seed, generation),
                });
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filled(len: usize, bs: usize, off: u64, seed: u64, generation: u32) -> Vec<u8> {
        let mut v = vec![0u8; len];
        fill(&mut v, bs, off, seed, generation);
        v
    }

    #[test]
    fn round_trip_for_various_block_sizes() {
        for (bs, blocks) in [
            (512usize, 8usize),
            (4096, 2),
            (520, 3),
            (4160, 1),
            (513, 3),
            (16, 4),
        ] {
            let buf = filled(bs * blocks, bs, (bs * 10) as u64, 42, 7);
            check(&buf, bs, (bs * 10) as u64, 42, 7).unwrap();
            assert_eq!(&buf[..8], b"FERRVRFY");
        }
    }

    #[test]
    fn blocks_are_distinct() {
        let buf = filled(1024, 512, 0, 1, 1);
        assert_ne!(buf[32..512], buf[512 + 32..]);
        let other_gen = filled(512, 512, 0, 1, 2);
        assert_ne!(buf[32..512], other_gen[32..]);
    }

    #[test]
    fn every_corrupted_byte_is_found_at_its_exact_offset() {
        let base_off = 0x10_0000u64;
        let good = filled(1024, 512, base_off, 9, 3);
        for idx in 0..good.len() {
            let mut bad = good.clone();
            bad[idx] ^= 0x40;
            let m = check(&bad, 512, base_off, 9, 3).unwrap_err();
            assert_eq!(m.offset, base_off + idx as u64, "byte {idx}");
            assert_eq!(m.block, (base_off + idx as u64) / 512);
            assert_ne!(m.expected, m.found);
            let in_block = idx % 512;
            let expected_cause = match in_block / 8 {
                0 => MismatchCause::NoPattern,
                1 => MismatchCause::WrongOffset {
                    found: (base_off + (idx - in_block) as u64) ^ (0x40 << ((in_block % 8) * 8)),
                },
                2 => MismatchCause::ForeignSeed {
                    found: 9 ^ (0x40 << ((in_block % 8) * 8)),
                },
                3 => MismatchCause::StaleGeneration {
                    found: (3u64 ^ (0x40u64 << ((in_block % 8) * 8))) as u32,
                    expected: 3,
                },
                _ => MismatchCause::Corrupted,
            };
            assert_eq!(m.cause, expected_cause, "byte {idx}");
        }
    }

    #[test]
    fn unaligned_tail_corruption_is_found() {
        let good = filled(513, 513, 0, 1, 1);
        let mut bad = good.clone();
        bad[512] ^= 1;
        let m = check(&bad, 513, 0, 1, 1).unwrap_err();
        assert_eq!(m.offset, 512);
        assert_eq!(m.cause, MismatchCause::Corrupted);
    }

    #[test]
    fn data_from_another_offset_is_detected() {
        let buf = filled(4096, 512, 0x2000, 5, 1);
        let m = check(&buf, 512, 0x1000, 5, 1).unwrap_err();
        // 0x1000 vs 0x2000 first differ in byte 1 of the little-endian offset word.
        assert_eq!(m.offset, 0x1000 + 9);
        assert_eq!(m.block, 8);
        assert_eq!(m.cause, MismatchCause::WrongOffset { found: 0x2000 });
        assert_eq!(m.expected, 0x1000);
        assert_eq!(m.found, 0x2000);
    }

    #[test]
    fn wrong_seed_is_detected() {
        let buf = filled(512, 512, 0, 5, 1);
        let m = check(&buf, 512, 0, 6, 1).unwrap_err();
        assert_eq!(m.cause, MismatchCause::ForeignSeed { found: 5 });
        assert_eq!(m.offset, 16);
    }

    #[test]
    fn stale_generation_is_detected() {
        let buf = filled(512, 512, 0x200, 5, 4);
        let m = check(&buf, 512, 0x200, 5, 5).unwrap_err();
        assert_eq!(
            m.cause,
            MismatchCause::StaleGeneration {
                found: 4,
                expected: 5
            }
        );
    }

    #[test]
    fn zeroed_block_is_not_a_pattern() {
        let buf = vec![0u8; 512];
        let m = check(&buf, 512, 0, 1, 1).unwrap_err();
        assert_eq!(m.cause, MismatchCause::NoPattern);
        assert_eq!(m.offset, 0);
    }

    #[test]
    fn mismatch_in_second_block_reports_its_block() {
        let mut buf = filled(1024, 512, 0, 1, 1);
        let second = filled(512, 512, 0x4000, 1, 1);
        buf[512..].copy_from_slice(&second);
        let m = check(&buf, 512, 0, 1, 1).unwrap_err();
        assert_eq!(m.offset, 512 + 9);
        assert_eq!(m.block, 1);
        assert_eq!(m.cause, MismatchCause::WrongOffset { found: 0x4000 });
    }

    #[test]
    fn display_format() {
        let m = Mismatch {
            offset: 0x1000,
            block: 8,
            expected: 0xabcd,
            found: 0x1234,
            cause: MismatchCause::WrongOffset { found: 0x2000 },
        };
        assert_eq!(
            m.to_string(),
            "miscompare at offset 0x1000 (block 8): expected 0x000000000000abcd, \
             found 0x0000000000001234 (block holds data written for offset 0x2000)"
        );
        assert_eq!(
            MismatchCause::StaleGeneration {
                found: 1,
                expected: 2
            }
            .to_string(),
            "block holds generation 1 of this offset, expected generation 2"
        );
        assert!(MismatchCause::ForeignSeed { found: 255 }
            .to_string()
            .contains("0xff"));
        assert!(MismatchCause::NoPattern
            .to_string()
            .contains("verify pattern"));
        assert!(MismatchCause::Corrupted.to_string().contains("corrupted"));
    }

    #[test]
    fn zero_block_size_means_one_block() {
        let buf = filled(100, 0, 0, 1, 1);
        check(&buf, 0, 0, 1, 1).unwrap();
        let mut bad = buf.clone();
        bad[99] ^= 1;
        let m = check(&bad, 0, 0, 1, 1).unwrap_err();
        assert_eq!((m.offset, m.block), (99, 0));
        let mut empty: [u8; 0] = [];
        fill(&mut empty, 512, 0, 1, 1);
        check(&empty, 512, 0, 1, 1).unwrap();
    }
}
