//! The uring channel's side of the reactor's sleep protocol: while the reactor polls, the
//! kernel is told not to signal the channel's eventfd ([`disarm`], from `poll`); before the
//! reactor may sleep with requests in flight, [`arm`] turns the signal back on, resets the
//! eventfd, and only then looks for completions. A completion posted (or, on a deferred ring,
//! queued) before the signal is on is seen by that look; one after it signals the eventfd and
//! wakes the reactor. Any other order loses a wake-up: a completion landing between the look
//! and the signal being on (or between the look and the reset) leaves a reactor asleep on an
//! eventfd nobody will write.
//!
//! The steps are the operations of [`WakeOps`], so that the test below can make a real
//! completion arrive before each step in turn, on real rings of each kind.
//!
//! Thread contract: called by the channel's poller, on the thread that owns the ring.

use std::os::fd::RawFd;

use ferrite_aio::sys;
use io_uring::IoUring;

/// The ring operations of [`arm`], in the order it makes them.
pub(crate) trait WakeOps {
    /// Lets the kernel signal the eventfd on completions (clears
    /// `IORING_CQ_EVENTFD_DISABLED`).
    fn enable_signal(&mut self);
    /// Resets the eventfd.
    fn reset(&mut self);
    /// True when the completion queue is empty and the kernel has flagged no completion it
    /// holds for this task (deferred or cooperative task running).
    fn nothing_pending(&mut self) -> bool;
}

/// The operations on a channel's ring and eventfd.
pub(crate) struct RingWake<'a> {
    pub ring: &'a mut IoUring,
    pub efd: Option<RawFd>,
}

impl WakeOps for RingWake<'_> {
    fn enable_signal(&mut self) {
        self.ring.completion().enable_eventfd();
    }

    fn reset(&mut self) {
        if let Some(fd) = self.efd {
            sys::eventfd_drain(fd);
        }
    }

    fn nothing_pending(&mut self) -> bool {
        self.ring.completion().is_empty() && !self.ring.submission().taskrun()
    }
}

/// Polling: stops the kernel's eventfd signal per completion batch (it would only cost a
/// signal, and the reactor's epoll a wake-up); `signal_on` tracks the flag.
pub(crate) fn disarm(ring: &mut IoUring, signal_on: &mut bool) {
    if *signal_on {
        ring.completion().disable_eventfd();
        *signal_on = false;
    }
}

