//! The poller set of a lightweight thread: registration, statistics, and one poll
//! iteration (messages, active pollers, due timed pollers), with the stall detector.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{current_inner, ThreadInner, MSG_BATCH};
use crate::clock;
use crate::error::{ErrorKind, ReactorError, Result};
use crate::poller::{FnPoller, Poll, PollerHandle, PollerSlot, PollerState, PollerStats};

/// A poller that runs longer than this many µs in one call is named in a warning.
pub const STALL_BUDGET_US: u64 = 10_000;

static NEXT_POLLER_ID: AtomicU64 = AtomicU64::new(1);

/// Registers an active poller (`period_us == 0`) or a timed poller on the calling thread.
/// The poller runs on this thread only, after this returns. Dropping the handle unregisters it.
pub fn register_poller(
    name: &str,
    period_us: u64,
    f: impl FnMut() -> usize + Send + 'static,
) -> Result<PollerHandle> {
    register_poller_obj(name, period_us, Box::new(FnPoller(f)))
}

/// As [`register_poller`], for a [`Poll`] implementation that takes part in sleep decisions.
pub fn register_poller_obj(name: &str, period_us: u64, p: Box<dyn Poll>) -> Result<PollerHandle> {
    let t = current_inner().ok_or_else(|| {
        ReactorError::new(
            ErrorKind::WrongThread,
            format!("poller '{name}' registered outside a thread"),
        )
    })?;
    let id = NEXT_POLLER_ID.fetch_add(1, Ordering::Relaxed);
    let period_ticks = if period_us == 0 {
        0
    } else {
        clock::us_to_ticks(period_us).max(1)
    };
    t.pending.borrow_mut().push(PollerSlot {
        id,
        name: name.to_string(),
        period_ticks,
        period_us,
        next_run: t.now.get().saturating_add(period_ticks),
        state: PollerState::Running,
        poller: Some(p),
        run_count: 0,
        busy_count: 0,
        ticks: 0,
        stalls: 0,
        last_stall_warn: 0,
    });
    t.dirty.set(true);
    Ok(PollerHandle {
        id,
        thread: t.shared.clone(),
    })
}

/// Statistics of every poller of the calling thread (empty outside a thread).
pub fn poller_stats() -> Vec<PollerStats> {
    let Some(t) = current_inner() else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (list, kind) in [
        (&t.active, "active"),
        (&t.timed, "timed"),
        (&t.pending, "active"),
    ] {
        for s in list.borrow().iter() {
            let state = match s.state {
                PollerState::Paused => "paused",
                PollerState::Unregistered => continue,
                PollerState::Running if s.period_ticks > 0 => "timed",
                PollerState::Running => kind,
            };
            out.push(PollerStats {
                name: s.name.clone(),
                id: s.id,
                state,
                run_count: s.run_count,
                busy_count: s.busy_count,
                period_us: s.period_us,
                ticks: s.ticks,
            });
        }
    }
    out
}

impl ThreadInner {
    pub(crate) fn set_poller_state(&self, id: u64, st: PollerState) {
        for list in [&self.active, &self.timed, &self.pending] {
            if let Ok(mut l) = list.try_borrow_mut() {
                if let Some(s) = l.iter_mut().find(|s| s.id == id) {
                    if s.state != PollerState::Unregistered {
                        s.state = st;
                    }
                    self.dirty.set(true);
                    return;
                }
            }
        }
    }

    /// One iteration: up to `MSG_BATCH` messages, every active poller, then due timed pollers.
    /// Returns the amount of work done (0 = idle).
    /// `now` is the thread's clock for timed pollers (the harness's virtual one, or ticks).
    pub(crate) fn poll(&self, now: u64) -> usize {
        let start = clock::ticks();
        self.enter(|| self.poll_inner(now, start).0)
    }

    /// As [`ThreadInner::poll`] for a reactor, `now` being the TSC read at the start of the
    /// iteration; also returns the TSC at the end of its last poller (or `now` if none ran and
    /// no message was handled): pollers are timed back to back, one clock read each.
    pub(crate) fn poll_timed(&self, now: u64) -> (usize, u64) {
        self.enter(|| self.poll_inner(now, now))
    }

    /// `start` is the TSC when the iteration began (the pollers' timing starts from it).
    fn poll_inner(&self, now: u64, start: u64) -> (usize, u64) {
        self.now.set(now);
        let mut work = 0usize;
        // `is_empty` is two loads; a `pop` on an empty queue costs several times that.
        for _ in 0..if self.shared.queue.is_empty() {
            0
        } else {
            MSG_BATCH
        } {
            match self.shared.queue.pop() {
                Some(m) => {
                    m();
                    work += 1;
                }
                None => break,
            }
        }
        if self.dirty.get() {
            self.maintain();
        }
        // The pollers' clock starts after the messages (read again only if there were any).
        let mut clk = if work > 0 { clock::ticks() } else { start };
        work += run_list(&self.active, now, false, &mut clk);
        if now >= self.next_timed.get() {
            work += run_list(&self.timed, now, true, &mut clk);
            self.next_timed.set(next_due(&self.timed.borrow()));
        }
        if self.dirty.get() {
            self.maintain();
        }
        (work, clk)
    }

