//! The delay data path: forward to the base, hold the completed I/O until its delay has
//! passed, complete it from the channel's poller.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::Arc;

use ferrite_bdev::{AbortTarget, BackendChannel, BdevChannel, BdevIo, IoStatus, IoType};
use ferrite_reactor::{LocalKey, Poll, PollerHandle};

use crate::control::Latencies;

/// Queue indices, which are also the latency indices of [`Latencies`].
pub(crate) const AVG_READ: usize = 0;
pub(crate) const P99_READ: usize = 1;
pub(crate) const AVG_WRITE: usize = 2;
pub(crate) const P99_WRITE: usize = 3;
/// Not delayed (types other than read and write).
const NONE: u64 = 4;

/// `driver_ctx` words of an I/O we own (the parent) while it is with us.
const CTX_KIND: usize = 0;
const CTX_SLOT: usize = 1;
const CTX_DUE: usize = 2;
const CTX_STATUS: usize = 3;

/// Room reserved per queue at channel creation: average queues hold most I/O, p99 queues one
/// in a hundred. A queue grows past this only if more I/O are held at once (then keeps its
/// size: no allocation in steady state).
const AVG_PREALLOC: usize = 512;
const P99_PREALLOC: usize = 64;

/// One channel's held I/O: four FIFOs, each in due order as long as its latency is not changed
/// (after a change, as SPDK, an I/O waits for those ahead of it in its queue).
pub(crate) struct ChanQueues {
    lat: Arc<Latencies>,
    q: [VecDeque<Box<BdevIo>>; 4],
}

impl ChanQueues {
    fn held(&self) -> usize {
        self.q.iter().map(VecDeque::len).sum()
    }
}

/// Per-lightweight-thread state of the delay module: a slot per channel on this thread. A
/// completion callback (a plain `fn`) finds its channel's queues here by the slot index the
/// I/O carries; no lock, no pointer.
#[derive(Default)]
pub(crate) struct DelayThread {
    chans: RefCell<Vec<Option<ChanQueues>>>,
}

pub(crate) static DELAY_THREAD: LocalKey<DelayThread> = LocalKey::new();

/// Per-thread channel: this thread's channel to the base, its slot in [`DELAY_THREAD`]
/// (`usize::MAX` off a lightweight thread: then nothing is delayed), the generator that picks
/// p99 I/O, and the poller that releases held I/O.
pub(crate) struct DelayChannel {
    base: Option<BdevChannel>,
    /// The bdev's latencies, for its list of threads holding channels (see `held`).
    holders: Arc<Latencies>,
    slot: usize,
    rng: u64,
    _poller: Option<PollerHandle>,
}

impl DelayChannel {
    /// Step 3: created on the thread that will use it.
    pub(crate) fn new(name: &str, base: Option<BdevChannel>, lat: Arc<Latencies>) -> Self {
        lat.holders.threads.add_thread();
        let holders = lat.clone();
        let slot = DELAY_THREAD
            .with(|t| {
                let mut chans = t.chans.borrow_mut();
                let q = ChanQueues {
                    lat,
                    q: [
                        VecDeque::with_capacity(AVG_PREALLOC),
                        VecDeque::with_capacity(P99_PREALLOC),
                        VecDeque::with_capacity(AVG_PREALLOC),
                        VecDeque::with_capacity(P99_PREALLOC),
                    ],
                };
                match chans.iter().position(Option::is_none) {
                    Some(i) => {
                        chans[i] = Some(q);
                        i
                    }
                    None => {
                        chans.push(Some(q));
                        chans.len() - 1
                    }
                }
            })
            .unwrap_or(usize::MAX);
        let poller = if slot == usize::MAX {
            None
        } else {
            match ferrite_reactor::register_poller_obj(
                &format!("delay_{name}"),
                0,
                Box::new(DelayPoller { slot }),
            ) {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::error!("delay bdev '{name}': cannot register its poller: {e}");
                    None
                }
            }
        };
        // Seeded per channel (SPDK seeds with the time); xorshift needs a non-zero state.
        let seed = ferrite_reactor::clock::ticks()
            ^ (ferrite_reactor::current_id() << 32)
            ^ (slot as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        Self {
            base,
            holders,
            // Without a poller nothing could release held I/O: do not hold any.
            slot: if poller.is_some() { slot } else { usize::MAX },
            rng: seed | 1,
            _poller: poller,
        }
    }

