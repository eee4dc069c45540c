//! The null bdev: accepts every I/O and completes it without touching data. Useful to measure
//! the framework's own cost per I/O.
//!
//! Thread contract: `create`, `delete` and `resize` run on a lightweight thread (the app
//! thread); the data path runs on whichever thread submits.

mod control;
mod io;
mod rpc;

pub use rpc::register_rpcs;

pub use control::{create, delete, resize, NullModule, NullOpts};
