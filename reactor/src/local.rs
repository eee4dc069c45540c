//! Typed storage that belongs to one lightweight thread (a "thread-local" that moves with the
//! thread between reactors).

use std::any::{Any, TypeId};

use crate::thread::current_inner;

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
