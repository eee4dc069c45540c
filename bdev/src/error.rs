//! The bdev crate's one error type.

use std::fmt;

/// Stable classification of a [`BdevError`], with the errno SPDK would report for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// No bdev by that name, alias or UUID (ENODEV).
    NotFound,
    /// A bdev, alias or UUID with that name exists already (EEXIST).
    Exists,
    /// The bdev is claimed or open in a conflicting way (EPERM).
    Claimed,
    /// A parameter is out of range or malformed (EINVAL).
    InvalidArgument,
    /// Out of memory or pool entries (ENOMEM).
    NoMemory,
    /// The bdev is being removed (ENODEV).
    Removing,
    /// The operation is not supported by this bdev (ENOTSUP).
    NotSupported,
    /// The descriptor is read-only (EBADF).
    ReadOnly,
    /// A busy resource (EBUSY).
    Busy,
    /// The reactor refused (queue full, wrong thread).
    Reactor,
    /// An OS call failed (EIO).
    Io,
}

impl ErrorKind {
    /// The positive errno SPDK uses for this kind (RPC errors are its negation).
    pub fn errno(self) -> i32 {
        match self {
            Self::NotFound | Self::Removing => libc::ENODEV,
            Self::Exists => libc::EEXIST,
            Self::Claimed => libc::EPERM,
            Self::InvalidArgument => libc::EINVAL,
            Self::NoMemory => libc::ENOMEM,
            Self::NotSupported => libc::ENOTSUP,
            Self::ReadOnly => libc::EBADF,
            Self::Busy => libc::EBUSY,
            Self::Reactor => libc::EAGAIN,
            Self::Io => libc::EIO,
        }
    }
}

/// A bdev-layer error: a kind and a message that names the object and what failed.
#[derive(Debug, thiserror::Error)]
pub struct BdevError {
    kind: ErrorKind,
    message: String,
    #[source]
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl BdevError {
    /// A new error of `kind`; `message` names the object ("bdev 'Malloc3' not found").
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// Adds the underlying cause.
    pub fn with_source(mut self, src: impl std::error::Error + Send + Sync + 'static) -> Self {
        self.source = Some(Box::new(src));
        self
    }

    /// The stable kind.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }

    /// The message without the source.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The errno SPDK would report.
    pub fn errno(&self) -> i32 {
        self.kind.errno()
    }

    /// "bdev 'NAME' not found".
    pub fn not_found(name: &str) -> Self {
        Self::new(ErrorKind::NotFound, format!("bdev '{name}' not found"))
    }
}

impl fmt::Display for BdevError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(s) => write!(f, "{}: {}", self.message, s),
            None => f.write_str(&self.message),
        }
    }
}

impl From<ferrite_reactor::ReactorError> for BdevError {
    fn from(e: ferrite_reactor::ReactorError) -> Self {
        Self::new(ErrorKind::Reactor, e.to_string())
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, BdevError>;
