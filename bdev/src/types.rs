//! Small shared types: I/O types, statuses, events, claim kinds.

/// Kinds of I/O a bdev may support.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum IoType {
    /// Read blocks into the I/O's buffers.
    Read = 0,
    /// Write blocks from the I/O's buffers.
    Write,
    /// Deallocate blocks.
    Unmap,
    /// Make earlier writes durable.
    Flush,
    /// Reset the device: in-flight I/O is drained first.
    Reset,
    /// Write zeroes (emulated with writes where unsupported).
    WriteZeroes,
    /// Compare blocks with the I/O's buffers.
    Compare,
    /// Compare with `cmp` buffers and, if equal, write the buffers; atomic for the range.
    CompareAndWrite,
    /// Abort queued I/O whose `user[0]` equals the abort's target tag.
    Abort,
}

/// Every I/O type, in a fixed order (for reporting `supported_io_types`).
pub const ALL_IO_TYPES: [IoType; 9] = [
    IoType::Read,
    IoType::Write,
    IoType::Unmap,
    IoType::Flush,
    IoType::Reset,
    IoType::WriteZeroes,
    IoType::Compare,
    IoType::CompareAndWrite,
    IoType::Abort,
];

impl IoType {
    /// This type's bit in a set of types.
    #[inline]
    pub(crate) fn bit(self) -> u32 {
        1 << (self as u8)
    }

    /// SPDK's key in `supported_io_types`.
    pub fn spdk_name(self) -> &'static str {
        match self {
            Self::Read => "read",
            Self::Write => "write",
            Self::Unmap => "unmap",
            Self::Flush => "flush",
            Self::Reset => "reset",
            Self::WriteZeroes => "write_zeroes",
            Self::Compare => "compare",
            Self::CompareAndWrite => "compare_and_write",
            Self::Abort => "abort",
        }
    }

    /// True for types that change data.
    pub fn is_write(self) -> bool {
        matches!(
            self,
            Self::Write | Self::Unmap | Self::WriteZeroes | Self::CompareAndWrite
        )
    }

    /// True for types that carry data buffers.
    pub fn has_data(self) -> bool {
        matches!(
            self,
            Self::Read | Self::Write | Self::Compare | Self::CompareAndWrite
        )
    }
}

/// Outcome of an I/O (SPDK's statuses, less the module-specific ones).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoStatus {
    /// Not completed yet.
    Pending,
    /// Completed successfully.
    Success,
    /// Failed (device error).
    Failed,
    /// Out of resources: the bdev layer queues and retries it (never seen by callers).
    NoMem,
    /// Compare found different data.
    Miscompare,
    /// Aborted.
    Aborted,
    /// The request was invalid for this bdev (range, type, read-only descriptor).
    Invalid,
}

impl IoStatus {
    /// True for `Success`.
    pub fn is_success(self) -> bool {
        self == Self::Success
    }
}

/// Events delivered to a descriptor's callback, on the thread that opened it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BdevEvent {
    /// The bdev is being removed: close the descriptor (now or soon).
    Remove,
    /// The bdev's block count changed.
    Resize,
}

/// Kinds of claim on a bdev (SPDK v2 claims; `ExclusiveWrite` is v1's module claim).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClaimKind {
    /// One module, the only writer.
    ExclusiveWrite,
    /// This descriptor is the only writer; claimless readers are allowed.
    ReadManyWriteOne,
    /// Any number of claiming readers, no writers.
    ReadManyWriteNone,
    /// Writers that all present the same non-zero key.
    ReadManyWriteShared(u64),
}

impl ClaimKind {
    /// SPDK's name for the claim type.
    pub fn spdk_name(self) -> &'static str {
        match self {
            Self::ExclusiveWrite => "exclusive_write",
            Self::ReadManyWriteOne => "read_many_write_one",
            Self::ReadManyWriteNone => "read_many_write_none",
            Self::ReadManyWriteShared(_) => "read_many_write_shared",
        }
    }
}

/// A device's own status for a failed I/O, attached by the backend that talked to the device
/// ([`crate::BdevIo::set_device_status`]) so callers can name what the device reported. Plain
/// data (no allocation); the name is the protocol specification's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeviceStatus {
    /// An NVMe completion status.
    Nvme {
        /// Status Code Type.
        sct: u8,
        /// Status Code.
        sc: u8,
        /// The specification's name of the status ("LBA Out of Range", ...).
        name: &'static str,
    },
}

impl std::fmt::Display for DeviceStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Nvme { sct, sc, name } => {
                write!(f, "NVMe status {name} (sct {sct} sc {sc:#04x})")
            }
        }
    }
}
