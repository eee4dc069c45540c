//! Core masks as SPDK spells them: `0x3`, `3`, `[0,1]`, `[0-3,6]`.

use crate::error::{ErrorKind, ReactorError, Result};

/// Maximum core index a mask may name. A limit on everything: masks are at most 1024 bits.
pub const MAX_CORES: usize = 1024;

/// A set of core indices, kept sorted and unique.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct CpuMask {
    cores: Vec<usize>,
}

impl CpuMask {
    /// Parses `0x..` hex, a plain hex number (SPDK treats `-m 3` as hex), or a bracketed list
    /// with ranges. An empty set is an error.
    pub fn parse(text: &str) -> Result<Self> {
        let t = text.trim();
        let bad = |why: &str| {
            ReactorError::new(
                ErrorKind::InvalidCpuMask,
                format!("invalid core mask '{text}': {why}"),
            )
        };
        let mut cores = Vec::new();
        if let Some(list) = t.strip_prefix('[') {
            let list = list.strip_suffix(']').ok_or_else(|| bad("missing ']'"))?;
            for part in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                let (a, b) = match part.split_once('-') {
                    Some((a, b)) => (a.trim(), b.trim()),
                    None => (part, part),
                };
                let a: usize = a.parse().map_err(|_| bad("not a core number"))?;
                let b: usize = b.parse().map_err(|_| bad("not a core number"))?;
                if a > b || b >= MAX_CORES {
                    return Err(bad("bad range"));
                }
                cores.extend(a..=b);
            }
        } else {
            let hex = t
                .strip_prefix("0x")
                .or_else(|| t.strip_prefix("0X"))
                .unwrap_or(t);
            if hex.is_empty() || hex.len() > MAX_CORES / 4 {
                return Err(bad("empty or too long"));
            }
            for (i, ch) in hex.chars().rev().enumerate() {
                let d = ch.to_digit(16).ok_or_else(|| bad("not a hex digit"))? as usize;
                for bit in 0..4 {
                    if d & (1 << bit) != 0 {
                        cores.push(i * 4 + bit);
                    }
                }
            }
        }
        cores.sort_unstable();
        cores.dedup();
        if cores.is_empty() {
            return Err(bad("names no core"));
        }
        Ok(Self { cores })
    }

    /// A mask of exactly the given cores.
    pub fn from_cores(cores: &[usize]) -> Self {
        let mut cores = cores.to_vec();
        cores.sort_unstable();
        cores.dedup();
        Self { cores }
    }

    /// The cores, ascending.
    pub fn cores(&self) -> &[usize] {
        &self.cores
    }

    /// Fails if any core of the mask is not present on this machine.
    pub fn check_present(&self) -> Result<()> {
        let present = crate::sys::online_cores();
        for c in &self.cores {
            if !present.contains(c) {
                return Err(ReactorError::new(
                    ErrorKind::InvalidCpuMask,
                    format!(
                        "core mask {} names core {c}, but this machine has cores {:?}",
                        self, present
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl std::fmt::Display for CpuMask {
    /// Formats as SPDK does: `0x` followed by the hex mask.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let top = self.cores.last().copied().unwrap_or(0);
        let mut digits = vec![0u8; top / 4 + 1];
        for c in &self.cores {
            digits[c / 4] |= 1 << (c % 4);
        }
        f.write_str("0x")?;
        for d in digits.iter().rev() {
            write!(f, "{:x}", d)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_spdk_forms() {
        assert_eq!(CpuMask::parse("0x3").unwrap().cores(), &[0, 1]);
        assert_eq!(CpuMask::parse("3").unwrap().cores(), &[0, 1]);
        assert_eq!(CpuMask::parse("[0-2,5]").unwrap().cores(), &[0, 1, 2, 5]);
        assert_eq!(CpuMask::parse("0x10").unwrap().cores(), &[4]);
        assert_eq!(CpuMask::parse("0x13").unwrap().to_string(), "0x13");
    }

    #[test]
    fn rejects_bad_masks() {
        for bad in ["", "0x", "0x0", "zz", "[3-1]", "[", "[a]"] {
            let e = CpuMask::parse(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidCpuMask, "{bad}");
        }
    }

    #[test]
    fn missing_core_is_a_clear_error() {
        let e = CpuMask::parse("[1000]")
            .unwrap()
            .check_present()
            .unwrap_err();
        assert!(e.to_string().contains("core 1000"), "{e}");
    }
}
