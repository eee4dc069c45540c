//! The driver's error type.

use std::borrow::Cow;

/// Stable error kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad argument (address, queue size, option).
    InvalidArgument,
    /// The PCI function does not exist.
    NotFound,
    /// The function is not bound to vfio-pci.
    NotBound,
    /// The function has no IOMMU group (IOMMU off).
    NoIommuGroup,
    /// VFIO is unavailable or refused an operation.
    Vfio,
    /// Locked memory limit too low for DMA mappings.
    Memlock,
    /// Out of DMA memory or IOVA space.
    NoMemory,
    /// The controller did not answer in time.
    Timeout,
    /// The controller answered a command with an error status.
    Command,
    /// The controller reported a fatal status or is unusable.
    Controller,
    /// Device busy (already attached).
    Busy,
    /// A submission found no free slot or queue entry: retry after completions (back-pressure).
    QueueFull,
    /// A submission found its queue pair being reset or failed.
    QueueDown,
    /// A data segment breaks the PRP page-boundary rules (or the first is not dword aligned).
    PrpNotExpressible,
    /// A data segment is not reachable by the controller (not mapped, or not contiguous on the
    /// bus).
    Untranslatable,
    /// A transfer needs more pages than one PRP list holds.
    PrpTooLong,
    /// A transfer with data has no bytes.
    EmptyTransfer,
}

impl ErrorKind {
    /// The errno SPDK would report for this kind.
    pub fn errno(self) -> i32 {
        match self {
            Self::InvalidArgument => libc::EINVAL,
            Self::NotFound => libc::ENODEV,
            Self::NotBound => libc::ENODEV,
            Self::NoIommuGroup => libc::ENODEV,
            Self::Vfio => libc::EIO,
            Self::Memlock => libc::ENOMEM,
            Self::NoMemory => libc::ENOMEM,
            Self::Timeout => libc::ETIMEDOUT,
            Self::Command => libc::EIO,
            Self::Controller => libc::EIO,
            Self::Busy => libc::EBUSY,
            Self::QueueFull => libc::ENOMEM,
            Self::QueueDown => libc::ENXIO,
            Self::PrpNotExpressible | Self::PrpTooLong | Self::EmptyTransfer => libc::EINVAL,
            Self::Untranslatable => libc::EFAULT,
        }
    }
}

/// An error with its kind and a message that names the device and what to do. Errors of the
/// data path (queue full or down, PRP layouts) carry a fixed message: making one never
/// allocates.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct NvmeError {
    kind: ErrorKind,
    message: Cow<'static, str>,
}

impl NvmeError {
    /// A new error.
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: Cow::Owned(message.into()),
        }
    }
    /// A new error with a fixed message (no allocation: usable on the data path).
    pub const fn fixed(kind: ErrorKind, message: &'static str) -> Self {
        Self {
            kind,
            message: Cow::Borrowed(message),
        }
    }
    /// Its kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    /// Its message.
    pub fn message(&self) -> &str {
        &self.message
    }
    /// The errno SPDK would report.
    pub fn errno(&self) -> i32 {
        self.kind.errno()
    }
}

/// The driver's result type.
pub type Result<T> = std::result::Result<T, NvmeError>;
