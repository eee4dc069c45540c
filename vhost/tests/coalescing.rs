//! Interrupt coalescing: once a queue does more than `iops_threshold` requests a second, the
//! call eventfd is signalled at most every `delay_base_us`; a held signal is still delivered.
//! The driver declines EVENT_IDX so that, without coalescing, every completion is signalled.
#![allow(clippy::unwrap_used)] // tests

mod common;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use common::*;
use ferrite_vhost::blk::request::{req_type, status};

const EVENT_IDX: u64 = 1 << 29;

fn signals(d: &Driver) -> u64 {
    d.call.read().unwrap_or(0)
}

#[test]
fn coalescing_holds_signals_and_delivers_them_later() {
    CLEAR_FEATURES.store(EVENT_IDX, Ordering::Relaxed);
    let env = env();
    env.malloc("MallocCo", 256, 512);
    env.create("co.0", "MallocCo", false).unwrap();
    let mut d = Driver::connect(&env.dir.join("co.0"));
    assert_eq!(d.features & EVENT_IDX, 0);
    // A ring signals once as it starts (a completion an earlier incarnation wrote while the
    // frontend was not listening must not stay unseen), once the frontend's enable
    // is processed (connect does not wait for the reply to SET_VRING_ENABLE).
    let start = Instant::now();
    let mut at_start = signals(&d);
    while at_start == 0 && start.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(10));
        at_start = signals(&d);
    }
    assert_eq!(at_start, 1, "one signal as the ring starts");

    // Without coalescing: one signal per completion.
    for _ in 0..5 {
        assert_eq!(d.request(req_type::FLUSH, 0, &[], false).0, status::OK);
    }
    // The call eventfd is written after the used entry is published: count until the five
    // are in (bounded), then a little longer for any extra one.
    let start = Instant::now();
    let mut n = signals(&d);
    while n < 5 && start.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(10));
        n += signals(&d);
    }
    std::thread::sleep(Duration::from_millis(50));
    n += signals(&d);
    assert_eq!(n, 5, "one signal per completion without coalescing");

    // With it (1 s, above 1 request a second): the first completion is signalled, the
    // next ones are held ...
    env.app(|| ferrite_vhost::set_coalescing("co.0", 1_000_000, 1))
        .unwrap();
    let t0 = Instant::now();
    for _ in 0..5 {
        assert_eq!(d.request(req_type::FLUSH, 0, &[], false).0, status::OK);
    }
    let early = signals(&d);
    if t0.elapsed() < Duration::from_millis(900) {
        assert!(
            early < 5,
            "{early} signals for 5 completions within the coalescing delay"
        );
    }
    // ... and delivered once the delay has passed.
    let start = Instant::now();
    let mut total = early;
    while total <= early && start.elapsed() < WAIT {
        std::thread::sleep(Duration::from_millis(50));
        total += signals(&d);
    }
    assert!(total > early, "the held signal was never delivered");
    drop(d);
    env.delete("co.0").unwrap();
}