    /// xorshift64*: a cheap per-channel draw (no shared state, no syscall).
    #[inline]
    fn next_rand(&mut self) -> u64 {
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32
    }
}

impl Drop for DelayChannel {
    /// A channel is dropped only when idle (the bdev layer keeps a busy one as a zombie, and
    /// held I/O counts as busy), so its queues are empty — except at thread teardown, when the
    /// I/O objects go with the thread.
    fn drop(&mut self) {
        let q = DELAY_THREAD
            .with(|t| {
                t.chans
                    .borrow_mut()
                    .get_mut(self.slot)
                    .and_then(Option::take)
            })
            .flatten();
        if let Some(q) = q {
            if q.held() > 0 {
                tracing::warn!(
                    "delay channel dropped with {} held I/O (thread teardown)",
                    q.held()
                );
            }
        }
        self.holders.holders.threads.remove_thread();
        // `_poller` is dropped next: the poller is unregistered.
    }
}

impl BackendChannel for DelayChannel {
    #[inline]
    fn submit(&mut self, mut io: Box<BdevIo>) {
        // As SPDK: one draw per I/O, p99 when it falls on 0 of 0..100.
        let p99 = self.next_rand().is_multiple_of(100);
        let Some(base) = &self.base else {
            // The base channel could not be created (base going away): fail, never hang.
            return io.complete(IoStatus::Failed);
        };
        let Some(mut child) = base.alloc_io() else {
            // Out of I/O objects: the bdev layer parks the parent and resubmits it later.
            return io.complete(IoStatus::NoMem);
        };
        let kind = match io.io_type() {
            _ if self.slot == usize::MAX => NONE,
            IoType::Read if p99 => P99_READ as u64,
            IoType::Read => AVG_READ as u64,
            IoType::Write if p99 => P99_WRITE as u64,
            IoType::Write => AVG_WRITE as u64,
            _ => NONE,
        };
        io.driver_ctx[CTX_KIND] = kind;
        io.driver_ctx[CTX_SLOT] = self.slot as u64;
        child.forward(io, child_done);
        base.submit(child);
    }
}

/// Completion of the child on the base: recycle it, and queue the parent (with its status and
/// due time) on its channel, or complete it now if it is not delayed.
fn child_done(mut child: Box<BdevIo>) {
    let status = child.status();
    let parent = child.take_parent();
    ferrite_bdev::free_io(child);
    let Some(mut parent) = parent else {
        return;
    };
    let kind = parent.driver_ctx[CTX_KIND];
    if kind >= NONE {
        return parent.complete(status);
    }
    parent.driver_ctx[CTX_STATUS] = encode(status);
    let slot = parent.driver_ctx[CTX_SLOT] as usize;
    let mut io = Some(parent);
    let _ = DELAY_THREAD.with(|t| {
        if let Some(Some(c)) = t.chans.borrow_mut().get_mut(slot) {
            if let Some(mut p) = io.take() {
                if c.lat.holders.resetting() {
                    // A reset runs: aborted at once, as what it found waiting.
                    return p.complete(IoStatus::Aborted);
                }
                // The delay starts when the base completes (as SPDK), with the latency in
                // force now.
                let k = kind as usize;
                p.driver_ctx[CTX_DUE] = ferrite_reactor::now().saturating_add(c.lat.ticks(k));
                c.q[k].push_back(p);
            }
        }
    });
    // No slot (cannot happen while the channel lives): complete undelayed rather than lose it.
    if let Some(p) = io {
        p.complete(status);
    }
}

/// The channel's poller: completes every held I/O that is due.
struct DelayPoller {
    slot: usize,
}

