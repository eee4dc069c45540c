//! I/O devices and per-thread channels under the deterministic harness: lazy creation,
//! sharing, deferred destruction on the owning thread, for_each_channel (sync and async) with
//! threads coming and going, early stop, and the owner check on dereference.
#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ferrite_reactor::harness::Harness;
use ferrite_reactor::{current, register_poller, ErrorKind, ForEachCont, IoChannel, IoDevice};

/// (creator thread, thread current at drop) of each dropped channel state.
type DropLog = Arc<Mutex<Vec<(u64, Option<u64>)>>>;

/// Channel state: remembers the thread it was created on and records where it is dropped.
struct Ctx {
    created_on: u64,
    dropped_on: DropLog,
    pending: Mutex<Option<ForEachCont>>,
}

impl Drop for Ctx {
    fn drop(&mut self) {
        self.dropped_on
            .lock()
            .unwrap()
            .push((self.created_on, current().map(|t| t.id())));
    }
}

struct Dev {
    dev: IoDevice<Ctx>,
    created: Arc<AtomicUsize>,
    dropped: DropLog,
}

fn device(name: &str) -> Dev {
    let created = Arc::new(AtomicUsize::new(0));
    let dropped = Arc::new(Mutex::new(Vec::new()));
    let (c, d) = (created.clone(), dropped.clone());
    let dev = IoDevice::new(name, move || {
        c.fetch_add(1, Ordering::SeqCst);
        Ctx {
            created_on: current().expect("created on a lightweight thread").id(),
            dropped_on: d.clone(),
            pending: Mutex::new(None),
        }
    });
    Dev {
        dev,
        created,
        dropped,
    }
}

fn get_on(h: &mut Harness, i: usize, dev: &IoDevice<Ctx>) -> IoChannel<Ctx> {
    let dev = dev.clone();
    h.on(i, move || dev.get_channel().unwrap())
}

fn tid(h: &Harness, i: usize) -> u64 {
    h.handle(i).id()
}

#[test]
fn channels_are_created_lazily_per_thread_and_shared_on_a_thread() {
    let mut h = Harness::new(2, 1);
    let d = device("lazy");
    assert_eq!(d.dev.name(), "lazy");
    h.run_until_idle();
    assert_eq!(
        d.created.load(Ordering::SeqCst),
        0,
        "nothing created before the first get"
    );
    assert_eq!(d.dev.channel_count(), 0);

    let a = get_on(&mut h, 0, &d.dev);
    assert_eq!(d.created.load(Ordering::SeqCst), 1);
    assert_eq!(d.dev.channel_count(), 1);
    let b = get_on(&mut h, 0, &d.dev);
    assert_eq!(
        d.created.load(Ordering::SeqCst),
        1,
        "a second get on the same thread shares"
    );
    let (pa, pb) = h.on(0, || (&*a as *const Ctx, &*b as *const Ctx));
    assert_eq!(pa, pb, "same state behind both handles");
    assert_eq!(h.on(0, || a.created_on), tid(&h, 0));
    assert_eq!(a.thread(), h.handle(0));

    let c = get_on(&mut h, 1, &d.dev);
    assert_eq!(
        d.created.load(Ordering::SeqCst),
        2,
        "another thread gets its own"
    );
    assert_eq!(d.dev.channel_count(), 2);
    assert_eq!(h.on(1, || c.created_on), tid(&h, 1));
    let pc = h.on(1, || &*c as *const Ctx);
    assert_ne!(pa, pc);

    h.on(0, move || {
        drop(a);
        drop(b);
    });
    h.on(1, move || drop(c));
    h.run_until_idle();
    assert_eq!(d.dev.channel_count(), 0);
}

