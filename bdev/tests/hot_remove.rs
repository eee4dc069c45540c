//! Hot-remove with I/O in flight: a held-I/O test backend under a passthru, I/O from two
//! threads, the base unregistered underneath.
// Helpers outside #[test] functions unwrap too: this is test code.
#![allow(clippy::unwrap_used)]

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::{register_test, run_until, take_done, Arena, TestCfg, TestState};
use ferrite_bdev::{BdevChannel, BdevEvent, BdevIo, Desc, ErrorKind, IoStatus, IoType};
use ferrite_reactor::harness::Harness;

const PER_THREAD: u64 = 6;

/// Events seen by descriptor callbacks: (bdev, event, thread the callback ran on).
type EventLog = Arc<Mutex<Vec<(String, BdevEvent, u64)>>>;

fn open_logged(bdev: &str, log: &EventLog) -> Desc {
    let l = log.clone();
    let name = bdev.to_string();
    Desc::open(bdev, true, move |ev| {
        let t = ferrite_reactor::current().map(|t| t.id()).unwrap_or(0);
        l.lock().unwrap().push((name.clone(), ev, t));
    })
    .unwrap()
}

/// Status the backend gives an I/O: a real mix, decided by its offset.
fn status_for(io: &BdevIo) -> IoStatus {
    if io.offset_blocks().is_multiple_of(3) {
        IoStatus::Failed
    } else {
        IoStatus::Success
    }
}

struct Setup {
    h: Harness,
    state: Arc<TestState>,
    arena: Arena,
}

/// t0: app thread (creates everything); t1, t2: I/O threads. Base `base` (test backend,
/// holding I/O) under passthru `pt`.
fn setup(base: &str, pt: &str, seed: u64) -> Setup {
    let mut h = Harness::new(3, seed);
    let (b, p) = (base.to_string(), pt.to_string());
    let state = h.on(0, move || {
        ferrite_bdev::register_module(Arc::new(ferrite_passthru::PassthruModule));
        let (_, state) = register_test(&b, 512, 1024, TestCfg::default());
        ferrite_passthru::create(&ferrite_passthru::PassthruOpts {
            base_bdev_name: b,
            name: p,
            uuid: None,
        })
        .unwrap();
        state
    });
    state.hold.store(true, Ordering::SeqCst);
    Setup {
        h,
        state,
        arena: Arena::default(),
    }
}

/// Submits PER_THREAD writes/reads on `ch` from thread `t`; tags are unique per test.
fn submit_batch(s: &mut Setup, t: usize, ch: &BdevChannel) {
    let arena = &s.arena;
    s.h.on(t, || {
        for k in 0..PER_THREAD {
            let tag = (t as u64) * 100 + k;
            let off = (t as u64) * 100 + k;
            if k % 2 == 0 {
                common::write_at(ch, arena, off, vec![t as u8; 512], &[], tag);
            } else {
                common::read_at(ch, arena, off, 1, &[], tag);
            }
        }
    });
}

/// Checks that every tag completed exactly once with the status the backend gave it.
fn check_completions(done: &[common::Done], threads: &HashMap<usize, u64>) {
    let mut seen: HashMap<u64, usize> = HashMap::new();
    for d in done {
        *seen.entry(d.tag).or_default() += 1;
        let t = (d.tag / 100) as usize;
        assert_eq!(
            d.thread, threads[&t],
            "completion on the wrong thread: {d:?}"
        );
        let want = if d.offset % 3 == 0 {
            IoStatus::Failed
        } else {
            IoStatus::Success
        };
        assert_eq!(d.status, want, "{d:?}");
        assert_eq!(
            d.io_type,
            if d.tag % 2 == 0 {
                IoType::Write
            } else {
                IoType::Read
            }
        );
    }
    for t in [1usize, 2] {
        for k in 0..PER_THREAD {
            let tag = t as u64 * 100 + k;
            assert_eq!(seen.get(&tag), Some(&1), "tag {tag} lost or doubled");
        }
    }
    assert_eq!(done.len(), 2 * PER_THREAD as usize);
}

