//! How reactors wait (poll modes) and how a runtime is configured.

use crate::cpumask::CpuMask;
use crate::error::{ErrorKind, ReactorError, Result};

/// How a reactor waits when it has nothing to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollMode {
    /// Never sleep (lowest latency, one full core per reactor).
    Poll,
    /// Sleep after every thread has been idle for the configured time (default), or sooner
    /// when the only work left is I/O in the kernel that will signal a watched fd (see
    /// [`crate::Poll::waits_on_kernel`]).
    Adaptive,
    /// Sleep as soon as an iteration finds no work.
    Interrupt,
}

impl std::str::FromStr for PollMode {
    type Err = ReactorError;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "poll" => Ok(Self::Poll),
            "adaptive" => Ok(Self::Adaptive),
            "interrupt" => Ok(Self::Interrupt),
            other => Err(ReactorError::new(
                ErrorKind::NotRunning,
                format!("unknown poll mode '{other}' (expected poll, adaptive or interrupt)"),
            )),
        }
    }
}

impl PollMode {
    /// The name used on the command line and in RPC output.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Poll => "poll",
            Self::Adaptive => "adaptive",
            Self::Interrupt => "interrupt",
        }
    }
}

/// Runtime configuration.
#[derive(Debug, Clone)]
pub struct RuntimeConfig {
    /// Cores to run reactors on; the first is the main reactor.
    pub cpumask: CpuMask,
    /// Sleep behaviour.
    pub mode: PollMode,
    /// In adaptive mode, how long every thread must be idle before the reactor sleeps.
    pub idle_threshold_us: u64,
    /// In adaptive mode, how long every thread must be idle before the reactor sleeps when a
    /// poller reports I/O in flight in the kernel whose completion signals a watched fd
    /// ([`crate::Poll::waits_on_kernel`]). 0: on the first idle iteration.
    pub kernel_wait_us: u64,
    /// Capacity of each thread's message queue.
    pub queue_depth: usize,
    /// Pin reactors to their cores (turn off only for tests on machines with fewer cores).
    pub pin: bool,
    /// Longest a sleeping reactor waits with no event and no timer due, in ms (at least 1,
    /// at most [`MAX_SLEEP_MS_LIMIT`]): a safety net, so a lost wake-up costs at most this,
    /// never a hang. Tests that detect lost wake-ups raise it, so that one shows as a stall
    /// no loaded machine would cause.
    pub max_sleep_ms: u32,
}

/// Upper bound of [`RuntimeConfig::max_sleep_ms`] (one hour).
pub const MAX_SLEEP_MS_LIMIT: u32 = 3_600_000;

impl Default for RuntimeConfig {
    fn default() -> Self {
        Self {
            cpumask: CpuMask::from_cores(&[0]),
            mode: PollMode::Adaptive,
            idle_threshold_us: 1000,
            kernel_wait_us: 0,
            queue_depth: crate::thread::DEFAULT_QUEUE_DEPTH,
            pin: true,
            max_sleep_ms: 1000,
        }
    }
}
