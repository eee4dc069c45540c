//! The harness's seeded interleaving: one seed always gives the same order of events, and
//! different seeds give different orders.
#![allow(clippy::unwrap_used, clippy::manual_is_multiple_of)] // is_multiple_of needs Rust 1.87; MSRV is 1.80

use std::collections::HashSet;
use std::sync::{Arc, Mutex};

use ferrite_reactor::harness::Harness;
use ferrite_reactor::{current, register_poller, PollerHandle};

type Log = Arc<Mutex<Vec<String>>>;

/// Six threads; each has an active poller that logs and, every third run, sends a message to
/// the next thread, which logs its arrival. Returns the log after `rounds` rounds.
fn scenario(seed: u64, rounds: usize) -> Vec<String> {
    const N: usize = 6;
    let mut h = Harness::new(N, seed);
    let log: Log = Arc::new(Mutex::new(Vec::new()));
    let mut pollers: Vec<PollerHandle> = Vec::new();
    for i in 0..N {
        let next = h.handle((i + 1) % N);
        let log = log.clone();
        pollers.push(h.on(i, move || {
            let mut runs = 0u32;
            register_poller("p", 0, move || {
                runs += 1;
                log.lock().unwrap().push(format!("p{i}.{runs}"));
                if runs % 3 == 0 {
                    let log = log.clone();
                    next.send(move || {
                        let me = current().unwrap().name().to_string();
                        log.lock().unwrap().push(format!("m{i}->{me}.{runs}"));
                    })
                    .unwrap();
                }
                1
            })
            .unwrap()
        }));
    }
    for _ in 0..rounds {
        h.poll_all();
    }
    for (i, p) in pollers.into_iter().enumerate() {
        h.on(i, move || drop(p));
    }
    let out = log.lock().unwrap().clone();
    out
}

#[test]
fn the_same_seed_gives_the_same_order() {
    for seed in [0u64, 1, 2, 3, 12345, u64::MAX] {
        let a = scenario(seed, 40);
        let b = scenario(seed, 40);
        assert!(a.len() > 240, "the scenario produces events");
        assert_eq!(a, b, "seed {seed} is reproducible");
    }
}

#[test]
fn different_seeds_give_different_orders() {
    let mut seen: HashSet<Vec<String>> = HashSet::new();
    for seed in 0..32u64 {
        let log = scenario(seed, 40);
        assert!(
            seen.insert(log),
            "seed {seed} repeats the order of an earlier seed"
        );
    }
}

#[test]
fn every_thread_is_polled_once_per_round() {
    let log = scenario(99, 10);
    for i in 0..6 {
        let runs = log
            .iter()
            .filter(|e| e.starts_with(&format!("p{i}.")))
            .count();
        assert_eq!(runs, 10, "thread {i}");
    }
}
