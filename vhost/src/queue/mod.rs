//! The data path: one virtqueue polled by a poller on a reactor thread of the controller's
//! cpumask, its requests mapped to bdev I/O on that thread's bdev channel.
//!
//! Life of a request: `poll` pops a chain (`ferrite-vring` validates it into a segment list),
//! `blk::request::parse` reads the header and finds the status byte, the data segments are
//! translated to host pointers through the memory table (a segment outside guest memory or
//! spanning two regions fails the request), a `BdevIo` from the thread's pool carries them to
//! the bdev; its completion callback writes the status byte and pushes the chain to the used
//! ring; the next `poll` publishes the used entries and signals the call eventfd when the
//! driver asked for it (EVENT_IDX) and coalescing allows.
//!
//! No allocation per request: the chain and the parse scratch live in the queue, per-request
//! state is a slot indexed by the chain id (an id is unique while in flight), the I/O object
//! comes from the bdev pool. No lock: the queue is touched only on its thread.
//!
//! Sleep: `can_sleep` drains the kick eventfd, re-enables notifications and looks at the ring
//! once more (the vring's `enable_notify` fences and re-checks): only an empty ring lets the
//! reactor sleep, and the kick fd is registered with the reactor so a later kick wakes it.
//!
//! Stop (GET_VRING_BASE, disable, new memory table, disconnect, hot-remove, delete): a message
//! asks the queue to stop; it stops popping, waits for its bdev I/O to complete, publishes,
//! answers with the ring position and unregisters its poller. The control thread waits for
//! that answer, so the memory table is never unmapped under an I/O (the queue holds the
//! table until its last I/O is back in any case).
//!
//! A bdev that holds its I/O longer than the drain timeout ([`set_drain_timeout`], 60 s by
//! default) does not hold the control thread forever: the queue is *abandoned*. It answers
//! with the ring position at once and never touches the ring again: the requests still out
//! stay in flight for the guest (and in the inflight region, so a frontend that reconnects
//! with it gets them again), and their completions, whenever they come, write neither a
//! status byte nor a used entry, since a new session may own the ring by then. What the
//! bdev does with them when it finally acts is beyond the target: a late read still lands in
//! its buffer, which the guest may have reused by then, and a late write may land after a
//! newer write of the same blocks (the resubmitted copy, or the guest's next one). That is
//! the hazard of any device that completes after its driver gave up; the timeout only
//! bounds how long the control thread waits for it.

use std::fs::File;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use ferrite_bdev::{BdevChannel, IoVec};
use ferrite_reactor::{FdRegistration, Poll, PollerHandle, ThreadHandle};
use ferrite_vring::{Chain, InflightQueue, RingAddrs, RingBase, RingConfig, Vring};

use crate::blk::request::{Parsed, MAX_DATA_SEGS};
use crate::controller::CtrlShared;
use crate::memory::MemTable;

/// Requests popped per poll before yielding to the thread's other pollers.
const POP_BATCH: usize = 64;
/// How long the control thread waits for a queue's reactor to answer a message.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(60);

/// How long stopping a ring waits for its bdev I/O (ms): see the module docs.
static DRAIN_TIMEOUT_MS: AtomicU64 = AtomicU64::new(60_000);

/// Sets how long stopping a ring waits for the bdev I/O it has in flight before it abandons
/// that I/O (module docs); default 60 s, at least 1 ms. Thread contract: any thread; applies
/// to the stops that start after it.
pub fn set_drain_timeout(d: Duration) {
    let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX).max(1);
    DRAIN_TIMEOUT_MS.store(ms, Ordering::Relaxed);
}

fn drain_timeout() -> Duration {
    Duration::from_millis(DRAIN_TIMEOUT_MS.load(Ordering::Relaxed))
}

