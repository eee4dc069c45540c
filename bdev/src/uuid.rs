//! RFC 4122 UUIDs (version 4 for new bdevs), parsed and printed in SPDK's lower-case form.

use crate::error::{BdevError, ErrorKind, Result};

/// A 128-bit UUID.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Uuid(pub [u8; 16]);

impl Uuid {
    /// A random version-4 UUID (from the kernel's getrandom).
    pub fn new_v4() -> Self {
        let mut b = [0u8; 16];
        // SAFETY: b is a live 16-byte buffer; getrandom writes at most that many bytes.
        let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), 16, 0) };
        if n != 16 {
            // Fallback: time and address entropy; uniqueness, not secrecy, is what matters.
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos())
                .unwrap_or(0);
            let x = t ^ ((&b as *const _ as usize as u128) << 64);
            b = x.to_le_bytes();
        }
        b[6] = (b[6] & 0x0f) | 0x40;
        b[8] = (b[8] & 0x3f) | 0x80;
        Uuid(b)
    }

    /// Parses the 36-character hyphenated form.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || BdevError::new(ErrorKind::InvalidArgument, format!("invalid UUID '{s}'"));
        if s.len() != 36 {
            return Err(bad());
        }
        let mut out = [0u8; 16];
        let mut hex = s.bytes().filter(|c| *c != b'-');
        for (i, pos) in [8usize, 13, 18, 23].iter().enumerate() {
            if s.as_bytes()[*pos] != b'-' {
                let _ = i;
                return Err(bad());
            }
        }
        for o in out.iter_mut() {
            let h = hex
                .next()
                .and_then(|c| (c as char).to_digit(16))
                .ok_or_else(bad)?;
            let l = hex
                .next()
                .and_then(|c| (c as char).to_digit(16))
                .ok_or_else(bad)?;
            *o = (h * 16 + l) as u8;
        }
        if hex.next().is_some() {
            return Err(bad());
        }
        Ok(Uuid(out))
    }
}

impl std::fmt::Display for Uuid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (i, b) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let u = Uuid::new_v4();
        let s = u.to_string();
        assert_eq!(s.len(), 36);
        assert_eq!(Uuid::parse(&s).unwrap(), u);
        assert_eq!(&s[14..15], "4");
    }

    #[test]
    fn rejects_garbage() {
        for s in [
            "",
            "xyz",
            "00000000-0000-0000-0000-00000000000g",
            "000000000000-0000-0000-0000-00000000",
        ] {
            assert!(Uuid::parse(s).is_err(), "{s}");
        }
    }
}
