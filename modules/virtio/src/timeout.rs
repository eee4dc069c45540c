//! The request timeout of a virtio-user controller (`timeout_us` of
//! `bdev_virtio_attach_controller`; 0, the default, is none, as in SPDK's bdev_virtio, which
//! has no timeout).
//!
//! A server that stays connected but stops answering would otherwise leave I/O pending
//! forever. With a timeout, each channel has a timed poller beside its completion poller,
//! running every quarter of the timeout (1 ms to 1 s): when the oldest request in flight on its
//! queue is older than the timeout, it first consumes what the server answered meanwhile; if a
//! request is still older, the controller is marked failed (`broken`, as when the server goes
//! away: every channel fails its requests in flight and new requests fail at once), its
//! connection is closed, and this queue's requests fail. The bdev stays registered, reported
//! broken, until it is detached.
//!
//! Ages come from the bdev layer's submit stamp (`BdevIo::submit_tsc`): nothing is added to
//! the data path. A failed request's buffers may still be written by a server that answers
//! late after all (closing the connection tells it to stop; the trust note of the DMA pool in
//! ARCHITECTURE.md applies).
//!
//! Thread contract: the poller runs on the channel's thread, like the channel's own.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering;

use ferrite_reactor::{clock, Poll, PollerHandle};

use crate::io::{fail_all, Inner, Shared};
use crate::queue::Queue;

/// Longest `timeout_us` accepted: one hour.
pub const MAX_TIMEOUT_US: u64 = 3_600_000_000;

/// Registers the timed poller of the channel `rc` on the calling thread, if its controller has
/// a timeout.
pub(crate) fn register(rc: &Rc<RefCell<Inner>>) -> Option<PollerHandle> {
    let (us, name) = {
        let i = rc.borrow();
        (i.ctrl.opts.timeout_us, i.ctrl.name.clone())
    };
    if us == 0 {
        return None;
    }
    let p = TimeoutPoller {
        inner: Shared(rc.clone()),
        limit: clock::us_to_ticks(us),
    };
    let period = (us / 4).clamp(1_000, 1_000_000);
    ferrite_reactor::register_poller_obj("bdev_virtio_timeout", period, Box::new(p))
        .map_err(|e| {
            tracing::error!(
                "virtio-user '{name}': cannot register the request timeout poller ({e}); requests will not time out"
            )
        })
        .ok()
}

struct TimeoutPoller {
    inner: Shared,
    limit: u64,
}

impl Poll for TimeoutPoller {
    fn poll(&mut self) -> usize {
        match self.inner.0.try_borrow_mut() {
            Ok(mut i) => check(&mut i, self.limit),
            Err(_) => 0,
        }
    }
}

/// True if a request in flight on `q` was submitted more than `limit` ticks before `now`.
fn expired(q: &Queue, now: u64, limit: u64) -> bool {
    q.inflight > 0
        && q.slots
            .iter()
            .filter_map(|s| s.io.as_ref())
            .any(|io| now.saturating_sub(io.submit_tsc()) > limit)
}

fn check(i: &mut Inner, limit: u64) -> usize {
    let now = clock::ticks();
    match i.q.as_ref() {
        Some(q) if !i.ctrl.broken.load(Ordering::Relaxed) && expired(q, now, limit) => {}
        _ => return 0,
    }
    // What the server answered meanwhile completes normally first.
    let n = i.poll();
    let ctrl = i.ctrl.clone();
    let Some(q) = i.q.as_mut() else { return n };
    if ctrl.broken.load(Ordering::Relaxed) || !expired(q, now, limit) {
        return n;
    }
    tracing::error!(
        "virtio-user '{}': a request on queue {} got no answer from the server at {} within timeout_us {}; failing the requests in flight and marking the controller failed (detach it)",
        ctrl.name,
        q.index,
        ctrl.opts.traddr,
        ctrl.opts.timeout_us
    );
    ctrl.fail();
    n + fail_all(q)
}