#[test]
fn state_is_destroyed_on_its_thread_after_the_last_put_and_a_later_poll() {
    let mut h = Harness::new(2, 1);
    let d = device("destroy");
    let a = get_on(&mut h, 0, &d.dev);
    let b = get_on(&mut h, 0, &d.dev);
    h.on(0, move || drop(a));
    h.run_until_idle();
    assert!(
        d.dropped.lock().unwrap().is_empty(),
        "one handle is still held"
    );
    assert_eq!(d.dev.channel_count(), 1);

    h.on(0, move || drop(b));
    assert!(
        d.dropped.lock().unwrap().is_empty(),
        "never destroyed inside the drop of the handle"
    );
    assert_eq!(d.dev.channel_count(), 1);
    h.poll_thread(1);
    assert!(
        d.dropped.lock().unwrap().is_empty(),
        "another thread's poll does not destroy it"
    );
    h.poll_thread(0);
    let t0 = tid(&h, 0);
    assert_eq!(
        *d.dropped.lock().unwrap(),
        vec![(t0, Some(t0))],
        "T dropped once, on its thread"
    );
    assert_eq!(d.dev.channel_count(), 0);

    // A new get creates a fresh state.
    let c = get_on(&mut h, 0, &d.dev);
    assert_eq!(d.created.load(Ordering::SeqCst), 2);
    h.on(0, move || drop(c));
    h.run_until_idle();
    assert_eq!(d.dropped.lock().unwrap().len(), 2);
}

#[test]
fn a_get_before_the_deferred_destroy_revives_the_channel() {
    let mut h = Harness::new(1, 1);
    let d = device("revive");
    let a = get_on(&mut h, 0, &d.dev);
    let pa = h.on(0, || &*a as *const Ctx);
    let dev = d.dev.clone();
    let b = h.on(0, move || {
        drop(a);
        dev.get_channel().unwrap()
    });
    h.run_until_idle();
    assert_eq!(d.created.load(Ordering::SeqCst), 1);
    assert!(
        d.dropped.lock().unwrap().is_empty(),
        "revived, not destroyed"
    );
    assert_eq!(h.on(0, || &*b as *const Ctx), pa);
    h.on(0, move || drop(b));
    h.run_until_idle();
    assert_eq!(d.dropped.lock().unwrap().len(), 1);
}

#[test]
fn dropping_a_channel_on_another_os_thread_releases_it_on_its_owner() {
    let mut h = Harness::new(1, 1);
    let d = device("remote-put");
    let a = get_on(&mut h, 0, &d.dev);
    std::thread::spawn(move || drop(a)).join().unwrap();
    assert!(d.dropped.lock().unwrap().is_empty());
    h.run_until_idle();
    let t0 = tid(&h, 0);
    assert_eq!(*d.dropped.lock().unwrap(), vec![(t0, Some(t0))]);
    assert_eq!(d.dev.channel_count(), 0);
}

#[test]
fn removing_a_thread_destroys_its_channels_on_it() {
    let mut h = Harness::new(2, 1);
    let d = device("teardown");
    let a = get_on(&mut h, 1, &d.dev);
    // The channel is kept by a poller of the same thread.
    let p = h.on(1, move || {
        register_poller("holder", 0, move || {
            let _ = a.created_on;
            0
        })
        .unwrap()
    });
    h.run_until_idle();
    let t1 = tid(&h, 1);
    h.remove_thread(1);
    assert_eq!(*d.dropped.lock().unwrap(), vec![(t1, Some(t1))]);
    assert_eq!(d.dev.channel_count(), 0);
    drop(p);
}

#[test]
fn get_channel_outside_a_thread_or_after_unregister_fails() {
    let mut h = Harness::new(2, 1);
    let d = device("unreg");
    assert_eq!(
        d.dev.get_channel().err().unwrap().kind(),
        ErrorKind::WrongThread
    );
    let a = get_on(&mut h, 0, &d.dev);
    d.dev.unregister();
    let dev = d.dev.clone();
    let again = h.on(0, move || dev.get_channel());
    assert!(
        again.is_ok(),
        "an existing channel is still shared after unregister"
    );
    let dev = d.dev.clone();
    let e = h.on(1, move || dev.get_channel().err().unwrap().kind());
    assert_eq!(e, ErrorKind::DeviceGone, "no new channel after unregister");
    h.on(0, move || {
        drop(a);
        drop(again);
    });
}

