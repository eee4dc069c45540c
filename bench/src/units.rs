//! Byte-size parsing shared by the command line (`-o 4k`) and job files (`bs=128K`).

/// Parses a byte count: a plain integer, or an integer followed by a binary suffix
/// `k`, `m`, `g` or `t` (either case, optionally followed by `b` or `ib`, so `4k`, `4K`,
/// `4KB` and `4KiB` all mean 4096). Whitespace around the value is ignored.
///
/// Returns a human-readable reason on failure (the caller adds which option/key).
pub fn parse_size(text: &str) -> Result<u64, String> {
    let s = text.trim();
    if s.is_empty() {
        return Err("empty size".to_string());
    }
    let digits_end = s
        .char_indices()
        .find(|(_, c)| !c.is_ascii_digit())
        .map_or(s.len(), |(i, _)| i);
    let (number, suffix) = s.split_at(digits_end);
    if number.is_empty() {
        return Err(format!(
            "'{text}' is not a size (expected a number with optional k/m/g suffix, e.g. 4k)"
        ));
    }
    let value: u64 = number
        .parse()
        .map_err(|_| format!("'{text}' is too large"))?;
    let lower = suffix.to_ascii_lowercase();
    let shift = match lower.as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => {
            return Err(format!(
                "'{text}' has an unknown suffix '{suffix}' (use k, m, g or t)"
            ))
        }
    };
    value
        .checked_mul(1u64 << shift)
        .ok_or_else(|| format!("'{text}' is too large"))
}

/// Bytes per second to MiB per second.
pub fn mib_per_s(bytes_per_s: f64) -> f64 {
    bytes_per_s / (1024.0 * 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_and_suffixed_sizes() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("128K"), Ok(128 * 1024));
        assert_eq!(parse_size("1m"), Ok(1 << 20));
        assert_eq!(parse_size("1M"), Ok(1 << 20));
        assert_eq!(parse_size("2g"), Ok(2 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("4kb"), Ok(4096));
        assert_eq!(parse_size(" 512 "), Ok(512));
        assert_eq!(parse_size("0"), Ok(0));
    }

    #[test]
    fn bad_sizes_explain_themselves() {
        assert!(parse_size("").unwrap_err().contains("empty"));
        assert!(parse_size("k4").unwrap_err().contains("not a size"));
        assert!(parse_size("4x").unwrap_err().contains("unknown suffix 'x'"));
        assert!(parse_size("-4").unwrap_err().contains("not a size"));
        assert!(parse_size("4.5k").unwrap_err().contains("unknown suffix"));
        assert!(parse_size("99999999999999999999")
            .unwrap_err()
            .contains("too large"));
        assert!(parse_size("99999999999t")
            .unwrap_err()
            .contains("too large"));
    }

    #[test]
    fn mib_conversion() {
        assert_eq!(mib_per_s(1024.0 * 1024.0 * 3.0), 3.0);
    }
}
