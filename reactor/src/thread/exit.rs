//! The end of a lightweight thread: everything it owns is dropped on it, channels last.

use std::sync::atomic::Ordering;

use super::{ChannelEntry, ThreadInner};

impl ThreadInner {
    /// Drops everything the thread owns, with the thread installed as current so that
    /// destructors can unregister pollers and release channels. Runs queued messages first
    /// (bounded).
    pub(crate) fn teardown(self: Box<Self>) {
        // Whatever runs or is dropped from here on can tell that the thread is exiting.
        self.exit_requested.set(true);
        self.enter(|| {
            for _ in 0..1024 {
                match self.shared.queue.pop() {
                    Some(m) => m(),
                    None => break,
                }
            }
            self.shared.exited.store(true, Ordering::Release);
            let locals = std::mem::take(&mut *self.locals.borrow_mut());
            drop(locals);
            let keyed = std::mem::take(&mut *self.keyed.borrow_mut());
            drop(keyed);
            for list in [&self.active, &self.timed, &self.pending] {
                let l = std::mem::take(&mut *list.borrow_mut());
                drop(l);
            }
            // Channels last: pollers and locals may have held them. One at a time, an
            // unreferenced one first: a channel's state may hold (and use, when dropped)
            // channels of other devices, which must outlive it. Channels still referenced from
            // outside the thread go newest first (a stacked device's channel is created after
            // the channels it holds). Bounded, in case destructors keep creating channels.
            for _ in 0..4096 {
                let entry = {
                    let mut chans = self.channels.borrow_mut();
                    let Some(last) = chans.len().checked_sub(1) else {
                        break;
                    };
                    let pos = chans.iter().rposition(|e| e.refs == 0).unwrap_or(last);
                    chans.remove(pos)
                };
                destroy_channel(entry);
            }
            let rest = std::mem::take(&mut *self.channels.borrow_mut());
            for c in rest.into_iter().rev() {
                destroy_channel(c);
            }
            while self.shared.queue.pop().is_some() {}
        });
    }
}

/// Drops one channel's state (no borrow of the channel list may be held: its destructor may
/// release other channels).
fn destroy_channel(mut c: ChannelEntry) {
    if let Some(f) = c.on_destroy.take() {
        f();
    }
    drop(c);
}
