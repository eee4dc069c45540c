//! Keeping a lightweight thread on the OS thread of its reactor, for kernel objects bound to
//! the task that created them (an io_uring set up with `IORING_SETUP_SINGLE_ISSUER`, whose
//! deferred completions only that task can run).

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::{current_inner, ThreadShared};
use crate::error::{ErrorKind, ReactorError, Result};

/// Keeps the calling lightweight thread on its reactor while it is held: a move asked for
/// with [`crate::ThreadHandle::move_to`] is refused (with a warning) until every pin of the
/// thread is dropped. Calling thread only. Drop it on the same thread (where it normally
/// lives, in a channel or poller of that thread).
pub fn pin_to_reactor() -> Result<ReactorPin> {
    let t = current_inner().ok_or_else(|| {
        ReactorError::new(ErrorKind::WrongThread, "pin_to_reactor outside a thread")
    })?;
    t.shared.pinned.fetch_add(1, Ordering::Relaxed);
    Ok(ReactorPin {
        thread: t.shared.clone(),
    })
}

/// See [`pin_to_reactor`].
pub struct ReactorPin {
    thread: Arc<ThreadShared>,
}

impl std::fmt::Debug for ReactorPin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReactorPin({})", self.thread.name)
    }
}

impl Drop for ReactorPin {
    fn drop(&mut self) {
        self.thread.pinned.fetch_sub(1, Ordering::Relaxed);
    }
}
