//! The queue's poller: popping chains, publishing used entries, signalling the call eventfd
//! (EVENT_IDX and coalescing), the sleep protocol, stopping and detaching.

use ferrite_vring::{ErrorKind as RingKind, GuestMemory, PopBatch};
use std::io::{Read, Write};

use super::{Queue, POP_BATCH};
use crate::blk::request::status;

impl Queue {
    pub(super) fn poll(&mut self) -> usize {
        if self.finished() {
            return 0;
        }
        if self.abandoned {
            // Hands off the ring: only waiting for the bdev to give its I/O back.
            if self.outstanding == 0 {
                self.finish();
            }
            return 0;
        }
        // The listing's count, as of this poll (every path below returns through here next
        // time; a queue finishes only with nothing outstanding, shown first).
        if self.outstanding != self.reported_inflight {
            self.reported_inflight = self.outstanding;
            self.ctrl.set_queue_inflight(self.index, self.outstanding);
        }
        let mut work = 0;
        if self.notify_enabled {
            self.notify_enabled = false;
            if self.vring.disable_notify(self.mem.guest()).is_err() {
                self.set_broken("cannot update the notification flags");
            }
        }
        if self.pending_publish {
            self.flush_used();
            work += 1;
        } else if self.signal_pending {
            self.maybe_signal();
        }
        if self.detach.is_some() && self.outstanding == 0 {
            self.retry = None;
            self.chan = None;
            if let Some(tx) = self.detach.take() {
                let _ = tx.send(());
            }
        }
        if self.stop.is_some() {
            // A popped request waiting for an I/O object is answered before the ring stops.
            if let Some(id) = self.retry.take() {
                self.submit_parsed(id);
            }
            if self.outstanding == 0 && self.retry.is_none() {
                self.finish();
            }
            return work;
        }
        if self.broken {
            return work;
        }
        if self.detach.is_some() {
            return work; // stop taking requests until the bdev is released
        }
        if let Some(id) = self.retry.take() {
            self.submit_parsed(id);
            if self.retry.is_some() {
                return work;
            }
            work += 1;
        }
        // One batch of region lookups for the whole poll. The table is borrowed apart from
        // `self` (the requests below need `&mut self`) without cloning the Arc: a clone and
        // its drop are two locked instructions per poll, each waiting for the store buffer
        // (full of the last batch's data copies) to drain.
        // SAFETY: `self.mem` is set when the queue is built and never reassigned or dropped
        // while the queue lives (a new memory table stops the queue and builds a new one),
        // and the reference does not outlive this call, so the table stays mapped for as
        // long as the batch borrows it; nothing mutates the table.
        let guest: &GuestMemory = unsafe { &*std::ptr::from_ref(self.mem.guest()) };
        let mut batch = PopBatch::new(guest);
        for _ in 0..POP_BATCH {
            match self.vring.pop_in(&mut batch, &mut self.chain) {
                Ok(true) => {
                    work += 1;
                    self.handle_chain();
                    if self.retry.is_some() || self.broken {
                        break;
                    }
                }
                Ok(false) => break,
                Err(e) if e.kind() == RingKind::Chain => {
                    work += 1;
                    if !self.refuse_chain(&e) {
                        break;
                    }
                }
                Err(e) => {
                    self.set_broken(&e.to_string());
                    break;
                }
            }
        }
        if self.pending_publish {
            self.flush_used();
        }
        work
    }

    pub(super) fn can_sleep(&mut self) -> bool {
        if self.abandoned {
            return true; // nothing to look at: its completions come from the bdev layer
        }
        if self.finished() || self.broken {
            return !self.pending_publish && !self.signal_pending;
        }
        if self.stop.is_some()
            || self.pending_publish
            || self.signal_pending
            || self.retry.is_some()
        {
            return false;
        }
        // Drain the kick eventfd first, then re-enable notifications and look again: a kick
        // that comes after the drain makes the fd readable and wakes the reactor.
        let mut b = [0u8; 8];
        let _ = (&self.kick).read(&mut b);
        match self.vring.enable_notify(self.mem.guest()) {
            Ok(true) => false,
            Ok(false) => {
                self.notify_enabled = true;
                true
            }
            Err(e) => {
                self.set_broken(&e.to_string());
                true
            }
        }
    }

    /// Answers a chain the ring refused (a [`RingKind::Chain`] error): VIRTIO_BLK_S_IOERR in
    /// the last byte of its status descriptor and 1 byte written, when the ring found that
    /// descriptor safely ([`ferrite_vring::RingError::status_hint`]). Otherwise the guest
    /// cannot be told: the chain stays in flight (completing it would let the driver read a
    /// status byte nobody wrote) and the queue is marked broken. Returns whether the queue
    /// goes on.
    fn refuse_chain(&mut self, e: &ferrite_vring::RingError) -> bool {
        let id = self.chain.id();
        match e.status_hint() {
            Some(s) if self.write_status(s.addr + u64::from(s.len) - 1, status::IOERR) => {
                tracing::warn!(
                    "vhost controller '{}': queue {}: {e}: request failed with IOERR",
                    self.ctrl.name,
                    self.index
                );
                self.push(id, 1);
                true
            }
            _ => {
                self.set_broken(&format!("{e}, no status byte to fail it with"));
                false
            }
        }
    }

