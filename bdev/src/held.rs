//! I/O held inside a module (the error bdev's `pending` injections, the delay bdev's latency
//! queues): how a reset reaches it.
//!
//! A reset quiesces its bdev: it freezes every channel and waits until the I/O already
//! dispatched has completed. I/O a module holds on purpose would never complete, so the reset
//! would never run. A module that holds I/O registers a [`HeldIo`] for its bdev; a reset of
//! that bdev first tells it ([`HeldIo::reset_start`]) and quiesces only once the module has
//! completed what it holds, and tells it again when the reset has completed
//! ([`HeldIo::reset_end`]). Control path only: looked up once per reset, never per I/O.

use std::sync::{Arc, Mutex, Weak};

use crate::bdev::Bdev;

/// A module's held I/O, as a reset of its bdev sees it.
///
/// Thread contract: both methods are called on the thread of the reset I/O (a lightweight
/// thread); `done` may be called on any thread, before or after `reset_start` returns.
pub trait HeldIo: Send + Sync + 'static {
    /// A reset of the bdev starts: from now until [`HeldIo::reset_end`], complete every I/O
    /// held on every thread (with the status the module gives a reset) and hold no new one;
    /// call `done` once what was held has been completed.
    fn reset_start(&self, done: Box<dyn FnOnce() + Send>);
    /// The reset has completed: I/O may be held again.
    fn reset_end(&self);
}

type Entry = (Weak<Bdev>, Arc<dyn HeldIo>);

static HOOKS: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

/// Registers `h` for `bdev` (replacing an earlier one). Any thread. The entry goes when the
/// bdev is dropped, or with [`clear_held_io`].
pub fn set_held_io(bdev: &Arc<Bdev>, h: Arc<dyn HeldIo>) {
    if let Ok(mut v) = HOOKS.lock() {
        v.retain(|(b, _)| b.strong_count() > 0 && !std::ptr::eq(b.as_ptr(), Arc::as_ptr(bdev)));
        v.push((Arc::downgrade(bdev), h));
    }
}

/// Forgets the hook of `bdev`, if any. Any thread.
pub fn clear_held_io(bdev: &Bdev) {
    if let Ok(mut v) = HOOKS.lock() {
        v.retain(|(b, _)| b.strong_count() > 0 && !std::ptr::eq(b.as_ptr(), bdev));
    }
}

/// The hook of `bdev`, if a module registered one.
pub(crate) fn held_io(bdev: &Bdev) -> Option<Arc<dyn HeldIo>> {
    let v = HOOKS.lock().ok()?;
    v.iter()
        .find(|(b, _)| std::ptr::eq(b.as_ptr(), bdev))
        .map(|(_, h)| h.clone())
}
