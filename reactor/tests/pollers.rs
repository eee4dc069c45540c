//! Pollers under the deterministic harness: active and timed pollers against the virtual
//! clock, pause/resume, unregistration by dropping the handle (also from inside polls), stats
//! and busy/idle reporting.
#![allow(clippy::unwrap_used)]

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ferrite_reactor::harness::Harness;
use ferrite_reactor::{poller_stats, register_poller, ErrorKind, PollerHandle, PollerStats};

type Slot = Arc<Mutex<Option<PollerHandle>>>;

fn counter() -> Arc<AtomicUsize> {
    Arc::new(AtomicUsize::new(0))
}

fn get(c: &AtomicUsize) -> usize {
    c.load(Ordering::SeqCst)
}

/// Registers a poller on harness thread `i` that counts its runs and returns `work`.
fn counting(
    h: &mut Harness,
    i: usize,
    name: &str,
    period_us: u64,
    work: usize,
) -> (PollerHandle, Arc<AtomicUsize>) {
    let c = counter();
    let c2 = c.clone();
    let name = name.to_string();
    let p = h.on(i, move || {
        register_poller(&name, period_us, move || {
            c2.fetch_add(1, Ordering::SeqCst);
            work
        })
        .unwrap()
    });
    (p, c)
}

fn stats(h: &mut Harness, i: usize) -> Vec<PollerStats> {
    h.on(i, poller_stats)
}

fn stat(h: &mut Harness, i: usize, name: &str) -> Option<PollerStats> {
    stats(h, i).into_iter().find(|s| s.name == name)
}

#[test]
fn active_pollers_run_on_every_poll_and_only_on_their_thread() {
    let mut h = Harness::new(2, 1);
    let (_p, c) = counting(&mut h, 0, "a", 0, 0);
    for k in 1..=10 {
        h.poll_thread(0);
        assert_eq!(get(&c), k);
        h.poll_thread(1);
        assert_eq!(get(&c), k, "thread 1 does not run thread 0's poller");
    }
    let s = stat(&mut h, 0, "a").unwrap();
    assert_eq!(
        (s.state, s.run_count, s.busy_count, s.period_us),
        ("active", 10, 0, 0)
    );
    assert!(stats(&mut h, 1).is_empty());
    assert!(
        poller_stats().is_empty(),
        "no stats outside a lightweight thread"
    );
}

#[test]
fn register_outside_a_thread_is_wrong_thread() {
    let e = register_poller("x", 0, || 0).err().unwrap();
    assert_eq!(e.kind(), ErrorKind::WrongThread);
}

#[test]
fn timed_pollers_follow_the_virtual_clock_and_never_fire_early() {
    let mut h = Harness::new(1, 1);
    let (_p, c) = counting(&mut h, 0, "t", 1000, 1);
    for _ in 0..5 {
        h.poll_thread(0);
    }
    assert_eq!(get(&c), 0, "not due at t=0");
    h.advance_us(999);
    h.run_until_idle();
    assert_eq!(get(&c), 0, "not due at 999 us");
    h.advance_us(1);
    assert!(h.poll_thread(0) > 0);
    assert_eq!(get(&c), 1, "due at 1000 us");
    h.run_until_idle();
    assert_eq!(get(&c), 1, "fires once per period");
    // Ten steps of 100 us add up to exactly one period.
    for step in 1..=10 {
        h.advance_us(100);
        h.run_until_idle();
        assert_eq!(
            get(&c),
            if step < 10 { 1 } else { 2 },
            "after {step} steps of 100 us"
        );
    }
    // A long gap fires it once, not once per missed period.
    h.advance_us(10_000);
    h.run_until_idle();
    assert_eq!(get(&c), 3);
    let s = stat(&mut h, 0, "t").unwrap();
    assert_eq!(
        (s.state, s.run_count, s.busy_count, s.period_us),
        ("timed", 3, 3, 1000)
    );
}

#[test]
fn a_timed_poller_registered_later_counts_from_the_current_virtual_time() {
    let mut h = Harness::new(1, 1);
    h.run_until_idle();
    // The clock moves on while the thread is not polled.
    h.advance_us(5000);
    let (_p, c) = counting(&mut h, 0, "late", 1000, 1);
    h.advance_us(999);
    h.run_until_idle();
    assert_eq!(
        get(&c),
        0,
        "a 1 ms poller registered at 5 ms is not due at 5.999 ms"
    );
    h.advance_us(1);
    h.run_until_idle();
    assert_eq!(get(&c), 1);
}

