//! The I/O patterns bdevperf knows (`-w`), with fio's names accepted in job files.

use std::fmt;
use std::str::FromStr;

/// A bdevperf workload (`-w` / job-file `rw=`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Workload {
    /// Sequential reads.
    Read,
    /// Sequential writes.
    Write,
    /// Uniformly random reads.
    RandRead,
    /// Uniformly random writes.
    RandWrite,
    /// Sequential mix of reads and writes (`-M` percent reads).
    Rw,
    /// Random mix of reads and writes (`-M` percent reads).
    RandRw,
    /// Write, read back and compare, sequentially over the region.
    Verify,
    /// Sequential unmap (deallocate) commands.
    Unmap,
    /// Sequential flush commands.
    Flush,
    /// Sequential write-zeroes commands.
    WriteZeroes,
    /// The verify flow plus a bdev reset every 10 seconds.
    Reset,
}

impl Workload {
    /// Every workload, in bdevperf's documentation order.
    pub const ALL: [Workload; 11] = [
        Workload::Read,
        Workload::Write,
        Workload::RandRead,
        Workload::RandWrite,
        Workload::Rw,
        Workload::RandRw,
        Workload::Verify,
        Workload::Reset,
        Workload::Unmap,
        Workload::Flush,
        Workload::WriteZeroes,
    ];

    /// The bdevperf name (`randread`, `write_zeroes`, ...).
    pub fn as_str(self) -> &'static str {
        match self {
            Workload::Read => "read",
            Workload::Write => "write",
            Workload::RandRead => "randread",
            Workload::RandWrite => "randwrite",
            Workload::Rw => "rw",
            Workload::RandRw => "randrw",
            Workload::Verify => "verify",
            Workload::Unmap => "unmap",
            Workload::Flush => "flush",
            Workload::WriteZeroes => "write_zeroes",
            Workload::Reset => "reset",
        }
    }

    /// Offsets are drawn at random (uniform, zipf or random map) rather than sequentially.
    pub fn is_random(self) -> bool {
        matches!(
            self,
            Workload::RandRead | Workload::RandWrite | Workload::RandRw
        )
    }

    /// The workload issues read commands (verify/reset read back what they wrote).
    pub fn reads(self) -> bool {
        matches!(
            self,
            Workload::Read
                | Workload::RandRead
                | Workload::Rw
                | Workload::RandRw
                | Workload::Verify
                | Workload::Reset
        )
    }

    /// The workload issues write commands with data (not unmap/write_zeroes/flush).
    pub fn writes(self) -> bool {
        matches!(
            self,
            Workload::Write
                | Workload::RandWrite
                | Workload::Rw
                | Workload::RandRw
                | Workload::Verify
                | Workload::Reset
        )
    }

    /// The workload changes data on the bdev (writes, unmaps or zeroes it).
    pub fn modifies_data(self) -> bool {
        self.writes() || matches!(self, Workload::Unmap | Workload::WriteZeroes)
    }

    /// A read/write mix where `-M`/`rwmixread` applies.
    pub fn is_mixed(self) -> bool {
        matches!(self, Workload::Rw | Workload::RandRw)
    }

    /// Data written is read back and compared (verify and reset).
    pub fn verifies(self) -> bool {
        matches!(self, Workload::Verify | Workload::Reset)
    }

    /// The percentage of data I/O that are reads for this workload, given the
    /// user's `rwmixread` (used only by the mixed workloads). Verify/reset return 0:
    /// they always write, and read back on write completion.
    pub fn read_percentage(self, rwmixread: u8) -> u8 {
        match self {
            Workload::Read | Workload::RandRead => 100,
            Workload::Rw | Workload::RandRw => rwmixread.min(100),
            _ => 0,
        }
    }

    /// Parses a job-file `rw=` value: the bdevperf names plus fio's `readwrite` alias.
    pub fn from_fio_name(name: &str) -> Result<Workload, String> {
        match name {
            "readwrite" => Ok(Workload::Rw),
            other => other.parse(),
        }
    }

    /// The valid names, comma-separated, for error messages.
    pub fn valid_names() -> String {
        Workload::ALL
            .iter()
            .map(|w| w.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl serde::Serialize for Workload {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.as_str())
    }
}

impl FromStr for Workload {
    type Err = String;

    /// Parses a bdevperf workload name (exact, lowercase).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Workload::ALL
            .iter()
            .copied()
            .find(|w| w.as_str() == s)
            .ok_or_else(|| {
                format!(
                    "unknown workload '{s}'; valid workloads are: {}",
                    Workload::valid_names()
                )
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for w in Workload::ALL {
            assert_eq!(w.as_str().parse::<Workload>().unwrap(), w);
            assert_eq!(w.to_string(), w.as_str());
        }
        assert_eq!(Workload::from_fio_name("readwrite").unwrap(), Workload::Rw);
        assert_eq!(Workload::from_fio_name("randrw").unwrap(), Workload::RandRw);
    }

    #[test]
    fn unknown_name_lists_valid_ones() {
        let e = "randomread".parse::<Workload>().unwrap_err();
        assert!(e.contains("unknown workload 'randomread'"));
        for w in Workload::ALL {
            assert!(e.contains(w.as_str()), "{e}");
        }
        assert!("READ".parse::<Workload>().is_err());
    }

    #[test]
    fn classification() {
        use Workload::*;
        let random: Vec<_> = Workload::ALL.iter().filter(|w| w.is_random()).collect();
        assert_eq!(random, vec![&RandRead, &RandWrite, &RandRw]);
        assert!(Read.reads() && !Read.writes());
        assert!(Write.writes() && !Write.reads());
        assert!(Rw.reads() && Rw.writes() && Rw.is_mixed());
        assert!(Verify.reads() && Verify.writes() && Verify.verifies());
        assert!(Reset.verifies());
        assert!(!Unmap.reads() && !Unmap.writes() && Unmap.modifies_data());
        assert!(!Flush.modifies_data() && !Flush.reads());
        assert!(WriteZeroes.modifies_data() && !WriteZeroes.writes());
    }

    #[test]
    fn read_percentages() {
        assert_eq!(Workload::Read.read_percentage(30), 100);
        assert_eq!(Workload::RandWrite.read_percentage(30), 0);
        assert_eq!(Workload::Rw.read_percentage(30), 30);
        assert_eq!(Workload::RandRw.read_percentage(70), 70);
        assert_eq!(Workload::Verify.read_percentage(70), 0);
        assert_eq!(Workload::Unmap.read_percentage(70), 0);
    }

    #[test]
    fn serializes_as_bdevperf_name() {
        assert_eq!(
            serde_json::to_string(&Workload::WriteZeroes).unwrap(),
            "\"write_zeroes\""
        );
        assert_eq!(
            serde_json::to_string(&Workload::RandRw).unwrap(),
            "\"randrw\""
        );
    }
}
