//! Helpers shared by the integration tests.
#![allow(dead_code, clippy::unwrap_used)]

use std::ops::Deref;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use ferrite_reactor::{CpuMask, PollMode, Runtime, RuntimeConfig, ThreadHandle};

/// Generous bound for anything that should happen "soon" on a noisy 2-core machine (a
/// bound, not an expectation: waits end as soon as their condition holds).
pub const SOON: Duration = Duration::from_secs(30);

/// Serialises the tests of one binary that start a real runtime (they compete for 2 cores).
pub fn serial() -> MutexGuard<'static, ()> {
    static L: Mutex<()> = Mutex::new(());
    L.lock().unwrap_or_else(|e| e.into_inner())
}

/// A runtime that is stopped when the guard is dropped (also when a test panics).
pub struct Rt(pub Arc<Runtime>);

impl Drop for Rt {
    fn drop(&mut self) {
        self.0.stop();
    }
}

impl Deref for Rt {
    type Target = Runtime;
    fn deref(&self) -> &Runtime {
        &self.0
    }
}

pub fn config(cores: &[usize], mode: PollMode, pin: bool) -> RuntimeConfig {
    RuntimeConfig {
        cpumask: CpuMask::from_cores(cores),
        mode,
        pin,
        ..RuntimeConfig::default()
    }
}

pub fn start(cores: &[usize], mode: PollMode, pin: bool) -> Rt {
    Rt(Runtime::start(config(cores, mode, pin)).unwrap())
}

pub fn start_cfg(cfg: RuntimeConfig) -> Rt {
    Rt(Runtime::start(cfg).unwrap())
}

/// Polls `cond` until it holds or `timeout` passes; returns whether it held.
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return cond();
        }
        std::thread::sleep(Duration::from_micros(200));
    }
}

/// Runs `f` on lightweight thread `t` and waits (at most [`SOON`]) for its result.
pub fn call<R: Send + 'static>(t: &ThreadHandle, f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = std::sync::mpsc::channel();
    t.send(move || {
        let _ = tx.send(f());
    })
    .unwrap();
    rx.recv_timeout(SOON)
        .expect("message did not run within 5 s")
}

/// Name of the OS thread running the caller.
pub fn os_name() -> String {
    std::thread::current().name().unwrap_or("?").to_string()
}
