//! Write marks: did anyone but me get write access to a bdev while I had let go of it?
//!
//! Every bdev counts the grants of write access it has given since it was registered: a
//! descriptor opened for writing, or a read-only one promoted by a claim, is one grant. A user
//! that lets go of a bdev and may take it back (a raid1 member removed in sync, resynced from
//! the write-intent bitmap on return) takes a [`WriteMark`] before dropping its descriptor and
//! asks [`Desc::sole_writer_since`] of the new one: if anything else could have written in
//! between, its copy of the data is no longer known.
//!
//! Control path only (the bdev's state lock); the I/O path never looks at it.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use crate::bdev::{Bdev, BdevState};
use crate::desc::Desc;

/// Records one grant of write access; returns the bdev's grant count after it.
pub(crate) fn grant(st: &mut BdevState) -> u64 {
    st.write_grants += 1;
    st.write_grants
}

/// A bdev's write-access count as one descriptor left it (see [`Desc::write_mark`]). Tied to
/// that registration of the bdev: a bdev unregistered and registered again (same name or
/// UUID) is a new bdev whose count starts over.
#[derive(Clone)]
pub struct WriteMark {
    bdev: Weak<Bdev>,
    grants: u64,
}

impl std::fmt::Debug for WriteMark {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WriteMark({})", self.grants)
    }
}

impl Desc {
    /// A mark of the bdev's write access now, if this descriptor is the only one open for
    /// writing (`None` otherwise: then another writer may go on writing after this one lets
    /// go, and no later check can vouch for the data). Take it just before dropping the
    /// descriptor.
    ///
    /// Thread contract: any thread; control path (takes the bdev's state lock).
    pub fn write_mark(&self) -> Option<WriteMark> {
        let b = self.bdev();
        let st = b.state.lock().ok()?;
        if st.descs.iter().any(|d| d.id != self.id && d.write) {
            return None;
        }
        Some(WriteMark {
            bdev: Arc::downgrade(b),
            grants: st.write_grants,
        })
    }

    /// True if, since `mark` was taken, no descriptor but this one was given write access to
    /// the bdev and none but this one is open for writing now: then, as far as this process
    /// knows, the bdev holds what it held when `mark` was taken. `None`, or a mark taken on
    /// an earlier registration of a bdev (unregistered, then registered again: a new bdev),
    /// counts from this bdev's registration. What happens to the device outside this process,
    /// or while no bdev is registered for it, is beyond this check.
    ///
    /// Thread contract: any thread; control path (takes the bdev's state lock).
    pub fn sole_writer_since(&self, mark: Option<&WriteMark>) -> bool {
        let b = self.bdev();
        let Ok(st) = b.state.lock() else {
            return false;
        };
        if st.descs.iter().any(|d| d.id != self.id && d.write) {
            return false;
        }
        let base = match mark {
            Some(m) if std::ptr::eq(m.bdev.as_ptr(), Arc::as_ptr(b)) => m.grants,
            _ => 0,
        };
        let mine = if self.is_writable() {
            self.granted.load(Ordering::Acquire)
        } else {
            0
        };
        // Our own grant, if it came after the mark, is the only one allowed since.
        if mine > base {
            mine == base + 1 && st.write_grants == mine
        } else {
            st.write_grants == base
        }
    }
}
