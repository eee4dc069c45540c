//! The passthru bdev: the template every stacked (virtual) bdev is copied from.
//!
//! It sits on a base bdev, claims it, and forwards every I/O to it unchanged. Read this module
//! top to bottom to learn how a virtual bdev lives:
//!
//! 1. **Configure** (`control::create`): the (name, base) pair is remembered first, so that a
//!    config that names the passthru before its base still works; if the base exists it is
//!    attached now, else later from `examine_config` when the base registers.
//! 2. **Attach** (`control::attach`): open the base for writing with an event callback, claim it
//!    (exclusive write, so nobody else can write under us), copy its geometry, register our
//!    bdev. Each failure undoes the steps before it (a claim is released by dropping the
//!    descriptor that holds it).
//! 3. **Channels** (`io::PassthruChannel`): each thread that does I/O on the passthru gets its
//!    own channel to the base, created on that thread.
//! 4. **I/O** (`io`): take a child I/O from the thread's pool, make it a copy of the parent that
//!    carries the parent along, submit it on the base channel; the child's callback hands the
//!    status to the parent and returns the child to the pool. Out of I/O objects → complete
//!    the parent with NOMEM and the bdev layer retries it.
//! 5. **Hot-remove** (`control::on_base_event`): the base says it is going away → we unregister
//!    our own bdev; our users get the event in turn and close their descriptors.
//! 6. **Teardown** (`control::PassthruBackend::destruct`), when our last descriptor is closed:
//!    forget the configuration entry (if deleted by RPC), then drop the base descriptor, which
//!    releases the claim and closes the base. Order matters: our bdev is out of the registry
//!    before the base is released, so no new I/O can reach a base we no longer hold; in-flight
//!    I/O has completed because channels are only freed when idle and each holds its own
//!    base channel.
//! 7. **Delete** (`control::delete`): unregister our bdev by name and drop the config entry.
//!
//! Thread contract: control functions on a lightweight thread (the app thread); the data
//! path on whichever thread submits.

mod control;
mod io;
mod rpc;

pub use rpc::register_rpcs;

pub use control::{create, delete, PassthruModule, PassthruOpts};
