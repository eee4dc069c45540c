//! I/O devices and per-thread I/O channels (SPDK's io_device / io_channel).
//!
//! An [`IoDevice<T>`] is anything with per-thread state `T`. The first time a thread asks for
//! a channel, `T` is created on that thread; later requests on the same thread share it
//! (ref-counted). When the last [`IoChannel`] on a thread is dropped, `T` is dropped on that
//! thread by a deferred message (never inside the drop, so code holding a reference up the
//! stack stays valid). [`IoDevice::for_each_channel`] visits every thread that holds a channel.

use std::marker::PhantomData;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use crate::error::{ErrorKind, ReactorError, Result};
use crate::thread::{current_inner, ChannelEntry, ThreadHandle, ThreadShared};

static NEXT_DEVICE_ID: AtomicU64 = AtomicU64::new(1);

type CreateFn<T> = dyn Fn() -> T + Send + Sync;

struct DeviceInner<T> {
    id: u64,
    name: String,
    create: Box<CreateFn<T>>,
    holders: Mutex<Vec<ThreadHandle>>,
    unregistered: AtomicBool,
}

/// A device with per-thread channels of type `T`. Cloning shares the device.
pub struct IoDevice<T: Send + 'static> {
    inner: Arc<DeviceInner<T>>,
}

impl<T: Send + 'static> Clone for IoDevice<T> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<T: Send + 'static> IoDevice<T> {
    /// Registers a device; `create` builds a thread's channel state on that thread.
    /// Any thread may call this.
    pub fn new(name: &str, create: impl Fn() -> T + Send + Sync + 'static) -> Self {
        Self {
            inner: Arc::new(DeviceInner {
                id: NEXT_DEVICE_ID.fetch_add(1, Ordering::Relaxed),
                name: name.to_string(),
                create: Box::new(create),
                holders: Mutex::new(Vec::new()),
                unregistered: AtomicBool::new(false),
            }),
        }
    }

    /// The device's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// Stops handing out new channels; existing ones stay valid until dropped.
    pub fn unregister(&self) {
        self.inner.unregistered.store(true, Ordering::Release);
    }

    /// Number of threads holding a channel now.
    pub fn channel_count(&self) -> usize {
        self.inner.holders.lock().map(|h| h.len()).unwrap_or(0)
    }

    /// The calling thread's channel, created on first use. Must be called on a lightweight
    /// thread; `create` runs before this returns (and may itself get other channels).
    pub fn get_channel(&self) -> Result<IoChannel<T>> {
        let t = current_inner().ok_or_else(|| {
            ReactorError::new(
                ErrorKind::WrongThread,
                format!(
                    "channel for '{}' requested outside a lightweight thread",
                    self.inner.name
                ),
            )
        })?;
        if let Some(ptr) = find_and_ref::<T>(t, self.inner.id) {
            return Ok(IoChannel::new(ptr, self.inner.id, t.shared.clone()));
        }
        if self.inner.unregistered.load(Ordering::Acquire) {
            return Err(ReactorError::new(
                ErrorKind::DeviceGone,
                format!("device '{}' is unregistered", self.inner.name),
            ));
        }
        // Create with no borrow held: the constructor may get channels of other devices.
        let ctx: Box<T> = Box::new((self.inner.create)());
        // A constructor may (rarely) have created the same channel recursively; reuse it.
        if let Some(ptr) = find_and_ref::<T>(t, self.inner.id) {
            drop(ctx);
            return Ok(IoChannel::new(ptr, self.inner.id, t.shared.clone()));
        }
        let ptr = NonNull::from(ctx.as_ref());
        if let Ok(mut h) = self.inner.holders.lock() {
            h.push(t.handle());
        }
        let dev = self.inner.clone();
        let tid = t.shared.id;
        t.channels.borrow_mut().push(ChannelEntry {
            dev_id: self.inner.id,
            refs: 1,
            ctx,
            on_destroy: Some(Box::new(move || {
                if let Ok(mut h) = dev.holders.lock() {
                    h.retain(|x| x.id() != tid);
                }
            })),
        });
        Ok(IoChannel::new(ptr, self.inner.id, t.shared.clone()))
    }

