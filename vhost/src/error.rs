//! The vhost crate's one error type.

use std::borrow::Cow;

/// Stable classification of a [`VhostError`], with the errno SPDK reports for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// No controller (or bdev) by that name (ENODEV).
    NotFound,
    /// A controller with that name exists already (EEXIST).
    Exists,
    /// A parameter is out of range or malformed (EINVAL).
    InvalidArgument,
    /// The bdev is claimed by someone else (EPERM).
    Claimed,
    /// The controller has a frontend connected and cannot be changed now (EBUSY).
    Busy,
    /// An OS call failed (EIO).
    Io,
    /// A guest address or descriptor is outside guest memory or malformed (EFAULT).
    BadAddress,
    /// A guest request is malformed or not allowed (e.g. a write to a read-only controller):
    /// it is answered with virtio-blk's IOERR status (EIO).
    BadRequest,
    /// A guest request of a type the device does not serve: answered with virtio-blk's UNSUPP
    /// status (ENOTSUP).
    UnsupportedRequest,
    /// A guest request without a device-writable status byte: it cannot be answered, so its
    /// queue stops until the frontend resets it (EFAULT).
    Unanswerable,
}

impl ErrorKind {
    /// The positive errno SPDK uses for this kind (RPC errors are its negation).
    pub fn errno(self) -> i32 {
        match self {
            Self::NotFound => libc::ENODEV,
            Self::Exists => libc::EEXIST,
            Self::InvalidArgument => libc::EINVAL,
            Self::Claimed => libc::EPERM,
            Self::Busy => libc::EBUSY,
            Self::Io => libc::EIO,
            Self::BadAddress | Self::Unanswerable => libc::EFAULT,
            Self::BadRequest => libc::EIO,
            Self::UnsupportedRequest => libc::ENOTSUP,
        }
    }
}

/// A vhost-layer error: a kind and a message that names the object and what failed. Errors of
/// the data path (a guest's malformed request) carry a fixed message: making one never
/// allocates, whatever a guest sends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct VhostError {
    kind: ErrorKind,
    message: Cow<'static, str>,
}

impl VhostError {
    /// A new error of `kind`; `message` names the object ("vhost controller 'vhost.0' ...").
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

    /// The stable kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The RPC form: code -errno, this message.
    pub fn to_rpc(&self) -> ferrite_rpc::RpcError {
        ferrite_rpc::RpcError::from_errno(self.kind.errno(), self.message.to_string())
    }
}

impl From<ferrite_bdev::BdevError> for VhostError {
    fn from(e: ferrite_bdev::BdevError) -> Self {
        let kind = match e.kind() {
            ferrite_bdev::ErrorKind::NotFound | ferrite_bdev::ErrorKind::Removing => {
                ErrorKind::NotFound
            }
            ferrite_bdev::ErrorKind::Claimed => ErrorKind::Claimed,
            ferrite_bdev::ErrorKind::Exists => ErrorKind::Exists,
            ferrite_bdev::ErrorKind::InvalidArgument => ErrorKind::InvalidArgument,
            ferrite_bdev::ErrorKind::Busy => ErrorKind::Busy,
            _ => ErrorKind::Io,
        };
        Self::new(kind, e.to_string())
    }
}

/// Result with [`VhostError`].
pub type Result<T> = std::result::Result<T, VhostError>;