/// Before a sleep with requests in flight: turns the signal on and resets the eventfd, then
/// looks at the completion queue and the task-run flag. True if the reactor may sleep (any
/// later completion will signal the eventfd). The kernel publishes the CQ tail, or sets the
/// flag with a locked instruction, then reads the disabled flag; the fence orders our store of
/// that flag before our loads.
pub(crate) fn arm(ops: &mut impl WakeOps, signal_on: &mut bool) -> bool {
    if !*signal_on {
        ops.enable_signal();
        *signal_on = true;
    }
    std::sync::atomic::fence(std::sync::atomic::Ordering::SeqCst);
    ops.reset();
    ops.nothing_pending()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // Test code: a failed unwrap is a failed test.

    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::time::{Duration, Instant};

    use io_uring::{opcode, types};

    use super::*;
    use crate::io::RingKind;

    /// The real operations, with a completion made to arrive just before operation `at`
    /// (counted from 0; past the last one: after `arm` returned).
    struct Inject<'a> {
        real: RingWake<'a>,
        step: usize,
        at: usize,
        pipe_w: RawFd,
    }

    impl Inject<'_> {
        fn before_op(&mut self) {
            if self.step == self.at {
                complete_now(self.real.ring, self.pipe_w);
            }
            self.step += 1;
        }
    }

    impl WakeOps for Inject<'_> {
        fn enable_signal(&mut self) {
            self.before_op();
            self.real.enable_signal();
        }
        fn reset(&mut self) {
            self.before_op();
            self.real.reset();
        }
        fn nothing_pending(&mut self) -> bool {
            self.before_op();
            self.real.nothing_pending()
        }
    }

    /// Writes the byte the ring's read waits for, then waits until the kernel has made the
    /// completion visible to the poller (posted, or flagged as held for this task).
    fn complete_now(ring: &mut IoUring, pipe_w: RawFd) {
        // SAFETY: writes one byte from a live local to our pipe's write end.
        let n = unsafe { libc::write(pipe_w, [7u8].as_ptr().cast(), 1) };
        assert_eq!(n, 1, "{}", std::io::Error::last_os_error());
        let deadline = Instant::now() + Duration::from_secs(10);
        while ring.completion().is_empty() && !ring.submission().taskrun() {
            assert!(Instant::now() < deadline, "the read never completed");
            // A system call: lets cooperative task work run on the way back.
            std::thread::yield_now();
        }
    }

    fn readable(fd: RawFd, wait: Duration) -> bool {
        let mut p = libc::pollfd {
            fd,
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd; the fd is open for the call.
        let r = unsafe { libc::poll(&mut p, 1, wait.as_millis() as libc::c_int) };
        r == 1 && p.revents & libc::POLLIN != 0
    }

    /// One scenario on a fresh ring of `kind`: a read in flight on an empty pipe, the poller's
    /// `disarm`, then `arm` with the completion arriving before its operation `at`. Returns
    /// how many operations `arm` made.
    fn scenario(kind: RingKind, at: usize) -> usize {
        let mut fds = [0; 2];
        // SAFETY: pipe2 writes two descriptors into the array. Blocking ends: the ring's read
        // waits for data instead of failing with EAGAIN.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: fresh descriptors nobody else owns.
        let (pipe_r, pipe_w) =
            unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let efd = ferrite_aio::sys::eventfd().unwrap();
        let mut buf = Box::new([0u8; 8]);
        let mut ring = kind.build().unwrap();
        ring.submitter().register_eventfd(efd.as_raw_fd()).unwrap();
        let e = opcode::Read::new(types::Fd(pipe_r.as_raw_fd()), buf.as_mut_ptr(), 8)
            .build()
            .user_data(1);
        // SAFETY: the buffer outlives the request (it is reaped below, before `buf` drops).
        unsafe { ring.submission().push(&e).unwrap() };
        ring.submit().unwrap();
        let mut signal_on = true;
        disarm(&mut ring, &mut signal_on);
        assert!(RingWake {
            ring: &mut ring,
            efd: None
        }
        .nothing_pending());
        let mut ops = Inject {
            real: RingWake {
                ring: &mut ring,
                efd: Some(efd.as_raw_fd()),
            },
            step: 0,
            at,
            pipe_w: pipe_w.as_raw_fd(),
        };
        let may_sleep = arm(&mut ops, &mut signal_on);
        let made = ops.step;
        if at >= made {
            complete_now(&mut ring, pipe_w.as_raw_fd());
        }
        // The invariant: a poller that lets the reactor sleep has the eventfd signalled by
        // the completion it has not seen.
        if may_sleep {
            let when = if at >= made {
                "after arm".to_string()
            } else {
                format!("before operation {at} of {made} of arm")
            };
            assert!(
                readable(efd.as_raw_fd(), Duration::from_secs(2)),
                "{kind:?} ring, completion {when}: arm said the reactor may sleep, and the \
                 eventfd was not signalled (a lost wake-up)"
            );
        }
        // Reap the read (posted by an enter on a deferred ring): it read the byte.
        ring.submit_and_wait(1).unwrap();
        let cqe = ring.completion().next().unwrap();
        assert_eq!((cqe.user_data(), cqe.result()), (1, 1), "{kind:?}");
        made
    }

    /// Every ring kind the channel may use, with a real completion arriving before each
    /// operation of `arm` in turn, and after it: a reordering of `arm` (the look before the
    /// signal is on, or the reset after the look) or a missing re-enable fails here.
    #[test]
    fn no_lost_wakeup_whenever_the_completion_arrives() {
        let mut kinds = 0;
        for kind in [RingKind::Deferred, RingKind::Coop, RingKind::Plain] {
            if let Err(e) = kind.build() {
                // Older kernels lack deferred or cooperative task running; the channel then
                // falls back to the next kind, and so does this test.
                assert_eq!(e.raw_os_error(), Some(libc::EINVAL), "{kind:?}: {e}");
                continue;
            }
            kinds += 1;
            let made = scenario(kind, usize::MAX);
            assert_eq!(
                made, 3,
                "{kind:?}: arm's operations changed: update this test"
            );
            for at in 0..=made {
                scenario(kind, at);
            }
        }
        assert!(kinds > 0, "no io_uring ring could be set up");
    }
}
