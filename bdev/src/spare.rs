//! A channel's spare I/O objects: the ones its submitter gave back with
//! [`crate::BdevChannel::free_io`], handed out again by [`crate::BdevChannel::alloc_io`]
//! without the thread-local pool lookup. An intrusive stack linked through [`BdevIo`]'s
//! `link` field (free while an I/O is not in a completion queue): the most recently freed
//! object, still in cache, is the next one out. It never allocates.

use std::cell::Cell;
use std::ptr;

use crate::io::BdevIo;

/// Most objects a channel keeps: enough for a poll's worth of completions to be reused by
/// the next poll's submissions, few enough that a thread with many channels does not strand
/// its pool in them.
pub(crate) const SPARE_MAX: u32 = 128;

/// A LIFO owning the I/O linked into it. Confined to one lightweight thread like the channel
/// state holding it.
pub(crate) struct IoStack {
    top: Cell<*mut BdevIo>,
    len: Cell<u32>,
}

// SAFETY: the stack owns the boxed I/O linked into it (`BdevIo` is Send); it moves between OS
// threads only with the channel state that holds it. It is not Sync (`Cell`).
unsafe impl Send for IoStack {}

impl IoStack {
    pub(crate) const fn new() -> Self {
        Self {
            top: Cell::new(ptr::null_mut()),
            len: Cell::new(0),
        }
    }

    /// Keeps `io`, or gives it back when the stack is full.
    #[inline]
    pub(crate) fn push(&self, io: Box<BdevIo>) -> Result<(), Box<BdevIo>> {
        let n = self.len.get();
        if n >= SPARE_MAX {
            return Err(io);
        }
        let p = Box::into_raw(io);
        // SAFETY: `p` is the I/O just taken out of its Box; nobody else refers to it.
        unsafe { (*p).link = self.top.get() };
        self.top.set(p);
        self.len.set(n + 1);
        Ok(())
    }

    /// Takes the most recently pushed I/O, if any.
    #[inline]
    pub(crate) fn pop(&self) -> Option<Box<BdevIo>> {
        let p = self.top.get();
        if p.is_null() {
            return None;
        }
        // SAFETY: a non-null top is an I/O this stack owns (pushed, not yet popped); its link
        // is the one below it (or null), set by `push`.
        self.top.set(unsafe { (*p).link });
        self.len.set(self.len.get() - 1);
        // SAFETY: `p` came from `Box::into_raw` in `push` and is unlinked now: ownership goes
        // back to a Box exactly once.
        Some(unsafe { Box::from_raw(p) })
    }
}

impl Drop for IoStack {
    fn drop(&mut self) {
        // Back to the thread's pool (dropped instead off a lightweight thread).
        while let Some(io) = self.pop() {
            crate::thread::free_io(io);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::io::tagged_io as io;

    #[test]
    fn lifo_and_bounded() {
        let s = IoStack::new();
        assert!(s.pop().is_none());
        for i in 0..u64::from(SPARE_MAX) {
            assert!(s.push(io(i)).is_ok());
        }
        let back = s.push(io(999));
        assert_eq!(back.err().map(|io| io.user[0]), Some(999));
        assert_eq!(s.pop().map(|io| io.user[0]), Some(u64::from(SPARE_MAX) - 1));
        assert!(s.push(io(7)).is_ok());
        assert_eq!(s.pop().map(|io| io.user[0]), Some(7));
        let mut n = 0;
        while s.pop().is_some() {
            n += 1;
        }
        assert_eq!(n, SPARE_MAX - 1);
    }
}
