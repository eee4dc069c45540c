//! Ferrite's JSON-RPC server in SPDK's dialect: JSON-RPC 2.0 over a Unix stream socket, a
//! stream of JSON values with no framing, SPDK's error codes and STARTUP/RUNTIME method states.
//!
//! # Threading model
//! - [`Server::start`] spawns one non-reactor OS thread, "rpc", running a mio event loop. It
//!   accepts connections, splits their byte streams into requests and dispatches them through
//!   the [`Registry`] on that thread.
//! - A handler gets its params and a [`Responder`]. It must not block: it sends slow work to
//!   other threads (reactors) and answers the `Responder` from there, at any time. Answers are
//!   queued and the "rpc" thread is woken to write them, in completion order, each followed by
//!   `"\n"`. No futures executor is involved anywhere.
//! - [`Registry`] and [`ServerState`] are shared, `Send + Sync`, usable from any thread (e.g.
//!   the application loading a JSON config calls [`Registry::call`] directly).
//!
//! # Wire behaviour
//! Requests may be sent back to back, split anywhere, with whitespace between them. Batches
//! (a top-level array, at most 1024 elements) are an extension beyond SPDK. Invalid JSON is
//! answered with -32700 and the connection closed; malformed requests get -32600; unknown
//! methods -32601; bad params -32602 naming the parameter ([`params::decode`]); a method not
//! allowed in the current state gets SPDK's -1; handlers may answer with a negated errno
//! ([`RpcError::from_errno`]).

mod conn;
pub mod error;
mod framing;
pub mod params;
pub mod registry;
mod request;
mod responder;
pub mod server;
mod socket_file;
pub mod state;

pub use error::{ErrorKind, RpcError, RpcServerError};
pub use params::{decode, no_params};
pub use registry::{Handler, MethodSpec, Params, Registry, Release, Responder};
pub use responder::DROPPED_MESSAGE;
pub use server::{Server, ServerConfig, DEFAULT_RPC_ADDR};
pub use state::{ServerState, RUNTIME, STARTUP};

#[cfg(test)]
mod tests {
    fn send_sync<T: Send + Sync>() {}
    fn send<T: Send>() {}

    #[test]
    fn thread_safety_of_public_types() {
        send_sync::<crate::Registry>();
        send_sync::<crate::ServerState>();
        send_sync::<crate::Server>();
        send_sync::<crate::MethodSpec>();
        send_sync::<crate::RpcError>();
        send_sync::<crate::RpcServerError>();
        send::<crate::Responder>();
    }
}
