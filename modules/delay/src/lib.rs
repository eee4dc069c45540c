//! The delay bdev (SPDK's `module/bdev/delay`): a stacked bdev that adds latency to its base.
//! Each I/O is forwarded to the base; when the base completes it, it is held until its delay
//! has passed (the average latency, or for one I/O in a hundred the p99 latency), then
//! completed. Read latencies apply to reads, write latencies to writes; other types are not
//! delayed (SPDK v25.09 delays only reads and writes).
//!
//! Built from the passthru template; the lifecycle steps are the same:
//!
//! 1. **Configure** (`control::create`): check the latencies (p99 ≥ average), remember the
//!    (name, base, latencies) entry first, so that a config that names the delay bdev before its
//!    base still works; attach now if the base exists, else later from `examine_config`.
//! 2. **Attach** (`control::attach`): open the base for writing with an event callback, claim
//!    it exclusive-write, copy its geometry, register. Each failure unwinds.
//! 3. **Channels** (`io::DelayChannel`): per thread, a channel to the base, a slot in the
//!    thread's delay state (`io::DELAY_THREAD`) with four pre-sized FIFO queues (average and
//!    p99, read and write, as SPDK), and an active poller that completes held I/O once due.
//!    The poller reports idle when nothing is due and refuses to let the reactor sleep while
//!    anything is held (a delay expiring is signalled by nothing else).
//! 4. **I/O** (`io`): draw p99-or-average at submission, forward with a child I/O; when the
//!    child completes, stamp the parent with `now + latency` (the latency read at that moment,
//!    so `bdev_delay_update_latency` applies to I/O already in flight, as SPDK) and queue it.
//!    No allocation: the child comes from the thread's pool and the queues are pre-sized.
//! 5. **Hot-remove** (`control::on_base_event`): unregister our bdev when the base goes.
//! 6. **Teardown** (`control::DelayBackend::destruct`): mark the entry detached (forgotten if
//!    deleted), drop the base descriptor (releases the claim). Held I/O is never dropped: a
//!    channel lives until it is idle, so its poller completes what it holds, with the base's
//!    status, when each delay expires — also after the bdev was deleted.
//! 7. **Delete** (`control::delete`): unregister by name and drop the config entry.
//! 8. **Reset** (`held`): a reset of the bdev, or of one stacked on it, aborts every I/O held
//!    on every thread (as SPDK's delay bdev) before the bdev layer drains, and while it runs
//!    I/O coming back from the base is aborted rather than delayed (one relaxed load).
//! 9. **Abort** (`held::ResetHook::abort`, `io::abort_named_on_thread`): an ABORT submitted
//!    to the bdev, or to one stacked on it, that names an I/O waiting out its latency
//!    completes it Aborted at once (the abort succeeds); the others keep waiting.
//!
//! Thread contract: control functions on a lightweight thread (the app thread); the data
//! path on whichever thread submits.

mod control;
mod held;
mod io;
mod rpc;

pub use control::{create, delete, latencies, update_latency, DelayModule, DelayOpts, LatencyType};
pub use io::held_on_thread;
pub use rpc::register_rpcs;
