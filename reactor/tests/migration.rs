//! Moving lightweight threads between reactors: no lost or reordered messages, the thread's
//! pollers, locals, channels and registered fds come along, and stop during a move.
#![allow(clippy::unwrap_used, clippy::manual_is_multiple_of)] // is_multiple_of needs Rust 1.87; MSRV is 1.80

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{call, os_name, serial, start, wait_until, SOON};
use ferrite_reactor::{
    current, register_fd, register_poller, with_local, ErrorKind, IoChannel, IoDevice, PollMode,
    PollerHandle, ThreadHandle,
};

#[derive(Default)]
struct Local(AtomicU64);

/// Channel state that remembers where it was created and counts its uses.
struct Chan {
    created_on: String,
    uses: AtomicU64,
}

fn running_on(t: &ThreadHandle) -> String {
    format!("reactor_{}", t.reactor().unwrap_or(usize::MAX))
}

#[test]
fn a_moved_thread_takes_its_pollers_locals_and_channels_along() {
    let _s = serial();
    for (mode, pin) in [
        (PollMode::Poll, true),
        (PollMode::Adaptive, false),
        (PollMode::Interrupt, false),
    ] {
        let rt = start(&[0, 1], mode, pin);
        let t = rt.spawn_thread("mover", Some(0)).unwrap();
        let dev = IoDevice::new("dev", || Chan {
            created_on: os_name(),
            uses: AtomicU64::new(0),
        });
        let where_polled = Arc::new(Mutex::new(String::new()));
        let wp = where_polled.clone();
        let d = dev.clone();
        let p: PollerHandle = call(&t, move || {
            with_local::<Local, _>(|l| l.0.store(42, Ordering::SeqCst));
            let ch: IoChannel<Chan> = d.get_channel().unwrap();
            // Timed, so that interrupt mode keeps polling it.
            register_poller("where", 1_000, move || {
                ch.uses.fetch_add(1, Ordering::SeqCst);
                let name = os_name();
                let mut w = wp.lock().unwrap();
                if *w != name {
                    *w = name;
                }
                0
            })
            .unwrap()
        });
        assert!(
            wait_until(SOON, || *where_polled.lock().unwrap() == "reactor_0"),
            "{mode:?}"
        );
        assert_eq!(dev.channel_count(), 1);

        t.move_to(1).unwrap();
        assert!(
            wait_until(SOON, || t.reactor() == Some(1)),
            "{mode:?}: reactor() reports 1"
        );
        assert!(
            wait_until(SOON, || *where_polled.lock().unwrap() == "reactor_1"),
            "{mode:?}: poller on reactor_1"
        );
        assert!(wait_until(SOON, || rt.reactors()[1].threads.contains(&t)));
        assert!(!rt.reactors()[0].threads.contains(&t));

        let d = dev.clone();
        let (name, local, created_on, me) = call(&t, move || {
            let ch = d.get_channel().unwrap();
            let uses = ch.uses.load(Ordering::SeqCst);
            assert!(uses > 0);
            (
                os_name(),
                with_local::<Local, _>(|l| l.0.load(Ordering::SeqCst)),
                ch.created_on.clone(),
                current(),
            )
        });
        assert_eq!(name, "reactor_1", "{mode:?}");
        assert_eq!(local, Some(42), "{mode:?}: the local came along");
        assert_eq!(
            created_on, "reactor_0",
            "{mode:?}: the same channel state came along"
        );
        assert_eq!(me, Some(t.clone()));
        assert_eq!(dev.channel_count(), 1, "{mode:?}: still one channel");

        // And back.
        t.move_to(0).unwrap();
        assert!(
            wait_until(SOON, || *where_polled.lock().unwrap() == "reactor_0"),
            "{mode:?}: moved back"
        );
        assert_eq!(t.reactor(), Some(0));
        call(&t, move || drop(p));
        rt.stop();
        assert_eq!(
            dev.channel_count(),
            0,
            "{mode:?}: channel destroyed at stop"
        );
    }
}

#[test]
fn messages_sent_during_moves_are_neither_lost_nor_reordered() {
    let _s = serial();
    const N: u64 = 100_000;
    for mode in [PollMode::Poll, PollMode::Interrupt] {
        let rt = start(&[0, 1], mode, false);
        let t = rt.spawn_thread("busy-mover", Some(0)).unwrap();
        let next = Arc::new(AtomicU64::new(0));
        let errors = Arc::new(AtomicU64::new(0));
        let ran_on = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let sender_done = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                for seq in 0..N {
                    // The sender also asks for moves in the middle of its stream, so that
                    // both reactors run messages however the OS schedules the mover below:
                    // at most one poll (32 messages) runs after a request before the move.
                    if seq % 5000 == 2500 {
                        t.move_to(((seq / 5000) % 2 == 0) as usize).unwrap();
                    }
                    loop {
                        let (next, errors, ran_on) = (next.clone(), errors.clone(), ran_on.clone());
                        let r = t.send(move || {
                            if next.load(Ordering::Relaxed) != seq {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                            next.store(seq + 1, Ordering::Relaxed);
                            let me = current().unwrap();
                            if os_name() != running_on(&me) {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                            ran_on[me.reactor().unwrap_or(0).min(1)]
                                .fetch_add(1, Ordering::Relaxed);
                        });
                        match r {
                            Ok(()) => break,
                            Err(e) if e.kind() == ErrorKind::QueueFull => std::thread::yield_now(),
                            Err(e) => panic!("send failed: {e}"),
                        }
                    }
                }
                sender_done.store(true, Ordering::SeqCst);
            });
            let mut target = 1;
            while !sender_done.load(Ordering::SeqCst) {
                t.move_to(target).unwrap();
                target = 1 - target;
                std::thread::sleep(Duration::from_micros(300));
            }
        });
        assert!(
            wait_until(Duration::from_secs(30), || next.load(Ordering::SeqCst) == N),
            "{mode:?}: all delivered"
        );
        assert_eq!(
            errors.load(Ordering::SeqCst),
            0,
            "{mode:?}: in order, on the reactor that owns the thread"
        );
        let (on0, on1) = (
            ran_on[0].load(Ordering::SeqCst),
            ran_on[1].load(Ordering::SeqCst),
        );
        assert_eq!(on0 + on1, N);
        assert!(
            on0 > 0 && on1 > 0,
            "{mode:?}: messages ran on both reactors ({on0}/{on1})"
        );
    }
}

