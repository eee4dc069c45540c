//! Sleeping reactors and what wakes them: messages (no lost wake-up under stress), timed
//! pollers, registered fds; poll mode never sleeps; a reactor with nothing due stays asleep.
#![allow(clippy::unwrap_used, clippy::manual_is_multiple_of)] // is_multiple_of needs Rust 1.87; MSRV is 1.80

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex};
use std::time::{Duration, Instant};

use common::{call, config, serial, start, start_cfg, wait_until, Rt, SOON};
use ferrite_reactor::{
    register_fd, register_poller, register_poller_obj, Poll, PollMode, PollerHandle, RuntimeConfig,
    ThreadHandle,
};

/// A non-blocking eventfd owned by the test.
fn eventfd() -> OwnedFd {
    // SAFETY: eventfd takes no pointers; the result is checked before use.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    assert!(fd >= 0, "eventfd: {}", std::io::Error::last_os_error());
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn efd_write(fd: RawFd, v: u64) {
    // SAFETY: writes 8 bytes from a live u64.
    let n = unsafe { libc::write(fd, (&v as *const u64).cast(), 8) };
    assert_eq!(n, 8, "eventfd write: {}", std::io::Error::last_os_error());
}

/// Reads and resets the counter; 0 if it was not readable.
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

fn sleeps(rt: &Rt, reactor: usize) -> u64 {
    rt.reactors()[reactor].sleeps
}

/// Sends `iters` messages from this OS thread to `t`, each waited for (5 s at most), pausing
/// 1-2 ms now and then so that the reactor falls asleep just before the next send.
fn stress(t: &ThreadHandle, iters: u64) {
    let (tx, rx) = mpsc::channel::<u64>();
    let tx = Arc::new(Mutex::new(tx));
    let mut rng = 0x9e37_79b9_7f4a_7c15u64;
    for i in 0..iters {
        let tx = tx.clone();
        t.send(move || {
            let _ = tx.lock().unwrap().send(i);
        })
        .unwrap();
        match rx.recv_timeout(SOON) {
            Ok(got) => assert_eq!(got, i, "messages arrive in order"),
            Err(_) => panic!("message {i} lost: no effect within 5 s"),
        }
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        match rng % 64 {
            0 => std::thread::sleep(Duration::from_millis(1 + rng % 2)),
            1..=8 => std::thread::sleep(Duration::from_micros(rng % 200)),
            9..=16 => std::thread::yield_now(),
            _ => {}
        }
    }
}

#[test]
fn no_lost_wakeup_in_interrupt_mode() {
    let _s = serial();
    let rt = start(&[0], PollMode::Interrupt, false);
    let t = rt.spawn_thread("target", Some(0)).unwrap();
    stress(&t, 20_000);
    assert!(sleeps(&rt, 0) > 0, "the reactor slept");
}

#[test]
fn no_lost_wakeup_in_adaptive_mode_with_a_tiny_threshold() {
    let _s = serial();
    let cfg = RuntimeConfig {
        idle_threshold_us: 5,
        ..config(&[0], PollMode::Adaptive, false)
    };
    let rt = start_cfg(cfg);
    let t = rt.spawn_thread("target", Some(0)).unwrap();
    stress(&t, 20_000);
    assert!(sleeps(&rt, 0) > 0, "the reactor slept");
}

#[test]
fn no_lost_wakeup_with_two_reactors_and_concurrent_senders() {
    let _s = serial();
    let rt = start(&[0, 1], PollMode::Interrupt, false);
    let ts: Vec<ThreadHandle> = (0..2)
        .map(|r| rt.spawn_thread("target", Some(r)).unwrap())
        .collect();
    std::thread::scope(|s| {
        for t in &ts {
            s.spawn(move || stress(t, 5_000));
        }
    });
    assert!(sleeps(&rt, 0) > 0 && sleeps(&rt, 1) > 0);
}

#[test]
fn poll_mode_never_sleeps() {
    let _s = serial();
    let rt = start(&[0], PollMode::Poll, false);
    let t = rt.spawn_thread("target", Some(0)).unwrap();
    stress(&t, 2_000);
    std::thread::sleep(Duration::from_millis(20));
    assert_eq!(sleeps(&rt, 0), 0);
    assert!(!rt.reactors()[0].in_interrupt);
}

#[test]
fn an_idle_interrupt_reactor_is_asleep() {
    let _s = serial();
    let rt = start(&[0], PollMode::Interrupt, false);
    call(&rt.app_thread(), || ());
    assert!(
        wait_until(SOON, || rt.reactors()[0].in_interrupt),
        "sleeping in epoll"
    );
    let before = sleeps(&rt, 0);
    std::thread::sleep(Duration::from_millis(300));
    let slept = sleeps(&rt, 0) - before;
    assert!(
        slept <= 5,
        "nothing due: the reactor stays asleep (went to sleep {slept} times)"
    );
    // Time asleep is accounted as idle when the reactor wakes (at the latest after 1 s).
    assert!(wait_until(SOON, || {
        let r = &rt.reactors()[0];
        r.idle > r.busy
    }));
}

#[test]
fn a_timed_poller_wakes_a_sleeping_reactor() {
    let _s = serial();
    let rt = start(&[0], PollMode::Interrupt, false);
    let t = rt.spawn_thread("timer", Some(0)).unwrap();
    let fired = Arc::new(AtomicU64::new(0));
    let f = fired.clone();
    let started = Instant::now();
    let p: PollerHandle = call(&t, move || {
        register_poller("5ms", 5_000, move || {
            f.fetch_add(1, Ordering::SeqCst);
            1
        })
        .unwrap()
    });
    // It keeps firing (20 times take 100 ms; a loaded machine may need longer) ...
    assert!(
        wait_until(SOON, || fired.load(Ordering::SeqCst) >= 20),
        "the timed poller stopped firing ({} times)",
        fired.load(Ordering::SeqCst)
    );
    // ... never more often than its period ...
    let n = fired.load(Ordering::SeqCst);
    let elapsed_ms = started.elapsed().as_millis() as u64;
    let max = elapsed_ms / 5 + 1;
    assert!(
        n <= max,
        "fired {n} times in {elapsed_ms} ms: more often than every 5 ms"
    );
    assert!(
        sleeps(&rt, 0) >= n / 2,
        "it slept between firings ({} sleeps)",
        sleeps(&rt, 0)
    );
    call(&t, move || drop(p));
}

#[test]
fn a_paused_timed_poller_does_not_keep_the_reactor_awake() {
    let _s = serial();
    let rt = start(&[0], PollMode::Interrupt, false);
    let t = rt.spawn_thread("paused", Some(0)).unwrap();
    let fired = Arc::new(AtomicU64::new(0));
    let f = fired.clone();
    let p: PollerHandle = call(&t, move || {
        let p = register_poller("1ms", 1_000, move || {
            f.fetch_add(1, Ordering::SeqCst);
            1
        })
        .unwrap();
        p.pause();
        p
    });
    // Let its (paused) deadline pass, then watch the reactor for a while.
    std::thread::sleep(Duration::from_millis(20));
    let before = sleeps(&rt, 0);
    std::thread::sleep(Duration::from_millis(300));
    let slept = sleeps(&rt, 0) - before;
    assert_eq!(fired.load(Ordering::SeqCst), 0);
    assert!(
        slept <= 5,
        "a paused poller must not make the reactor spin ({slept} sleeps in 300 ms)"
    );
    // Resumed, it fires and wakes the reactor again.
    let p = call(&t, move || {
        p.resume();
        p
    });
    assert!(wait_until(SOON, || fired.load(Ordering::SeqCst) >= 5));
    call(&t, move || drop(p));
}

/// Registers `fd` on `t` with a poller that drains it into `seen`; returns the guards.
fn watch_fd(
    t: &ThreadHandle,
    fd: RawFd,
    seen: Arc<AtomicU64>,
    os: Arc<Mutex<String>>,
) -> PollerHandle {
    call(t, move || {
        let reg = register_fd(fd).unwrap();
        register_poller("drain", 0, move || {
            let _keep = &reg;
            let v = efd_read(fd);
            if v > 0 {
                seen.fetch_add(v, Ordering::SeqCst);
                *os.lock().unwrap() = common::os_name();
            }
            v as usize
        })
        .unwrap()
    })
}

#[test]
fn a_registered_fd_wakes_a_sleeping_reactor() {
    let _s = serial();
    let rt = start(&[0], PollMode::Interrupt, false);
    let t = rt.spawn_thread("fd-waiter", Some(0)).unwrap();
    let efd = eventfd();
    let seen = Arc::new(AtomicU64::new(0));
    let os = Arc::new(Mutex::new(String::new()));
    let p = watch_fd(&t, efd.as_raw_fd(), seen.clone(), os.clone());
    let fd = efd.as_raw_fd();
    std::thread::scope(|s| {
        s.spawn(|| {
            for i in 1..=300u64 {
                if i % 10 == 0 {
                    // Give the reactor time to fall asleep first.
                    assert!(wait_until(SOON, || rt.reactors()[0].in_interrupt));
                }
                efd_write(fd, 1);
                assert!(
                    wait_until(SOON, || seen.load(Ordering::SeqCst) == i),
                    "write {i} not observed"
                );
            }
        });
    });
    assert_eq!(*os.lock().unwrap(), "reactor_0");
    assert!(sleeps(&rt, 0) >= 30);
    call(&t, move || drop(p));
}

#[test]
fn the_fd_of_an_exited_thread_no_longer_wakes_its_reactor() {
    let _s = serial();
    let rt = start(&[0, 1], PollMode::Interrupt, false);
    // Alone on reactor 1.
    let t = rt.spawn_thread("fd-owner", Some(1)).unwrap();
    let efd = eventfd();
    let seen = Arc::new(AtomicU64::new(0));
    let os = Arc::new(Mutex::new(String::new()));
    let _p = watch_fd(&t, efd.as_raw_fd(), seen.clone(), os);
    efd_write(efd.as_raw_fd(), 1);
    assert!(wait_until(SOON, || seen.load(Ordering::SeqCst) == 1));
    t.send(ferrite_reactor::exit_current).unwrap();
    assert!(wait_until(SOON, || t.is_exited()));
    // The fd stays open and readable, but nobody on reactor 1 wants it any more.
    efd_write(efd.as_raw_fd(), 1);
    std::thread::sleep(Duration::from_millis(20));
    let before = sleeps(&rt, 1);
    std::thread::sleep(Duration::from_millis(300));
    let woke = sleeps(&rt, 1) - before;
    assert!(
        woke <= 5,
        "reactor 1 keeps waking for a dead thread's fd ({woke} times in 300 ms)"
    );
    assert_eq!(seen.load(Ordering::SeqCst), 1);
}

/// A device that is only polled: a command completes after `polls_needed` polls, and nothing
/// signals its completion, so the reactor must not sleep while one is in flight.
struct PolledDevice {
    in_flight: Arc<AtomicU64>,
    polls: u64,
    completed: Arc<AtomicU64>,
}

impl Poll for PolledDevice {
    fn poll(&mut self) -> usize {
        if self.in_flight.load(Ordering::SeqCst) == 0 {
            return 0;
        }
        self.polls += 1;
        if self.polls % 2000 == 0 {
            self.in_flight.fetch_sub(1, Ordering::SeqCst);
            self.completed.fetch_add(1, Ordering::SeqCst);
            return 1;
        }
        // Checked the device, nothing completed yet: no work.
        0
    }

    fn can_sleep(&mut self) -> bool {
        self.in_flight.load(Ordering::SeqCst) == 0
    }
}

#[test]
fn a_poller_that_refuses_to_sleep_keeps_the_reactor_polling() {
    let _s = serial();
    let rt = start(&[0], PollMode::Interrupt, false);
    let t = rt.spawn_thread("device", Some(0)).unwrap();
    let in_flight = Arc::new(AtomicU64::new(0));
    let completed = Arc::new(AtomicU64::new(0));
    let dev = PolledDevice {
        in_flight: in_flight.clone(),
        polls: 0,
        completed: completed.clone(),
    };
    let p: PollerHandle = call(&t, move || {
        register_poller_obj("polled-device", 0, Box::new(dev)).unwrap()
    });
    for n in 1..=3u64 {
        let f = in_flight.clone();
        // Submitted by a message: the completion arrives with no further signal.
        t.send(move || {
            f.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        assert!(
            wait_until(SOON, || completed.load(Ordering::SeqCst) == n),
            "command {n} completed while the reactor kept polling"
        );
        // Idle again: it may sleep now.
        assert!(wait_until(SOON, || rt.reactors()[0].in_interrupt));
    }
    call(&t, move || drop(p));
}
