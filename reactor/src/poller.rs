//! Pollers: functions a lightweight thread calls on every iteration (active) or every period
//! (timed), each reporting how much work it did.

use std::sync::Arc;

use crate::thread::{current_inner, ThreadShared};

/// What a poller does. Closures `FnMut() -> usize` are wrapped by [`crate::register_poller`];
/// implement the trait directly to take part in the sleep decision.
pub trait Poll: Send {
    /// Does one round of work; returns how much (0 = idle). Runs on the owning thread only.
    fn poll(&mut self) -> usize;

    /// Asked after the reactor has announced it is about to sleep (the flag is set and fenced):
    /// return false if work can arrive that no message, timer or registered fd will signal
    /// (for example, commands in flight on a device that is only polled). Default: true.
    fn can_sleep(&mut self) -> bool {
        true
    }

    /// Asked in adaptive mode only, once per idle stretch (after an iteration of the reactor
    /// found no work; never on the busy path): true if this poller has work in flight that the
    /// kernel will complete and signal through an fd registered with [`crate::register_fd`]
    /// (reads on a disk whose completion eventfd the reactor watches, say). When some poller
    /// says so, the reactor sleeps after `RuntimeConfig::kernel_wait_us` of idleness instead of
    /// `idle_threshold_us`: spinning would only compete with the kernel's own completion work.
    /// The sleep protocol is unchanged (flag, fence, [`Poll::can_sleep`] on every poller).
    /// Default: false (no opinion).
    fn waits_on_kernel(&mut self) -> bool {
        false
    }
}

pub(crate) struct FnPoller<F>(pub F);

impl<F: FnMut() -> usize + Send> Poll for FnPoller<F> {
    fn poll(&mut self) -> usize {
        (self.0)()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PollerState {
    Running,
    Paused,
    Unregistered,
}

pub(crate) struct PollerSlot {
    pub id: u64,
    pub name: String,
    pub period_ticks: u64,
    pub period_us: u64,
    pub next_run: u64,
    pub state: PollerState,
    pub poller: Option<Box<dyn Poll>>,
    pub run_count: u64,
    pub busy_count: u64,
    pub ticks: u64,
    /// Overruns of the stall budget since the last warning.
    pub stalls: u64,
    /// Tick of the last stall warning (0 = never).
    pub last_stall_warn: u64,
}

/// Statistics of one poller, as `thread_get_pollers` reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PollerStats {
    /// The name given at registration.
    pub name: String,
    /// Poller id, unique within the process.
    pub id: u64,
    /// "active", "timed" or "paused".
    pub state: &'static str,
    /// Times it ran.
    pub run_count: u64,
    /// Times it reported work.
    pub busy_count: u64,
    /// Period in µs (0 for active pollers).
    pub period_us: u64,
    /// Ticks spent inside it.
    pub ticks: u64,
}

/// Owns a registered poller; dropping it unregisters the poller.
///
/// Thread contract: drop it on the thread that registered it (the normal case, since it lives
/// in that thread's state); dropped elsewhere, the unregistration is sent to that thread as a
/// message and takes effect when it next polls.
pub struct PollerHandle {
    pub(crate) id: u64,
    pub(crate) thread: Arc<ThreadShared>,
}

impl PollerHandle {
    /// Stops calling the poller until [`PollerHandle::resume`]. Owning thread only; no-op
    /// elsewhere.
    pub fn pause(&self) {
        self.set_state(PollerState::Paused);
    }

    /// Resumes a paused poller. Owning thread only; no-op elsewhere.
    pub fn resume(&self) {
        self.set_state(PollerState::Running);
    }

    fn set_state(&self, st: PollerState) {
        if let Some(t) = current_inner() {
            if t.shared.id == self.thread.id {
                t.set_poller_state(self.id, st);
            }
        }
    }
}

impl Drop for PollerHandle {
    fn drop(&mut self) {
        if let Some(t) = current_inner() {
            if t.shared.id == self.thread.id {
                t.set_poller_state(self.id, PollerState::Unregistered);
                return;
            }
        }
        let id = self.id;
        let _ = crate::thread::send_to(
            &self.thread,
            Box::new(move || {
                if let Some(t) = current_inner() {
                    t.set_poller_state(id, PollerState::Unregistered);
                }
            }),
        );
    }
}
