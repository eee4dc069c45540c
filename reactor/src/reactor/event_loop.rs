//! One reactor's loop: adopt incoming threads, poll every thread, hand over migrating ones,
//! drop exited ones, keep the epoll set in line with the threads' fds, sleep when idle.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::shared::{ReactorShared, RuntimeShared};
use super::PollMode;
use crate::clock;
use crate::sys::Epoll;
use crate::thread::{ThreadInner, NO_REACTOR};

pub(super) struct ReactorLocal {
    pub(super) shared: Arc<ReactorShared>,
    pub(super) rt: Arc<RuntimeShared>,
    pub(super) epoll: Epoll,
    // Boxed: a thread's address must stay stable while code runs on it, and it moves
    // between reactors.
    #[allow(clippy::vec_box)]
    pub(super) threads: Vec<Box<ThreadInner>>,
    pub(super) registered: Vec<RawFd>,
}

pub(super) fn run_reactor(rt: Arc<RuntimeShared>, shared: Arc<ReactorShared>, pin: bool) {
    if pin && !crate::sys::pin_current(shared.core) {
        tracing::warn!(
            "could not pin reactor {} to core {}",
            shared.index,
            shared.core
        );
    }
    // SAFETY: gettid has no arguments and cannot fail.
    let tid = unsafe { libc::syscall(libc::SYS_gettid) } as u64;
    shared.tid.store(tid, Ordering::Relaxed);
    let epoll = match Epoll::new() {
        Ok(e) => e,
        Err(e) => {
            tracing::error!("reactor {}: epoll_create failed: {e}", shared.index);
            return;
        }
    };
    if let Err(e) = epoll.add(shared.eventfd.as_raw_fd(), u64::MAX) {
        tracing::error!("reactor {}: cannot watch its eventfd: {e}", shared.index);
        return;
    }
    let mut r = ReactorLocal {
        shared,
        rt,
        epoll,
        threads: Vec::new(),
        registered: Vec::new(),
    };
    r.run();
}

impl ReactorLocal {
    fn adopt_incoming(&mut self) -> usize {
        // Checked every iteration: two loads, where a `pop` of the empty queue costs more.
        if self.shared.incoming.is_empty() {
            return 0;
        }
        let mut n = 0;
        while let Some(t) = self.shared.incoming.pop() {
            t.fds_changed.set(true);
            self.threads.push(t);
            n += 1;
        }
        if n > 0 {
            self.publish_threads();
        }
        n
    }

    fn publish_threads(&self) {
        if let Ok(mut l) = self.shared.threads.lock() {
            *l = self.threads.iter().map(|t| t.handle()).collect();
        }
    }

    fn sync_fds(&mut self) {
        if !self.threads.iter().any(|t| t.fds_changed.get()) {
            return;
        }
        let mut want: Vec<RawFd> = Vec::new();
        for t in &self.threads {
            t.fds_changed.set(false);
            want.extend(t.fds.borrow().iter().copied());
        }
        for fd in &self.registered {
            if !want.contains(fd) {
                let _ = self.epoll.remove(*fd);
            }
        }
        for fd in &want {
            if !self.registered.contains(fd) {
                if let Err(e) = self.epoll.add(*fd, *fd as u64) {
                    tracing::warn!("reactor {}: cannot watch fd {fd}: {e}", self.shared.index);
                }
            }
        }
        self.registered = want;
    }

    /// Stops watching the fds `t` registered (it is leaving this reactor or exiting). Threads
    /// that remain re-register theirs in `sync_fds` if they shared one.
    fn release_fds(&mut self, t: &ThreadInner) {
        for fd in t.fds.borrow().iter() {
            if self.registered.contains(fd) {
                let _ = self.epoll.remove(*fd);
                self.registered.retain(|x| x != fd);
            }
        }
    }

