//! I/O held inside a module (the error bdev's `pending` injections, the delay bdev's latency
//! queues): how a reset reaches it.
//!
//! A reset quiesces its bdev: it freezes every channel and waits until the I/O already
//! dispatched has completed. I/O a module holds on purpose would never complete, so the reset
//! would never run. A module that holds I/O registers a [`HeldIo`] for its bdev; a reset of
//! that bdev, or of a bdev stacked on it (each stacked module names its bases with
//! [`set_held_io_bases`]), first tells it ([`HeldIo::reset_start`]) and quiesces only once the
//! module has completed what it holds, and tells it again when the reset has completed
//! ([`HeldIo::reset_end`]), as SPDK's stacked bdevs pass a reset down to the module holding the
//! I/O. An abort reaches held I/O the same way ([`HeldIo::abort`]): the bdev layer asks every
//! module down the stack to complete, Aborted, the held I/O the abort names ([`AbortTarget`]).
//! Control path only: looked up once per reset or abort, never per read or write.

use std::ptr::NonNull;
use std::sync::{Arc, Mutex, Weak};

use crate::bdev::Bdev;
use crate::channel::{ChannelState, FLAG_CHILD, FLAG_QUIESCE_HELD};
use crate::io::{BdevIo, Parent};

/// A module's held I/O, as a reset or an abort of its bdev (or of a bdev stacked on it) sees
/// it.
///
/// Thread contract: `reset_start` and `reset_end` are called on the thread of the reset I/O,
/// `abort` on the thread of the abort I/O (lightweight threads); `done` may be called on any
/// thread, before or after `reset_start` returns.
pub trait HeldIo: Send + Sync + 'static {
    /// A reset starts: from now until [`HeldIo::reset_end`], complete every I/O held on every
    /// thread (with the status the module gives a reset) and hold no new one; call `done`
    /// once what was held has been completed.
    fn reset_start(&self, done: Box<dyn FnOnce() + Send>);
    /// The reset has completed: I/O may be held again.
    fn reset_end(&self);
    /// An abort: complete with [`crate::IoStatus::Aborted`] every I/O held on the calling
    /// thread that `target` names ([`AbortTarget::names`]), and return how many. Called on the
    /// thread of the abort I/O, which is the thread of the I/O it names (an abort only reaches
    /// I/O submitted on its own channel); the completions are deferred by the bdev layer, so
    /// their callbacks run after this returns. The default holds nothing to abort.
    fn abort(&self, target: &AbortTarget) -> usize {
        let _ = target;
        0
    }
}

/// What an abort names: the I/O submitted on one channel with a given tag (`user[0]`), and
/// every I/O a module below made on its behalf (forwarded, split or child I/O).
///
/// Thread contract: only exists during a [`HeldIo::abort`] call, on the abort's thread.
pub struct AbortTarget {
    chan: NonNull<ChannelState>,
    tag: u64,
}

/// Parents followed up from a held I/O at most (a stack is a few layers deep).
const MAX_PARENTS: usize = 32;

impl AbortTarget {
    pub(crate) fn new(chan: NonNull<ChannelState>, tag: u64) -> Self {
        Self { chan, tag }
    }

    /// The tag the abort names (the `user[0]` of the I/O to abort).
    pub fn tag(&self) -> u64 {
        self.tag
    }

    /// True if `io` (an I/O a module holds on the calling thread) is the named I/O or was made
    /// on its behalf: follows `io` up through the parents it carries to the I/O a user
    /// submitted, and compares that one's channel and tag. Never an internal I/O of the layer
    /// (a child it generated, the reset holding a quiesce): it must finish to release its parent.
    /// Never an I/O a layer on the way shielded from abort ([`BdevIo::shield_from_abort`]).
    pub fn names(&self, io: &BdevIo) -> bool {
        let mut cur: &BdevIo = io;
        for _ in 0..MAX_PARENTS {
            if cur.abort_shielded() {
                return false;
            }
            match &cur.parent {
                Parent::Owned(p) => cur = p,
                // SAFETY: a split parent lives until its last piece completes, and `io` (a
                // descendant of that piece, or the piece) has not completed; it is only
                // touched on its own thread, the calling one (the trait's contract).
                Parent::Split(p) => cur = unsafe { p.as_ref() },
                // SAFETY: a fan-out piece's parent stays in flight until this piece is done
                // (`forward_child` and `BdevIo::set_fanout_parent` contracts), and `io` has not
                // completed; it is only touched on its own thread, the calling one.
                Parent::Fanout(p) => cur = unsafe { p.as_ref() },
                Parent::None => {
                    // The submitter's view: the bottom frame if forwarded as the same object.
                    let (chan, flags) = if cur.depth > 0 {
                        (cur.frames[0].chan, cur.frames[0].flags)
                    } else {
                        (cur.chan, cur.flags)
                    };
                    return chan == Some(self.chan)
                        && cur.user[0] == self.tag
                        && flags & (FLAG_CHILD | FLAG_QUIESCE_HELD) == 0;
                }
            }
        }
        false
    }
}

