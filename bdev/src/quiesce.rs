//! Quiesce: freeze every channel of a bdev (new I/O parks), wait until the I/O already
//! dispatched has completed, run something, then thaw. Used by reset and by the emulated
//! compare-and-write; one quiesce at a time per bdev, later requests wait in order.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use crate::bdev::Bdev;

/// Freezes and drains every channel of `bdev`, then runs `then` on the calling thread.
/// Must be called on a lightweight thread. Pair with [`unquiesce`].
pub fn quiesce(bdev: &Arc<Bdev>, then: impl FnOnce() + Send + 'static) {
    let start_now = match bdev.quiesce.lock() {
        Ok(mut q) => {
            if q.active {
                // Started later by whichever thread unquiesces; the freeze (and so `then`)
                // must still run on this thread, which is where the caller's I/O lives.
                let origin = ferrite_reactor::current();
                let weak = Arc::downgrade(bdev);
                q.waiters.push_back(Box::new(move || {
                    let start = move || match weak.upgrade() {
                        Some(b) => start_freeze(&b, Box::new(then)),
                        None => tracing::error!("quiesce: bdev gone before its turn"),
                    };
                    match origin {
                        Some(t) if ferrite_reactor::current().as_ref() != Some(&t) => {
                            if let Err(e) = t.send(start) {
                                tracing::error!("quiesce: cannot start on its thread: {e}");
                            }
                        }
                        _ => start(),
                    }
                }));
                return;
            }
            q.active = true;
            true
        }
        Err(_) => false,
    };
    if start_now {
        start_freeze(bdev, Box::new(then));
    }
}

fn start_freeze(bdev: &Arc<Bdev>, then: Box<dyn FnOnce() + Send>) {
    bdev.quiesced.store(true, Ordering::SeqCst);
    let r = bdev.device.for_each_channel_async(
        |ctx, cont| match ctx.state() {
            Some(s) => s.freeze_and_drain(cont),
            None => cont.finish(0),
        },
        move |_| then(),
    );
    if let Err(e) = r {
        tracing::error!("quiesce of bdev '{}' could not start: {e}", bdev.name);
    }
}

/// Thaws every channel (parked I/O is resubmitted in order) and starts the next waiting
/// quiesce, if any. Must be called on a lightweight thread.
pub fn unquiesce(bdev: &Arc<Bdev>) {
    bdev.quiesced.store(false, Ordering::SeqCst);
    let b = bdev.clone();
    let r = bdev.device.for_each_channel(
        |ctx| {
            if let Some(s) = ctx.state() {
                s.thaw();
            }
        },
        move || {
            let next = b.quiesce.lock().ok().and_then(|mut q| {
                let n = q.waiters.pop_front();
                if n.is_none() {
                    q.active = false;
                }
                n
            });
            if let Some(next) = next {
                // Starts the freeze on the waiter's own thread.
                next();
            }
        },
    );
    if let Err(e) = r {
        tracing::error!("unquiesce of bdev '{}' could not start: {e}", bdev.name);
    }
}