#[test]
fn deref_on_the_wrong_thread_panics() {
    let mut h = Harness::new(2, 1);
    let d = device("owner-check");
    let a = get_on(&mut h, 0, &d.dev);
    let a = AssertUnwindSafe(a);
    let r = catch_unwind(|| a.created_on);
    assert!(r.is_err(), "deref outside any lightweight thread panics");
    let r = h.on(1, || catch_unwind(|| a.created_on));
    assert!(r.is_err(), "deref on another lightweight thread panics");
    let ok = h.on(0, || catch_unwind(|| a.created_on));
    assert_eq!(ok.ok(), Some(tid(&h, 0)), "deref on the owner works");
    // The harness is still usable after the caught panics.
    let a = a.0;
    h.on(0, move || drop(a));
    h.run_until_idle();
    assert_eq!(d.dev.channel_count(), 0);
}

type Seen = Arc<Mutex<Vec<u64>>>;

/// Starts a synchronous-visit walk from thread `from`; returns (visited thread ids, done-on).
fn walk(h: &mut Harness, from: usize, dev: &IoDevice<Ctx>) -> (Seen, Arc<Mutex<Vec<u64>>>) {
    let seen: Seen = Arc::new(Mutex::new(Vec::new()));
    let done: Arc<Mutex<Vec<u64>>> = Arc::new(Mutex::new(Vec::new()));
    let (s, dn, dev) = (seen.clone(), done.clone(), dev.clone());
    h.on(from, move || {
        dev.for_each_channel(
            move |ctx| {
                let me = current().unwrap().id();
                assert_eq!(
                    ctx.created_on, me,
                    "f gets the visited thread's own channel"
                );
                s.lock().unwrap().push(me);
            },
            move || dn.lock().unwrap().push(current().unwrap().id()),
        )
        .unwrap();
    });
    (seen, done)
}

#[test]
fn for_each_channel_visits_exactly_the_holders_then_done_on_the_caller() {
    for seed in 1..=20u64 {
        let mut h = Harness::new(4, seed);
        let d = device("walk");
        let c0 = get_on(&mut h, 0, &d.dev);
        let c2 = get_on(&mut h, 2, &d.dev);
        let (seen, done) = walk(&mut h, 1, &d.dev);
        assert!(
            seen.lock().unwrap().is_empty(),
            "nothing runs before for_each_channel returns"
        );
        assert!(done.lock().unwrap().is_empty());
        h.run_until_idle();
        let visited: BTreeSet<u64> = seen.lock().unwrap().iter().copied().collect();
        assert_eq!(seen.lock().unwrap().len(), 2, "each holder visited once");
        assert_eq!(visited, [tid(&h, 0), tid(&h, 2)].into(), "seed {seed}");
        assert_eq!(
            *done.lock().unwrap(),
            vec![tid(&h, 1)],
            "done runs once, on the caller"
        );
        h.on(0, move || drop(c0));
        h.on(2, move || drop(c2));
    }
}

#[test]
fn for_each_channel_with_no_holders_still_completes_later() {
    let mut h = Harness::new(1, 1);
    let d = device("empty-walk");
    let (seen, done) = walk(&mut h, 0, &d.dev);
    assert!(
        done.lock().unwrap().is_empty(),
        "done is not called inside for_each_channel"
    );
    h.run_until_idle();
    assert!(seen.lock().unwrap().is_empty());
    assert_eq!(*done.lock().unwrap(), vec![tid(&h, 0)]);
    assert_eq!(
        d.dev.for_each_channel(|_| {}, || {}).err().unwrap().kind(),
        ErrorKind::WrongThread
    );
}