/// Asks every module holding I/O of `bdev` or under it to abort what `target` names; returns
/// how many I/O they aborted. On the abort's thread.
pub(crate) fn abort(bdev: &Bdev, target: &AbortTarget) -> usize {
    hooks_for(bdev).iter().map(|h| h.abort(target)).sum()
}

#[derive(Default)]
struct Entry {
    bdev: Weak<Bdev>,
    hook: Option<Arc<dyn HeldIo>>,
    bases: Vec<Weak<Bdev>>,
}

static ENTRIES: Mutex<Vec<Entry>> = Mutex::new(Vec::new());

/// Bases followed down a stack at most (a stack is a few bdevs deep; this bounds a cycle).
const MAX_DEPTH: usize = 16;

fn with_entry(bdev: &Arc<Bdev>, f: impl FnOnce(&mut Entry)) {
    if let Ok(mut v) = ENTRIES.lock() {
        v.retain(|e| e.bdev.strong_count() > 0);
        let pos = match v
            .iter()
            .position(|e| std::ptr::eq(e.bdev.as_ptr(), Arc::as_ptr(bdev)))
        {
            Some(p) => p,
            None => {
                v.push(Entry {
                    bdev: Arc::downgrade(bdev),
                    ..Default::default()
                });
                v.len() - 1
            }
        };
        f(&mut v[pos]);
    }
}

/// Registers `h` as the module's held I/O of `bdev` (replacing an earlier one). Any thread.
/// The entry goes with the bdev.
pub fn set_held_io(bdev: &Arc<Bdev>, h: Arc<dyn HeldIo>) {
    with_entry(bdev, |e| e.hook = Some(h));
}

/// Names the bases of the stacked bdev `bdev` (its module sends them the I/O it is given): a
/// reset of `bdev` reaches the I/O held inside them too. Any thread.
pub fn set_held_io_bases(bdev: &Arc<Bdev>, bases: &[&Arc<Bdev>]) {
    with_entry(bdev, |e| {
        e.bases = bases.iter().map(|b| Arc::downgrade(b)).collect()
    });
}

/// The hooks a reset of `bdev` reaches: its own, then its bases', depth first (each once).
pub(crate) fn hooks_for(bdev: &Bdev) -> Vec<Arc<dyn HeldIo>> {
    let Ok(v) = ENTRIES.lock() else {
        return Vec::new();
    };
    let mut out: Vec<Arc<dyn HeldIo>> = Vec::new();
    let mut seen: Vec<*const Bdev> = Vec::new();
    let mut todo: Vec<(*const Bdev, usize)> = vec![(bdev as *const Bdev, 0)];
    while let Some((b, depth)) = todo.pop() {
        if depth > MAX_DEPTH || seen.contains(&b) {
            continue;
        }
        seen.push(b);
        let Some(e) = v.iter().find(|e| std::ptr::eq(e.bdev.as_ptr(), b)) else {
            continue;
        };
        if let Some(h) = &e.hook {
            out.push(h.clone());
        }
        for base in e.bases.iter().rev() {
            todo.push((base.as_ptr(), depth + 1));
        }
    }
    out
}

/// Starts a reset of `bdev` in every module holding I/O under it; `done` runs (on any thread)
/// once all have completed what they held (at once if none holds anything).
pub(crate) fn reset_start(hooks: &[Arc<dyn HeldIo>], done: Box<dyn FnOnce() + Send>) {
    let join = Arc::new(Join {
        left: std::sync::atomic::AtomicUsize::new(hooks.len() + 1),
        done: Mutex::new(Some(done)),
    });
    for h in hooks {
        let j = join.clone();
        h.reset_start(Box::new(move || j.one_done()));
    }
    join.one_done();
}

/// Counts the modules' answers; the last runs `done`.
struct Join {
    left: std::sync::atomic::AtomicUsize,
    done: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl Join {
    fn one_done(&self) {
        if self.left.fetch_sub(1, std::sync::atomic::Ordering::AcqRel) == 1 {
            let d = self.done.lock().ok().and_then(|mut d| d.take());
            if let Some(d) = d {
                d();
            }
        }
    }
}
