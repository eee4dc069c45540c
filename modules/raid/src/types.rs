//! Levels, states and limits shared by the control and data paths.

use ferrite_bdev::{BdevError, ErrorKind, Result};

/// Most base bdevs in one raid (member sets are `u64` bit masks on the data path).
pub const MAX_BASE_BDEVS: usize = 64;

/// Longest raid name (it is stored in the superblock; SPDK's limit too).
pub const MAX_NAME_LEN: usize = 63;

/// A RAID level.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RaidLevel {
    /// Striping, no redundancy.
    Raid0,
    /// Mirroring.
    Raid1,
    /// Striping with rotating parity; full-stripe writes only (as SPDK's raid5f).
    Raid5f,
    /// Concatenation.
    Concat,
}

impl RaidLevel {
    /// Parses SPDK's names, case-insensitively: "raid0"/"0", "raid1"/"1", "raid5f"/"5f",
    /// "concat".
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "raid0" | "0" => Ok(Self::Raid0),
            "raid1" | "1" => Ok(Self::Raid1),
            "raid5f" | "5f" => Ok(Self::Raid5f),
            "concat" => Ok(Self::Concat),
            _ => Err(BdevError::new(
                ErrorKind::InvalidArgument,
                format!("unknown raid level '{s}' (expected raid0, raid1, raid5f or concat)"),
            )),
        }
    }

    /// SPDK's name ("raid0", "raid1", "raid5f", "concat").
    pub fn name(self) -> &'static str {
        match self {
            Self::Raid0 => "raid0",
            Self::Raid1 => "raid1",
            Self::Raid5f => "raid5f",
            Self::Concat => "concat",
        }
    }

    /// The number stored in the superblock (SPDK's enum values).
    pub fn code(self) -> u32 {
        match self {
            Self::Raid0 => 0,
            Self::Raid1 => 1,
            Self::Raid5f => 95,
            Self::Concat => 99,
        }
    }

    /// The level stored as `code`, if any.
    pub fn from_code(code: u32) -> Option<Self> {
        match code {
            0 => Some(Self::Raid0),
            1 => Some(Self::Raid1),
            95 => Some(Self::Raid5f),
            99 => Some(Self::Concat),
            _ => None,
        }
    }

    /// Fewest base bdevs the level accepts at creation.
    pub fn min_base_bdevs(self) -> usize {
        match self {
            Self::Raid0 | Self::Concat => 1,
            Self::Raid1 => 2,
            Self::Raid5f => 3,
        }
    }

    /// Fewest readable members the raid needs to stay online, given `n` members.
    pub fn min_operational(self, n: usize) -> usize {
        match self {
            Self::Raid0 | Self::Concat => n,
            Self::Raid1 => 1,
            Self::Raid5f => n - 1,
        }
    }

    /// True if the level uses a strip size.
    pub fn has_strip(self) -> bool {
        self != Self::Raid1
    }
}

/// The state of a raid, as `bdev_raid_get_bdevs` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RaidState {
    /// Registered as a bdev and serving I/O (possibly degraded).
    Online,
    /// Waiting for base bdevs (or configuring them).
    Configuring,
    /// Lost too many members (or failed to configure): not registered.
    Offline,
}

impl RaidState {
    /// SPDK's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Online => "online",
            Self::Configuring => "configuring",
            Self::Offline => "offline",
        }
    }
}

/// State of one member as recorded in the superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberState {
    /// In sync and in use.
    Configured,
    /// Removed (by RPC or hot-remove) while the raid kept running.
    Missing,
    /// Failed I/O and was dropped.
    Failed,
    /// Being rebuilt: not a valid copy until the rebuild finishes.
    Rebuilding,
}

impl MemberState {
    /// On-disk code.
    pub fn code(self) -> u32 {
        match self {
            Self::Configured => 1,
            Self::Missing => 2,
            Self::Failed => 3,
            Self::Rebuilding => 4,
        }
    }

    /// The state stored as `code`, if any.
    pub fn from_code(c: u32) -> Option<Self> {
        match c {
            1 => Some(Self::Configured),
            2 => Some(Self::Missing),
            3 => Some(Self::Failed),
            4 => Some(Self::Rebuilding),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_names() {
        for (s, l) in [
            ("raid0", RaidLevel::Raid0),
            ("0", RaidLevel::Raid0),
            ("RAID1", RaidLevel::Raid1),
            ("1", RaidLevel::Raid1),
            ("Raid5F", RaidLevel::Raid5f),
            ("5f", RaidLevel::Raid5f),
            ("CONCAT", RaidLevel::Concat),
        ] {
            assert_eq!(RaidLevel::parse(s).ok(), Some(l), "{s}");
            assert_eq!(RaidLevel::from_code(l.code()), Some(l));
        }
        assert!(RaidLevel::parse("raid6").is_err());
        assert!(RaidLevel::parse("").is_err());
    }
}
