//! An intrusive FIFO of owned I/O objects, linked through [`BdevIo`]'s `link` field: a
//! channel's completion queue. Pushing or popping moves a pointer and touches the I/O being
//! queued (its cache line is needed next anyway), with no ring buffer to index, no capacity to
//! check and no `RefCell` flag to set and clear (about 10 instructions less per hop than a
//! `RefCell<VecDeque>`); it never allocates, whatever the depth.

use std::cell::Cell;
use std::ptr;

use crate::io::BdevIo;

/// A FIFO owning the I/O linked into it. Confined to one lightweight thread like the channel
/// state holding it (`Cell`s, no locking).
pub(crate) struct IoList {
    head: Cell<*mut BdevIo>,
    tail: Cell<*mut BdevIo>,
}

// SAFETY: the list owns the boxed I/O linked into it (each was a `Box<BdevIo>`, and `BdevIo` is
// Send); it moves between OS threads only with the channel state that holds it, as the
// `VecDeque<Box<BdevIo>>` it replaces did. It is not Sync (`Cell`).
unsafe impl Send for IoList {}

impl IoList {
    pub(crate) const fn new() -> Self {
        Self {
            head: Cell::new(ptr::null_mut()),
            tail: Cell::new(ptr::null_mut()),
        }
    }

    /// True if nothing is queued.
    #[inline]
    pub(crate) fn is_empty(&self) -> bool {
        self.head.get().is_null()
    }

    /// Appends `io`; the list owns it until it is popped.
    #[inline]
    pub(crate) fn push_back(&self, io: Box<BdevIo>) {
        let p = Box::into_raw(io);
        let t = self.tail.get();
        if t.is_null() {
            self.head.set(p);
        } else {
            // SAFETY: a non-null tail is an I/O this list owns (pushed, not yet popped); no
            // other reference to it exists while it is queued. Its link is only read by
            // `pop_front` when it is not the tail, i.e. after this store.
            unsafe { (*t).link = p };
        }
        self.tail.set(p);
    }

    /// Takes the oldest I/O, if any.
    #[inline]
    pub(crate) fn pop_front(&self) -> Option<Box<BdevIo>> {
        let p = self.head.get();
        if p.is_null() {
            return None;
        }
        if p == self.tail.get() {
            self.head.set(ptr::null_mut());
            self.tail.set(ptr::null_mut());
        } else {
            // SAFETY: `p` is owned by this list and is not its tail, so a later push set its
            // link to the next queued I/O.
            self.head.set(unsafe { (*p).link });
        }
        // SAFETY: `p` came from `Box::into_raw` in `push_back` and is unlinked now: ownership
        // goes back to a Box exactly once.
        Some(unsafe { Box::from_raw(p) })
    }
}

impl Default for IoList {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for IoList {
    fn drop(&mut self) {
        while let Some(io) = self.pop_front() {
            drop(io);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::io::tagged_io as io;

    #[test]
    fn fifo_order_and_reuse() {
        let l = IoList::new();
        assert!(l.is_empty());
        assert!(l.pop_front().is_none());
        for i in 0..5 {
            l.push_back(io(i));
        }
        assert!(!l.is_empty());
        let a = l.pop_front().map(|io| io.user[0]);
        let b = l.pop_front().map(|io| io.user[0]);
        assert_eq!((a, b), (Some(0), Some(1)));
        // Interleaved pushes keep their place behind what is queued.
        l.push_back(io(5));
        let rest: Vec<u64> = std::iter::from_fn(|| l.pop_front().map(|io| io.user[0])).collect();
        assert_eq!(rest, vec![2, 3, 4, 5]);
        assert!(l.is_empty());
        // Empty again, then one element (head == tail) and back.
        l.push_back(io(9));
        assert_eq!(l.pop_front().map(|io| io.user[0]), Some(9));
        assert!(l.is_empty());
    }

    #[test]
    fn dropping_a_non_empty_list_frees_its_io() {
        let l = IoList::new();
        for i in 0..3 {
            l.push_back(io(i));
        }
        drop(l); // frees the three queued I/O
    }
}