#[test]
fn for_each_channel_skips_a_channel_released_before_the_visit() {
    let mut h = Harness::new(2, 1);
    let d = device("released");
    let c0 = get_on(&mut h, 0, &d.dev);
    // Released from another OS thread: the release reaches thread 0 as a message, queued
    // before the walk's visit.
    std::thread::spawn(move || drop(c0)).join().unwrap();
    let (seen, done) = walk(&mut h, 1, &d.dev);
    h.run_until_idle();
    assert!(
        seen.lock().unwrap().is_empty(),
        "a thread whose last handle was put is not a holder"
    );
    assert_eq!(done.lock().unwrap().len(), 1);
    assert_eq!(d.dev.channel_count(), 0);
}

#[test]
fn for_each_channel_survives_threads_coming_and_going() {
    for seed in 1..=40u64 {
        let mut h = Harness::new(5, seed);
        let d = device("churn");
        let mut held: Vec<(usize, IoChannel<Ctx>)> = Vec::new();
        for i in 0..4 {
            held.push((i, get_on(&mut h, i, &d.dev)));
        }
        let holder_ids: Vec<u64> = (0..4).map(|i| tid(&h, i)).collect();
        let (seen, done) = walk(&mut h, 4, &d.dev);
        // Let the walk progress a seed-dependent number of rounds, then remove a holder and
        // add a new one.
        for _ in 0..(seed % 4) {
            h.poll_all();
        }
        let victim = (seed % 4) as usize;
        let victim_ch = held
            .remove(held.iter().position(|(i, _)| *i == victim).unwrap())
            .1;
        drop(victim_ch); // dropped off-thread: the release message dies with the thread
        h.remove_thread(victim);
        let newcomer = h.add_thread("newcomer");
        held.push((newcomer, get_on(&mut h, newcomer, &d.dev)));
        h.run_until_idle();

        let seen = seen.lock().unwrap().clone();
        assert_eq!(
            *done.lock().unwrap(),
            vec![tid(&h, 4)],
            "seed {seed}: the walk finishes"
        );
        let uniq: BTreeSet<u64> = seen.iter().copied().collect();
        assert_eq!(
            uniq.len(),
            seen.len(),
            "seed {seed}: no thread visited twice"
        );
        for (i, id) in holder_ids.iter().enumerate() {
            if i != victim {
                assert!(
                    uniq.contains(id),
                    "seed {seed}: surviving holder t{i} visited"
                );
            }
        }
        for (i, ch) in held {
            h.on(i, move || drop(ch));
        }
        h.run_until_idle();
        assert_eq!(d.dev.channel_count(), 0, "seed {seed}");
    }
}

#[test]
fn for_each_channel_async_continues_when_the_continuation_is_finished_later() {
    let mut h = Harness::new(3, 1);
    let d = device("async");
    let chans: Vec<IoChannel<Ctx>> = (0..2).map(|i| get_on(&mut h, i, &d.dev)).collect();
    // An active poller on each holder finishes the parked continuation once the test grants
    // it a budget, so each step of the walk happens in a later poll than its visit.
    let budget = Arc::new(AtomicUsize::new(0));
    let mut pollers = Vec::new();
    for i in 0..chans.len() {
        let dev = d.dev.clone();
        let budget = budget.clone();
        pollers.push(h.on(i, move || {
            let ch = dev.get_channel().unwrap();
            register_poller("finisher", 0, move || {
                let mut parked = ch.pending.lock().unwrap();
                if parked.is_none() || budget.load(Ordering::SeqCst) == 0 {
                    return 0;
                }
                budget.fetch_sub(1, Ordering::SeqCst);
                let cont = parked.take();
                drop(parked);
                if let Some(c) = cont {
                    c.finish(0);
                }
                1
            })
            .unwrap()
        }));
    }
    let visits: Seen = Arc::new(Mutex::new(Vec::new()));
    let status: Arc<Mutex<Option<(i32, u64)>>> = Arc::new(Mutex::new(None));
    let (v, st, dev) = (visits.clone(), status.clone(), d.dev.clone());
    h.on(2, move || {
        dev.for_each_channel_async(
            move |ctx, cont| {
                v.lock().unwrap().push(current().unwrap().id());
                *ctx.pending.lock().unwrap() = Some(cont);
            },
            move |s| *st.lock().unwrap() = Some((s, current().unwrap().id())),
        )
        .unwrap();
    });
    h.run_until_idle();
    assert_eq!(
        visits.lock().unwrap().len(),
        1,
        "the walk waits for the first continuation"
    );
    assert!(status.lock().unwrap().is_none());
    budget.store(1, Ordering::SeqCst);
    h.run_until_idle();
    assert_eq!(
        visits.lock().unwrap().len(),
        2,
        "first finished from a poller: second visited"
    );
    assert!(status.lock().unwrap().is_none());
    budget.store(1, Ordering::SeqCst);
    h.run_until_idle();
    let v: BTreeSet<u64> = visits.lock().unwrap().iter().copied().collect();
    assert_eq!(v, [tid(&h, 0), tid(&h, 1)].into());
    assert_eq!(
        *status.lock().unwrap(),
        Some((0, tid(&h, 2))),
        "done(0) on the caller"
    );
    for (i, (ch, p)) in chans.into_iter().zip(pollers).enumerate() {
        h.on(i, move || {
            drop(p);
            drop(ch);
        });
    }
    h.run_until_idle();
    assert_eq!(d.dev.channel_count(), 0);
}

