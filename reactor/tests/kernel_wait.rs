//! Adaptive mode with I/O waiting in the kernel: a poller that reports
//! [`Poll::waits_on_kernel`] lets its reactor sleep long before the generic idle threshold,
//! and every request still completes (woken by the fd the kernel signals); a poller that does
//! not report it keeps the reactor spinning until the threshold.
//!
//! The "kernel I/O" is a real kernel object: a timerfd, armed once per request (20 ms), whose
//! expiry makes its fd readable as a completion eventfd would.
//!
//! Also here: a thread holding a `ReactorPin` is not moved (kernel objects bound to its OS
//! thread, such as a single-issuer io_uring, stay usable).
#![allow(clippy::unwrap_used)] // tests

mod common;

use std::cell::RefCell;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::{call, serial, start_cfg, wait_until};
use ferrite_reactor::{
    register_fd, register_poller_obj, CpuMask, FdRegistration, Poll, PollMode, PollerHandle,
    RuntimeConfig,
};

/// Requests per run.
const REQUESTS: u64 = 50;
/// How long the "kernel" takes per request: long enough that even a loaded machine gets the
/// reactor to its sleep before the timer fires, far below the generic 1 s threshold.
const LATENCY_NS: i64 = 20_000_000;

/// Issues `REQUESTS` one after the other on a timerfd; `completed` counts them.
struct TimerIo {
    fd: OwnedFd,
    in_flight: bool,
    issued: u64,
    completed: Arc<AtomicU64>,
    /// Whether to report the requests as waiting in the kernel.
    report: bool,
}

impl TimerIo {
    fn arm(&mut self) {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: 0,
                tv_nsec: LATENCY_NS,
            },
        };
        // SAFETY: `spec` is a live itimerspec; the old value is not asked for.
        let rc =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        assert_eq!(
            rc,
            0,
            "timerfd_settime: {}",
            std::io::Error::last_os_error()
        );
        self.in_flight = true;
        self.issued += 1;
    }
}

impl Poll for TimerIo {
    fn poll(&mut self) -> usize {
        if !self.in_flight {
            return 0;
        }
        let mut v = 0u64;
        // SAFETY: reads 8 bytes into a live u64; the fd is non-blocking.
        let n = unsafe { libc::read(self.fd.as_raw_fd(), (&mut v as *mut u64).cast(), 8) };
        if n != 8 || v == 0 {
            return 0;
        }
        self.in_flight = false;
        self.completed.fetch_add(1, Ordering::SeqCst);
        if self.issued < REQUESTS {
            self.arm();
        }
        1
    }

    fn can_sleep(&mut self) -> bool {
        // The timerfd is registered: its expiry wakes the reactor.
        true
    }

    fn waits_on_kernel(&mut self) -> bool {
        self.report && self.in_flight
    }
}

/// Keeps the poller and the fd registration alive on their thread (dropped with it).
#[derive(Default)]
struct Held(RefCell<Vec<(FdRegistration, PollerHandle)>>);

fn timerfd() -> OwnedFd {
    // SAFETY: timerfd_create takes no pointers; the result is checked before use.
    let fd = unsafe {
        libc::timerfd_create(
            libc::CLOCK_MONOTONIC,
            libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
        )
    };
    assert!(
        fd >= 0,
        "timerfd_create: {}",
        std::io::Error::last_os_error()
    );
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Runs `REQUESTS` requests on a fresh adaptive runtime whose generic idle threshold (1 s) is
/// far longer than a request; returns (requests completed, sleeps of the reactor meanwhile).
fn run(report: bool) -> (u64, u64) {
    let rt = start_cfg(RuntimeConfig {
        cpumask: CpuMask::from_cores(&[0]),
        mode: PollMode::Adaptive,
        idle_threshold_us: 1_000_000,
        kernel_wait_us: 0,
        pin: false,
        ..RuntimeConfig::default()
    });
    let t = rt.spawn_thread("kernel_io", Some(0)).unwrap();
    let completed = Arc::new(AtomicU64::new(0));
    let c = completed.clone();
    let before = rt.reactors()[0].sleeps;
    // The poller and fd registration live on the thread (dropped with it at stop).
    call(&t, move || {
        let mut io = TimerIo {
            fd: timerfd(),
            in_flight: false,
            issued: 0,
            completed: c,
            report,
        };
        let reg: FdRegistration = register_fd(io.fd.as_raw_fd()).unwrap();
        io.arm();
        let h: PollerHandle = register_poller_obj("timer_io", 0, Box::new(io)).unwrap();
        ferrite_reactor::with_local(|held: &Held| held.0.borrow_mut().push((reg, h)));
    });
    let done = wait_until(Duration::from_secs(20), || {
        completed.load(Ordering::SeqCst) == REQUESTS
    });
    let sleeps = rt.reactors()[0].sleeps - before;
    eprintln!("report={report}: {sleeps} sleeps over {REQUESTS} requests");
    assert!(
        done,
        "only {} of {REQUESTS} requests completed",
        completed.load(Ordering::SeqCst)
    );
    (completed.load(Ordering::SeqCst), sleeps)
}

#[test]
fn adaptive_reactor_sleeps_while_io_waits_in_the_kernel() {
    let _g = serial();
    let (n, sleeps) = run(true);
    assert_eq!(n, REQUESTS);
    // One sleep per request is expected; allow for a machine so loaded that the timer often
    // fires before the reactor gets to sleep.
    assert!(
        sleeps >= REQUESTS / 4,
        "the reactor slept {sleeps} times over {REQUESTS} kernel-waiting requests"
    );
}

#[test]
fn adaptive_reactor_spins_when_no_poller_waits_on_the_kernel() {
    let _g = serial();
    let (n, sleeps) = run(false);
    assert_eq!(n, REQUESTS);
    // The generic threshold (1 s) is never reached between 20 ms requests (at most once if
    // the machine stalls this reactor for a whole second).
    assert!(
        sleeps <= 1,
        "the reactor slept {sleeps} times though no poller reported kernel waits"
    );
}

/// Keeps the pin of a thread (dropped with it, or on demand).
#[derive(Default)]
struct Pin(RefCell<Option<ferrite_reactor::ReactorPin>>);

#[test]
fn a_pinned_thread_stays_on_its_reactor() {
    let _g = serial();
    let rt = start_cfg(RuntimeConfig {
        cpumask: CpuMask::from_cores(&[0, 1]),
        mode: PollMode::Interrupt,
        pin: false,
        ..RuntimeConfig::default()
    });
    let t = rt.spawn_thread("pinned", Some(0)).unwrap();
    call(&t, || {
        let p = ferrite_reactor::pin_to_reactor().unwrap();
        ferrite_reactor::with_local(|h: &Pin| *h.0.borrow_mut() = Some(p));
    });
    t.move_to(1).unwrap();
    // The move is refused at the reactor's next housekeeping; give it time to (not) happen.
    std::thread::sleep(Duration::from_millis(100));
    call(&t, || ());
    assert_eq!(t.reactor(), Some(0), "a pinned thread moved");
    call(&t, || {
        ferrite_reactor::with_local(|h: &Pin| h.0.borrow_mut().take());
    });
    t.move_to(1).unwrap();
    assert!(
        wait_until(Duration::from_secs(5), || t.reactor() == Some(1)),
        "the thread did not move once unpinned"
    );
    assert!(
        ferrite_reactor::pin_to_reactor().is_err(),
        "pinned outside a thread"
    );
}
