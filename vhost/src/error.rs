//! The vhost crate's one error type.

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
            Self::BadAddress => libc::EFAULT,
        }
    }
}

/// A vhost-layer error: a kind and a message that names the object and what failed.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct VhostError {
    kind: ErrorKind,
    message: String,
}

impl VhostError {
    /// A new error of `kind`; `message` names the object ("vhost controller 'vhost.0' ...").
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
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
        ferrite_rpc::RpcError::from_errno(self.kind.errno(), self.message.clone())
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