    /// Stops the queue until the frontend restarts the ring: logged with the controller and
    /// queue, and listed in `vhost_get_controllers` (`broken_queues`).
    #[cold]
    pub(super) fn set_broken(&mut self, why: &str) {
        if !self.broken {
            tracing::error!(
                "vhost controller '{}': queue {} is broken ({why}); it stops until the frontend resets it",
                self.ctrl.name,
                self.index
            );
            self.ctrl.set_queue_broken(self.index, true);
        }
        self.broken = true;
    }

    /// Stops waiting for the bdev (module docs: abandoned) and returns the ring position.
    /// What is done is handed over first, as a normal stop does: completions pushed since
    /// the last poll are published and signalled. A queue that has drained by now finishes
    /// normally; otherwise it lets go of the ring and its fds and finishes once its I/O is
    /// back.
    pub(super) fn abandon(&mut self) -> u32 {
        if self.pending_publish {
            self.flush_used();
        }
        if self.signal_pending {
            self.signal_pending = false;
            self.signal_call();
        }
        let base = self.vring.base().to_vhost(self.packed);
        // The control thread waits for this answer, not for the stop's.
        self.stop = None;
        if self.outstanding == 0 && self.retry.is_none() {
            self.finish();
            return base;
        }
        tracing::warn!(
            "vhost controller '{}': queue {}: {} request(s) still held by the bdev after {:?}; the ring is handed back without them (they stay in flight for the guest)",
            self.ctrl.name,
            self.index,
            self.outstanding,
            super::drain_timeout()
        );
        self.abandoned = true;
        self.ctrl.linger_begin(self.index);
        // A popped request still waiting for an I/O object stays in flight too.
        self.retry = None;
        // No more kicks to wake us (a pending one would keep the reactor awake) and no
        // signals to send; the listing counts the new session's requests, not these.
        self._kick_reg = None;
        self.call = None;
        self.ctrl.set_queue_inflight(self.index, 0);
        base
    }

    /// True once `finish` ran (the poller is being unregistered).
    fn finished(&self) -> bool {
        self.done.load(std::sync::atomic::Ordering::Relaxed)
    }

    pub(super) fn finish(&mut self) {
        // Whatever coalescing held back is signalled now: the frontend may stop listening to
        // the call eventfd as soon as it has the base (or the target closes the connection),
        // and a completion in the used ring that nobody signalled leaves the guest waiting.
        if self.signal_pending {
            self.signal_pending = false;
            self.signal_call();
        }
        let base = self.vring.base().to_vhost(self.packed);
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(base);
        }
        self.done.store(true, std::sync::atomic::Ordering::Release);
        if self.abandoned {
            // Its thread may have been kept for it (controller deleted meanwhile).
            self.ctrl.linger_end(self.index);
        } else {
            self.ctrl.set_queue_inflight(self.index, self.outstanding);
        }
        self._kick_reg = None;
        // Unregisters the poller; the poller (and this queue) is dropped by the thread after
        // this poll returns.
        self.handle = None;
    }

    pub(super) fn flush_used(&mut self) {
        self.pending_publish = false;
        match self.vring.publish(self.mem.guest()) {
            Ok(true) => {
                self.signal_pending = true;
                self.maybe_signal();
            }
            Ok(false) => {}
            Err(e) => self.set_broken(&e.to_string()),
        }
    }

    /// Signals the call eventfd now, unless coalescing holds it back.
    pub(super) fn maybe_signal(&mut self) {
        let delay_us = self
            .ctrl
            .delay_base_us
            .load(std::sync::atomic::Ordering::Relaxed);
        if delay_us > 0 {
            let now = ferrite_reactor::clock::ticks();
            let second = ferrite_reactor::clock::us_to_ticks(1_000_000);
            if now.wrapping_sub(self.window_start) >= second {
                self.window_start = now;
                self.window_ios = 0;
            }
            let threshold = self
                .ctrl
                .iops_threshold
                .load(std::sync::atomic::Ordering::Relaxed);
            if self.window_ios > u64::from(threshold)
                && now.wrapping_sub(self.last_signal)
                    < ferrite_reactor::clock::us_to_ticks(u64::from(delay_us))
            {
                return; // keep signal_pending; polled again
            }
            self.last_signal = now;
        }
        self.signal_pending = false;
        self.signal_call();
    }

    /// Writes the call eventfd (no-op without one).
    pub(super) fn signal_call(&self) {
        if let Some(c) = &self.call {
            let _ = (&*c).write(&1u64.to_ne_bytes());
        }
    }
}
