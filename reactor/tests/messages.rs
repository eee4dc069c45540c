//! Messages between lightweight threads, under the deterministic harness: per-sender order,
//! full queues, exited threads, spawning and exiting.
#![allow(clippy::unwrap_used, clippy::manual_is_multiple_of)] // is_multiple_of needs Rust 1.87; MSRV is 1.80

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use ferrite_reactor::harness::Harness;
use ferrite_reactor::{
    current, exit_current, register_poller, spawn_thread, ErrorKind, PollerHandle,
    DEFAULT_QUEUE_DEPTH, MSG_BATCH,
};

type Log = Arc<Mutex<Vec<(u64, u64)>>>;

/// Checks that every sender's sequence numbers arrived complete and strictly in order.
fn check_per_sender(log: &[(u64, u64)], expected: &HashMap<u64, u64>) {
    let mut next: HashMap<u64, u64> = HashMap::new();
    for &(sender, seq) in log {
        let n = next.entry(sender).or_insert(0);
        assert_eq!(seq, *n, "sender {sender}: got #{seq}, expected #{n}");
        *n += 1;
    }
    assert_eq!(&next, expected, "every message arrives exactly once");
}

#[test]
fn per_sender_order_is_preserved_with_lightweight_and_os_senders() {
    const PER_THREAD: u64 = 300;
    const PER_OS: u64 = 2000;
    for seed in [1u64, 7, 42] {
        let mut h = Harness::new(4, seed);
        let rx = h.handle(0);
        let log: Log = Arc::new(Mutex::new(Vec::new()));
        // Lightweight senders 1..=3: an active poller sends a burst of 1..=3 messages per poll.
        let mut handles: Vec<PollerHandle> = Vec::new();
        for i in 1..=3u64 {
            let rx = rx.clone();
            let log = log.clone();
            let p = h.on(i as usize, move || {
                let mut seq = 0u64;
                register_poller("sender", 0, move || {
                    let burst = i.min(PER_THREAD - seq.min(PER_THREAD));
                    for _ in 0..burst {
                        let log = log.clone();
                        let s = seq;
                        let rx_id = rx.id();
                        rx.send(move || {
                            assert_eq!(current().unwrap().id(), rx_id, "runs on the target");
                            log.lock().unwrap().push((i, s));
                        })
                        .unwrap();
                        seq += 1;
                    }
                    burst as usize
                })
                .unwrap()
            });
            handles.push(p);
        }
        // Two OS threads send while the harness polls.
        let done = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for os in 0..2u64 {
                let rx = rx.clone();
                let log = log.clone();
                let done = &done;
                s.spawn(move || {
                    let sender = 100 + os;
                    for seq in 0..PER_OS {
                        let log = log.clone();
                        // The queue is far deeper than what can be outstanding here.
                        rx.send(move || log.lock().unwrap().push((sender, seq)))
                            .unwrap();
                        if seq % 64 == 0 {
                            std::thread::yield_now();
                        }
                    }
                    done.fetch_add(1, Ordering::SeqCst);
                });
            }
            let total = (3 * PER_THREAD + 2 * PER_OS) as usize;
            let ok = h.run_until(1_000_000, || {
                done.load(Ordering::SeqCst) == 2 && log.lock().unwrap().len() == total
            });
            assert!(
                ok,
                "all messages delivered (got {})",
                log.lock().unwrap().len()
            );
        });
        h.run_until_idle();
        let expected: HashMap<u64, u64> = [
            (1, PER_THREAD),
            (2, PER_THREAD),
            (3, PER_THREAD),
            (100, PER_OS),
            (101, PER_OS),
        ]
        .into();
        check_per_sender(&log.lock().unwrap(), &expected);
        drop(handles);
    }
}

#[test]
fn messages_run_on_the_target_thread_and_never_inside_send() {
    let mut h = Harness::new(2, 3);
    let t1 = h.handle(1);
    let ran_on = Arc::new(Mutex::new(Vec::new()));
    let r = ran_on.clone();
    let inside = h.on(0, move || {
        let flag = Arc::new(AtomicBool::new(false));
        let f = flag.clone();
        t1.send(move || {
            f.store(true, Ordering::SeqCst);
            r.lock().unwrap().push(current().unwrap().id());
        })
        .unwrap();
        flag.load(Ordering::SeqCst)
    });
    assert!(!inside, "send must not run the message inline");
    assert!(ran_on.lock().unwrap().is_empty());
    assert_eq!(h.poll_thread(0), 0, "the message is not for thread 0");
    assert!(h.poll_thread(1) > 0);
    assert_eq!(*ran_on.lock().unwrap(), vec![h.handle(1).id()]);
    assert!(
        h.wakes() >= 1,
        "sending asks the scheduler to wake the target"
    );
}

