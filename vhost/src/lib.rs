//! Ferrite's vhost-user-blk target: exposes bdevs to virtual machines (QEMU's
//! `vhost-user-blk-pci`) the way SPDK's vhost target does, and survives a target restart
//! without the guest noticing (inflight shared memory, reconnecting frontends).
//!
//! Layout:
//! - `controller`: creation/deletion/listing of controllers, bdev claims, hot-remove,
//!   save_config entries (app thread);
//! - `listener`: one control thread per controller, serving the Unix socket with the `vhost`
//!   crate's message parser (`BackendReqHandler`);
//! - `device`: the control-plane state of a connection (features, memory table, rings,
//!   inflight region), on the control thread;
//! - `memory`: the mapped memory table and its address translations;
//! - `queue`: the data path, one poller per ring on a reactor of the controller's cpumask
//!   (`mod.rs` start/stop, `poll.rs` the poller, `request.rs` requests);
//! - `blk`: virtio-blk features, configuration space, request parsing;
//! - `rpc`: SPDK's `vhost_*` methods.
//!
//! Thread contract: control on non-reactor threads (one per controller), data on reactor
//! threads; they talk by messages, and a ring is always stopped (drained) before anything it
//! uses changes.

pub mod blk;
pub mod controller;
pub mod device;
pub mod error;
pub mod listener;
pub mod memory;
pub mod queue;
mod rpc;

pub use controller::{
    config_json, create, delete, init, list, names, set_coalescing, shutdown, CreateOpts,
    VhostSettings,
};
pub use error::{ErrorKind, Result, VhostError};
pub use rpc::register_rpcs;

/// The subsystem name in SPDK's config files.
pub const SUBSYSTEM: &str = "vhost_blk";
