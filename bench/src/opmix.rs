//! Which command each I/O of a job issues.

use crate::rng::Xoshiro256StarStar;
use crate::workload::Workload;

/// The command for one I/O.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IoOp {
    /// Read `io_size` bytes.
    Read,
    /// Write `io_size` bytes. For verify/reset jobs the engine fills the buffer with
    /// [`verify::fill`](crate::verify::fill), and on completion reads the range back
    /// and checks it with [`verify::check`](crate::verify::check).
    Write,
    /// Unmap (deallocate) the range.
    Unmap,
    /// Flush the range.
    Flush,
    /// Write zeroes over the range.
    WriteZeroes,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    Fixed(IoOp),
    Mix(u8),
}

/// Picks the command for each I/O of a job, like bdevperf: mixed workloads draw
/// `rng % 100 < rwmixread` per I/O. O(1), no allocation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpMix {
    mode: Mode,
    rng: Xoshiro256StarStar,
}

impl OpMix {
    /// The mix for `workload`; `rwmixread` (0..=100) is used by rw/randrw only.
    pub fn new(workload: Workload, rwmixread: u8, seed: u64) -> Self {
        let mode = match workload {
            Workload::Read | Workload::RandRead => Mode::Fixed(IoOp::Read),
            Workload::Write | Workload::RandWrite | Workload::Verify | Workload::Reset => {
                Mode::Fixed(IoOp::Write)
            }
            Workload::Unmap => Mode::Fixed(IoOp::Unmap),
            Workload::Flush => Mode::Fixed(IoOp::Flush),
            Workload::WriteZeroes => Mode::Fixed(IoOp::WriteZeroes),
            Workload::Rw | Workload::RandRw => match rwmixread.min(100) {
                100 => Mode::Fixed(IoOp::Read),
                0 => Mode::Fixed(IoOp::Write),
                pct => Mode::Mix(pct),
            },
        };
        OpMix {
            mode,
            rng: Xoshiro256StarStar::new(seed),
        }
    }

    /// The next I/O's command.
    #[inline]
    #[allow(clippy::should_implement_trait)]
    pub fn next(&mut self) -> IoOp {
        match self.mode {
            Mode::Fixed(op) => op,
            Mode::Mix(pct) => {
                if self.rng.next_below(100) < u64::from(pct) {
                    IoOp::Read
                } else {
                    IoOp::Write
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fixed_workloads() {
        let cases = [
            (Workload::Read, IoOp::Read),
            (Workload::RandRead, IoOp::Read),
            (Workload::Write, IoOp::Write),
            (Workload::RandWrite, IoOp::Write),
            (Workload::Verify, IoOp::Write),
            (Workload::Reset, IoOp::Write),
            (Workload::Unmap, IoOp::Unmap),
            (Workload::Flush, IoOp::Flush),
            (Workload::WriteZeroes, IoOp::WriteZeroes),
        ];
        for (w, op) in cases {
            let mut m = OpMix::new(w, 50, 1);
            assert!((0..100).all(|_| m.next() == op), "{w}");
        }
    }

    #[test]
    fn mixed_ratio_is_respected() {
        for pct in [0u8, 10, 50, 70, 100] {
            let mut m = OpMix::new(Workload::RandRw, pct, 3);
            let reads = (0..100_000).filter(|_| m.next() == IoOp::Read).count();
            let expected = usize::from(pct) * 1000;
            assert!(reads.abs_diff(expected) < 1000, "pct={pct}: {reads}");
        }
        let mut m = OpMix::new(Workload::Rw, 200, 3);
        assert!((0..100).all(|_| m.next() == IoOp::Read));
    }
}