    /// Removes exited threads and hands migrating ones to their new reactor.
    fn housekeeping(&mut self) {
        let mut i = 0;
        let mut changed = false;
        let mut outgoing: Vec<(Box<ThreadInner>, usize)> = Vec::new();
        while i < self.threads.len() {
            let t = &self.threads[i];
            if t.exit_requested.get() {
                let t = self.threads.swap_remove(i);
                // Before teardown: its fds must not keep waking this reactor (sync_fds does
                // nothing when no thread is left to notice a change).
                self.release_fds(&t);
                t.teardown();
                changed = true;
                continue;
            }
            // A plain load first: the locked swap only when a move was asked for.
            let target = if t.shared.move_to.load(Ordering::Relaxed) == NO_REACTOR {
                NO_REACTOR
            } else {
                t.shared.move_to.swap(NO_REACTOR, Ordering::AcqRel)
            };
            if target != NO_REACTOR && target != self.shared.index {
                if t.shared.pinned.load(Ordering::Relaxed) > 0 {
                    tracing::warn!(
                        "thread '{}' stays on reactor {}: it holds kernel objects bound to this reactor's OS thread",
                        t.shared.name,
                        self.shared.index
                    );
                } else {
                    let t = self.threads.swap_remove(i);
                    self.release_fds(&t);
                    changed = true;
                    outgoing.push((t, target));
                    continue;
                }
            }
            i += 1;
        }
        if !changed {
            return;
        }
        // Publish before handing threads over, so that no snapshot lists a moving thread on
        // two reactors at once.
        self.publish_threads();
        let mut kept = false;
        for (t, target) in outgoing {
            if let Err((t, e)) = self.rt.try_place(t, target) {
                // Keep it here (a stopping runtime tears it down with this reactor's threads)
                // instead of dropping it without a teardown.
                tracing::error!(
                    "thread '{}' could not move to reactor {target}: {e}",
                    t.shared.name
                );
                self.threads.push(t);
                kept = true;
            }
        }
        if kept {
            self.publish_threads();
        }
        for t in &self.threads {
            t.fds_changed.set(true);
        }
    }

    fn run(&mut self) {
        let mut last_busy = clock::ticks();
        // Adaptive mode: whether some poller waits on the kernel, asked once per idle stretch.
        let mut kernel_wait: Option<bool> = None;
        loop {
            if self.rt.stop.load(Ordering::Acquire) {
                self.shutdown();
                return;
            }
            let mut work = self.adopt_incoming();
            let start = clock::ticks();
            let mut t0 = start;
            for t in &self.threads {
                // Its end time is its last poller's (one clock read per poller, none more); a
                // thread where nothing ran reads the clock once.
                let (w, end) = t.poll_timed(t0);
                let t1 = if end == t0 { clock::ticks() } else { end };
                let d = t1.wrapping_sub(t0);
                let counter = if w > 0 {
                    &t.shared.busy_ticks
                } else {
                    &t.shared.idle_ticks
                };
                // Single writer (this reactor): a plain load/store avoids a locked add.
                counter.store(
                    counter.load(Ordering::Relaxed).wrapping_add(d),
                    Ordering::Relaxed,
                );
                work += w;
                t0 = t1;
            }
            let d = t0.wrapping_sub(start);
            let counter = if work > 0 {
                &self.shared.busy_ticks
            } else {
                &self.shared.idle_ticks
            };
            counter.store(
                counter.load(Ordering::Relaxed).wrapping_add(d),
                Ordering::Relaxed,
            );
            self.housekeeping();
            self.sync_fds();
            if work > 0 {
                last_busy = t0;
                kernel_wait = None;
                continue;
            }
            match self.rt.mode {
                PollMode::Poll => continue,
                PollMode::Adaptive => {
                    let idle = t0.wrapping_sub(last_busy);
                    if idle < self.rt.idle_threshold_ticks {
                        // Idle path only: a busy reactor never gets here.
                        let kw = *kernel_wait.get_or_insert_with(|| {
                            self.threads.iter().any(|t| t.waits_on_kernel())
                        });
                        if !kw || idle < self.rt.kernel_wait_ticks {
                            std::hint::spin_loop();
                            continue;
                        }
                    }
                }
                PollMode::Interrupt => {}
            }
            self.try_sleep();
            last_busy = clock::ticks();
            kernel_wait = None;
        }
    }

    fn shutdown(&mut self) {
        // Run what is queued (bounded), then drop every thread on this reactor.
        for _ in 0..16 {
            self.adopt_incoming();
            let now = clock::ticks();
            let mut work = 0;
            for t in &self.threads {
                work += t.poll(now);
            }
            if work == 0 {
                break;
            }
        }
        for t in self.threads.drain(..) {
            t.teardown();
        }
        while let Some(t) = self.shared.incoming.pop() {
            t.teardown();
        }
        self.publish_threads();
    }
}
