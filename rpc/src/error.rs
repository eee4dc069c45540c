//! Error types: [`RpcError`] is the JSON-RPC error object a method answers with (its `code` is
//! the stable kind clients match on); [`RpcServerError`] is this crate's one Rust-level error
//! type (starting the server), with a stable [`ErrorKind`].

use std::fmt;

use serde::{Deserialize, Serialize};

/// JSON-RPC "Parse error": the bytes were not valid JSON.
pub const PARSE_ERROR: i32 = -32700;
/// JSON-RPC "Invalid request": valid JSON that is not a well-formed request object.
pub const INVALID_REQUEST: i32 = -32600;
/// JSON-RPC "Method not found".
pub const METHOD_NOT_FOUND: i32 = -32601;
/// JSON-RPC "Invalid params".
pub const INVALID_PARAMS: i32 = -32602;
/// JSON-RPC "Internal error".
pub const INTERNAL_ERROR: i32 = -32603;
/// SPDK's invalid-state code: the method exists but is not allowed in the current state.
/// (Ambiguous on the wire: `-EPERM` is also -1.)
pub const INVALID_STATE: i32 = -1;

/// A JSON-RPC error object, serialized as `{"code":..,"message":..}`.
///
/// Plain data: may be created, sent and inspected on any thread.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("JSON-RPC error {code}: {message}")]
pub struct RpcError {
    /// JSON-RPC error code (negative errno for handler failures, see [`RpcError::from_errno`]).
    pub code: i32,
    /// Human-readable text; names what failed and on which object.
    pub message: String,
}

impl RpcError {
    /// An error with an explicit code and message.
    pub fn new(code: i32, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// `-32602` Invalid params; `msg` should name the offending parameter.
    pub fn invalid_params(msg: impl Into<String>) -> Self {
        Self::new(INVALID_PARAMS, msg)
    }

    /// `-32603` Internal error.
    pub fn internal(msg: impl Into<String>) -> Self {
        Self::new(INTERNAL_ERROR, msg)
    }

    /// `-32601` with SPDK's text "Method not found", followed by the method's name.
    pub fn method_not_found(method: &str) -> Self {
        Self::new(METHOD_NOT_FOUND, format!("Method not found: {method}"))
    }

    /// `-1`, SPDK's invalid-state code.
    pub fn invalid_state(msg: impl Into<String>) -> Self {
        Self::new(INVALID_STATE, msg)
    }

    /// A handler failure reported as a negated errno, the way SPDK handlers do:
    /// `from_errno(libc::ENODEV, "bdev 'Malloc3' not found")` → code `-19`.
    /// A negative `errno` is accepted too and means the same.
    pub fn from_errno(errno: i32, msg: impl Into<String>) -> Self {
        Self::new(errno.checked_abs().map_or(i32::MIN, |e| -e), msg)
    }

    /// `-32700` Parse error with SPDK's text.
    pub(crate) fn parse_error() -> Self {
        Self::new(PARSE_ERROR, "Parse error")
    }

    /// `-32600` with SPDK's text "Invalid request", followed by what was wrong.
    pub(crate) fn invalid_request(detail: impl fmt::Display) -> Self {
        Self::new(INVALID_REQUEST, format!("Invalid request: {detail}"))
    }
}

/// Stable classification of an [`RpcServerError`]; match on this, not on the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// Another process is listening on the socket path.
    AddressInUse,
    /// The socket path is unusable: too long, not a socket, or in a missing directory.
    InvalidPath,
    /// The configuration is unusable (e.g. `max_conns` of 0).
    InvalidConfig,
    /// An operating-system call failed.
    Os,
}

/// The crate's error type for Rust-level failures (starting the server): a stable kind,
/// what was being done and on which object, and an optional OS cause.
#[derive(Debug, thiserror::Error)]
pub struct RpcServerError {
    kind: ErrorKind,
    context: String,
    #[source]
    source: Option<std::io::Error>,
}

impl RpcServerError {
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

impl fmt::Display for RpcServerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.source {
            Some(src) => write!(f, "{}: {}", self.context, src),
            None => f.write_str(&self.context),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serializes_as_code_and_message() {
        let e = RpcError::from_errno(19, "bdev 'x' not found");
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"code":-19,"message":"bdev 'x' not found"}"#
        );
        assert_eq!(RpcError::from_errno(-22, "m").code, -22);
        assert_eq!(RpcError::from_errno(i32::MIN, "m").code, i32::MIN);
        assert_eq!(RpcError::invalid_state("s").code, -1);
        assert_eq!(RpcError::invalid_params("p").code, -32602);
        assert_eq!(RpcError::internal("p").code, -32603);
        assert!(RpcError::method_not_found("foo")
            .message
            .starts_with("Method not found"));
    }
}
