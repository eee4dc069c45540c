//! A cheap monotonic tick counter (the TSC on x86_64) and its rate.
//!
//! Ticks are what every busy/idle and latency figure is kept in, as SPDK does; `tick_rate()`
//! converts them. Any thread may call these functions at any time.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

static RATE: OnceLock<u64> = OnceLock::new();
static EPOCH: OnceLock<Instant> = OnceLock::new();

/// The current tick count. Monotonic on one core; comparable across cores on machines with an
/// invariant TSC (every x86_64 machine this runs on), and by construction elsewhere.
#[inline(always)]
pub fn ticks() -> u64 {
    #[cfg(target_arch = "x86_64")]
    {
        // SAFETY: RDTSC has no memory effects and is available on every x86_64 CPU.
        unsafe { core::arch::x86_64::_rdtsc() }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let epoch = EPOCH.get_or_init(Instant::now);
        epoch.elapsed().as_nanos() as u64
    }
}

/// Ticks per second, measured once (about 20 ms) on first use and cached.
pub fn tick_rate() -> u64 {
    *RATE.get_or_init(calibrate)
}

fn calibrate() -> u64 {
    let _ = EPOCH.get_or_init(Instant::now);
    if !cfg!(target_arch = "x86_64") {
        return 1_000_000_000;
    }
    let start_i = Instant::now();
    let start_t = ticks();
    std::thread::sleep(Duration::from_millis(20));
    let dt = ticks().wrapping_sub(start_t);
    let di = start_i.elapsed().as_nanos().max(1) as u64;
    // Rate = dt / (di ns) * 1e9, computed in u128 to avoid overflow.
    let rate = (u128::from(dt) * 1_000_000_000u128 / u128::from(di)) as u64;
    rate.max(1)
}

/// Converts microseconds to ticks.
pub fn us_to_ticks(us: u64) -> u64 {
    (u128::from(us) * u128::from(tick_rate()) / 1_000_000u128) as u64
}

/// Converts ticks to nanoseconds.
pub fn ticks_to_ns(t: u64) -> u64 {
    (u128::from(t) * 1_000_000_000u128 / u128::from(tick_rate())) as u64
}