/// Everything a ring needs to start.
pub struct QueueSpec {
    /// Queue index.
    pub index: u16,
    /// Ring size.
    pub size: u16,
    /// Descriptor area (guest-physical).
    pub desc: u64,
    /// Driver (available) area (guest-physical).
    pub driver: u64,
    /// Device (used) area (guest-physical).
    pub device: u64,
    /// SET_VRING_BASE value.
    pub base: u32,
    /// Packed layout.
    pub packed: bool,
    /// EVENT_IDX negotiated.
    pub event_idx: bool,
    /// Indirect descriptors negotiated.
    pub indirect: bool,
    /// Kick eventfd.
    pub kick: File,
    /// Call eventfd.
    pub call: Option<File>,
    /// The memory table.
    pub mem: Arc<MemTable>,
    /// This queue's part of the inflight region.
    pub inflight: Option<InflightQueue>,
}

/// A running queue, as the control thread holds it.
pub struct Running {
    thread: ThreadHandle,
    /// Address of the queue's `Queue`, dereferenced only on `thread` (in messages).
    ptr: usize,
    /// Set by the queue, on `thread`, as it finishes: a message that finds it set must not
    /// dereference `ptr` (the queue is freed after that poll).
    done: Arc<AtomicBool>,
    packed: bool,
    base: u32,
}

#[derive(Clone, Copy)]
struct Slot {
    status: *mut u8,
    written: u32,
}

struct Queue {
    ctrl: Arc<CtrlShared>,
    index: u16,
    vring: Vring,
    /// Never reassigned while the queue lives: `poll` borrows the table apart from `self`.
    mem: Arc<MemTable>,
    /// `None` once the bdev is gone (hot-remove): requests then fail with IOERR.
    chan: Option<BdevChannel>,
    /// Hot-remove asked to release the channel once the I/O outstanding has completed.
    detach: Option<SyncSender<()>>,
    /// Gave up waiting for its I/O (module docs): it never touches the ring again.
    abandoned: bool,
    /// Finished (set in `finish`, on this thread); shared with [`Running::done`].
    done: Arc<AtomicBool>,
    kick: File,
    call: Option<File>,
    _kick_reg: Option<FdRegistration>,
    handle: Option<PollerHandle>,
    slots: Vec<Slot>,
    chain: Chain,
    scratch: Parsed,
    iovs: [IoVec; MAX_DATA_SEGS],
    /// A parsed request that found the I/O pool empty: retried before popping more.
    retry: Option<u16>,
    outstanding: usize,
    /// `outstanding` as last shown in the controller's listing.
    reported_inflight: usize,
    pending_publish: bool,
    notify_enabled: bool,
    broken: bool,
    stop: Option<SyncSender<u32>>,
    packed: bool,
    block_size: u64,
    // coalescing
    signal_pending: bool,
    last_signal: u64,
    window_start: u64,
    window_ios: u64,
}

/// Starts queue `spec.index` on its reactor thread; returns once it polls (or failed).
/// Thread contract: the control thread (blocks until the reactor answers).
pub fn start(ctrl: &Arc<CtrlShared>, spec: QueueSpec) -> Result<Running, String> {
    let n = ctrl.threads.len().max(1);
    let thread = ctrl
        .threads
        .get(usize::from(spec.index) % n)
        .cloned()
        .ok_or_else(|| "controller has no queue thread".to_string())?;
    let (tx, rx) = sync_channel::<Result<usize, String>>(1);
    let c = ctrl.clone();
    let packed = spec.packed;
    let base = spec.base;
    let done = Arc::new(AtomicBool::new(false));
    let d2 = done.clone();
    thread
        .send(move || {
            let _ = tx.send(build(c, spec, d2));
        })
        .map_err(|e| format!("cannot reach the queue thread: {e}"))?;
    let ptr = rx
        .recv_timeout(CONTROL_TIMEOUT)
        .map_err(|_| "the queue thread did not answer".to_string())??;
    Ok(Running {
        thread,
        ptr,
        done,
        packed,
        base,
    })
}

impl Running {
    /// Stops the queue after its in-flight requests complete; returns the ring position for
    /// GET_VRING_BASE. Thread contract: the control thread (blocks).
    pub fn stop(self) -> u32 {
        let (tx, rx) = sync_channel::<u32>(1);
        let ptr = self.ptr;
        let sent = self.thread.send(move || {
            // SAFETY: the queue lives until it has answered a stop request, and only this
            // (consumed) handle sends one; we are on its thread.
            let q = unsafe { &mut *(ptr as *mut Queue) };
            q.stop = Some(tx);
        });
        if sent.is_err() {
            return self.base;
        }
        match rx.recv_timeout(drain_timeout()) {
            Ok(b) => b,
            Err(_) => self.abandon(&rx),
        }
    }