    /// Moves newly registered pollers into their lists and drops unregistered ones.
    fn maintain(&self) {
        self.dirty.set(false);
        let pending: Vec<PollerSlot> = std::mem::take(&mut *self.pending.borrow_mut());
        let mut dropped: Vec<PollerSlot> = Vec::new();
        {
            let mut active = self.active.borrow_mut();
            let mut timed = self.timed.borrow_mut();
            for s in pending {
                if s.period_ticks == 0 {
                    active.push(s);
                } else {
                    timed.push(s);
                }
            }
            for list in [&mut *active, &mut *timed] {
                let mut i = 0;
                while i < list.len() {
                    if list[i].state == PollerState::Unregistered && list[i].poller.is_some() {
                        dropped.push(list.remove(i));
                    } else {
                        i += 1;
                    }
                }
            }
            self.next_timed.set(next_due(&timed));
        }
        // Pollers are dropped with no list borrowed: their destructors may unregister others.
        drop(dropped);
    }

    /// True if a message is waiting or a poller refuses to sleep. Called by the reactor after
    /// it has set its sleeping flag and fenced ("poll once more").
    pub(crate) fn has_pending_work(&self) -> bool {
        if !self.shared.queue.is_empty() || self.exit_requested.get() {
            return true;
        }
        self.enter(|| {
            if !self.pending.borrow().is_empty() {
                return true;
            }
            for list in [&self.active, &self.timed] {
                let n = list.borrow().len();
                for i in 0..n {
                    let p = {
                        let mut l = list.borrow_mut();
                        if l[i].state != PollerState::Running {
                            continue;
                        }
                        l[i].poller.take()
                    };
                    if let Some(mut p) = p {
                        let ok = p.can_sleep();
                        list.borrow_mut()[i].poller = Some(p);
                        if !ok {
                            return true;
                        }
                    }
                }
            }
            false
        })
    }

    /// True if a running active poller reports I/O in flight in the kernel that will signal a
    /// watched fd ([`Poll::waits_on_kernel`]). Called by the reactor on an idle iteration in
    /// adaptive mode, never on the busy path.
    pub(crate) fn waits_on_kernel(&self) -> bool {
        self.enter(|| {
            let n = self.active.borrow().len();
            for i in 0..n {
                let p = {
                    let mut l = self.active.borrow_mut();
                    if l[i].state != PollerState::Running {
                        continue;
                    }
                    l[i].poller.take()
                };
                if let Some(mut p) = p {
                    let w = p.waits_on_kernel();
                    self.active.borrow_mut()[i].poller = Some(p);
                    if w {
                        return true;
                    }
                }
            }
            false
        })
    }

    /// Earliest timed-poller deadline, in ticks.
    pub(crate) fn next_deadline(&self) -> u64 {
        let pend = self
            .pending
            .borrow()
            .iter()
            .map(|s| s.next_run)
            .min()
            .unwrap_or(u64::MAX);
        self.next_timed.get().min(pend)
    }
}

/// Earliest deadline among the timed pollers that can run. Paused ones are left out: their
/// stale deadline would otherwise look permanently overdue and keep a reactor from sleeping.
fn next_due(timed: &[PollerSlot]) -> u64 {
    timed
        .iter()
        .filter(|s| s.state == PollerState::Running)
        .map(|s| s.next_run)
        .min()
        .unwrap_or(u64::MAX)
}

/// Runs the pollers of `list` that are due. `clk` is the clock when the first one starts;
/// each poller's end time (one clock read) is the next one's start, and is left in `clk`.
fn run_list(list: &RefCell<Vec<PollerSlot>>, now: u64, timed: bool, clk: &mut u64) -> usize {
    let mut work = 0;
    let n = list.borrow().len();
    for i in 0..n {
        let p = {
            let mut l = list.borrow_mut();
            let s = &mut l[i];
            if s.state != PollerState::Running || (timed && s.next_run > now) {
                continue;
            }
            s.poller.take()
        };
        let Some(mut p) = p else { continue };
        let t0 = *clk;
        let w = p.poll();
        let t1 = clock::ticks();
        *clk = t1;
        let dt = t1.wrapping_sub(t0);
        let mut l = list.borrow_mut();
        let s = &mut l[i];
        s.poller = Some(p);
        s.run_count += 1;
        s.ticks += dt;
        if w > 0 {
            s.busy_count += 1;
        }
        if timed {
            s.next_run = now.saturating_add(s.period_ticks);
        }
        if dt > stall_budget_ticks() {
            note_stall(s, now, dt);
        }
        work += w;
    }
    work
}

/// A poller overran [`STALL_BUDGET_US`]: counted, and named in a warning at most once a
/// second.
#[cold]
#[inline(never)]
fn note_stall(s: &mut PollerSlot, now: u64, dt: u64) {
    s.stalls += 1;
    // At most one warning per poller per second; the count says how many were folded.
    if now.wrapping_sub(s.last_stall_warn) >= clock::tick_rate() || s.last_stall_warn == 0 {
        tracing::warn!(
            poller = %s.name,
            us = clock::ticks_to_ns(dt) / 1000,
            overruns = s.stalls,
            "poller overran its budget of {} us",
            STALL_BUDGET_US
        );
        s.last_stall_warn = now.max(1);
        s.stalls = 0;
    }
}

/// [`STALL_BUDGET_US`] in ticks (computed on first use; a relaxed load after that).
#[inline]
fn stall_budget_ticks() -> u64 {
    static B: AtomicU64 = AtomicU64::new(0);
    match B.load(Ordering::Relaxed) {
        0 => {
            let b = clock::us_to_ticks(STALL_BUDGET_US).max(1);
            B.store(b, Ordering::Relaxed);
            b
        }
        b => b,
    }
}
