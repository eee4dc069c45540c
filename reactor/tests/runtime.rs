//! The real runtime: start/stop, core-mask errors, placement, spawning and exiting threads,
//! and message ping-pong across reactors.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};

use common::{call, os_name, serial, start, start_cfg, wait_until, SOON};
use ferrite_reactor::{
    current, exit_current, spawn_thread, with_local, CpuMask, ErrorKind, PollMode, Runtime,
    RuntimeConfig, ThreadHandle,
};

#[test]
fn start_and_stop_on_one_core() {
    let _s = serial();
    let rt = start(&[0], PollMode::Adaptive, false);
    assert_eq!(rt.reactor_count(), 1);
    assert_eq!(rt.mode(), PollMode::Adaptive);
    let app = rt.app_thread();
    assert_eq!(app.name(), "app_thread");
    assert_eq!(app.reactor(), Some(0));
    let (name, me) = call(&app, || (os_name(), current().unwrap()));
    assert_eq!(name, "reactor_0");
    assert_eq!(me, app);
    assert!(
        wait_until(SOON, || rt.reactors()[0].tid != 0),
        "reactor reports its OS tid"
    );
    let info = rt.reactors();
    assert_eq!((info[0].index, info[0].lcore), (0, 0));
    assert!(wait_until(SOON, || rt.threads().contains(&app)));
    rt.stop();
    assert!(app.is_exited(), "stop tears every thread down");
    assert_eq!(app.send(|| {}).unwrap_err().kind(), ErrorKind::ThreadGone);
    assert!(rt.threads().is_empty());
    assert_eq!(
        rt.spawn_thread("late", None).unwrap_err().kind(),
        ErrorKind::NotRunning
    );
    rt.stop(); // idempotent
}

#[test]
fn start_and_stop_on_two_pinned_cores() {
    let _s = serial();
    let rt = start(&[0, 1], PollMode::Poll, true);
    assert_eq!(rt.reactor_count(), 2);
    let t1 = rt.spawn_thread("on1", Some(1)).unwrap();
    assert_eq!(t1.reactor(), Some(1));
    let name = call(&t1, os_name);
    assert_eq!(name, "reactor_1");
    let info = rt.reactors();
    assert_eq!(info.iter().map(|r| r.lcore).collect::<Vec<_>>(), vec![0, 1]);
    assert!(wait_until(SOON, || rt.reactors()[1].threads.contains(&t1)));
    assert!(
        wait_until(SOON, || rt.reactors().iter().all(|r| r.busy + r.idle > 0)),
        "tick accounting"
    );
    assert!(
        rt.reactors().iter().all(|r| r.sleeps == 0),
        "poll mode never sleeps"
    );
    rt.stop();
    assert!(t1.is_exited());
}

#[test]
fn invalid_core_masks_are_clear_errors() {
    let _s = serial();
    for (mask, core) in [("0x100000", 20usize), ("[0,7]", 7), ("0x4", 2)] {
        let cfg = RuntimeConfig {
            cpumask: CpuMask::parse(mask).unwrap(),
            ..RuntimeConfig::default()
        };
        let err = Runtime::start(cfg)
            .err()
            .expect("a missing core must be refused");
        assert_eq!(err.kind(), ErrorKind::InvalidCpuMask);
        let msg = err.to_string();
        assert!(
            msg.contains(&format!("core {core}")),
            "{mask}: error names core {core}: {msg}"
        );
    }
    assert_eq!(
        CpuMask::parse("0xg").unwrap_err().kind(),
        ErrorKind::InvalidCpuMask
    );
}

