//! The error bdev (SPDK's `module/bdev/error`): a stacked bdev named `EE_<base>` that forwards
//! I/O to its base and, on request, injects errors into it. A test tool: injections are
//! runtime state, set with `bdev_error_inject_error` and never saved.
//!
//! Built from the passthru template; the lifecycle steps are the same:
//!
//! 1. **Configure** (`control::create`): the base name is remembered first (one error bdev per
//!    base, as SPDK), so a config that names the error bdev before its base still works; if the
//!    base exists it is attached now, else later from `examine_config`.
//! 2. **Attach** (`control::attach`): open the base for writing with an event callback, claim it
//!    exclusive-write, copy its geometry, register `EE_<base>`. Each failure unwinds.
//! 3. **Channels** (`io::ErrorChannel`): per thread, a channel to the base plus a slot in the
//!    thread's error state (`io::ERROR_THREAD`) holding the channel's in-flight count (for
//!    `queue_depth`) and the I/O it holds for `pending` injections.
//! 4. **I/O** (`io`): if no injection is armed for the I/O's type (one relaxed atomic load: the
//!    fast path), forward it with a child I/O exactly as passthru does. Otherwise consume one
//!    unit of the type's remaining count (a compare-and-swap, so `num` is exact across threads)
//!    and act: `failure` completes it Failed, `nomem` completes it NoMem (the bdev layer parks
//!    and retries it; once `num` is used up it goes through), `pending` holds it, and
//!    `corrupt_data` XORs one byte of a write's data before forwarding it, or of a read's data
//!    after the base completed it.
//! 5. **Release of held I/O** (`inject::Injections::release`): `clear`, delete, the base's
//!    removal and destruct disarm every injection, advance the release epoch and send each
//!    thread that has a channel a message that completes the held I/O Aborted. The epoch makes
//!    a release complete exactly the I/O held before it (never one held under a newer
//!    injection). No lock is taken on the data path.
//! 6. **Hot-remove** (`control::on_base_event`): the base goes away → release held I/O and
//!    unregister `EE_<base>`.
//! 7. **Teardown** (`control::ErrorBackend::destruct`): release held I/O (none can remain by
//!    then, but it costs nothing), forget the configuration if deleted, drop the base
//!    descriptor (releases the claim).
//! 8. **Delete** (`control::delete`): release held I/O, unregister, drop the config entry.
//! 9. **Reset** (`inject::ResetHook`): a reset of the bdev, or of one stacked on it, completes
//!    every held I/O Failed (as SPDK's error bdev) before the bdev layer drains; while it runs
//!    a `pending` hit fails its I/O instead of holding it. Injections stay armed.
//! 10. **Abort** (`inject::ResetHook::abort`, `io::abort_on_thread`): an ABORT submitted to
//!     the bdev, or to one stacked on it, that names a held I/O completes that one Aborted
//!     (the abort succeeds); the others stay held.
//!
//! Thread contract: control functions on a lightweight thread (the app thread); the data
//! path on whichever thread submits.

mod control;
mod inject;
mod io;
mod rpc;

pub use control::{create, delete, inject_error, injection_status, ErrorModule, ErrorOpts};
pub use inject::{ErrorType, InjectIoType, InjectOpts, SlotStatus};
pub use rpc::register_rpcs;
