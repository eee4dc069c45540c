//! Region lookups shared by the pops of one batch.

use crate::mem::RegionCache;
use crate::walk::Span;
use crate::GuestMemory;

/// The pops of one batch (one poll of a queue) over one borrow of the memory table: the
/// region the ring's areas lie in and the region the last request's buffers lay in are found
/// once for the batch instead of once per pop ([`crate::Vring::pop_in`]). It holds only
/// what it found in `mem` and borrows `mem` for its whole life, so nothing it keeps can
/// outlive the table; a new table needs a new batch. The ring's own state stays in the
/// [`crate::Vring`]: a batch may be dropped at any point, and `push_used`, `publish` and the
/// other calls may come between its pops.
pub struct PopBatch<'m> {
    pub(crate) mem: &'m GuestMemory,
    pub(crate) cache: RegionCache<'m>,
    pub(crate) other: Span,
}

impl<'m> PopBatch<'m> {
    /// A batch over `mem`, with nothing found yet.
    #[inline]
    pub fn new(mem: &'m GuestMemory) -> Self {
        PopBatch {
            mem,
            cache: RegionCache::new(),
            other: Span::EMPTY,
        }
    }

    /// The memory the batch pops from.
    #[inline]
    pub fn memory(&self) -> &'m GuestMemory {
        self.mem
    }
}