#[test]
fn hot_remove_base_under_passthru_with_io_in_flight() {
    let mut s = setup("HrBase", "HrPt", 31);
    let events: EventLog = Arc::default();
    let threads: HashMap<usize, u64> = (0..3).map(|i| (i, s.h.handle(i).id())).collect();
    let d1 = s.h.on(1, || open_logged("HrPt", &events));
    let d2 = s.h.on(2, || open_logged("HrPt", &events));
    let ch1 = s.h.on(1, || d1.channel().unwrap());
    let ch2 = s.h.on(2, || d2.channel().unwrap());
    submit_batch(&mut s, 1, &ch1);
    submit_batch(&mut s, 2, &ch2);
    let state = s.state.clone();
    run_until(&mut s.h, "all I/O held at the base", || {
        state.held_count() == 2 * PER_THREAD as usize
    });
    assert_eq!(common::done_count(), 0);

    // Unregister the base.
    let base_done = Arc::new(AtomicUsize::new(0));
    let bd = base_done.clone();
    s.h.on(0, move || {
        ferrite_bdev::unregister("HrBase", None, move |r| {
            r.unwrap();
            bd.fetch_add(1, Ordering::SeqCst);
        })
    });
    // New opens of the base fail at once.
    let e =
        s.h.on(0, || Desc::open("HrBase", false, |_| {}).unwrap_err());
    assert_eq!(e.kind(), ErrorKind::Removing, "{e}");
    assert!(e.message().contains("HrBase"), "{e}");
    // Remove reaches each passthru descriptor holder, on its own thread.
    let ev = events.clone();
    run_until(&mut s.h, "remove events", || ev.lock().unwrap().len() == 2);
    let mut got = events.lock().unwrap().clone();
    got.sort_by_key(|e| e.2);
    assert_eq!(
        got,
        vec![
            ("HrPt".to_string(), BdevEvent::Remove, threads[&1]),
            ("HrPt".to_string(), BdevEvent::Remove, threads[&2]),
        ]
    );
    for write in [false, true] {
        let e = s.h.on(1, || Desc::open("HrPt", write, |_| {}).unwrap_err());
        assert_eq!(e.kind(), ErrorKind::Removing, "{e}");
    }
    // Nothing completed or finished yet: the I/O is still held.
    for _ in 0..20 {
        s.h.poll_all();
    }
    assert_eq!(common::done_count(), 0);
    assert_eq!(s.state.held_count(), 2 * PER_THREAD as usize);
    assert_eq!(base_done.load(Ordering::SeqCst), 0);
    assert_eq!(s.state.destructs.load(Ordering::SeqCst), 0);

    // Thread 1's I/O completes while descriptors are still open.
    let st = s.state.clone();
    assert_eq!(
        s.h.on(1, || st.release_here(status_for)),
        PER_THREAD as usize
    );
    run_until(&mut s.h, "thread 1 completions", || {
        common::done_count() == PER_THREAD as usize
    });
    // Everyone closes the descriptors (as asked by the event); thread 2's I/O is still held.
    s.h.on(1, || drop(d1));
    s.h.on(2, || drop(d2));
    s.h.run_until_idle();
    assert!(ferrite_bdev::lookup("HrPt").is_none());
    assert_eq!(s.state.held_count(), PER_THREAD as usize);
    // Thread 2's I/O completes after the descriptors are gone, through live channels.
    let st = s.state.clone();
    assert_eq!(
        s.h.on(2, || st.release_here(status_for)),
        PER_THREAD as usize
    );
    run_until(&mut s.h, "thread 2 completions", || {
        common::done_count() == 2 * PER_THREAD as usize
    });
    s.h.on(1, || drop(ch1));
    s.h.on(2, || drop(ch2));
    s.h.run_until_idle();
    for _ in 0..20 {
        s.h.poll_all();
    }
    check_completions(&take_done(), &threads);
    let names: Vec<String> = ferrite_bdev::list()
        .iter()
        .map(|b| b.name().to_string())
        .collect();
    assert!(
        !names.iter().any(|n| n == "HrBase" || n == "HrPt"),
        "{names:?}"
    );
    assert_eq!(s.state.destructs.load(Ordering::SeqCst), 1);
    assert_eq!(base_done.load(Ordering::SeqCst), 1);
    assert_eq!(s.state.held_count(), 0);
    // A second unregister of a gone bdev reports NotFound.
    let e = Arc::new(Mutex::new(None));
    let e2 = e.clone();
    s.h.on(0, move || {
        ferrite_bdev::unregister("HrBase", None, move |r| {
            *e2.lock().unwrap() = r.err().map(|e| e.kind())
        })
    });
    assert_eq!(*e.lock().unwrap(), Some(ErrorKind::NotFound));
}