#[test]
fn timed_pollers_of_different_periods_interleave_correctly() {
    let mut h = Harness::new(1, 1);
    let (_a, fast) = counting(&mut h, 0, "fast", 100, 1);
    let (_b, slow) = counting(&mut h, 0, "slow", 350, 1);
    for _ in 0..20 {
        h.advance_us(50);
        h.run_until_idle();
    }
    // 1000 us elapsed: fast fires every 100 us, slow every 350 us.
    assert_eq!(get(&fast), 10);
    assert_eq!(get(&slow), 2);
}

#[test]
fn run_until_idle_does_not_wait_for_timed_pollers() {
    let mut h = Harness::new(1, 1);
    let (_p, c) = counting(&mut h, 0, "t", 1_000_000, 1);
    assert_eq!(h.run_until_idle(), 0);
    assert_eq!(get(&c), 0);
}

#[test]
fn pause_and_resume() {
    let mut h = Harness::new(2, 1);
    let (p, c) = counting(&mut h, 0, "a", 0, 1);
    let (tp, tc) = counting(&mut h, 0, "t", 100, 1);
    h.poll_thread(0);
    assert_eq!(get(&c), 1);
    h.on(0, || {
        p.pause();
        tp.pause();
    });
    assert_eq!(stat(&mut h, 0, "a").unwrap().state, "paused");
    assert_eq!(stat(&mut h, 0, "t").unwrap().state, "paused");
    h.advance_us(1000);
    for _ in 0..5 {
        h.poll_thread(0);
    }
    assert_eq!(get(&c), 1, "a paused poller does not run");
    assert_eq!(
        get(&tc),
        0,
        "a paused timed poller does not fire, even when due"
    );
    // Resuming from the wrong thread or from outside any thread is a no-op.
    h.on(1, || p.resume());
    p.resume();
    h.poll_thread(0);
    assert_eq!(get(&c), 1);
    h.on(0, || {
        p.resume();
        tp.resume();
    });
    h.poll_thread(0);
    assert_eq!(get(&c), 2);
    assert_eq!(get(&tc), 1, "an overdue timed poller fires once resumed");
    assert_eq!(stat(&mut h, 0, "a").unwrap().state, "active");
    assert_eq!(stat(&mut h, 0, "t").unwrap().state, "timed");
}

#[test]
fn a_poller_can_pause_itself() {
    let mut h = Harness::new(1, 1);
    let slot: Slot = Arc::new(Mutex::new(None));
    let s2 = slot.clone();
    let c = counter();
    let c2 = c.clone();
    let p = h.on(0, move || {
        register_poller("self-pausing", 0, move || {
            if c2.fetch_add(1, Ordering::SeqCst) == 2 {
                if let Some(p) = s2.lock().unwrap().as_ref() {
                    p.pause();
                }
            }
            1
        })
        .unwrap()
    });
    *slot.lock().unwrap() = Some(p);
    for _ in 0..10 {
        h.poll_thread(0);
    }
    assert_eq!(get(&c), 3);
    h.on(0, || slot.lock().unwrap().as_ref().unwrap().resume());
    h.poll_thread(0);
    assert_eq!(get(&c), 4);
    h.on(0, || drop(slot.lock().unwrap().take()));
}

