//! The crate's one error type, [`RingError`], with a stable [`ErrorKind`]. A refused chain
//! ([`ErrorKind::Chain`]) also says which rule the driver broke: [`ChainDefect`], a plain
//! `Copy` value (no allocation on the data path), not an error type of its own.

use thiserror::Error;

use crate::Segment;

/// What is wrong with one descriptor chain offered by the driver: the detail of a
/// [`RingError::Chain`] (kind [`ErrorKind::Chain`]). The chain has been consumed from the
/// ring when it is reported: the caller completes it with an error (through its status
/// descriptor, [`RingError::status_hint`], when there is one) or marks the device broken.
/// Each variant names a rule of the virtio specification the driver broke; the set is stable
/// (callers and tests match on it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ChainDefect {
    /// A head or `next` descriptor index is not below the queue (or indirect table) size.
    IndexOutOfRange { index: u16, size: u16 },
    /// The chain visits more descriptors than its table holds: it loops.
    Loop,
    /// The chain has more than [`crate::MAX_SEGS`] descriptors.
    TooLong { max: usize },
    /// A buffer does not lie inside guest memory.
    OutOfMemory { addr: u64, len: u32 },
    /// A descriptor (or indirect table) could not be read from guest memory.
    Unreadable { addr: u64 },
    /// A descriptor with length zero.
    ZeroLength,
    /// The chain's total length does not fit in 32 bits.
    Oversize,
    /// A device-readable descriptor follows a device-writable one.
    WrongDirection,
    /// An indirect descriptor although VIRTIO_F_INDIRECT_DESC was not negotiated.
    IndirectNotNegotiated,
    /// An indirect descriptor that is not the chain's only descriptor (it has NEXT set or
    /// follows other descriptors).
    IndirectChained,
    /// An indirect table whose length is zero, not a multiple of 16, or longer than
    /// [`crate::MAX_SEGS`] entries.
    BadIndirectLength { len: u32 },
    /// An indirect descriptor inside an indirect table.
    NestedIndirect,
}

impl std::fmt::Display for ChainDefect {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ChainDefect::IndexOutOfRange { index, size } => {
                write!(f, "descriptor index {index} out of range (table of {size})")
            }
            ChainDefect::Loop => f.write_str("descriptor chain loops"),
            ChainDefect::TooLong { max } => {
                write!(f, "descriptor chain longer than {max} descriptors")
            }
            ChainDefect::OutOfMemory { addr, len } => {
                write!(f, "buffer {addr:#x}+{len} outside guest memory")
            }
            ChainDefect::Unreadable { addr } => {
                write!(f, "descriptor at {addr:#x} not readable in guest memory")
            }
            ChainDefect::ZeroLength => f.write_str("zero-length descriptor"),
            ChainDefect::Oversize => f.write_str("chain length exceeds 4 GiB"),
            ChainDefect::WrongDirection => {
                f.write_str("device-readable descriptor after a device-writable one")
            }
            ChainDefect::IndirectNotNegotiated => {
                f.write_str("indirect descriptor without VIRTIO_F_INDIRECT_DESC")
            }
            ChainDefect::IndirectChained => {
                f.write_str("indirect descriptor chained with other descriptors")
            }
            ChainDefect::BadIndirectLength { len } => {
                write!(f, "indirect table of {len} bytes is malformed")
            }
            ChainDefect::NestedIndirect => f.write_str("nested indirect descriptor"),
        }
    }
}

/// The stable kind of a [`RingError`], for callers that branch on it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// One chain was bad and has been consumed; the ring itself is fine.
    Chain,
    /// The ring configuration is invalid (size, alignment, areas outside memory).
    Config,
    /// The driver broke the ring itself, so that the extent or identity of a chain is
    /// unknown: the available index jumped by more than the queue size, a split head index out
    /// of range or already in flight, a packed buffer id out of range or reused while in
    /// flight, a packed chain running into a descriptor that is not available or around the
    /// whole ring. The device must be marked broken (DEVICE_NEEDS_RESET) and the ring not used
    /// again.
    Broken,
    /// A ring area in guest memory could not be accessed.
    Memory,
    /// The caller broke the API contract (e.g. `push_used` of an id that is not in flight).
    Usage,
    /// The inflight shared-memory region is invalid or could not be created or mapped.
    Inflight,
}

/// The crate's error type.
#[derive(Debug, Error)]
pub enum RingError {
    /// A bad chain, consumed and in flight. `status` is the chain's last descriptor when it
    /// can be identified safely (see [`RingError::status_hint`]): the caller writes its
    /// error status there and completes the chain with `push_used(id, bytes written)`. With
    /// no `status` the driver cannot be told: complete it with `push_used(id, 0)` or mark
    /// the device broken.
    #[error("queue chain {id}: {defect}")]
    Chain {
        id: u16,
        defect: ChainDefect,
        status: Option<Segment>,
    },
    /// Invalid ring configuration.
    #[error("invalid ring configuration: {0}")]
    Config(String),
    /// The driver broke the ring; the device needs a reset.
    #[error("ring broken by the driver: {0}")]
    Broken(&'static str),
    /// Guest memory holding a ring area could not be accessed.
    #[error("ring area at {addr:#x} not accessible in guest memory")]
    Memory { addr: u64 },
    /// API misuse by the caller.
    #[error("ring used wrongly: {0}")]
    Usage(&'static str),
    /// Inflight region invalid or not creatable.
    #[error("inflight region: {0}")]
    Inflight(String),
}

impl RingError {
    /// The stable kind of this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            RingError::Chain { .. } => ErrorKind::Chain,
            RingError::Config(_) => ErrorKind::Config,
            RingError::Broken(_) => ErrorKind::Broken,
            RingError::Memory { .. } => ErrorKind::Memory,
            RingError::Usage(_) => ErrorKind::Usage,
            RingError::Inflight(_) => ErrorKind::Inflight,
        }
    }

    /// The chain defect, if this error reports a bad chain.
    pub fn chain_defect(&self) -> Option<ChainDefect> {
        match self {
            RingError::Chain { defect, .. } => Some(*defect),
            _ => None,
        }
    }

    /// For a refused chain, the descriptor its status can be written to: the chain's last
    /// descriptor, reported only when all of these hold (otherwise `None`):
    /// - the chain's structure is sound: its `next` links stay in the table and end without
    ///   looping (split), an indirect descriptor is negotiated, alone in the chain, with a
    ///   well-formed table in guest memory holding no indirect descriptor;
    /// - that last descriptor is device-writable, not indirect, at least 1 byte long and
    ///   wholly inside guest memory (checked when the chain was popped).
    ///
    /// Defects of the buffers themselves (out of guest memory, zero length, wrong direction,
    /// too many of them, too large in total) do not hide the status descriptor; a loop, a
    /// `next` index out of range or a malformed indirect table do. A virtio-blk device
    /// writes its status into the segment's last byte (`addr + len - 1`).
    pub fn status_hint(&self) -> Option<Segment> {
        match self {
            RingError::Chain { status, .. } => *status,
            _ => None,
        }
    }
}