#[test]
fn spawn_places_threads_and_checks_the_reactor_index() {
    let _s = serial();
    let rt = start(&[0, 1], PollMode::Interrupt, false);
    let e = rt.spawn_thread("nowhere", Some(2)).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidCpuMask);
    let ts: Vec<ThreadHandle> = (0..4)
        .map(|i| rt.spawn_thread(&format!("rr{i}"), None).unwrap())
        .collect();
    let mut per = [0usize; 2];
    for t in &ts {
        let r = t.reactor().unwrap();
        per[r] += 1;
        assert_eq!(call(t, os_name), format!("reactor_{r}"));
    }
    assert_eq!(per, [2, 2], "round robin spreads threads over reactors");
    assert!(wait_until(SOON, || rt.threads().len() == 5));
    let e = ts[0].move_to(2).unwrap_err();
    assert_eq!(e.kind(), ErrorKind::InvalidCpuMask);
}

#[test]
fn spawn_from_a_thread_and_exit_current() {
    let _s = serial();
    let rt = start(&[0, 1], PollMode::Adaptive, false);
    let app = rt.app_thread();
    let child = call(&app, || spawn_thread("child", Some(1)).unwrap());
    assert_eq!(child.reactor(), Some(1));
    let (name, me) = call(&child, || {
        (os_name(), current().unwrap().name().to_string())
    });
    assert_eq!((name.as_str(), me.as_str()), ("reactor_1", "child"));
    // A grandchild from the child, placed by the scheduler.
    let grandchild = call(&child, || spawn_thread("grandchild", None).unwrap());
    call(&grandchild, || ());
    assert!(wait_until(SOON, || rt.threads().len() == 3));

    // exit_current: queued messages still run, then the thread is gone.
    let (tx, rx) = mpsc::channel();
    let tx2 = tx.clone();
    child
        .send(move || {
            exit_current();
            tx.send("exit requested").unwrap();
        })
        .unwrap();
    let _ = child.send(move || tx2.send("queued").unwrap());
    assert_eq!(rx.recv_timeout(SOON).unwrap(), "exit requested");
    assert!(wait_until(SOON, || child.is_exited()));
    assert_eq!(child.send(|| {}).unwrap_err().kind(), ErrorKind::ThreadGone);
    assert!(wait_until(SOON, || !rt.threads().contains(&child)));
    assert!(
        rt.threads().contains(&grandchild),
        "exiting does not take children along"
    );
    // Outside a lightweight thread.
    assert_eq!(
        spawn_thread("x", None).unwrap_err().kind(),
        ErrorKind::WrongThread
    );
}

static DROPPED: Mutex<Vec<(u64, Option<u64>, String)>> = Mutex::new(Vec::new());

#[derive(Default)]
struct Tracked(AtomicU64);
impl Drop for Tracked {
    fn drop(&mut self) {
        let tag = self.0.load(Ordering::SeqCst);
        DROPPED
            .lock()
            .unwrap()
            .push((tag, current().map(|t| t.id()), os_name()));
    }
}

#[test]
fn stop_runs_queued_messages_and_drops_state_on_its_thread() {
    let _s = serial();
    let rt = start(&[0, 1], PollMode::Interrupt, false);
    let t = rt.spawn_thread("stateful", Some(1)).unwrap();
    let tag = 0xfeed_0000 + t.id();
    call(&t, move || {
        with_local::<Tracked, _>(|l| l.0.store(tag, Ordering::SeqCst))
    });
    let ran = Arc::new(AtomicU64::new(0));
    let r = ran.clone();
    t.send(move || {
        r.store(1, Ordering::SeqCst);
    })
    .unwrap();
    rt.stop();
    assert_eq!(ran.load(Ordering::SeqCst), 1);
    let d = DROPPED.lock().unwrap();
    let mine: Vec<_> = d.iter().filter(|(g, _, _)| *g == tag).collect();
    assert_eq!(mine.len(), 1);
    assert_eq!(mine[0].1, Some(t.id()), "dropped with its thread current");
    assert_eq!(
        mine[0].2, "reactor_1",
        "dropped on the reactor that polled it"
    );
}