type Slots = Arc<Mutex<HashMap<u64, (Desc, BdevChannel)>>>;

/// The usual pattern: each holder closes its descriptor and channel from inside the Remove
/// callback, with its I/O still in flight.
#[test]
fn holders_close_from_the_remove_callback_with_io_in_flight() {
    for seed in 0..8u64 {
        let (base, pt) = (format!("HrcBase{seed}"), format!("HrcPt{seed}"));
        let mut s = setup(&base, &pt, 1000 + seed);
        let threads: HashMap<usize, u64> = (0..3).map(|i| (i, s.h.handle(i).id())).collect();
        let slots: Slots = Arc::default();
        let closed = Arc::new(AtomicUsize::new(0));
        for t in [1usize, 2] {
            let (sl, cl, p) = (slots.clone(), closed.clone(), pt.clone());
            let sl2 = slots.clone();
            s.h.on(t, move || {
                let d = Desc::open(&p, true, move |ev| {
                    assert_eq!(ev, BdevEvent::Remove);
                    let me = ferrite_reactor::current().unwrap().id();
                    // Close on the holder's own thread: channel first, then descriptor.
                    let (d, ch) = sl.lock().unwrap().remove(&me).expect("event on my thread");
                    drop(ch);
                    drop(d);
                    cl.fetch_add(1, Ordering::SeqCst);
                })
                .unwrap();
                let ch = d.channel().unwrap();
                let me = ferrite_reactor::current().unwrap().id();
                sl2.lock().unwrap().insert(me, (d, ch));
            });
        }
        for t in [1usize, 2] {
            let sl = slots.clone();
            let me = threads[&t];
            let arena = &s.arena;
            s.h.on(t, || {
                let g = sl.lock().unwrap();
                let ch = &g[&me].1;
                for k in 0..PER_THREAD {
                    let tag = (t as u64) * 100 + k;
                    if k % 2 == 0 {
                        common::write_at(ch, arena, tag, vec![1; 512], &[], tag);
                    } else {
                        common::read_at(ch, arena, tag, 1, &[], tag);
                    }
                }
            });
        }
        let state = s.state.clone();
        run_until(&mut s.h, "held", || {
            state.held_count() == 2 * PER_THREAD as usize
        });
        let base_done = Arc::new(AtomicBool::new(false));
        let bd = base_done.clone();
        let b = base.clone();
        s.h.on(0, move || {
            ferrite_bdev::unregister(&b, Some("test"), move |r| {
                r.unwrap();
                bd.store(true, Ordering::SeqCst)
            })
        });
        let cl = closed.clone();
        run_until(&mut s.h, "holders closed", || {
            cl.load(Ordering::SeqCst) == 2
        });
        // Descriptors are closed, so both bdevs are out of the registry and the backend is
        // destructed, even though its I/O is still held (channels live on until idle).
        let b2 = base.clone();
        let bdd = base_done.clone();
        run_until(&mut s.h, "base removed", || {
            bdd.load(Ordering::SeqCst) && ferrite_bdev::lookup(&b2).is_none()
        });
        assert!(ferrite_bdev::lookup(&pt).is_none());
        assert_eq!(s.state.destructs.load(Ordering::SeqCst), 1);
        assert_eq!(common::done_count(), 0);
        // Released in the background: every I/O still reaches its submitter exactly once.
        for t in [1usize, 2] {
            let st = s.state.clone();
            assert_eq!(
                s.h.on(t, || st.release_here(status_for)),
                PER_THREAD as usize
            );
        }
        run_until(&mut s.h, "completions", || {
            common::done_count() == 2 * PER_THREAD as usize
        });
        s.h.run_until_idle();
        check_completions(&take_done(), &threads);
        assert_eq!(s.state.destructs.load(Ordering::SeqCst), 1);
        assert!(slots.lock().unwrap().is_empty());
    }
}
