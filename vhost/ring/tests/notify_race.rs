//! The "enable, fence, re-check" protocol under a real race: a driver thread offers buffers
//! at random moments and kicks an eventfd only when the ring asks for it (virtio's driver
//! rules: NO_NOTIFY / avail_event for split, device event suppression for packed); the device
//! thread sleeps on the eventfd whenever `enable_notify` says it may. A lost wake-up would
//! leave the device asleep with work pending: the test fails if it sleeps 5 s.

// Test code: a failed unwrap is a failed test.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{fence, AtomicBool, Ordering};

use common::*;
use ferrite_vring::{Chain, GuestMemory};

const N: u32 = 10_000;
const SIZE: u16 = 16;

fn eventfd() -> OwnedFd {
    // SAFETY: eventfd has no memory arguments; the new fd is owned by the OwnedFd.
    let fd = unsafe { libc::eventfd(0, 0) };
    assert!(fd >= 0);
    // SAFETY: fd is a fresh descriptor owned by nobody else.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

fn kick(fd: &OwnedFd) {
    let v = 1u64.to_ne_bytes();
    // SAFETY: writes 8 bytes from a live buffer to an eventfd we own.
    let n = unsafe { libc::write(fd.as_raw_fd(), v.as_ptr().cast(), 8) };
    assert_eq!(n, 8);
}

/// Sleeps until kicked; false after 5 s without a kick.
fn wait(fd: &OwnedFd) -> bool {
    let mut p = libc::pollfd {
        fd: fd.as_raw_fd(),
        events: libc::POLLIN,
        revents: 0,
    };
    // SAFETY: one valid pollfd.
    let r = unsafe { libc::poll(&mut p, 1, 5000) };
    if r == 0 {
        return false;
    }
    let mut v = [0u8; 8];
    // SAFETY: reads 8 bytes into a live buffer from an eventfd we own.
    let n = unsafe { libc::read(fd.as_raw_fd(), v.as_mut_ptr().cast(), 8) };
    assert_eq!(n, 8);
    true
}

fn need_event(event: u16, new: u16, old: u16) -> bool {
    new.wrapping_sub(event).wrapping_sub(1) < new.wrapping_sub(old)
}

fn jitter(i: u32) {
    if i.is_multiple_of(7) {
        std::thread::yield_now();
    }
    if i.is_multiple_of(97) {
        std::thread::sleep(std::time::Duration::from_micros(50));
    }
}

/// Waits until `idle()` (which reaps completions) holds; false if the device gave up.
fn wait_idle(mut idle: impl FnMut() -> bool, done: &AtomicBool) -> bool {
    loop {
        if idle() {
            return true;
        }
        if done.load(Ordering::Acquire) {
            return false;
        }
        std::thread::yield_now();
    }
}

fn split_driver(mem: &GuestMemory, kickfd: &OwnedFd, event_idx: bool, done: &AtomicBool) {
    let mut drv = SplitDriver::new(mem, SIZE);
    let mut sent = 0;
    let mut burst = 0;
    while sent < N {
        // bursts of 1..=4 requests, each burst completed before the next: a missed kick
        // leaves both sides waiting
        if burst == 0 {
            let idle = || {
                while drv.used(mem).is_some() {}
                drv.free_count() == usize::from(SIZE)
            };
            if !wait_idle(idle, done) {
                return;
            }
            burst = 1 + sent * 7 % 4;
        }
        burst -= 1;
        let old = drv.avail_idx;
        drv.add(mem, &[r(HIGH, 16), w(HIGH + 0x100, 1)]);
        sent += 1;
        // the driver's half: publish the index, fence, then read the device's wish
        fence(Ordering::SeqCst);
        let kick_needed = if event_idx {
            need_event(drv.avail_event(mem), drv.avail_idx, old)
        } else {
            drv.used_flags(mem) & 1 == 0
        };
        if kick_needed {
            kick(kickfd);
        }
        jitter(sent);
    }
    while !done.load(Ordering::Acquire) {
        while drv.used(mem).is_some() {}
        std::thread::yield_now();
    }
}

fn packed_driver(mem: &GuestMemory, kickfd: &OwnedFd, event_idx: bool, done: &AtomicBool) {
    let mut drv = PackedDriver::new(mem, SIZE);
    let mut sent = 0;
    let mut burst = 0;
    while sent < N {
        if burst == 0 {
            let idle = || {
                while drv.used(mem).is_some() {}
                drv.free_descs == SIZE
            };
            if !wait_idle(idle, done) {
                return;
            }
            burst = 1 + sent * 7 % 4;
        }
        burst -= 1;
        let (old, old_wrap) = (drv.next_avail, drv.avail_wrap);
        drv.add(mem, &[w(HIGH, 16)]);
        sent += 1;
        fence(Ordering::SeqCst);
        let (off_wrap, flags) = drv.device_event(mem);
        let kick_needed = match flags {
            0 => true,
            1 => false,
            _ => {
                assert!(event_idx);
                // event position relative to this lap; old advanced by one descriptor
                let mut off = off_wrap & 0x7fff;
                if (off_wrap >> 15 != 0) != drv.avail_wrap {
                    off = off.wrapping_sub(SIZE);
                }
                let new = drv.next_avail;
                let old_lin = if old_wrap == drv.avail_wrap {
                    old
                } else {
                    old.wrapping_sub(SIZE)
                };
                need_event(off, new, old_lin)
            }
        };
        if kick_needed {
            kick(kickfd);
        }
        jitter(sent);
    }
    while !done.load(Ordering::Acquire) {
        while drv.used(mem).is_some() {}
        std::thread::yield_now();
    }
}

fn race(packed: bool, event_idx: bool) {
    let mem = memory();
    if packed {
        PackedDriver::new(&mem, SIZE);
    } else {
        SplitDriver::new(&mem, SIZE);
    }
    let mut dev = device(&mem, SIZE, packed, event_idx);
    let kickfd = eventfd();
    let done = AtomicBool::new(false);
    std::thread::scope(|s| {
        s.spawn(|| {
            if packed {
                packed_driver(&mem, &kickfd, event_idx, &done)
            } else {
                split_driver(&mem, &kickfd, event_idx, &done)
            }
        });
        // whatever happens below, let the driver thread finish
        struct Done<'a>(&'a AtomicBool);
        impl Drop for Done<'_> {
            fn drop(&mut self) {
                self.0.store(true, Ordering::Release);
            }
        }
        let _done = Done(&done);
        let mut c = Chain::new();
        let mut got = 0u32;
        let mut sleeps = 0u32;
        while got < N {
            dev.disable_notify(&mem).unwrap();
            while dev.pop(&mem, &mut c).unwrap() {
                dev.push_used(&mem, c.id(), 1).unwrap();
                got += 1;
            }
            dev.publish(&mem).unwrap();
            // a reactor runs other pollers here: widen the window in which the driver adds
            // a buffer while kicks are still suppressed
            if got.is_multiple_of(2) {
                let t = std::time::Instant::now();
                while t.elapsed() < std::time::Duration::from_micros(u64::from(got % 23)) {
                    std::hint::spin_loop();
                }
            }
            if got == N || dev.enable_notify(&mem).unwrap() {
                continue;
            }
            sleeps += 1;
            assert!(wait(&kickfd), "lost wake-up after {got} of {N} requests");
        }
        assert!(
            sleeps > 10,
            "the device slept only {sleeps} times: no race exercised"
        );
    });
}

#[test]
fn split_flags() {
    race(false, false);
}

#[test]
fn split_event_idx() {
    race(false, true);
}

#[test]
fn packed_flags() {
    race(true, false);
}

#[test]
fn packed_event_idx() {
    race(true, true);
}