/// Counts drops of a poller's captured state.
struct DropCount(Arc<AtomicUsize>);
impl Drop for DropCount {
    fn drop(&mut self) {
        self.0.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn dropping_the_handle_unregisters_and_drops_the_poller_on_its_thread() {
    let mut h = Harness::new(1, 1);
    let runs = counter();
    let drops = counter();
    let (r2, d2) = (runs.clone(), drops.clone());
    let p = h.on(0, move || {
        let guard = DropCount(d2);
        register_poller("p", 0, move || {
            let _g = &guard;
            r2.fetch_add(1, Ordering::SeqCst);
            0
        })
        .unwrap()
    });
    h.poll_thread(0);
    assert_eq!(get(&runs), 1);
    h.on(0, move || drop(p));
    h.poll_thread(0);
    h.poll_thread(0);
    assert_eq!(get(&runs), 1, "not run after the handle was dropped");
    assert_eq!(get(&drops), 1, "the poller itself was dropped");
    assert!(stats(&mut h, 0).is_empty());
}

#[test]
fn dropping_the_handle_before_the_first_poll() {
    let mut h = Harness::new(1, 1);
    let (p, c) = counting(&mut h, 0, "never", 0, 1);
    h.on(0, move || drop(p));
    h.run_until_idle();
    assert_eq!(get(&c), 0);
    assert!(stats(&mut h, 0).is_empty());
}

#[test]
fn a_poller_can_drop_its_own_handle() {
    for period in [0u64, 10] {
        let mut h = Harness::new(1, 1);
        let slot: Slot = Arc::new(Mutex::new(None));
        let s2 = slot.clone();
        let c = counter();
        let c2 = c.clone();
        let p = h.on(0, move || {
            register_poller("suicidal", period, move || {
                if c2.fetch_add(1, Ordering::SeqCst) + 1 == 3 {
                    let me = s2.lock().unwrap().take();
                    drop(me);
                }
                1
            })
            .unwrap()
        });
        *slot.lock().unwrap() = Some(p);
        for _ in 0..10 {
            h.advance_us(period);
            h.poll_thread(0);
        }
        assert_eq!(get(&c), 3, "period {period}: ran until it dropped itself");
        assert!(stats(&mut h, 0).is_empty());
    }
}

#[test]
fn a_poller_can_drop_another_pollers_handle() {
    let mut h = Harness::new(1, 1);
    // `killer` is registered between `before` and `after`; in its 2nd run it drops both.
    let before_slot: Slot = Arc::new(Mutex::new(None));
    let after_slot: Slot = Arc::new(Mutex::new(None));
    let (pb, before) = counting(&mut h, 0, "before", 0, 1);
    *before_slot.lock().unwrap() = Some(pb);
    let k = counter();
    let (bs, as_, k2) = (before_slot.clone(), after_slot.clone(), k.clone());
    let killer = h.on(0, move || {
        register_poller("killer", 0, move || {
            if k2.fetch_add(1, Ordering::SeqCst) == 1 {
                let b = bs.lock().unwrap().take();
                let a = as_.lock().unwrap().take();
                drop(b);
                drop(a);
            }
            1
        })
        .unwrap()
    });
    let (pa, after) = counting(&mut h, 0, "after", 0, 1);
    *after_slot.lock().unwrap() = Some(pa);
    h.poll_thread(0);
    assert_eq!((get(&before), get(&k), get(&after)), (1, 1, 1));
    h.poll_thread(0);
    // `before` already ran in this round; `after` must not run once unregistered.
    assert_eq!((get(&before), get(&k), get(&after)), (2, 2, 1));
    for _ in 0..5 {
        h.poll_thread(0);
    }
    assert_eq!((get(&before), get(&k), get(&after)), (2, 7, 1));
    let names: Vec<String> = stats(&mut h, 0).into_iter().map(|s| s.name).collect();
    assert_eq!(names, vec!["killer".to_string()]);
    h.on(0, move || drop(killer));
}

#[test]
fn a_dropped_poller_that_owns_another_handle_unregisters_it_too() {
    let mut h = Harness::new(1, 1);
    let (inner, inner_runs) = counting(&mut h, 0, "inner", 0, 1);
    let outer = h.on(0, move || {
        register_poller("outer", 0, move || {
            let _keep = &inner;
            0
        })
        .unwrap()
    });
    h.poll_thread(0);
    assert_eq!(get(&inner_runs), 1);
    h.on(0, move || drop(outer));
    for _ in 0..5 {
        h.poll_thread(0);
    }
    assert_eq!(
        get(&inner_runs),
        1,
        "inner is unregistered when outer (its owner) is dropped"
    );
    assert!(stats(&mut h, 0).is_empty());
}

#[test]
fn dropping_the_handle_on_another_os_thread_takes_effect_at_the_next_poll() {
    let mut h = Harness::new(1, 1);
    let (p, c) = counting(&mut h, 0, "remote", 0, 1);
    h.poll_thread(0);
    std::thread::spawn(move || drop(p)).join().unwrap();
    h.poll_thread(0);
    h.poll_thread(0);
    assert_eq!(get(&c), 1);
    assert!(stats(&mut h, 0).is_empty());
}

#[test]
fn dropping_a_handle_after_its_thread_is_gone_is_harmless() {
    let mut h = Harness::new(2, 1);
    let (p, c) = counting(&mut h, 0, "orphan", 0, 1);
    h.poll_thread(0);
    h.remove_thread(0);
    drop(p);
    let (p1, _) = counting(&mut h, 1, "x", 0, 0);
    h.on(1, move || drop(p1));
    h.run_until_idle();
    assert_eq!(get(&c), 1);
}

#[test]
fn a_poller_registered_from_a_poll_starts_on_the_next_poll() {
    let mut h = Harness::new(1, 1);
    let child_runs = counter();
    let cr = child_runs.clone();
    let children: Arc<Mutex<Vec<PollerHandle>>> = Arc::new(Mutex::new(Vec::new()));
    let ch = children.clone();
    let mut registered = false;
    let parent = h.on(0, move || {
        register_poller("parent", 0, move || {
            if !registered {
                registered = true;
                let cr = cr.clone();
                let p = register_poller("child", 0, move || {
                    cr.fetch_add(1, Ordering::SeqCst);
                    1
                })
                .unwrap();
                ch.lock().unwrap().push(p);
            }
            0
        })
        .unwrap()
    });
    h.poll_thread(0);
    assert_eq!(
        get(&child_runs),
        0,
        "not run in the poll that registered it"
    );
    assert!(
        stat(&mut h, 0, "child").is_some(),
        "but it is listed at once"
    );
    h.poll_thread(0);
    assert_eq!(get(&child_runs), 1);
    h.on(0, move || {
        drop(parent);
        children.lock().unwrap().clear();
    });
}

#[test]
fn stats_count_runs_and_busy_runs() {
    let mut h = Harness::new(1, 1);
    let mut n = 0usize;
    let p = h.on(0, move || {
        register_poller("half-busy", 0, move || {
            n += 1;
            n % 2
        })
        .unwrap()
    });
    let (t, _) = counting(&mut h, 0, "timer", 250, 0);
    for _ in 0..10 {
        h.advance_us(100);
        h.poll_thread(0);
    }
    let all = stats(&mut h, 0);
    assert_eq!(all.len(), 2);
    assert_ne!(all[0].id, all[1].id);
    let s = all.iter().find(|s| s.name == "half-busy").unwrap();
    assert_eq!(
        (s.run_count, s.busy_count, s.period_us, s.state),
        (10, 5, 0, "active")
    );
    let s = all.iter().find(|s| s.name == "timer").unwrap();
    // Polls at 100, 200, ... 1000 us; each run reschedules one period after the poll that ran
    // it: fires at 300 (due 250), 600 (due 550) and 900 (due 850).
    assert_eq!(
        (s.run_count, s.busy_count, s.period_us, s.state),
        (3, 0, 250, "timed")
    );
    h.on(0, move || {
        drop(p);
        drop(t);
    });
}

#[test]
fn poll_reports_busy_and_idle() {
    let mut h = Harness::new(1, 1);
    let busy = Arc::new(AtomicBool::new(true));
    let b = busy.clone();
    let p = h.on(0, move || {
        register_poller("switch", 0, move || usize::from(b.load(Ordering::SeqCst))).unwrap()
    });
    let t = h.handle(0);
    for _ in 0..50 {
        assert_eq!(h.poll_thread(0), 1, "a busy poller makes the poll busy");
    }
    let (busy_ticks, idle_ticks) = t.busy_idle_ticks();
    assert!(busy_ticks > 0, "busy time accounted");
    assert_eq!(idle_ticks, 0, "no idle poll yet");
    busy.store(false, Ordering::SeqCst);
    for _ in 0..50 {
        assert_eq!(h.poll_thread(0), 0, "an idle poller makes the poll idle");
    }
    let (busy2, idle2) = t.busy_idle_ticks();
    assert_eq!(busy2, busy_ticks, "idle polls do not count as busy");
    assert!(idle2 > 0, "idle time accounted");
    // A message is work too.
    t.send(|| {}).unwrap();
    assert_eq!(h.poll_thread(0), 1);
    h.on(0, move || drop(p));
}
