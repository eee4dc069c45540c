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
//! 4. **I/O** (`io`): hand each I/O to the base channel with `BdevChannel::forward` (the
//!    same object, at the same offset): the base's layer accounts it, and its completion
//!    comes straight back through ours. As passthru forwards *everything* unchanged, its
//!    channel goes one step further and gives the base channel to the bdev layer
//!    (`BackendChannel::forward_all`), which then forwards each I/O itself, with the checks
//!    settled once per channel: no call into this module per I/O. A module that needs to see the result before its
//!    submitter does passes a hook to `forward_with`; one that builds different requests
//!    (several pieces, other data) takes child I/O from the pool instead (`BdevIo::forward`,
//!    see modules/raid and modules/delay).
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
