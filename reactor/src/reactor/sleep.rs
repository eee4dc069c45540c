//! The sleep protocol (no lost wake-up): the reactor stores `sleeping = true`, issues a SeqCst
//! fence, then checks every thread once more (messages queued, pollers that refuse to sleep,
//! threads arriving). A sender pushes its message, fences, then reads `sleeping`; so either the
//! reactor sees the message in its last check, or the sender sees the flag and writes the
//! eventfd, which ends the epoll wait.

use std::sync::atomic::Ordering;

use super::event_loop::ReactorLocal;
use super::shared::ReactorShared;
use crate::clock;
use crate::thread::NO_REACTOR;

impl ReactorShared {
    pub(super) fn wake(&self) {
        if self.sleeping.load(Ordering::SeqCst) {
            self.eventfd.notify();
        }
    }
}

impl ReactorLocal {
    pub(super) fn try_sleep(&mut self) {
        self.shared.sleeping.store(true, Ordering::SeqCst);
        std::sync::atomic::fence(Ordering::SeqCst);
        let pending = !self.shared.incoming.is_empty()
            || self.rt.stop.load(Ordering::SeqCst)
            || self.threads.iter().any(|t| {
                t.has_pending_work() || t.shared.move_to.load(Ordering::SeqCst) != NO_REACTOR
            });
        if pending {
            self.shared.sleeping.store(false, Ordering::SeqCst);
            return;
        }
        let now = clock::ticks();
        let deadline = self
            .threads
            .iter()
            .map(|t| t.next_deadline())
            .min()
            .unwrap_or(u64::MAX);
        // Wake after `max_sleep_ms` anyway (a second by default), so a bug elsewhere cannot
        // hang us forever.
        let cap = self.rt.max_sleep_ms;
        let timeout_ms: i32 = if deadline == u64::MAX {
            cap
        } else if deadline <= now {
            0
        } else {
            let ns = clock::ticks_to_ns(deadline - now);
            (ns.div_ceil(1_000_000)).min(cap as u64) as i32
        };
        self.shared.sleeps.fetch_add(1, Ordering::Relaxed);
        self.shared.in_interrupt.store(true, Ordering::Relaxed);
        let t0 = clock::ticks();
        // The reactor's own eventfd is read only when epoll reported it (one syscall less per
        // sleep woken by an I/O fd or a timeout). Not reading it otherwise is safe: it stays
        // readable (level-triggered), so at worst the next sleep returns at once and reads it.
        let own = timeout_ms == 0 || self.epoll.wait(timeout_ms, u64::MAX);
        let slept = clock::ticks().wrapping_sub(t0);
        self.shared.in_interrupt.store(false, Ordering::Relaxed);
        self.shared.sleeping.store(false, Ordering::SeqCst);
        if own && self.shared.eventfd.drain() {
            self.shared.wakeups.fetch_add(1, Ordering::Relaxed);
        }
        let c = &self.shared.idle_ticks;
        c.store(
            c.load(Ordering::Relaxed).wrapping_add(slept),
            Ordering::Relaxed,
        );
    }
}