impl Poll for DelayPoller {
    fn poll(&mut self) -> usize {
        let now = ferrite_reactor::now();
        DELAY_THREAD
            .with(|t| {
                let mut chans = t.chans.borrow_mut();
                let Some(Some(c)) = chans.get_mut(self.slot) else {
                    return 0;
                };
                let mut n = 0;
                for q in [AVG_READ, AVG_WRITE, P99_READ, P99_WRITE] {
                    let q = &mut c.q[q];
                    while q.front().is_some_and(|io| io.driver_ctx[CTX_DUE] <= now) {
                        if let Some(io) = q.pop_front() {
                            let st = decode(io.driver_ctx[CTX_STATUS]);
                            // Deferred by the bdev layer: the callback runs on a later poll.
                            io.complete(st);
                            n += 1;
                        }
                    }
                }
                n
            })
            .unwrap_or(0)
    }

    /// Nothing signals a delay expiring: while anything is held the reactor must keep polling
    /// (an epoll timeout has millisecond granularity, far coarser than the delays).
    fn can_sleep(&mut self) -> bool {
        DELAY_THREAD
            .with(|t| {
                t.chans
                    .borrow()
                    .get(self.slot)
                    .and_then(Option::as_ref)
                    .is_none_or(|c| c.held() == 0)
            })
            .unwrap_or(true)
    }
}

fn encode(s: IoStatus) -> u64 {
    match s {
        IoStatus::Pending => 0,
        IoStatus::Success => 1,
        IoStatus::Failed => 2,
        IoStatus::NoMem => 3,
        IoStatus::Miscompare => 4,
        IoStatus::Aborted => 5,
        IoStatus::Invalid => 6,
    }
}

fn decode(c: u64) -> IoStatus {
    match c {
        1 => IoStatus::Success,
        3 => IoStatus::NoMem,
        4 => IoStatus::Miscompare,
        5 => IoStatus::Aborted,
        6 => IoStatus::Invalid,
        _ => IoStatus::Failed,
    }
}

/// Number of I/O held on the calling thread by every delay channel there (tests, diagnostics).
pub fn held_on_thread() -> usize {
    DELAY_THREAD
        .with(|t| {
            t.chans
                .borrow()
                .iter()
                .flatten()
                .map(ChanQueues::held)
                .sum()
        })
        .unwrap_or(0)
}

/// Runs on a thread by message (a reset of the bdev whose latencies are `lat`): completes
/// every I/O that the bdev's channels on this thread hold, aborted. Returns how many.
pub(crate) fn abort_on_thread(lat: &Arc<Latencies>) -> usize {
    abort_held_on_thread(lat, |_| true)
}

/// An abort on this thread (see `HeldIo::abort`): completes Aborted every I/O that the
/// channels of the bdev whose latencies are `lat` hold on this thread and `target` names.
/// Returns how many.
pub(crate) fn abort_named_on_thread(lat: &Arc<Latencies>, target: &AbortTarget) -> usize {
    abort_held_on_thread(lat, |io| target.names(io))
}

/// Completes Aborted every I/O that the channels of the bdev whose latencies are `lat` hold on
/// this thread and `pick` chooses; the others keep their place (their due times). Returns how
/// many were aborted.
fn abort_held_on_thread(lat: &Arc<Latencies>, pick: impl Fn(&BdevIo) -> bool) -> usize {
    DELAY_THREAD
        .with(|t| {
            let mut n = 0;
            for c in t.chans.borrow_mut().iter_mut().flatten() {
                if !Arc::ptr_eq(&c.lat, lat) {
                    continue;
                }
                for q in &mut c.q {
                    let mut i = 0;
                    while i < q.len() {
                        if q.get(i).is_some_and(|io| pick(io)) {
                            if let Some(io) = q.remove(i) {
                                // Deferred by the bdev layer: the callback runs on a later poll.
                                io.complete(IoStatus::Aborted);
                                n += 1;
                            }
                        } else {
                            i += 1;
                        }
                    }
                }
            }
            n
        })
        .unwrap_or(0)
}