#[test]
fn a_nonzero_status_stops_the_walk_and_reaches_done() {
    for seed in 1..=10u64 {
        let mut h = Harness::new(4, seed);
        let d = device("stop");
        let chans: Vec<IoChannel<Ctx>> = (0..3).map(|i| get_on(&mut h, i, &d.dev)).collect();
        let visits: Seen = Arc::new(Mutex::new(Vec::new()));
        let status: Arc<Mutex<Vec<(i32, u64)>>> = Arc::new(Mutex::new(Vec::new()));
        let (v, st, dev) = (visits.clone(), status.clone(), d.dev.clone());
        h.on(3, move || {
            dev.for_each_channel_async(
                move |_ctx, cont| {
                    v.lock().unwrap().push(current().unwrap().id());
                    cont.finish(-5);
                },
                move |s| st.lock().unwrap().push((s, current().unwrap().id())),
            )
            .unwrap();
        });
        h.run_until_idle();
        assert_eq!(
            visits.lock().unwrap().len(),
            1,
            "seed {seed}: stopped after the first visit"
        );
        assert_eq!(
            *status.lock().unwrap(),
            vec![(-5, tid(&h, 3))],
            "seed {seed}"
        );
        for (i, ch) in chans.into_iter().enumerate() {
            h.on(i, move || drop(ch));
        }
    }
}

#[test]
fn a_holder_exiting_with_a_parked_continuation_does_not_stall_the_walk() {
    let mut h = Harness::new(3, 1);
    let d = device("parked");
    let c0 = get_on(&mut h, 0, &d.dev);
    let c1 = get_on(&mut h, 1, &d.dev);
    let visits: Seen = Arc::new(Mutex::new(Vec::new()));
    let status: Arc<Mutex<Vec<i32>>> = Arc::new(Mutex::new(Vec::new()));
    let (v, st, dev) = (visits.clone(), status.clone(), d.dev.clone());
    h.on(2, move || {
        dev.for_each_channel_async(
            move |ctx, cont| {
                v.lock().unwrap().push(current().unwrap().id());
                // Parked until some later event (say, in-flight I/O completing).
                *ctx.pending.lock().unwrap() = Some(cont);
            },
            move |s| st.lock().unwrap().push(s),
        )
        .unwrap();
    });
    h.run_until_idle();
    assert_eq!(*visits.lock().unwrap(), vec![tid(&h, 0)]);
    // Thread 0 exits with the continuation parked in its channel: it is skipped.
    drop(c0); // off-thread put; the thread is removed before it would run
    h.remove_thread(0);
    h.run_until_idle();
    assert_eq!(
        visits.lock().unwrap().len(),
        2,
        "the walk moved on to thread 1"
    );
    assert!(status.lock().unwrap().is_empty());
    let c1 = h.on(1, move || {
        let cont = c1.pending.lock().unwrap().take().unwrap();
        cont.finish(0);
        c1
    });
    h.run_until_idle();
    assert_eq!(*status.lock().unwrap(), vec![0]);
    h.on(1, move || drop(c1));
}

