//! Per-thread channel state shared by a backend channel and its poller (shared with the uring
//! module).
//!
//! The state is the channel of a private [`IoDevice`]: the reactor keeps it with the thread
//! that created it (it moves between reactors with that thread and is dropped on it, with the
//! thread's other channels), and every access goes through [`IoChannel`]'s owner check, so
//! no `unsafe` is needed to share it between the two holders.

use std::cell::RefCell;
use std::sync::Mutex;

use ferrite_bdev::{BdevIo, IoStatus};
use ferrite_reactor::{IoChannel, IoDevice, Poll, PollerHandle};

/// A channel state that a poller drives: reaps kernel completions and says whether the reactor
/// may sleep (its completion eventfd will wake it).
pub trait Polled: Send + 'static {
    /// Reaps what the kernel completed; returns how much work was done.
    fn poll(&mut self) -> usize;
    /// True when nothing is left that only polling would find.
    fn can_sleep(&mut self) -> bool;
    /// True when requests are in the kernel and their completion will signal the channel's
    /// registered eventfd (see [`ferrite_reactor::Poll::waits_on_kernel`]). Default: false.
    fn waits_on_kernel(&mut self) -> bool {
        false
    }
}

/// The poller half of a [`ChanState`] pair.
struct ChanPoller<T: Polled>(ChanState<T>);

impl<T: Polled> Poll for ChanPoller<T> {
    fn poll(&mut self) -> usize {
        self.0.with(|i| i.poll()).unwrap_or(0)
    }

    fn can_sleep(&mut self) -> bool {
        self.0.with(|i| i.can_sleep()).unwrap_or(false)
    }

    fn waits_on_kernel(&mut self) -> bool {
        self.0.with(|i| i.waits_on_kernel()).unwrap_or(false)
    }
}

/// Makes `value` the calling thread's channel state (a private device named `name`) and
/// registers a poller named `poller_name` that drives it. Returns the backend channel's
/// holder and the poller handle; either is `None` when it could not be set up, with the reason
/// logged (a channel without state fails every I/O). Thread contract: call on the lightweight
/// thread that owns the channel, at channel creation (allocates).
pub fn start<T: Polled>(
    name: &str,
    poller_name: &str,
    value: T,
) -> (Option<ChanState<T>>, Option<PollerHandle>) {
    let (state, poller_state) = match ChanState::new_pair(name, value) {
        Ok(pair) => pair,
        Err(e) => {
            tracing::error!("{name}: cannot set up the channel state: {e}");
            return (None, None);
        }
    };
    let poller =
        ferrite_reactor::register_poller_obj(poller_name, 0, Box::new(ChanPoller(poller_state)))
            .map_err(|e| tracing::error!("{name}: cannot register the channel poller: {e}"))
            .ok();
    (Some(state), poller)
}

/// One holder of a channel's state `T`.
///
/// Thread contract: created on a lightweight thread; used only on that thread (a use on any
/// other thread panics in the owner check). The state is dropped on its thread once every
/// holder is gone (by a deferred message, or in the thread's teardown).
pub struct ChanState<T: Send + 'static>(IoChannel<RefCell<Option<T>>>);

impl<T: Send + 'static> ChanState<T> {
    /// Makes `value` the calling thread's state for a new private device named `name` and
    /// returns two holders of it (for the backend channel and for its poller). Fails off a
    /// lightweight thread. Allocates: call at channel creation, not per I/O.
    pub fn new_pair(name: &str, value: T) -> ferrite_reactor::Result<(Self, Self)> {
        // The device creates its state once, on this thread, within the first `get_channel`;
        // the mutex only carries the value into the `Fn + Sync` constructor.
        let value = Mutex::new(Some(value));
        let dev = IoDevice::new(name, move || {
            RefCell::new(value.lock().ok().and_then(|mut v| v.take()))
        });
        let a = dev.get_channel()?;
        let b = dev.get_channel()?;
        Ok((Self(a), Self(b)))
    }

    /// Runs `f` on the state, before returning. `None` if the state is already borrowed up
    /// the stack (a re-entrant call) or was never created.
    #[inline]
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        let mut g = self.0.try_borrow_mut().ok()?;
        g.as_mut().map(f)
    }

    /// Runs `submit` with the state and `io`, before returning; if the state is in use up the
    /// stack (a re-entrant call), completes `io` with NOMEM instead (the bdev layer retries).
    #[inline]
    pub fn submit(&self, io: Box<BdevIo>, submit: impl FnOnce(&mut T, Box<BdevIo>)) {
        match self.0.try_borrow_mut() {
            Ok(mut g) => match g.as_mut() {
                Some(state) => submit(state, io),
                None => io.complete(IoStatus::Failed),
            },
            Err(_) => io.complete(IoStatus::NoMem),
        }
    }
}
