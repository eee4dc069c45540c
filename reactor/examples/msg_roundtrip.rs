//! Message round-trip micro-benchmark: two lightweight threads ping-pong N messages, first on
//! two reactors (cores 0 and 1), then both on one reactor; poll mode, pinned.
//!
//! `cargo run --release -p ferrite-reactor --example msg_roundtrip [N]`

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use ferrite_reactor::{CpuMask, PollMode, Runtime, RuntimeConfig, ThreadHandle};

struct PingPong {
    a: ThreadHandle,
    b: ThreadHandle,
    left: AtomicU64,
    done: Mutex<Option<mpsc::Sender<()>>>,
}

fn ping(st: Arc<PingPong>) {
    let b = st.b.clone();
    if let Err(e) = b.send(move || {
        let a = st.a.clone();
        if let Err(e) = a.send(move || pong(st)) {
            panic!("pong send failed: {e}");
        }
    }) {
        panic!("ping send failed: {e}");
    }
}

fn pong(st: Arc<PingPong>) {
    if st.left.fetch_sub(1, Ordering::Relaxed) == 1 {
        if let Some(tx) = st.done.lock().ok().and_then(|mut d| d.take()) {
            let _ = tx.send(());
        }
    } else {
        ping(st);
    }
}

/// Runs `n` round trips from `a` to `b` and back; returns the elapsed time.
fn round_trips(a: &ThreadHandle, b: &ThreadHandle, n: u64) -> Duration {
    let (tx, rx) = mpsc::channel();
    let st = Arc::new(PingPong {
        a: a.clone(),
        b: b.clone(),
        left: AtomicU64::new(n),
        done: Mutex::new(Some(tx)),
    });
    let start = Instant::now();
    a.send(move || ping(st)).expect("first send");
    rx.recv_timeout(Duration::from_secs(300))
        .expect("ping-pong did not finish");
    start.elapsed()
}

fn report(label: &str, n: u64, d: Duration) {
    let ns = d.as_nanos() as f64 / n as f64;
    let msgs = 2.0 * n as f64 / d.as_secs_f64();
    println!(
        "{label}: {n} round trips in {:.3} s, mean round trip {ns:.0} ns, {msgs:.0} messages/s",
        d.as_secs_f64()
    );
}

fn main() {
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let cfg = RuntimeConfig {
        cpumask: CpuMask::from_cores(&[0, 1]),
        mode: PollMode::Poll,
        pin: true,
        ..RuntimeConfig::default()
    };
    let rt = Runtime::start(cfg).expect("runtime start");
    let a = rt.spawn_thread("ping", Some(0)).expect("spawn ping");
    let b = rt.spawn_thread("pong", Some(1)).expect("spawn pong");
    let c = rt
        .spawn_thread("pong_local", Some(0))
        .expect("spawn pong_local");
    // Warm up (allocator, caches, page faults).
    round_trips(&a, &b, n / 10 + 1);
    round_trips(&a, &c, n / 10 + 1);
    report("two reactors (cores 0,1)", n, round_trips(&a, &b, n));
    report("one reactor (core 0)", n, round_trips(&a, &c, n));
    rt.stop();
}
