//! The reactor crate's one error type.

use std::fmt;

/// Stable classification of a [`ReactorError`]; match on this, not on the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A message queue is full; the message was not sent and is returned to nobody.
    QueueFull,
    /// The target thread has exited or is exiting.
    ThreadGone,
    /// A core mask was malformed or named a core this machine does not have.
    InvalidCpuMask,
    /// The call was made from outside a lightweight thread, or from the wrong one.
    WrongThread,
    /// An I/O device was unregistered.
    DeviceGone,
    /// An operating-system call failed.
    Os,
    /// The runtime is shutting down or not running.
    NotRunning,
}

/// Error returned by the reactor crate: a kind, what was being done, and an optional OS cause.
#[derive(Debug, thiserror::Error)]
pub struct ReactorError {
    kind: ErrorKind,
    context: String,
    #[source]
    source: Option<std::io::Error>,
}

impl ReactorError {
    pub(crate) fn new(kind: ErrorKind, context: impl Into<String>) -> Self {
        Self {
            kind,
            context: context.into(),
            source: None,
        }
    }

    pub(crate) fn os(context: impl Into<String>, source: std::io::Error) -> Self {
        Self {
            kind: ErrorKind::Os,
            context: context.into(),
            source: Some(source),
        }
    }

    /// The stable kind of this error.
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
}

impl fmt::Display for ReactorError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(src) => write!(f, "{}: {}", self.context, src),
            None => f.write_str(&self.context),
        }
    }
}

/// Result alias for this crate.
pub type Result<T> = std::result::Result<T, ReactorError>;