#[test]
fn a_poll_runs_at_most_a_batch_of_messages() {
    let mut h = Harness::new(1, 1);
    let t = h.handle(0);
    let count = Arc::new(AtomicUsize::new(0));
    for _ in 0..(MSG_BATCH * 2 + 5) {
        let c = count.clone();
        t.send(move || {
            c.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    }
    assert_eq!(h.poll_thread(0), MSG_BATCH);
    assert_eq!(count.load(Ordering::SeqCst), MSG_BATCH);
    h.run_until_idle();
    assert_eq!(count.load(Ordering::SeqCst), MSG_BATCH * 2 + 5);
}

/// Sets `dropped` when dropped: shows that a rejected closure was dropped without running.
struct DropFlag(Arc<AtomicBool>);
impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[test]
fn full_queue_rejects_and_recovers_after_polling() {
    const DEPTH: usize = 4;
    let mut h = Harness::new(0, 1);
    let i = h.add_thread_with_depth("tiny", DEPTH);
    let t = h.handle(i);
    let ran = Arc::new(AtomicUsize::new(0));
    for _ in 0..DEPTH {
        let r = ran.clone();
        t.send(move || {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    }
    let rejected_ran = Arc::new(AtomicBool::new(false));
    let rejected_dropped = Arc::new(AtomicBool::new(false));
    let guard = DropFlag(rejected_dropped.clone());
    let rr = rejected_ran.clone();
    let err = t
        .send(move || {
            let _g = &guard;
            rr.store(true, Ordering::SeqCst);
        })
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::QueueFull);
    assert!(
        err.to_string().contains("tiny"),
        "error names the thread: {err}"
    );
    assert!(
        rejected_dropped.load(Ordering::SeqCst),
        "the rejected closure is dropped at once"
    );
    assert_eq!(ran.load(Ordering::SeqCst), 0);

    assert_eq!(h.poll_thread(i), DEPTH);
    assert_eq!(ran.load(Ordering::SeqCst), DEPTH);
    for _ in 0..DEPTH {
        let r = ran.clone();
        t.send(move || {
            r.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
    }
    h.run_until_idle();
    assert_eq!(ran.load(Ordering::SeqCst), 2 * DEPTH);
    assert!(
        !rejected_ran.load(Ordering::SeqCst),
        "the rejected closure never runs"
    );
}

#[test]
fn depth_zero_is_clamped_to_one() {
    let mut h = Harness::new(0, 1);
    let i = h.add_thread_with_depth("zero", 0);
    let t = h.handle(i);
    t.send(|| {}).unwrap();
    assert_eq!(t.send(|| {}).unwrap_err().kind(), ErrorKind::QueueFull);
    h.run_until_idle();
    t.send(|| {}).unwrap();
    const { assert!(DEFAULT_QUEUE_DEPTH > MSG_BATCH) };
}

#[test]
fn send_to_a_removed_thread_is_thread_gone() {
    let mut h = Harness::new(2, 5);
    let t1 = h.handle(1);
    let queued_ran = Arc::new(AtomicBool::new(false));
    let q = queued_ran.clone();
    t1.send(move || q.store(true, Ordering::SeqCst)).unwrap();
    h.remove_thread(1);
    assert!(
        queued_ran.load(Ordering::SeqCst),
        "messages queued before removal still run"
    );
    assert!(t1.is_exited());
    let ran = Arc::new(AtomicBool::new(false));
    let r = ran.clone();
    let err = t1
        .send(move || r.store(true, Ordering::SeqCst))
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::ThreadGone);
    // From another lightweight thread too.
    let err = h.on(0, move || t1.send(|| {}).unwrap_err().kind());
    assert_eq!(err, ErrorKind::ThreadGone);
    h.run_until_idle();
    assert!(!ran.load(Ordering::SeqCst));
}

#[test]
fn exit_current_runs_queued_messages_then_rejects_new_ones() {
    let mut h = Harness::new(2, 9);
    let t0 = h.handle(0);
    let order = Arc::new(Mutex::new(Vec::new()));
    let o1 = order.clone();
    t0.send(move || {
        o1.lock().unwrap().push("exit requested");
        exit_current();
    })
    .unwrap();
    let o2 = order.clone();
    t0.send(move || o2.lock().unwrap().push("queued after exit request"))
        .unwrap();
    h.run_until_idle();
    assert!(t0.is_exited());
    assert_eq!(
        *order.lock().unwrap(),
        vec!["exit requested", "queued after exit request"]
    );
    assert_eq!(t0.send(|| {}).unwrap_err().kind(), ErrorKind::ThreadGone);
    // The other thread is unaffected.
    assert!(!h.handle(1).is_exited());
    h.handle(1).send(|| {}).unwrap();
    assert_eq!(h.run_until_idle(), 1);
}

#[test]
fn spawn_thread_from_a_thread_joins_the_harness() {
    let mut h = Harness::new(1, 11);
    let child_ran_on = Arc::new(Mutex::new(None));
    let c = child_ran_on.clone();
    let child = h.on(0, move || {
        let child = spawn_thread("child", None).unwrap();
        let me = child.id();
        child
            .send(move || {
                *c.lock().unwrap() = Some((me, current().unwrap().name().to_string()));
                exit_current();
            })
            .unwrap();
        child
    });
    assert_eq!(h.len(), 1, "the new thread is adopted on the next poll");
    h.run_until_idle();
    assert_eq!(h.len(), 2);
    assert_eq!(
        *child_ran_on.lock().unwrap(),
        Some((child.id(), "child".to_string()))
    );
    assert!(child.is_exited());
    // Outside a lightweight thread, spawn_thread is refused.
    assert_eq!(
        spawn_thread("x", None).unwrap_err().kind(),
        ErrorKind::WrongThread
    );
    assert!(current().is_none());
}
