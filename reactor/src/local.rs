//! Typed storage that belongs to one lightweight thread (a "thread-local" that moves with the
//! thread between reactors).

use std::any::{Any, TypeId};
use std::marker::PhantomData;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::thread::current_inner;

/// Most keys a process may create (a limit on everything; keys are statics, so a handful).
pub const MAX_LOCAL_KEYS: usize = 256;

static NEXT_KEY: AtomicUsize = AtomicUsize::new(0);

/// One keyed local of one thread: the boxed value and its address.
pub(crate) struct KeyedSlot {
    _value: Box<dyn Any + Send>,
    ptr: *const (),
}

// SAFETY: `ptr` points into `_value`, which is Send; the pair moves as one with its thread.
unsafe impl Send for KeyedSlot {}

/// A per-lightweight-thread value addressed by a static key: like [`with_local`] but found by
/// index, with no type-id search, for data-path use.
///
/// ```text
/// static STATE: LocalKey<MyState> = LocalKey::new();
/// STATE.with(|s| s.count.set(s.count.get() + 1));
/// ```
pub struct LocalKey<T> {
    idx: AtomicUsize,
    _p: PhantomData<fn() -> T>,
}

impl<T> LocalKey<T> {
    /// A key; its slot index is assigned on first use.
    pub const fn new() -> Self {
        Self {
            idx: AtomicUsize::new(usize::MAX),
            _p: PhantomData,
        }
    }
}

impl<T> Default for LocalKey<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T: Default + Send + 'static> LocalKey<T> {
    #[inline]
    fn index(&'static self) -> usize {
        let i = self.idx.load(Ordering::Acquire);
        if i != usize::MAX {
            return i;
        }
        let new = NEXT_KEY.fetch_add(1, Ordering::AcqRel);
        assert!(
            new < MAX_LOCAL_KEYS,
            "more than {MAX_LOCAL_KEYS} LocalKeys created"
        );
        match self
            .idx
            .compare_exchange(usize::MAX, new, Ordering::AcqRel, Ordering::Acquire)
        {
            Ok(_) => new,
            Err(existing) => existing,
        }
    }

    /// Runs `f` with the calling thread's value, created with `Default` on first use. `None`
    /// outside a lightweight thread. `f` runs before this returns and may use other keys (or
    /// this one again: only shared references are handed out).
    #[inline]
    pub fn with<R>(&'static self, f: impl FnOnce(&T) -> R) -> Option<R> {
        let t = current_inner()?;
        let idx = self.index();
        let found = t
            .keyed
            .borrow()
            .get(idx)
            .and_then(|s| s.as_ref().map(|s| s.ptr));
        let ptr = match found {
            Some(p) => p,
            None => {
                // Created with no borrow held: T::default() may use other keys.
                let value: Box<T> = Box::default();
                let ptr = &*value as *const T as *const ();
                let mut k = t.keyed.borrow_mut();
                if k.len() <= idx {
                    k.resize_with(idx + 1, || None);
                }
                k[idx] = Some(KeyedSlot { _value: value, ptr });
                ptr
            }
        };
        // SAFETY: the slot at `idx` was created by this key with a value of type T (a key's
        // index is unique and fixed), boxed so its address is stable, and removed only when the
        // thread is torn down, which cannot happen while code runs on it. Only shared references
        // are handed out; T stays confined to this lightweight thread.
        Some(f(unsafe { &*(ptr as *const T) }))
    }
}

/// Runs `f` with this lightweight thread's instance of `T`, created with `Default` on first use.
/// Returns `None` outside a lightweight thread.
///
/// Thread contract: any lightweight thread; `f` runs before this returns. `f` must not call
/// `with_local` for the same `T` again (it would see a second borrow and panic).
pub fn with_local<T: Default + Send + 'static, R>(f: impl FnOnce(&T) -> R) -> Option<R> {
    let t = current_inner()?;
    let tid = TypeId::of::<T>();
    let ptr: *const T = {
        let mut locals = t.locals.borrow_mut();
        let pos = match locals.iter().position(|(id, _)| *id == tid) {
            Some(p) => p,
            None => {
                locals.push((tid, Box::new(T::default()) as Box<dyn Any + Send>));
                locals.len() - 1
            }
        };
        let any: &dyn Any = locals[pos].1.as_ref();
        any.downcast_ref::<T>()? as *const T
    };
    // SAFETY: the value is boxed, so its address is stable; entries are only removed when the
    // thread itself is dropped, which cannot happen while code runs on it. Only shared
    // references are handed out and T: !Sync types are confined to this lightweight thread.
    Some(f(unsafe { &*ptr }))
}