fn eventfd() -> OwnedFd {
    // SAFETY: eventfd takes no pointers; the result is checked before use.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    assert!(fd >= 0);
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn efd_write(fd: RawFd) {
    let v = 1u64;
    // SAFETY: writes 8 bytes from a live u64.
    let n = unsafe { libc::write(fd, (&v as *const u64).cast(), 8) };
    assert_eq!(n, 8);
}

fn efd_read(fd: RawFd) -> u64 {
    let mut v = 0u64;
    // SAFETY: reads 8 bytes into a live u64; the fd is non-blocking.
    let n = unsafe { libc::read(fd, (&mut v as *mut u64).cast(), 8) };
    if n == 8 {
        v
    } else {
        0
    }
}

#[test]
fn a_registered_fd_keeps_waking_the_thread_after_a_move() {
    let _s = serial();
    let rt = start(&[0, 1], PollMode::Interrupt, false);
    let t = rt.spawn_thread("fd-mover", Some(0)).unwrap();
    let efd = eventfd();
    let fd = efd.as_raw_fd();
    let seen = Arc::new(AtomicU64::new(0));
    let last_os = Arc::new(Mutex::new(String::new()));
    let (s2, o2) = (seen.clone(), last_os.clone());
    let p: PollerHandle = call(&t, move || {
        let reg = register_fd(fd).unwrap();
        register_poller("drain", 0, move || {
            let _keep = &reg;
            let v = efd_read(fd);
            if v > 0 {
                *o2.lock().unwrap() = os_name();
                s2.fetch_add(v, Ordering::SeqCst);
            }
            v as usize
        })
        .unwrap()
    });
    let mut expect = 0;
    let round = |expect_os: &str, expect: &mut u64| {
        for _ in 0..50 {
            *expect += 1;
            efd_write(fd);
            assert!(
                wait_until(SOON, || seen.load(Ordering::SeqCst) == *expect),
                "write {expect} observed"
            );
            assert_eq!(*last_os.lock().unwrap(), expect_os);
            if *expect % 10 == 0 {
                std::thread::sleep(Duration::from_millis(2));
            }
        }
    };
    round("reactor_0", &mut expect);
    t.move_to(1).unwrap();
    assert!(wait_until(SOON, || t.reactor() == Some(1)));
    let sleeps1 = rt.reactors()[1].sleeps;
    round("reactor_1", &mut expect);
    assert!(
        rt.reactors()[1].sleeps > sleeps1,
        "reactor 1 slept and was woken by the fd"
    );
    // Reactor 0 no longer watches the fd: a write wakes only reactor 1.
    t.move_to(0).unwrap();
    assert!(wait_until(SOON, || t.reactor() == Some(0)));
    round("reactor_0", &mut expect);
    call(&t, move || drop(p));
}

static DROPS: Mutex<Vec<(u64, Option<u64>)>> = Mutex::new(Vec::new());

#[derive(Default)]
struct Tracked(AtomicU64);
impl Drop for Tracked {
    fn drop(&mut self) {
        let tag = self.0.load(Ordering::SeqCst);
        DROPS.lock().unwrap().push((tag, current().map(|t| t.id())));
    }
}

#[test]
fn stop_during_a_move_still_tears_the_thread_down() {
    let _s = serial();
    for i in 0..40u64 {
        let mode = if i % 2 == 0 {
            PollMode::Interrupt
        } else {
            PollMode::Poll
        };
        let rt = start(&[0, 1], mode, false);
        let t = rt.spawn_thread("caught", Some(0)).unwrap();
        let id = t.id();
        call(&t, move || {
            with_local::<Tracked, _>(|l| l.0.store(id, Ordering::SeqCst))
        });
        t.move_to(1).unwrap();
        if i % 4 < 2 {
            std::thread::sleep(Duration::from_micros(i * 5));
        }
        rt.stop();
        assert!(t.is_exited(), "iteration {i}: the thread was torn down");
        assert_eq!(t.send(|| {}).unwrap_err().kind(), ErrorKind::ThreadGone);
        let drops = DROPS.lock().unwrap();
        let mine: Vec<_> = drops.iter().filter(|(tag, _)| *tag == id).collect();
        assert_eq!(
            mine,
            vec![&(id, Some(id))],
            "iteration {i}: its local dropped once, on it"
        );
    }
}

#[test]
fn move_to_a_missing_reactor_is_an_error() {
    let _s = serial();
    let rt = start(&[0], PollMode::Interrupt, false);
    let t = rt.app_thread();
    assert_eq!(t.move_to(1).unwrap_err().kind(), ErrorKind::InvalidCpuMask);
    t.move_to(0).unwrap();
    assert_eq!(call(&t, os_name), "reactor_0");
}
