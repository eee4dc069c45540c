//! CPU mask parsing and formatting in SPDK's syntax.
//!
//! Accepted forms (as `spdk_cpuset_parse`): a hexadecimal mask with or without `0x`
//! (`0x3`, `3`, `0xF0`), or a bracketed list of cores and ranges (`[0,2-3]`).
//! [`format_core_mask`] renders the `0x...` form bdevperf prints in "Core Mask 0x1".

use crate::error::BenchError;

/// Largest core index a mask may name (a sanity bound, not a hardware limit).
pub const MAX_CORE: usize = 4095;

/// Parses a CPU mask into the sorted, de-duplicated list of cores it selects.
pub fn parse_cpumask(mask: &str) -> Result<Vec<usize>, BenchError> {
    let err = |reason: String| BenchError::CpuMask {
        mask: mask.to_string(),
        reason,
    };
    let s = mask.trim();
    if s.is_empty() {
        return Err(err("empty mask".to_string()));
    }
    let mut cores = Vec::new();
    if let Some(inner) = s.strip_prefix('[') {
        let inner = inner
            .strip_suffix(']')
            .ok_or_else(|| err("list form must end with ']'".to_string()))?;
        for part in inner.split(',') {
            let part = part.trim();
            if part.is_empty() {
                return Err(err("empty entry in core list".to_string()));
            }
            let (lo, hi) = match part.split_once('-') {
                Some((a, b)) => (parse_core(a, mask)?, parse_core(b, mask)?),
                None => {
                    let c = parse_core(part, mask)?;
                    (c, c)
                }
            };
            if lo > hi {
                return Err(err(format!("range '{part}' is backwards")));
            }
            cores.extend(lo..=hi);
        }
    } else {
        let hex = s
            .strip_prefix("0x")
            .or_else(|| s.strip_prefix("0X"))
            .unwrap_or(s);
        if hex.is_empty() {
            return Err(err("no hex digits after '0x'".to_string()));
        }
        for (i, ch) in hex.chars().rev().enumerate() {
            let nibble = ch
                .to_digit(16)
                .ok_or_else(|| err(format!("'{ch}' is not a hex digit")))?;
            for bit in 0..4 {
                if nibble & (1 << bit) != 0 {
                    let core = i * 4 + bit;
                    if core > MAX_CORE {
                        return Err(err(format!("core {core} is above the limit {MAX_CORE}")));
                    }
                    cores.push(core);
                }
            }
        }
    }
    cores.sort_unstable();
    cores.dedup();
    if cores.is_empty() {
        return Err(err("selects no core".to_string()));
    }
    Ok(cores)
}

fn parse_core(text: &str, mask: &str) -> Result<usize, BenchError> {
    let core: usize = text.trim().parse().map_err(|_| BenchError::CpuMask {
        mask: mask.to_string(),
        reason: format!("'{}' is not a core number", text.trim()),
    })?;
    if core > MAX_CORE {
        return Err(BenchError::CpuMask {
            mask: mask.to_string(),
            reason: format!("core {core} is above the limit {MAX_CORE}"),
        });
    }
    Ok(core)
}

/// Formats cores as a hex mask with `0x` prefix and no leading zeros (`[0]` → `0x1`,
/// `[0, 5]` → `0x21`). An empty set formats as `0x0`.
pub fn format_core_mask(cores: &[usize]) -> String {
    let Some(&max) = cores.iter().max() else {
        return "0x0".to_string();
    };
    let mut nibbles = vec![0u8; max / 4 + 1];
    for &c in cores {
        nibbles[c / 4] |= 1 << (c % 4);
    }
    let mut out = String::with_capacity(nibbles.len() + 2);
    out.push_str("0x");
    for &n in nibbles.iter().rev() {
        out.push(char::from_digit(u32::from(n), 16).unwrap_or('0'));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[test]
    fn hex_forms() {
        assert_eq!(parse_cpumask("0x1").unwrap(), vec![0]);
        assert_eq!(parse_cpumask("0x3").unwrap(), vec![0, 1]);
        assert_eq!(parse_cpumask("3").unwrap(), vec![0, 1]);
        assert_eq!(parse_cpumask("0XF0").unwrap(), vec![4, 5, 6, 7]);
        assert_eq!(parse_cpumask("0x100").unwrap(), vec![8]);
    }

    #[test]
    fn list_forms() {
        assert_eq!(parse_cpumask("[0]").unwrap(), vec![0]);
        assert_eq!(parse_cpumask("[0,2-3]").unwrap(), vec![0, 2, 3]);
        assert_eq!(parse_cpumask("[ 3 , 1, 1-2 ]").unwrap(), vec![1, 2, 3]);
    }

    #[test]
    fn bad_masks() {
        for bad in [
            "", "0x", "0x0", "zz", "[1,", "[]", "[3-1]", "[a]", "[0,,1]", "[9999]",
        ] {
            let e = parse_cpumask(bad).unwrap_err();
            assert_eq!(e.kind(), ErrorKind::CpuMask, "{bad}");
            assert!(
                e.to_string().starts_with(&format!("cpumask '{bad}'")),
                "{e}"
            );
        }
        assert!(parse_cpumask("0x0")
            .unwrap_err()
            .to_string()
            .contains("selects no core"));
    }

    #[test]
    fn formatting_round_trips() {
        assert_eq!(format_core_mask(&[0]), "0x1");
        assert_eq!(format_core_mask(&[0, 5]), "0x21");
        assert_eq!(format_core_mask(&[4, 5, 6, 7]), "0xf0");
        assert_eq!(format_core_mask(&[]), "0x0");
        for cores in [vec![0usize], vec![1, 2, 63], vec![64, 127], vec![3]] {
            assert_eq!(parse_cpumask(&format_core_mask(&cores)).unwrap(), cores);
        }
    }
}
