//! The crate's one error type, [`RingError`], with a stable [`ErrorKind`], and [`ChainError`],
//! the defect found in one descriptor chain.

use thiserror::Error;

/// What is wrong with one descriptor chain offered by the driver. The chain has been consumed
/// from the ring when this is reported (see [`RingError::Chain`]): the caller completes it with
/// an error (`push_used(id, 0)`, after writing a status byte if it can find one) or marks the
/// device broken. Each variant names a rule of the virtio specification the driver broke.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Error)]
pub enum ChainError {
    /// A head or `next` descriptor index is not below the queue (or indirect table) size.
    #[error("descriptor index {index} out of range (table of {size})")]
    IndexOutOfRange { index: u16, size: u16 },
    /// The chain visits more descriptors than its table holds: it loops.
    #[error("descriptor chain loops")]
    Loop,
    /// The chain has more than [`crate::MAX_SEGS`] descriptors.
    #[error("descriptor chain longer than {max} descriptors")]
    TooLong { max: usize },
    /// A buffer does not lie inside guest memory.
    #[error("buffer {addr:#x}+{len} outside guest memory")]
    OutOfMemory { addr: u64, len: u32 },
    /// A descriptor (or indirect table) could not be read from guest memory.
    #[error("descriptor at {addr:#x} not readable in guest memory")]
    Unreadable { addr: u64 },
    /// A descriptor with length zero.
    #[error("zero-length descriptor")]
    ZeroLength,
    /// The chain's total length does not fit in 32 bits.
    #[error("chain length exceeds 4 GiB")]
    Oversize,
    /// A device-readable descriptor follows a device-writable one.
    #[error("device-readable descriptor after a device-writable one")]
    WrongDirection,
    /// An indirect descriptor although VIRTIO_F_INDIRECT_DESC was not negotiated.
    #[error("indirect descriptor without VIRTIO_F_INDIRECT_DESC")]
    IndirectNotNegotiated,
    /// An indirect descriptor that is not the chain's only descriptor (it has NEXT set or
    /// follows other descriptors).
    #[error("indirect descriptor chained with other descriptors")]
    IndirectChained,
    /// An indirect table whose length is zero, not a multiple of 16, or longer than
    /// [`crate::MAX_SEGS`] entries.
    #[error("indirect table of {len} bytes is malformed")]
    BadIndirectLength { len: u32 },
    /// An indirect descriptor inside an indirect table.
    #[error("nested indirect descriptor")]
    NestedIndirect,
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
    /// A bad chain, consumed: complete it with an error through `push_used(id, 0)`.
    #[error("queue chain {id}: {error}")]
    Chain { id: u16, error: ChainError },
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
    pub fn chain_error(&self) -> Option<ChainError> {
        match self {
            RingError::Chain { error, .. } => Some(*error),
            _ => None,
        }
    }
}
