//! Idle CPU cost of a reactor in each poll mode: one reactor (core 0, pinned), one idle thread
//! with a 1 s timed poller, 5 s per mode; prints the process's CPU time in that window
//! (getrusage utime+stime) as % of one core.
//!
//! `cargo run --release -p ferrite-reactor --example idle_cpu [seconds]`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::{Duration, Instant};

use ferrite_reactor::{register_poller, CpuMask, PollMode, Runtime, RuntimeConfig};

/// User + system CPU time of the whole process, in µs.
fn cpu_us() -> u64 {
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: ru is a live, writable rusage for the duration of the call.
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
    assert_eq!(rc, 0, "getrusage: {}", std::io::Error::last_os_error());
    let tv = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    tv(ru.ru_utime) + tv(ru.ru_stime)
}

fn main() {
    let secs: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    for mode in [PollMode::Poll, PollMode::Adaptive, PollMode::Interrupt] {
        let cfg = RuntimeConfig {
            cpumask: CpuMask::from_cores(&[0]),
            mode,
            pin: true,
            ..RuntimeConfig::default()
        };
        let rt = Runtime::start(cfg).expect("runtime start");
        let t = rt.spawn_thread("idle", Some(0)).expect("spawn");
        let fired = Arc::new(AtomicU64::new(0));
        let f = fired.clone();
        let (tx, rx) = mpsc::channel();
        t.send(move || {
            let p = register_poller("tick_1s", 1_000_000, move || {
                f.fetch_add(1, Ordering::Relaxed);
                0
            });
            let _ = tx.send(p);
        })
        .expect("send");
        let poller = rx
            .recv_timeout(Duration::from_secs(5))
            .expect("registration")
            .expect("register_poller");
        std::thread::sleep(Duration::from_millis(200)); // settle
        let sleeps0 = rt.reactors()[0].sleeps;
        let (c0, w0) = (cpu_us(), Instant::now());
        std::thread::sleep(Duration::from_secs(secs));
        let (c1, w1) = (cpu_us(), Instant::now());
        let sleeps = rt.reactors()[0].sleeps - sleeps0;
        let wall_us = w1.duration_since(w0).as_micros() as f64;
        let pct = (c1 - c0) as f64 / wall_us * 100.0;
        println!(
            "{:<9} mode: {:6.2}% of one core over {:.1} s ({} timer firings, {} sleeps)",
            mode.as_str(),
            pct,
            wall_us / 1e6,
            fired.load(Ordering::Relaxed),
            sleeps
        );
        // Drop the poller handle on its thread, then stop.
        let _ = t.send(move || drop(poller));
        rt.stop();
    }
}