    /// Calls `f` on every thread that holds a channel, one thread after another, then `done`
    /// on the calling thread. `f` receives the channel and a [`ForEachCont`] that it must
    /// `finish` (now or later, on that thread) to move on. Threads that released their
    /// channel or exited meanwhile are skipped. Must be called on a lightweight thread;
    /// nothing runs before this returns.
    pub fn for_each_channel_async(
        &self,
        f: impl Fn(&T, ForEachCont) + Send + Sync + 'static,
        done: impl FnOnce(i32) + Send + 'static,
    ) -> Result<()> {
        let origin = crate::thread::current().ok_or_else(|| {
            ReactorError::new(
                ErrorKind::WrongThread,
                "for_each_channel outside a lightweight thread",
            )
        })?;
        let holders = self
            .inner
            .holders
            .lock()
            .map(|h| h.clone())
            .unwrap_or_default();
        let walk = Arc::new(Walk {
            dev_id: self.inner.id,
            name: self.inner.name.clone(),
            holders,
            f: Box::new(move |any: &dyn std::any::Any, c| {
                if let Some(t) = any.downcast_ref::<T>() {
                    f(t, c)
                } else {
                    c.finish(0)
                }
            }),
            done: Mutex::new(Some(Box::new(done))),
            origin,
        });
        Walk::step(walk, 0, 0);
        Ok(())
    }

    /// Synchronous-visit variant: `f` runs once per holding thread, then `done` on the
    /// calling thread.
    pub fn for_each_channel(
        &self,
        f: impl Fn(&T) + Send + Sync + 'static,
        done: impl FnOnce() + Send + 'static,
    ) -> Result<()> {
        self.for_each_channel_async(
            move |t, c| {
                f(t);
                c.finish(0)
            },
            move |_| done(),
        )
    }
}

type VisitFn = dyn Fn(&dyn std::any::Any, ForEachCont) + Send + Sync;
type DoneFn = Box<dyn FnOnce(i32) + Send>;

struct Walk {
    dev_id: u64,
    name: String,
    holders: Vec<ThreadHandle>,
    f: Box<VisitFn>,
    done: Mutex<Option<DoneFn>>,
    origin: ThreadHandle,
}

impl Walk {
    /// Visits holder `idx` (or reports to `done` when the walk is over or `status != 0`).
    fn step(walk: Arc<Walk>, idx: usize, status: i32) {
        if status == 0 && idx < walk.holders.len() {
            let visit = Visit {
                walk: Some(walk.clone()),
                idx,
            };
            if let Err(e) = walk.holders[idx].send(move || visit.run()) {
                // The refused message dropped its Visit, which skipped this thread.
                if e.kind() != ErrorKind::ThreadGone {
                    tracing::error!("for_each_channel on '{}' skips a thread: {e}", walk.name);
                }
            }
            return;
        }
        let done = walk.done.lock().ok().and_then(|mut d| d.take());
        if let Some(done) = done {
            let sent = walk.origin.send(move || done(status));
            if let Err(e) = sent {
                tracing::error!("for_each_channel could not complete on its origin thread: {e}");
            }
        }
    }
}

/// The message visiting one holder. Dropped without running (the thread was gone when it was
/// sent, or exited with it still queued), it skips that thread so the walk still completes.
struct Visit {
    walk: Option<Arc<Walk>>,
    idx: usize,
}

impl Visit {
    fn run(mut self) {
        let Some(w) = self.walk.take() else { return };
        let next = self.idx + 1;
        let Some(t) = current_inner() else {
            Walk::step(w, next, 0);
            return;
        };
        let ptr = t
            .channels
            .borrow()
            .iter()
            // A channel whose last handle was put is waiting for its deferred destroy: the
            // thread no longer holds it.
            .find(|e| e.dev_id == w.dev_id && e.refs > 0)
            .map(|e| e.ctx.as_ref() as *const dyn std::any::Any);
        let cont = ForEachCont {
            walk: Some(w.clone()),
            next,
        };
        match ptr {
            // SAFETY: the entry is boxed and only removed by a deferred destroy message on
            // this same thread (or its teardown), neither of which can run during this call.
            Some(p) => (w.f)(unsafe { &*p }, cont),
            None => cont.finish(0),
        }
    }
}

impl Drop for Visit {
    fn drop(&mut self) {
        if let Some(w) = self.walk.take() {
            Walk::step(w, self.idx + 1, 0);
        }
    }
}

/// Continuation of a [`IoDevice::for_each_channel_async`] walk.
///
/// Dropped unfinished while its thread exits (for example parked in that thread's channel
/// state), it skips the thread like any thread that exited during the walk. Dropped
/// unfinished anywhere else, the walk is abandoned (and a warning logged): `done` never runs.
pub struct ForEachCont {
    walk: Option<Arc<Walk>>,
    next: usize,
}

impl ForEachCont {
    /// Moves on to the next thread (status 0) or stops the walk and reports `status` to
    /// `done`. May be called on the visited thread at any later time.
    pub fn finish(mut self, status: i32) {
        if let Some(w) = self.walk.take() {
            Walk::step(w, self.next, status);
        }
    }
}

