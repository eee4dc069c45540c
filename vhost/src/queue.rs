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
//! that answer, so the memory table is never unmapped under an I/O.

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use ferrite_bdev::{BdevChannel, BdevIo, IoVec};
use ferrite_reactor::{FdRegistration, Poll, PollerHandle, ThreadHandle};
use ferrite_vring::{
    Chain, ErrorKind as RingKind, InflightQueue, RingAddrs, RingBase, RingConfig, Vring,
};

use crate::blk::request::{self, parse, status, Kind, Parsed, MAX_DATA_SEGS};
use crate::controller::CtrlShared;
use crate::memory::MemTable;

/// Requests popped per poll before yielding to the thread's other pollers.
const POP_BATCH: usize = 64;
/// How long the control thread waits for a queue to start or drain.
const CONTROL_TIMEOUT: Duration = Duration::from_secs(60);

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
    mem: Arc<MemTable>,
    chan: BdevChannel,
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
    pending_publish: bool,
    notify_enabled: bool,
    broken: bool,
    stop: Option<SyncSender<u32>>,
    finished: bool,
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
    thread
        .send(move || {
            let _ = tx.send(build(c, spec));
        })
        .map_err(|e| format!("cannot reach the queue thread: {e}"))?;
    let ptr = rx
        .recv_timeout(CONTROL_TIMEOUT)
        .map_err(|_| "the queue thread did not answer".to_string())??;
    Ok(Running {
        thread,
        ptr,
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
        match rx.recv_timeout(CONTROL_TIMEOUT) {
            Ok(b) => b,
            Err(_) => {
                tracing::error!("vhost queue did not drain in {CONTROL_TIMEOUT:?}");
                RingBase::initial(self.packed).to_vhost(self.packed)
            }
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

fn build(ctrl: Arc<CtrlShared>, spec: QueueSpec) -> Result<usize, String> {
    let desc = ctrl
        .desc
        .lock()
        .ok()
        .and_then(|d| d.clone())
        .ok_or_else(|| "the bdev is gone".to_string())?;
    let chan = desc.channel().map_err(|e| e.to_string())?;
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
        vring
            .attach_inflight(spec.mem.guest(), inf)
            .map_err(|e| e.to_string())?;
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
        pending_publish: false,
        notify_enabled: false,
        broken: false,
        stop: None,
        finished: false,
        packed: spec.packed,
        block_size,
        signal_pending: false,
        last_signal: 0,
        window_start: 0,
        window_ios: 0,
        ctrl,
    });
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
        // SAFETY: the pointer came from Box::into_raw and only the poller frees it. A queue
        // with I/O outstanding is dropped only when its thread exits, after the bdev layer
        // has completed or dropped its I/O.
        drop(unsafe { Box::from_raw(self.0) });
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

impl Queue {
    fn poll(&mut self) -> usize {
        if self.finished {
            return 0;
        }
        let mut work = 0;
        if self.notify_enabled {
            self.notify_enabled = false;
            if self.vring.disable_notify(self.mem.guest()).is_err() {
                self.set_broken("cannot update the notification flags");
            }
        }
        if self.pending_publish {
            self.flush_used();
            work += 1;
        } else if self.signal_pending {
            self.maybe_signal();
        }
        if self.stop.is_some() {
            if self.outstanding == 0 && self.retry.is_none() {
                self.finish();
            }
            return work;
        }
        if self.broken {
            return work;
        }
        if let Some(id) = self.retry.take() {
            self.submit_parsed(id);
            if self.retry.is_some() {
                return work;
            }
            work += 1;
        }
        for _ in 0..POP_BATCH {
            match self.vring.pop(self.mem.guest(), &mut self.chain) {
                Ok(true) => {
                    work += 1;
                    self.handle_chain();
                    if self.retry.is_some() {
                        break;
                    }
                }
                Ok(false) => break,
                Err(e) if e.kind() == RingKind::Chain => {
                    work += 1;
                    tracing::warn!(
                        "vhost controller '{}': queue {}: {e}",
                        self.ctrl.name,
                        self.index
                    );
                    // No segments to find a status byte in: return it with nothing written.
                    let id = self.chain.id();
                    self.push(id, 0);
                }
                Err(e) => {
                    self.set_broken(&e.to_string());
                    break;
                }
            }
        }
        if self.pending_publish {
            self.flush_used();
        }
        work
    }

    fn can_sleep(&mut self) -> bool {
        if self.finished || self.broken {
            return !self.pending_publish && !self.signal_pending;
        }
        if self.stop.is_some()
            || self.pending_publish
            || self.signal_pending
            || self.retry.is_some()
        {
            return false;
        }
        // Drain the kick eventfd first, then re-enable notifications and look again: a kick
        // that comes after the drain makes the fd readable and wakes the reactor.
        let mut b = [0u8; 8];
        let _ = (&self.kick).read(&mut b);
        match self.vring.enable_notify(self.mem.guest()) {
            Ok(true) => false,
            Ok(false) => {
                self.notify_enabled = true;
                true
            }
            Err(e) => {
                self.set_broken(&e.to_string());
                true
            }
        }
    }

    fn set_broken(&mut self, why: &str) {
        if !self.broken {
            tracing::error!(
                "vhost controller '{}': queue {} is broken ({why}); it stops until the frontend resets it",
                self.ctrl.name,
                self.index
            );
        }
        self.broken = true;
    }

    fn finish(&mut self) {
        let base = self.vring.base().to_vhost(self.packed);
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(base);
        }
        self.finished = true;
        self._kick_reg = None;
        // Unregisters the poller; the poller (and this queue) is dropped by the thread after
        // this poll returns.
        self.handle = None;
    }

    fn handle_chain(&mut self) {
        let id = self.chain.id();
        let readonly = self.ctrl.readonly;
        match parse(
            self.chain.segments(),
            &self.mem,
            readonly,
            &mut self.scratch,
        ) {
            Ok(()) => {
                if let Some(p) = self.mem.host_ptr(self.scratch.status_gpa, 1) {
                    self.slot_mut(id).status = p;
                }
                self.submit_parsed(id);
            }
            Err(request::ParseError::Fail {
                status_gpa,
                status: st,
                reason,
            }) => {
                tracing::debug!(
                    "vhost controller '{}': queue {}: request failed: {reason}",
                    self.ctrl.name,
                    self.index
                );
                self.write_status(status_gpa, st);
                self.push(id, 1);
            }
            Err(request::ParseError::Broken(reason)) => {
                self.push(id, 0);
                self.set_broken(reason);
            }
        }
    }

    fn write_status(&self, gpa: u64, st: u8) {
        if let Some(p) = self.mem.host_ptr(gpa, 1) {
            // SAFETY: host_ptr checked the byte lies in mapped guest memory.
            unsafe { p.write_volatile(st) };
        }
    }

    /// Completes chain `id` with its status already written.
    fn push(&mut self, id: u16, written: u32) {
        if let Err(e) = self.vring.push_used(self.mem.guest(), id, written) {
            self.set_broken(&e.to_string());
            return;
        }
        self.pending_publish = true;
    }

    /// Completes a request at once (no bdev I/O) with status `st`.
    fn finish_now(&mut self, id: u16, st: u8, data_written: u32) {
        self.write_status(self.scratch.status_gpa, st);
        self.push(id, data_written + 1);
    }

    fn slot_mut(&mut self, id: u16) -> &mut Slot {
        let n = self.slots.len();
        &mut self.slots[usize::from(id) % n]
    }

    fn submit_parsed(&mut self, id: u16) {
        let me = self as *mut Queue as u64;
        let p = &self.scratch;
        let bs = self.block_size;
        let kind = p.kind;
        let (offset, len) = match kind {
            Kind::GetId => {
                let n = self.write_id();
                return self.finish_now(id, status::OK, n);
            }
            Kind::Read | Kind::Write => (p.sector.saturating_mul(512), p.data_len),
            Kind::Flush => (0, 0),
            Kind::Discard | Kind::WriteZeroes => match request::read_range(p, &self.mem) {
                Some(r) => (r.sector.saturating_mul(512), u64::from(r.num_sectors) * 512),
                None => return self.finish_now(id, status::IOERR, 0),
            },
        };
        if offset % bs != 0 || len % bs != 0 {
            return self.finish_now(id, status::IOERR, 0);
        }
        if matches!(kind, Kind::Read | Kind::Write) {
            for (i, s) in p.data().iter().enumerate() {
                match self.mem.host_ptr(s.gpa, u64::from(s.len)) {
                    Some(h) => {
                        self.iovs[i] = IoVec {
                            base: h,
                            len: s.len as usize,
                        }
                    }
                    None => return self.finish_now(id, status::IOERR, 0),
                }
            }
        }
        let Some(mut io) = self.chan.alloc_io() else {
            // The thread's I/O pool is empty: try again on the next poll.
            self.retry = Some(id);
            return;
        };
        let (ob, nb) = (offset / bs, len / bs);
        let written = if kind == Kind::Read {
            len as u32 + 1
        } else {
            1
        };
        self.slot_mut(id).written = written;
        io.user = [me, u64::from(id)];
        match kind {
            Kind::Read => {
                io.prep_read(ob, nb, io_done);
            }
            Kind::Write => {
                io.prep_write(ob, nb, io_done);
            }
            Kind::Flush => {
                io.prep_flush(0, self.chan.bdev().num_blocks(), io_done);
            }
            Kind::Discard => {
                io.prep_unmap(ob, nb, io_done);
            }
            Kind::WriteZeroes => {
                io.prep_write_zeroes(ob, nb, io_done);
            }
            Kind::GetId => {}
        }
        if matches!(kind, Kind::Read | Kind::Write) {
            let n = self.scratch.nsegs;
            // SAFETY: the segments are guest memory checked to be mapped (host_ptr); the
            // mapping stays alive until this I/O completes because the queue (holding the
            // table) cannot finish before `outstanding` is back to zero.
            unsafe { io.set_iovs(&self.iovs[..n]) };
        }
        self.outstanding += 1;
        self.window_ios += 1;
        self.chan.submit(io);
    }

    fn write_id(&self) -> u32 {
        let mut left = &self.ctrl.serial[..];
        let mut n = 0u32;
        for s in self.scratch.data() {
            if left.is_empty() {
                break;
            }
            let take = left.len().min(s.len as usize);
            if let Some(h) = self.mem.host_ptr(s.gpa, take as u64) {
                // SAFETY: host_ptr checked `take` mapped bytes at `h`.
                unsafe { std::ptr::copy_nonoverlapping(left.as_ptr(), h, take) };
                n += take as u32;
            }
            left = &left[take..];
        }
        n
    }

    fn complete_io(&mut self, id: u16, ok: bool) {
        self.outstanding -= 1;
        let slot = self.slots[usize::from(id) % self.slots.len()];
        let st = if ok { status::OK } else { status::IOERR };
        if !slot.status.is_null() {
            // SAFETY: the status pointer was checked against the memory table, which stays
            // mapped while this queue runs.
            unsafe { slot.status.write_volatile(st) };
        }
        let written = if ok { slot.written } else { 1 };
        self.push(id, written);
    }

    fn flush_used(&mut self) {
        self.pending_publish = false;
        match self.vring.publish(self.mem.guest()) {
            Ok(true) => {
                self.signal_pending = true;
                self.maybe_signal();
            }
            Ok(false) => {}
            Err(e) => self.set_broken(&e.to_string()),
        }
    }

    /// Signals the call eventfd now, unless coalescing holds it back.
    fn maybe_signal(&mut self) {
        let delay_us = self
            .ctrl
            .delay_base_us
            .load(std::sync::atomic::Ordering::Relaxed);
        if delay_us > 0 {
            let now = ferrite_reactor::clock::ticks();
            let second = ferrite_reactor::clock::us_to_ticks(1_000_000);
            if now.wrapping_sub(self.window_start) >= second {
                self.window_start = now;
                self.window_ios = 0;
            }
            let threshold = self
                .ctrl
                .iops_threshold
                .load(std::sync::atomic::Ordering::Relaxed);
            if self.window_ios > u64::from(threshold)
                && now.wrapping_sub(self.last_signal)
                    < ferrite_reactor::clock::us_to_ticks(u64::from(delay_us))
            {
                return; // keep signal_pending; polled again
            }
            self.last_signal = now;
        }
        self.signal_pending = false;
        if let Some(c) = &self.call {
            let _ = (&*c).write(&1u64.to_ne_bytes());
        }
    }
}

/// Completion of a bdev I/O: on the queue's thread, after the submit call returned.
fn io_done(io: Box<BdevIo>) {
    let [ptr, id] = io.user;
    let ok = io.status().is_success();
    ferrite_bdev::free_io(io);
    // SAFETY: `ptr` is the queue that submitted this I/O; a queue stays alive while it has
    // I/O outstanding (it finishes only when `outstanding` is zero) and completions run on
    // its thread.
    let q = unsafe { &mut *(ptr as *mut Queue) };
    q.complete_io(id as u16, ok);
}