    /// The queue did not drain in time: it is abandoned (module docs) and answers with its
    /// ring position at once. `rx` is the stop's answer, which a queue that finished just
    /// now has sent instead.
    fn abandon(self, rx: &Receiver<u32>) -> u32 {
        let (tx, rx2) = sync_channel::<u32>(1);
        let (ptr, done) = (self.ptr, self.done.clone());
        let sent = self.thread.send(move || {
            if done.load(Ordering::Acquire) {
                return; // it finished meanwhile: its answer is in `rx`
            }
            // SAFETY: the queue has not finished (checked on its own thread, where it would
            // finish), so it is alive; we are on its thread.
            let q = unsafe { &mut *(ptr as *mut Queue) };
            let _ = tx.send(q.abandon());
        });
        let answer = if sent.is_ok() {
            rx2.recv_timeout(CONTROL_TIMEOUT).ok()
        } else {
            None
        };
        answer.or_else(|| rx.try_recv().ok()).unwrap_or_else(|| {
            tracing::error!("vhost queue did not answer its stop in {CONTROL_TIMEOUT:?}");
            RingBase::initial(self.packed).to_vhost(self.packed)
        })
    }

    /// Releases the queue's bdev channel once its I/O outstanding has completed; later
    /// requests fail with IOERR (bdev hot-remove). Thread contract: not a reactor (blocks).
    pub fn detach_bdev(&self) {
        let (tx, rx) = sync_channel::<()>(1);
        let ptr = self.ptr;
        let sent = self.thread.send(move || {
            // SAFETY: the queue is alive while its `Running` handle exists; its thread.
            let q = unsafe { &mut *(ptr as *mut Queue) };
            q.detach = Some(tx);
        });
        if sent.is_ok() && rx.recv_timeout(drain_timeout()).is_err() {
            tracing::error!(
                "vhost queue did not release its bdev in {:?}",
                drain_timeout()
            );
        }
    }

    /// Replaces the call eventfd. Thread contract: the control thread; takes effect on the
    /// queue's thread.
    pub fn set_call(&self, call: Option<File>) {
        let ptr = self.ptr;
        let _ = self.thread.send(move || {
            // SAFETY: the queue is alive while its `Running` handle exists (it is freed only
            // after answering a stop, which consumes the handle); we are on its thread.
            let q = unsafe { &mut *(ptr as *mut Queue) };
            q.call = call;
        });
    }
}