impl Drop for ForEachCont {
    fn drop(&mut self) {
        let Some(w) = self.walk.take() else { return };
        let exiting = current_inner()
            .map(|t| t.exit_requested.get() || t.shared.exited.load(Ordering::Acquire))
            .unwrap_or(false);
        if exiting {
            Walk::step(w, self.next, 0);
        } else {
            tracing::warn!(
                "for_each_channel on '{}' abandoned: continuation dropped unfinished",
                w.name
            );
        }
    }
}

fn find_and_ref<T: 'static>(t: &crate::thread::ThreadInner, dev: u64) -> Option<NonNull<T>> {
    let mut chans = t.channels.borrow_mut();
    let e = chans.iter_mut().find(|e| e.dev_id == dev)?;
    let p = e.ctx.downcast_ref::<T>()? as *const T;
    e.refs += 1;
    NonNull::new(p as *mut T)
}

/// A reference to the calling thread's channel state for one device. Dereferences to `&T`
/// (use interior mutability inside `T`), only on the owning thread: dereferencing on any
/// other thread panics. Dropping it releases the reference.
pub struct IoChannel<T: 'static> {
    ptr: NonNull<T>,
    dev_id: u64,
    /// `owner.id`, kept inline: the ownership check of every dereference compares it with
    /// the calling thread's id word, without following `owner`.
    owner_id: u64,
    owner: Arc<ThreadShared>,
    _p: PhantomData<T>,
}

// SAFETY: the pointee is only reached through `Deref`, which checks that the calling OS thread
// is polling the owning lightweight thread; at most one OS thread does that at a time, so the
// handle may move with its owning thread between reactors. T: Send because the state moves too.
unsafe impl<T: Send + 'static> Send for IoChannel<T> {}

impl<T: 'static> IoChannel<T> {
    fn new(ptr: NonNull<T>, dev_id: u64, owner: Arc<ThreadShared>) -> Self {
        Self {
            ptr,
            dev_id,
            owner_id: owner.id,
            owner,
            _p: PhantomData,
        }
    }

    /// The thread owning this channel.
    pub fn thread(&self) -> ThreadHandle {
        ThreadHandle(self.owner.clone())
    }

    #[inline]
    fn check_owner(&self) {
        // Thread ids start at 1: 0 (no thread) never matches.
        if crate::thread::current_id() != self.owner_id {
            self.wrong_thread();
        }
    }

    #[cold]
    #[inline(never)]
    fn wrong_thread(&self) -> ! {
        panic!(
            "I/O channel of thread '{}' used from another thread",
            self.owner.name
        );
    }
}

impl<T: 'static> std::ops::Deref for IoChannel<T> {
    type Target = T;
    #[inline]
    fn deref(&self) -> &T {
        self.check_owner();
        // SAFETY: checked that we run on the owning thread; the boxed state lives until its
        // refcount drops to zero and a deferred message destroys it, and this handle holds a
        // reference.
        unsafe { self.ptr.as_ref() }
    }
}

impl<T: 'static> Drop for IoChannel<T> {
    fn drop(&mut self) {
        let dev = self.dev_id;
        let release = move || {
            let Some(t) = current_inner() else { return };
            let zero = {
                let mut chans = t.channels.borrow_mut();
                match chans.iter_mut().find(|e| e.dev_id == dev) {
                    Some(e) => {
                        e.refs = e.refs.saturating_sub(1);
                        e.refs == 0
                    }
                    None => false,
                }
            };
            if zero {
                // Deferred destroy: re-check on a later turn of the thread.
                let destroy = move || {
                    let Some(t) = current_inner() else { return };
                    let entry = {
                        let mut chans = t.channels.borrow_mut();
                        chans
                            .iter()
                            .position(|e| e.dev_id == dev && e.refs == 0)
                            .map(|p| chans.swap_remove(p))
                    };
                    if let Some(mut e) = entry {
                        if let Some(f) = e.on_destroy.take() {
                            f();
                        }
                        drop(e);
                    }
                };
                if let Err(err) = crate::thread::send_to(&t.shared, Box::new(destroy)) {
                    // An exiting thread destroys its channels itself in teardown.
                    if err.kind() != ErrorKind::ThreadGone {
                        tracing::warn!("deferred channel destroy not queued: {err}");
                    }
                }
            }
        };
        match current_inner() {
            Some(t) if t.shared.id == self.owner.id => release(),
            _ => {
                let _ = crate::thread::send_to(&self.owner, Box::new(release));
            }
        }
    }
}