#[test]
fn a_visit_dropped_unrun_by_an_exiting_thread_does_not_stall_the_walk() {
    let mut h = Harness::new(2, 1);
    let d = device("unrun");
    let c0 = get_on(&mut h, 0, &d.dev);
    // More messages queued than a teardown runs: the visit behind them is dropped unrun.
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..3000 {
        let r = ran.clone();
        h.handle(0)
            .send(move || {
                r.fetch_add(1, Ordering::Relaxed);
            })
            .unwrap();
    }
    let (seen, done) = walk(&mut h, 1, &d.dev);
    drop(c0);
    h.remove_thread(0);
    assert!(
        ran.load(Ordering::Relaxed) < 3000,
        "the scenario needs messages dropped at teardown"
    );
    h.run_until_idle();
    assert!(seen.lock().unwrap().is_empty());
    assert_eq!(
        *done.lock().unwrap(),
        vec![tid(&h, 1)],
        "the walk skipped the gone thread and finished"
    );
}

/// Channel state of a lower device.
struct Base {
    log: Arc<Mutex<Vec<&'static str>>>,
    value: u64,
}
impl Drop for Base {
    fn drop(&mut self) {
        self.log.lock().unwrap().push("base dropped");
    }
}

/// Channel state of a device stacked on `Base`: holds a base channel and uses it when dropped.
struct Upper {
    log: Arc<Mutex<Vec<&'static str>>>,
    base: IoChannel<Base>,
}
impl Drop for Upper {
    fn drop(&mut self) {
        let mut log = self.log.lock().unwrap();
        if log.contains(&"base dropped") {
            // Using `self.base` now would read freed memory.
            log.push("upper dropped after its base");
        } else {
            assert_eq!(self.base.value, 7);
            log.push("upper dropped");
        }
    }
}

fn stacked() -> (IoDevice<Upper>, Arc<Mutex<Vec<&'static str>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    let base = IoDevice::new("base", move || Base {
        log: l.clone(),
        value: 7,
    });
    let l = log.clone();
    let upper = IoDevice::new("upper", move || Upper {
        log: l.clone(),
        base: base.get_channel().unwrap(),
    });
    (upper, log)
}

#[test]
fn stacked_channels_are_destroyed_top_down() {
    // Normal put.
    let mut h = Harness::new(1, 1);
    let (upper, log) = stacked();
    let u = h.on(0, || upper.get_channel().unwrap());
    h.on(0, move || drop(u));
    h.run_until_idle();
    assert_eq!(*log.lock().unwrap(), vec!["upper dropped", "base dropped"]);
}

#[test]
fn stacked_channels_are_destroyed_top_down_when_their_thread_exits() {
    // Held by a poller of the exiting thread.
    let mut h = Harness::new(1, 1);
    let (upper, log) = stacked();
    let p = h.on(0, || {
        let u = upper.get_channel().unwrap();
        register_poller("user", 0, move || usize::from(u.base.value == 0)).unwrap()
    });
    h.run_until_idle();
    h.remove_thread(0);
    assert_eq!(*log.lock().unwrap(), vec!["upper dropped", "base dropped"]);
    drop(p);

    // Held outside the thread when it exits: the thread still drops everything, top down.
    let mut h = Harness::new(1, 1);
    let (upper, log) = stacked();
    let u = h.on(0, || upper.get_channel().unwrap());
    h.remove_thread(0);
    assert_eq!(*log.lock().unwrap(), vec!["upper dropped", "base dropped"]);
    drop(u);
}
