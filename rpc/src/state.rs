//! SPDK method states: a method is registered with a mask of the states it may be called in,
//! and the application moves the server from [`STARTUP`] to [`RUNTIME`] (framework_start_init).

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// The framework is not initialized yet (`--wait-for-rpc`); SPDK's `SPDK_RPC_STARTUP`.
pub const STARTUP: u32 = 0x1;
/// The framework is initialized; SPDK's `SPDK_RPC_RUNTIME`.
pub const RUNTIME: u32 = 0x2;

type StateHook = Arc<dyn Fn(u32, u32) + Send + Sync>;

/// The server's current method state, shared by the registry, the server and the application.
///
/// Thread contract: every method may be called from any thread. State changes are atomic;
/// hooks run on the thread that called [`ServerState::set_state`], after the new state is
/// visible and before `set_state` returns.
pub struct ServerState {
    current: AtomicU32,
    hooks: Mutex<Vec<StateHook>>,
}

impl ServerState {
    /// A state holder starting in `initial` ([`STARTUP`] or [`RUNTIME`]).
    pub fn new(initial: u32) -> Self {
        Self {
            current: AtomicU32::new(initial),
            hooks: Mutex::new(Vec::new()),
        }
    }

    /// The current state ([`STARTUP`] or [`RUNTIME`]).
    pub fn get(&self) -> u32 {
        self.current.load(Ordering::Acquire)
    }

    /// Whether a method registered with the state mask `states` may be called now.
    pub fn allows(&self, states: u32) -> bool {
        states & self.get() != 0
    }

    /// Sets the state. If it changed, every hook registered with [`ServerState::on_change`]
    /// is called as `hook(old, new)` on this thread before this returns. Returns the old state.
    pub fn set_state(&self, state: u32) -> u32 {
        let old = self.current.swap(state, Ordering::AcqRel);
        if old != state {
            let hooks: Vec<StateHook> = self
                .hooks
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            for hook in hooks {
                hook(old, state);
            }
        }
        old
    }

    /// Adds a "state changed" hook, called as `hook(old, new)` by every later `set_state`
    /// that changes the state (on the thread that called `set_state`).
    pub fn on_change(&self, hook: impl Fn(u32, u32) + Send + Sync + 'static) {
        self.hooks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Arc::new(hook));
    }
}

impl Default for ServerState {
    /// Starts in [`STARTUP`], as SPDK does with `--wait-for-rpc`.
    fn default() -> Self {
        Self::new(STARTUP)
    }
}

impl std::fmt::Debug for ServerState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerState")
            .field("current", &self.get())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn hooks_run_on_change_only() {
        let s = ServerState::new(STARTUP);
        let n = Arc::new(AtomicUsize::new(0));
        let n2 = n.clone();
        s.on_change(move |old, new| {
            assert_eq!((old, new), (STARTUP, RUNTIME));
            n2.fetch_add(1, Ordering::SeqCst);
        });
        assert!(s.allows(STARTUP));
        assert!(!s.allows(RUNTIME));
        assert_eq!(s.set_state(RUNTIME), STARTUP);
        assert_eq!(s.set_state(RUNTIME), RUNTIME);
        assert_eq!(n.load(Ordering::SeqCst), 1);
        assert!(s.allows(STARTUP | RUNTIME));
        assert_eq!(s.get(), RUNTIME);
    }
}