fn build(ctrl: Arc<CtrlShared>, spec: QueueSpec, done: Arc<AtomicBool>) -> Result<usize, String> {
    // The frontend (re)starts the ring: whatever broke the previous one is behind it.
    ctrl.set_queue_broken(spec.index, false);
    ctrl.set_queue_inflight(spec.index, 0);
    // Without a bdev (hot-removed) the ring still runs and fails every request with IOERR.
    let desc = ctrl.desc.lock().ok().and_then(|d| d.clone());
    let chan = match desc.filter(|_| !ctrl.is_removed()) {
        Some(d) => Some(d.channel().map_err(|e| e.to_string())?),
        None => None,
    };
    let cfg = RingConfig {
        size: spec.size,
        addrs: RingAddrs {
            desc: spec.desc,
            driver: spec.driver,
            device: spec.device,
        },
        packed: spec.packed,
        event_idx: spec.event_idx,
        indirect: spec.indirect,
    };
    let mut vring = Vring::new(
        spec.mem.guest(),
        cfg,
        RingBase::from_vhost(spec.base, spec.packed),
    )
    .map_err(|e| e.to_string())?;
    if let Some(inf) = spec.inflight {
        // A region that does not validate: run without tracking (I/O goes on; what it
        // recorded as in flight cannot be resubmitted) rather than leave the ring stopped.
        if let Err(e) = vring.attach_inflight(spec.mem.guest(), inf) {
            tracing::error!(
                "vhost controller '{}': queue {}: {e}; running without inflight tracking",
                ctrl.name,
                spec.index
            );
        }
        let n = vring.resubmit_pending();
        if n > 0 {
            tracing::info!(
                "vhost controller '{}': queue {}: resubmitting {n} request(s) in flight",
                ctrl.name,
                spec.index
            );
        }
    }
    set_nonblocking(&spec.kick);
    let kick_reg = ferrite_reactor::register_fd(spec.kick.as_raw_fd()).ok();
    let null = Slot {
        status: std::ptr::null_mut(),
        written: 0,
    };
    let block_size = u64::from(ctrl.geometry().block_size);
    let q = Box::new(Queue {
        index: spec.index,
        vring,
        mem: spec.mem,
        chan,
        detach: None,
        abandoned: false,
        done,
        kick: spec.kick,
        call: spec.call,
        _kick_reg: kick_reg,
        handle: None,
        slots: vec![null; usize::from(spec.size)],
        chain: Chain::new(),
        scratch: Parsed::default(),
        iovs: [IoVec {
            base: std::ptr::null_mut(),
            len: 0,
        }; MAX_DATA_SEGS],
        retry: None,
        outstanding: 0,
        reported_inflight: 0,
        pending_publish: false,
        notify_enabled: false,
        broken: false,
        stop: None,
        packed: spec.packed,
        block_size,
        signal_pending: false,
        last_signal: 0,
        window_start: 0,
        window_ios: 0,
        ctrl,
    });
    // One signal as the ring (re)starts: a completion the previous incarnation (or the
    // previous start of this ring) wrote to the used ring while the frontend was not
    // forwarding the call eventfd would otherwise stay unseen by the guest until some later
    // request completes, and forever if the guest is waiting for it. A spurious interrupt
    // costs the driver one look at the used ring.
    q.signal_call();
    let raw = Box::into_raw(q);
    let name = format!("vhost_queue_{}", spec.index);
    match ferrite_reactor::register_poller_obj(&name, 0, Box::new(QueuePoller(raw))) {
        Ok(h) => {
            // SAFETY: `raw` came from Box::into_raw above and is owned by the poller now; we
            // are on its thread, before any poll.
            unsafe { (*raw).handle = Some(h) };
            Ok(raw as usize)
        }
        Err(e) => {
            // SAFETY: registration failed, so nobody else holds `raw`.
            drop(unsafe { Box::from_raw(raw) });
            Err(e.to_string())
        }
    }
}

fn set_nonblocking(f: &File) {
    let fd = f.as_raw_fd();
    // SAFETY: fcntl on an fd we own, reading then setting its status flags.
    unsafe {
        let fl = libc::fcntl(fd, libc::F_GETFL);
        if fl >= 0 {
            libc::fcntl(fd, libc::F_SETFL, fl | libc::O_NONBLOCK);
        }
    }
}

/// The poller: owns the queue (freed when the poller is dropped, after the queue finished).
struct QueuePoller(*mut Queue);

// SAFETY: the queue is only touched on the thread that owns the poller; the poller (with the
// thread) may move between reactors, never be used by two at once.
unsafe impl Send for QueuePoller {}

impl Drop for QueuePoller {
    fn drop(&mut self) {
        // SAFETY: the pointer came from Box::into_raw and only the poller frees it.
        let q = unsafe { Box::from_raw(self.0) };
        if q.outstanding > 0 {
            // Only when a thread exits after a drain timed out (a bdev that never completes):
            // the completions still to come point at this queue, so it is leaked, not freed.
            tracing::error!(
                "vhost controller '{}': queue {} dropped with {} I/O outstanding; leaking it",
                q.ctrl.name,
                q.index,
                q.outstanding
            );
            Box::leak(q);
        }
    }
}

impl Poll for QueuePoller {
    fn poll(&mut self) -> usize {
        // SAFETY: owned by this poller; on its thread.
        let q = unsafe { &mut *self.0 };
        q.poll()
    }

    fn can_sleep(&mut self) -> bool {
        // SAFETY: as in poll.
        let q = unsafe { &mut *self.0 };
        q.can_sleep()
    }
}

mod poll;
mod request;
