//! The malloc bdev: a RAM disk. Data lives in one anonymous mapping per bdev.
//!
//! Thread contract: `create` and `delete` on a lightweight thread (the app thread); the data
//! path on whichever thread submits (copies are done synchronously in `submit`, and the bdev
//! layer defers the completion).

mod control;
mod io;
mod rpc;

pub use rpc::register_rpcs;
mod mem;

pub use control::{create, delete, MallocModule, MallocOpts};