/// Ping-pong of `n` round trips between `a` and `b`; returns the number of misplaced runs.
fn ping_pong(a: &ThreadHandle, b: &ThreadHandle, n: u64) -> u64 {
    struct St {
        a: ThreadHandle,
        b: ThreadHandle,
        left: AtomicU64,
        wrong: AtomicU64,
        done: Mutex<Option<mpsc::Sender<()>>>,
    }
    fn check(t: &ThreadHandle, st: &St) {
        let here = current().map(|c| c == *t).unwrap_or(false);
        let os_ok = os_name() == format!("reactor_{}", t.reactor().unwrap_or(usize::MAX));
        if !here || !os_ok {
            st.wrong.fetch_add(1, Ordering::Relaxed);
        }
    }
    fn ping(st: Arc<St>) {
        let b = st.b.clone();
        b.send(move || {
            check(&st.b, &st);
            let a = st.a.clone();
            a.send(move || pong(st)).unwrap();
        })
        .unwrap();
    }
    fn pong(st: Arc<St>) {
        check(&st.a, &st);
        if st.left.fetch_sub(1, Ordering::Relaxed) == 1 {
            if let Some(tx) = st.done.lock().unwrap().take() {
                let _ = tx.send(());
            }
        } else {
            ping(st);
        }
    }
    let (tx, rx) = mpsc::channel();
    let st = Arc::new(St {
        a: a.clone(),
        b: b.clone(),
        left: AtomicU64::new(n),
        wrong: AtomicU64::new(0),
        done: Mutex::new(Some(tx)),
    });
    let st2 = st.clone();
    a.send(move || ping(st2)).unwrap();
    rx.recv_timeout(std::time::Duration::from_secs(60))
        .expect("ping-pong completes");
    st.wrong.load(Ordering::Relaxed)
}

#[test]
fn ping_pong_across_reactors_in_every_mode() {
    let _s = serial();
    for (mode, n) in [
        (PollMode::Poll, 20_000u64),
        (PollMode::Adaptive, 10_000),
        (PollMode::Interrupt, 5_000),
    ] {
        let rt = start(&[0, 1], mode, false);
        let a = rt.spawn_thread("a", Some(0)).unwrap();
        let b = rt.spawn_thread("b", Some(1)).unwrap();
        assert_eq!(
            ping_pong(&a, &b, n),
            0,
            "{mode:?}: every message ran on its thread and reactor"
        );
        // And on one reactor.
        let c = rt.spawn_thread("c", Some(0)).unwrap();
        assert_eq!(ping_pong(&a, &c, n / 2), 0, "{mode:?}, one reactor");
        let (busy_a, _) = a.busy_idle_ticks();
        assert!(busy_a > 0, "{mode:?}: busy time accounted to the thread");
        let info = rt.reactors();
        assert!(
            info.iter().all(|r| r.busy > 0),
            "{mode:?}: both reactors did work"
        );
    }
}

#[test]
fn a_config_queue_depth_applies_to_spawned_threads() {
    let _s = serial();
    let cfg = RuntimeConfig {
        queue_depth: 2,
        ..common::config(&[0], PollMode::Interrupt, false)
    };
    let rt = start_cfg(cfg);
    let t = rt.spawn_thread("small", Some(0)).unwrap();
    // Block the thread in a message so that its queue fills up.
    let (go_tx, go_rx) = mpsc::channel::<()>();
    let (in_tx, in_rx) = mpsc::channel::<()>();
    t.send(move || {
        in_tx.send(()).unwrap();
        let _ = go_rx.recv_timeout(SOON);
    })
    .unwrap();
    in_rx.recv_timeout(SOON).unwrap();
    t.send(|| {}).unwrap();
    t.send(|| {}).unwrap();
    assert_eq!(t.send(|| {}).unwrap_err().kind(), ErrorKind::QueueFull);
    go_tx.send(()).unwrap();
    assert!(
        wait_until(SOON, || t.send(|| {}).is_ok()),
        "the queue drains once the thread runs"
    );
    call(&t, || ());
}
